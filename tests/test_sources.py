"""Which source a request is counted under, with and without a trusted reverse proxy."""

from __future__ import annotations

import pytest
from caseline.server.config import load_config
from caseline.server.sources import UNKNOWN, parse_networks, source_of

PROXY = parse_networks(["10.0.0.0/8", "192.0.2.7"])


def test_without_proxies_the_peer_is_the_source_and_the_header_is_ignored() -> None:
    assert source_of("198.51.100.4", "203.0.113.9", ()) == "198.51.100.4"
    assert source_of("198.51.100.4", "203.0.113.9", PROXY) == "198.51.100.4"  # not a trusted peer


def test_ipv6_peers_are_counted_by_their_64() -> None:
    a = source_of("2001:db8:1:2::1", None, ())
    b = source_of("2001:db8:1:2:ffff::9", None, ())
    assert a == b == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1", None, ()) != a
    assert source_of("::ffff:198.51.100.4", None, ()) == "198.51.100.4"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_source() -> None:
    # The client wrote "1.2.3.4" itself; the proxy appended the address it saw.
    assert source_of("10.1.1.1", "1.2.3.4, 203.0.113.9", PROXY) == "203.0.113.9"
    assert source_of("10.1.1.1", "203.0.113.9, 192.0.2.7", PROXY) == "203.0.113.9"
    assert source_of("10.1.1.1", "[2001:db8::5]:443", PROXY) == "2001:db8::/64"


def test_a_garbled_or_all_proxy_header_counts_against_the_proxy() -> None:
    assert source_of("10.1.1.1", "not-an-address", PROXY) == "10.1.1.1"
    assert source_of("10.1.1.1", "10.2.2.2", PROXY) == "10.2.2.2"
    assert source_of(None, None, PROXY) == UNKNOWN


def test_a_mistyped_proxy_is_a_configuration_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n')
    with pytest.raises(ValueError, match="trusted_proxies"):
        load_config(path, env={})
    path.write_text('[server]\ntrusted_proxies = ["10.0.0.0/8"]\n')
    assert load_config(path, env={}).trusted_proxies == ("10.0.0.0/8",)
