"""Cold start (issue 11): what a fresh process re-does, and what it can trust from its profile.

Real broker on loopback (``tests.agencies``), real profiles on disk, real
``Client`` objects opened again the way each CLI command opens one.  Requests
are counted by the broker's own Prometheus counter, not by a stub.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from caseline.client.client import Client
from caseline.server.app import METRICS

from tests.agencies import PASSPHRASE, Network, start_network


@pytest.fixture
async def net(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Network]:
    network = await start_network(aiohttp_server, tmp_path)
    await network.agency("ke-kra", "Kenya Revenue Authority", "KE")
    await network.agency("tz-tra", "Tanzania Revenue Authority", "TZ")
    yield network
    await network.close()


def served(net: Network) -> collections.Counter[tuple[str, str]]:
    """Requests the broker answered so far, by (route, status), from its metrics."""
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    for metric in net.app[METRICS].registry.collect():
        if metric.name == "caseline_requests":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[(sample.labels["route"], sample.labels["status"])] += int(sample.value)
    return out


def since(net: Network, before: collections.Counter[tuple[str, str]]) -> collections.Counter[tuple[str, str]]:
    return served(net) - before


async def reopen(client: Client) -> Client:
    """The same profile, opened by a new process (a new ``Client``, nothing shared in memory)."""
    return await Client.open(client.directory, passphrase=PASSPHRASE)


CRL_ROUTE = "/v1/agencies/{agency_id}/revocations"


# --------------------------------------------------------------------------- revocations


async def test_an_unchanged_revocation_list_is_answered_304(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    await net.publish("tz-tra")
    await alice.refresh_revocations(force=True)  # now holds both agencies' lists
    before = served(net)
    await alice.refresh_revocations(force=True)
    assert since(net, before) == {(CRL_ROUTE, "304"): 2}

    # A new list is fetched whole, verified and adopted; the unchanged one is not.
    juma = await net.device("tz-tra", "juma")
    number = alice.trust.revocation_number("tz-tra")
    await net.admins["tz-tra"].revoke(juma.keys.device_id, reason="device-lost")
    await net.publish("tz-tra")
    before = served(net)
    await alice.refresh_revocations(force=True)
    assert since(net, before) == {(CRL_ROUTE, "304"): 1, (CRL_ROUTE, "200"): 1}
    assert alice.trust.revocation_number("tz-tra") > number
