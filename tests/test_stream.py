"""Live delivery: in order, resumable, and a slow reader never slows anyone else."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from caseline.schemas.api import Cursor, Delivery, Notice, Subscribe
from caseline.schemas.codec import unpack
from caseline.server.keys import HUB
from caseline.server.stream import CLOSE_REVOKED, CLOSE_SLOW

from tests.conftest import Deployment
from tests.support.broker import Officer


async def open_stream(
    officer: Officer, cursors: dict[bytes, int] | None = None
) -> aiohttp.ClientWebSocketResponse:
    ws = await officer.client.ws_connect("/v1/stream", headers={"Authorization": f"Bearer {officer.token}"})
    cur = tuple(Cursor(case_id=c, after=a) for c, a in (cursors or {}).items())
    await ws.send_bytes(Subscribe(cursors=cur).encode())
    return ws


async def next_delivery(ws: aiohttp.ClientWebSocketResponse) -> Delivery:
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout=10)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        obj = unpack(msg.data)
        if obj[1] == Notice.TAG:
            continue
        return Delivery.decode(msg.data)


async def test_stream_delivers_in_log_order_and_the_view_verifies(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    ws = await open_stream(bob)
    for i in range(5):
        await alice.say(case_id, f"update {i}")
    seqs = []
    from caseline.crypto.caselog import CaseView

    view = CaseView(trust=deployment.world.trust(), me=bob.device.keys)
    for _ in range(6):
        d = await next_delivery(ws)
        seqs.append(d.entry.seq)
        view.apply(
            seq=d.entry.seq,
            kind=d.entry.kind,
            body=d.entry.body,
            now=deployment.world.now,
            receipt=d.entry.receipt,
        )
    assert seqs == [0, 1, 2, 3, 4, 5]
    await ws.close()


async def test_resume_after_a_dropped_connection_gets_exactly_the_missing_entries(
    deployment: Deployment,
) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    ws = await open_stream(bob)
    await alice.say(case_id, "one")
    got = [(await next_delivery(ws)).entry.seq for _ in range(2)]
    await ws.close()
    for text in ("two", "three", "four"):
        await alice.say(case_id, text)
    ws = await open_stream(bob, {case_id: got[-1] + 1})
    resumed = [(await next_delivery(ws)).entry.seq for _ in range(3)]
    await alice.say(case_id, "five")
    resumed.append((await next_delivery(ws)).entry.seq)
    assert got + resumed == [0, 1, 2, 3, 4, 5]
    await ws.close()


async def test_slow_consumer_is_cut_without_blocking_a_fast_one(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caseline.server import stream

    monkeypatch.setattr(stream, "QUEUE_SIZE", 4)
    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    carol = await deployment.officer("ke-kra", "carol")
    case_id = await alice.create_case([(bob.device, "member"), (carol.device, "member")])
    fast = await open_stream(bob)
    slow = await open_stream(carol)
    assert (await next_delivery(fast)).entry.seq == 0
    hub = deployment.app[HUB]
    slow_conn = next(iter(hub.by_device[carol.id]))
    # Carol's sender stops reading: it blocks, as a stalled socket would.
    gate = asyncio.Event()
    original = slow_conn._send

    async def stalled(case: bytes, seq: int, frame: bytes) -> None:
        await gate.wait()
        await original(case, seq, frame)

    slow_conn._send = stalled  # type: ignore[method-assign,assignment]
    for i in range(12):
        await alice.say(case_id, f"burst {i}")
    seqs = [(await next_delivery(fast)).entry.seq for _ in range(12)]
    assert seqs == list(range(1, 13))
    msg = await asyncio.wait_for(slow.receive(), timeout=10)
    while msg.type == aiohttp.WSMsgType.BINARY:
        msg = await asyncio.wait_for(slow.receive(), timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == CLOSE_SLOW
    assert "slow consumer" in str(msg.extra)
    gate.set()
    await fast.close()


async def test_revocation_closes_a_live_stream(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    ws = await open_stream(alice)
    crl = deployment.world.revoke(alice.device)
    r = await alice.client.put(
        "/v1/agencies/ke-kra/revocations", data=crl, headers={"Content-Type": "application/msgpack"}
    )
    assert r.status == 204
    msg = await asyncio.wait_for(ws.receive(), timeout=10)
    while msg.type == aiohttp.WSMsgType.BINARY:
        msg = await asyncio.wait_for(ws.receive(), timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == CLOSE_REVOKED


async def test_new_member_is_streamed_the_case_and_a_removed_one_stops(
    deployment: Deployment,
) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    carol = await deployment.officer("ke-kra", "carol")
    case_id = await alice.create_case([(carol.device, "member")])
    ws_bob = await open_stream(bob)
    ws_carol = await open_stream(carol)
    assert (await next_delivery(ws_carol)).entry.seq == 0
    r = await alice.change(case_id, [(alice.device, "owner"), (bob.device, "member")])
    assert r.status == 201
    bob_seqs = [(await next_delivery(ws_bob)).entry.seq for _ in range(2)]
    assert bob_seqs == [0, 1]
    assert (await next_delivery(ws_carol)).entry.seq == 1  # carol sees her removal
    await alice.sync(case_id)
    await alice.say(case_id, "carol must not see this")
    assert (await next_delivery(ws_bob)).entry.seq == 2
    # Publishing offers an entry to every subscriber in the same step that
    # reached Bob, so had Carol still been subscribed her queue would hold it.
    hub = deployment.app[HUB]
    carol_conn = next(iter(hub.by_device[carol.id]))
    assert carol_conn not in hub.by_case[case_id]
    assert carol_conn.queue.qsize() == 0
    assert carol_conn.next_seq[case_id] == 2  # she got the removal commit (seq 1) and nothing after
    await ws_bob.close()
    await ws_carol.close()


async def test_too_many_streams_for_one_device(make_deployment) -> None:  # type: ignore[no-untyped-def]
    from caseline.server.core import Limits

    d = await make_deployment(limits=Limits(connections_per_device=2))
    alice = await d.officer("ke-kra", "alice")
    socks = [await open_stream(alice) for _ in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await open_stream(alice)
    assert info.value.status == 429
    for s in socks:
        await s.close()


async def test_frame_over_the_limit_closes_the_stream(make_deployment) -> None:  # type: ignore[no-untyped-def]
    d = await make_deployment(max_frame_bytes=1024)
    alice = await d.officer("ke-kra", "alice")
    ws = await alice.client.ws_connect("/v1/stream", headers={"Authorization": f"Bearer {alice.token}"})
    await ws.send_bytes(b"\x00" * 4096)
    msg = await asyncio.wait_for(ws.receive(), timeout=10)
    while msg.type == aiohttp.WSMsgType.BINARY:
        msg = await asyncio.wait_for(ws.receive(), timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_a_peer_that_stops_answering_pings_is_closed(make_deployment) -> None:  # type: ignore[no-untyped-def]
    d = await make_deployment(heartbeat=0.2)
    alice = await d.officer("ke-kra", "alice")
    ws = await alice.client.ws_connect(
        "/v1/stream", headers={"Authorization": f"Bearer {alice.token}"}, autoping=False
    )
    await ws.send_bytes(Subscribe(cursors=()).encode())
    while True:  # pings arrive and go unanswered; the broker gives up and closes
        msg = await asyncio.wait_for(ws.receive(), timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
        assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.BINARY)
    assert d.app[HUB].connections() == 0


async def test_no_subscribe_message_in_time_closes_the_stream(make_deployment) -> None:  # type: ignore[no-untyped-def]
    d = await make_deployment(handshake_timeout=0.2)
    alice = await d.officer("ke-kra", "alice")
    ws = await alice.client.ws_connect("/v1/stream", headers={"Authorization": f"Bearer {alice.token}"})
    msg = await asyncio.wait_for(ws.receive(), timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 4000


async def test_posts_on_the_stream_are_pipelined_in_order(deployment: Deployment) -> None:
    from caseline.crypto.caselog import verify_receipt
    from caseline.schemas.api import PostResult, PostUpdate

    alice = await deployment.officer("ke-kra", "alice")
    eve = await deployment.officer("ke-kra", "eve")
    case_id = await alice.create_case([])
    ws = await open_stream(alice)
    envelopes = [alice.seal(case_id, f"pipelined {i}") for i in range(20)]
    for i, env in enumerate(envelopes):
        await ws.send_bytes(PostUpdate(request_id=i, case_id=case_id, envelope=env).encode())
    await ws.send_bytes(PostUpdate(request_id=99, case_id=case_id, envelope=envelopes[3]).encode())  # a retry
    results: dict[int, PostResult] = {}
    while len(results) < 21:
        msg = await asyncio.wait_for(ws.receive(), timeout=10)
        if unpack(msg.data)[1] == PostResult.TAG:
            r = PostResult.decode(msg.data)
            results[r.request_id] = r
    assert all(r.status == 201 for r in results.values())
    seqs = [verify_receipt(results[i].receipt, deployment.server_key.public_key).seq for i in range(20)]
    assert seqs == list(range(1, 21))
    assert results[99].receipt == results[3].receipt
    await alice.sync(case_id)
    assert alice.views[case_id].count == 21
    await ws.close()

    eve_ws = await open_stream(eve)
    await eve_ws.send_bytes(PostUpdate(request_id=1, case_id=case_id, envelope=envelopes[0]).encode())
    msg = await asyncio.wait_for(eve_ws.receive(), timeout=10)
    refused = PostResult.decode(msg.data)
    assert (refused.status, refused.problem) == (404, "unknown-case")  # as for no such case
    await eve_ws.send_bytes(b"\x93\x01\x21")
    msg = await asyncio.wait_for(eve_ws.receive(), timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1007


async def test_a_stream_catching_up_delivers_purged_entries_as_purged(deployment: Deployment) -> None:
    from caseline.crypto.caselog import CaseView
    from caseline.server.app import purge_expired

    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")], retention_days=1)
    await alice.say(case_id, "old news")
    deployment.world.now += 2 * 86_400_000
    await alice.login()
    await bob.login()
    assert await purge_expired(deployment.app) == 1
    ws = await open_stream(bob)
    view = CaseView(trust=deployment.world.trust(), me=bob.device.keys)
    kinds = []
    for _ in range(2):
        e = (await next_delivery(ws)).entry
        view.apply(seq=e.seq, kind=e.kind, body=e.body, now=deployment.world.now, receipt=e.receipt)
        kinds.append(e.kind)
    assert kinds == ["commit", "purged"]
    await ws.close()
