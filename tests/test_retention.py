"""Retention: purged update bodies, a broker restart, and what members still verify.

A purged entry keeps its position, its sender slot and its receipt; its body is
gone.  These tests run the real broker application on loopback with the real
SQLite store, restart it on the same data directory, and check the case with
the real ``CaseView``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from caseline.crypto.caselog import CaseView
from caseline.crypto.certs import MAX_SKEW_MS
from caseline.schemas.api import Entry
from caseline.server.app import create_app, purge_expired
from caseline.server.config import ServerConfig

from tests.conftest import Deployment
from tests.support.broker import Officer, register_agencies
from tests.support.world import World

ClientFactory = Callable[[Application], Awaitable[TestClient]]


def verify_from_genesis(officer: Officer, world: World, entries: Sequence[Entry], *, now: int) -> CaseView:
    """A fresh view of the whole log, as a member's new device would build it."""
    view = CaseView(trust=world.trust(), me=officer.device.keys)
    for e in entries:
        view.apply(seq=e.seq, kind=e.kind, body=e.body, now=now, receipt=e.receipt)
    return view


async def test_a_retention_0_case_survives_a_broker_restart(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    world = World("retention-restart")
    world.agency("ke-kra")
    world.agency("tz-tra")
    config = ServerConfig(data_dir=tmp_path)

    def broker() -> Application:
        return create_app(config, server_key=world.server_key, clock=lambda: world.now)

    first = await aiohttp_client(broker())
    await register_agencies(first, world)
    alice = await Officer(first, world, world.device("ke-kra", "alice"), world.server_key).enrol()
    bob = await Officer(first, world, world.device("tz-tra", "bob"), world.server_key).enrol()
    case_id = await alice.create_case([(bob.device, "member")], retention_days=0)
    envelope = alice.seal(case_id, "one")
    r = await alice.post(case_id, envelope)
    assert r.status == 201
    receipt = await r.read()
    await alice.say(case_id, "two")
    await bob.sync(case_id)

    world.now += MAX_SKEW_MS + 1
    first_app = first.app
    assert first_app is not None
    assert await purge_expired(first_app) == 2
    await first.close()  # a clean stop: the cleanup contexts close the store

    second = await aiohttp_client(broker())
    for officer in (alice, bob):
        officer.client = second
        await officer.login()
    page = await bob.entries(case_id)  # the case is still served (it was a 404)
    assert [e.kind for e in page.entries] == ["commit", "purged", "purged"]
    fresh = verify_from_genesis(bob, world, page.entries, now=world.now)
    assert fresh.head == bob.views[case_id].head

    # The broker still knows each sender's next counter and keeps exactly-once retries.
    r = await alice.post(case_id, envelope)
    assert r.status == 201, await r.text()
    assert await r.read() == receipt
    await alice.say(case_id, "three")
    await bob.sync(case_id)
    page = await bob.entries(case_id)
    assert [e.kind for e in page.entries] == ["commit", "purged", "purged", "update"]
    assert verify_from_genesis(bob, world, page.entries, now=world.now).head == bob.views[case_id].head


async def test_a_member_behind_the_broker_within_tolerated_skew_accepts_every_purge(
    deployment: Deployment,
) -> None:
    """The broker waits out the tolerated clock skew before it purges.

    A member checks ``receipt.time + retention <= now`` on its own clock; with
    ``retention_days`` 0, a broker purging the moment retention ends would be
    refused by any member whose clock runs a second behind.
    """
    w = deployment.world
    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")], retention_days=0)
    await alice.say(case_id, "short-lived")
    posted = w.now
    purged = 0
    for later in (1, MAX_SKEW_MS // 2, MAX_SKEW_MS, MAX_SKEW_MS + 1):
        w.now = posted + later
        purged += await purge_expired(deployment.app)
        await bob.login()
        page = await bob.entries(case_id)
        verify_from_genesis(bob, w, page.entries, now=w.now - MAX_SKEW_MS)
    assert purged == 1
    assert [e.kind for e in page.entries] == ["commit", "purged"]
