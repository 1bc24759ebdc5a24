"""Resource exhaustion: one device floods the broker, and the others are still served.

Each test performs the attack against a real broker on loopback and then shows
that a second, well-behaved device gets what its own limits allow. Slowloris
and idle connections are in test_limits.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from caseline.crypto.commits import create_commit, log_anchor
from caseline.schemas.wire import LogPosition
from caseline.server.buckets import BucketTable
from caseline.server.challenges import DeviceLogins
from caseline.server.core import Limits
from caseline.server.failures import FailureLimiter
from caseline.server.keys import CORE, STORE

from tests.conftest import Deployment
from tests.support.broker import Officer
from tests.test_stream import next_delivery, open_stream

MakeDeployment = Callable[..., Awaitable[Deployment]]


async def stored(d: Deployment, case_id: bytes) -> int:
    return len(await d.app[STORE].entries(case_id, after=0, limit=10_000))


async def test_a_device_opening_connection_after_connection_does_not_lock_others_out(
    make_deployment: MakeDeployment,
) -> None:
    d = await make_deployment(limits=Limits(connections_per_device=3))
    alice, bob = await d.officer("ke-kra", "alice"), await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    held = [await open_stream(alice) for _ in range(3)]
    refused = 0
    for _ in range(30):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await open_stream(alice)
        refused += info.value.status == 429
    assert refused == 30
    # Bob still connects, follows the case and gets alice's next update.
    ws = await open_stream(bob, {case_id: 1})
    await alice.say(case_id, "still flowing")
    assert (await next_delivery(ws)).entry.seq == 1
    for s in [*held, ws]:
        await s.close()


async def test_a_flood_of_posts_is_throttled_and_another_device_keeps_its_rate(
    make_deployment: MakeDeployment,
) -> None:
    d = await make_deployment(limits=Limits(updates_per_second=5, update_burst=5))
    alice, bob = await d.officer("ke-kra", "alice"), await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    await bob.sync(case_id)

    async def flood_one() -> aiohttp.ClientResponse:
        return await alice.post(case_id, alice.seal(case_id, "flood"))

    answers = [await flood_one() for _ in range(40)]
    throttled = [r for r in answers if r.status == 429]
    assert len(throttled) >= 30
    assert all(r.content_type == "application/problem+json" for r in throttled)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in throttled)
    accepted = sum(r.status == 201 for r in answers)
    # Bob's own bucket is untouched by alice's flood: his burst goes through.
    await bob.sync(case_id)
    bob_statuses = [(await bob.post(case_id, bob.seal(case_id, f"bob {i}"))).status for i in range(5)]
    assert bob_statuses == [201] * 5
    assert await stored(d, case_id) == 1 + accepted + 5  # genesis, what was accepted, bob's


async def test_a_huge_declared_length_is_refused_before_the_body_is_read(
    make_deployment: MakeDeployment,
) -> None:
    d = await make_deployment()
    alice, bob = await d.officer("ke-kra", "alice"), await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    server = d.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        (
            f"POST /v1/cases/{case_id.hex()}/updates HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {alice.token}\r\nContent-Type: application/msgpack\r\n"
            "Content-Length: 10737418240\r\n\r\n"
        ).encode()
        + b"\x92" * 1024  # 1 KiB of the promised 10 GiB, and then nothing
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=15)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"application/problem+json" in head
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
    )
    problem = json.loads(await reader.readexactly(length))
    assert problem["status"] == 413 and "traceback" not in json.dumps(problem).lower()
    writer.close()
    # Nothing was stored, and bob is served while the connection lingers.
    assert (await bob.entries(case_id)).count == 1
    assert await stored(d, case_id) == 1


# --------------------------------------------------------------------------- issue 14 review, finding 5
#: Every request of the honest device is answered within this many seconds while another device
#: floods (the bound issue 14 asks for; generous: the machine is small and shared).
HONEST_BOUND = 5.0


async def genesis(officer: Officer) -> aiohttp.ClientResponse:
    """POST a fresh case of ``officer``'s alone, and return the broker's answer whatever it is."""
    case_id = officer.world.rng(16)
    trust = officer.world.trust()
    body, _ = create_commit(
        prev=None,
        case_id=case_id,
        committer=officer.device.keys,
        roster=[(trust.verify_cert(officer.device.cert, at=officer.world.now), "owner")],
        policy=officer.policy(),
        log=LogPosition(count=0, head=log_anchor(case_id)),
        info=None,
        now=officer.world.now,
        rng=officer.world.rng,
    )
    response: aiohttp.ClientResponse = await officer.client.post(
        "/v1/cases", data=body, headers=officer.headers()
    )
    return response


async def test_a_device_creating_cases_in_a_loop_is_throttled_and_another_is_served(
    make_deployment: MakeDeployment,
) -> None:
    d = await make_deployment(limits=Limits(cases_per_device_per_hour=5))
    alice, bob = await d.officer("ke-kra", "alice"), await d.officer("tz-tra", "bob")
    statuses = []
    for i in range(12):
        r = await genesis(alice)
        statuses.append(r.status)
        if r.status == 429:
            assert r.content_type == "application/problem+json"
            assert json.loads(await r.text())["type"].endswith("/rate-limited")
            assert int(r.headers["Retry-After"]) >= 1
        if i % 4 == 3:  # bob, meanwhile, creates his case and posts to it within the bound
            case_id = await asyncio.wait_for(bob.create_case([]), timeout=HONEST_BOUND)
            await asyncio.wait_for(bob.say(case_id, f"bob {i}"), timeout=HONEST_BOUND)
    assert statuses == [201] * 5 + [429] * 7
    assert len(d.app[CORE].cases_of(alice.id)) == 5
    assert len(d.app[CORE].cases_of(bob.id)) == 3


async def test_commits_are_charged_to_the_device_buckets(make_deployment: MakeDeployment) -> None:
    # Four posts at once, then one every ~17 minutes: the genesis and three commits use the burst.
    d = await make_deployment(limits=Limits(update_burst=4, updates_per_second=0.001))
    alice, bob = await d.officer("ke-kra", "alice"), await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    statuses = []
    for _ in range(6):
        r = await alice.change(case_id, [(alice.device, "owner"), (bob.device, "member")])
        statuses.append(r.status)
        if r.status == 429:
            assert r.content_type == "application/problem+json"
            assert int(r.headers["Retry-After"]) >= 1
        else:
            await alice.sync(case_id)
    assert statuses == [201] * 3 + [429] * 3
    assert await stored(d, case_id) == 4
    # Bob's buckets are his own: he is served at once.
    await asyncio.wait_for(bob.sync(case_id), timeout=HONEST_BOUND)
    await asyncio.wait_for(bob.say(case_id, "still here"), timeout=HONEST_BOUND)


# --------------------------------------------------------------------------- issue 14 review, finding 7
# The per-key tables are sans-I/O: these drive them directly, with the time passed in.


def test_failure_table_respects_its_capacity_and_forgets_the_oldest_unblocked() -> None:
    limiter = FailureLimiter(limit=3, window=10.0, capacity=3)
    for t, source in enumerate("abc"):
        limiter.record(source, now=float(t))
    limiter.record("d", now=3.0)
    assert len(limiter) == 3
    assert "a" not in limiter and {"b", "c", "d"} <= {s for s in "abcd" if s in limiter}
    for i in range(1000):
        limiter.record(f"fresh-{i}", now=4.0)
    assert len(limiter) == 3


def test_a_blocked_source_is_not_evicted_by_a_flood_of_new_sources() -> None:
    limiter = FailureLimiter(limit=3, window=10.0, capacity=100)
    for _ in range(3):
        limiter.record("attacker", now=0.0)
    assert limiter.blocked("attacker", now=0.0) == 10.0
    for i in range(10_000):
        limiter.record(f"fresh-{i}", now=1.0)
    assert len(limiter) == 100
    assert limiter.blocked("attacker", now=1.0) == 9.0  # still refused until its window ends
    assert limiter.blocked("attacker", now=10.0) == 0.0


def test_a_table_full_of_blocked_sources_refuses_new_ones_together() -> None:
    limiter = FailureLimiter(limit=2, window=10.0, capacity=4)
    blocked = [f"blocked-{i}" for i in range(4)]
    for source in blocked * 2:
        limiter.record(source, now=0.0)
    assert all(limiter.blocked(s, now=1.0) > 0 for s in blocked)
    assert limiter.blocked("newcomer", now=1.0) == 0.0  # untracked sources are not refused yet...
    limiter.record("fresh-1", now=1.0)
    limiter.record("fresh-2", now=1.0)
    assert limiter.blocked("newcomer", now=2.0) == 9.0  # ...until they fail `limit` times together
    assert all(limiter.blocked(s, now=2.0) > 0 for s in blocked) and len(limiter) == 4
    assert limiter.blocked("newcomer", now=11.0) == 0.0
    limiter.record("fresh-3", now=11.0)  # the blocked windows have ended: room again
    assert "fresh-3" in limiter and limiter.blocked("fresh-3", now=11.0) == 0.0


@pytest.mark.parametrize("capacity", [100, 10_000])
def test_failure_table_upkeep_per_insert_does_not_grow_with_its_size(capacity: int) -> None:
    limiter = FailureLimiter(limit=3, window=10.0, capacity=capacity)
    for i in range(capacity):
        limiter.record(f"held-{i}", now=0.0)
    assert limiter.popped == 0 and limiter.examined <= 2 * capacity
    before = limiter.examined
    for i in range(5000):
        limiter.record(f"fresh-{i}", now=1.0)
    # Each insert into the full table dropped exactly one entry and looked at two: no scan, no clear.
    assert limiter.popped == 5000 and len(limiter) == capacity
    assert limiter.examined - before == 2 * 5000
    limiter.record("late", now=100.0)  # everything expired: dropped once each, then no more
    assert limiter.popped == 5000 + capacity and len(limiter) == 1


def test_bucket_table_is_bounded_and_keeps_a_busy_key() -> None:
    table = BucketTable(rate=1.0, burst=2.0, capacity=3)
    assert table.take("busy", 2, now=0.0) == 0.0
    for i in range(1000):
        assert table.take("busy", 0, now=0.5) == 0.0  # each hit moves it to the back
        table.take(f"fresh-{i}", 1, now=0.5)
    assert len(table) == 3 and "busy" in table
    assert table.take("busy", 1, now=0.5) == 0.5  # its bucket was never reset by the flood
    assert table.evicted == 998 and table.expired == 0
    table.take("late", 1, now=10.0)  # idle buckets are full again: dropped, each once
    assert len(table) == 1 and table.expired == 3 and table.evicted == 998


def test_device_logins_forget_devices_whose_logins_are_over_a_minute_old() -> None:
    logins = DeviceLogins(per_minute=2)
    for i in range(1000):
        logins.charge(bytes([i % 256, i // 256]), now=0)
    assert len(logins) == 1000
    logins.charge(b"new", now=60_001)
    assert len(logins) == 1
