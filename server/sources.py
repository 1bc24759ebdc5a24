"""Who a request comes from, for the per-source limits: an address, or a network behind a proxy.

Per-source limits (anonymous requests, failed logins, connections) are only as
good as the key they count by.  By default the source is the TCP peer.  An
IPv6 peer is counted by its /64, because one host is routinely handed a whole
/64 and could otherwise take a fresh address per request.

Behind a reverse proxy every peer is the proxy.  The operator then lists the
proxies in ``trusted_proxies``; for a request whose peer is one of them, the
source is the right-most address in ``forwarded_header`` that is not itself a
trusted proxy (the left part of that header is whatever the client wrote, so it
is never believed).  The header is ignored from any other peer, and the whole
mechanism is off by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN: Final = "unknown"
IPV6_PREFIX: Final = 64


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``trusted_proxies`` entries: addresses or CIDR networks; a typo is a configuration error."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def source_of(peer: str | None, forwarded: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The key a request is counted under: see the module docstring."""
    address = _address(peer) if peer else None
    if address is None:
        return UNKNOWN
    if not trusted or forwarded is None or not any(address in net for net in trusted):
        return _key(address)
    for hop in reversed(forwarded.split(",")):
        candidate = _address(hop)
        if candidate is None:
            return _key(address)  # a garbled header: count it against the proxy, never a made-up name
        if not any(candidate in net for net in trusted):
            return _key(candidate)
        address = candidate
    return _key(address)


def is_trusted_proxy(peer: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    """Is the TCP peer one of ``trusted_proxies``?  Its connections carry many clients (``edge.py``)."""
    address = _address(peer) if trusted and peer else None
    return address is not None and any(address in net for net in trusted)
