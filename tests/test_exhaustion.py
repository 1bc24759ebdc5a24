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
from caseline.server.core import Limits
from caseline.server.keys import STORE

from tests.conftest import Deployment
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
