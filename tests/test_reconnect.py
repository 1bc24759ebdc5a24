"""A broker that restarts, and one that closes idle connections, do not break a client.

``follow`` must outlive broker restarts: it reconnects with backoff and resumes
from the last verified entry, whatever fails while the broker is away (the
revocation refresh, the login, the stream).  And any request written onto a
pooled keep-alive connection the broker has just closed must be sent again on
a fresh one, not surface as "broker unavailable" — a first ``sync`` of a large
case spends long enough verifying to meet exactly that.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import aiohttp
from aiohttp import web
from caseline.client.client import Client
from caseline.client.core import CaseEvent

from tests.support.agencies import Network
from tests.support.hostile import forward


class Relay:
    """A TCP relay in front of the broker that goes away and comes back on the same port."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """As a broker restart looks from outside: every connection cut, new ones refused."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.pipes):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.pipes |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.pipes -= {writer, up_writer}


class Notices(logging.Handler):
    """The client's one-line notices, as events a test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.reconnecting = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "reconnecting" in record.getMessage():
            self.reconnecting.set()


async def test_follow_outlives_broker_restarts_and_resumes(net: Network) -> None:
    assert net.server.port is not None
    relay = Relay(net.server.port)
    await relay.start()
    alice = await net.device("ke-kra", "alice")
    bob = await net.device("ke-kra", "bob")
    case_id = await alice.create_case(title="Op", members=[("ke-kra", "bob")])
    await alice.login(server_url=relay.url)
    notices = Notices()
    logging.getLogger("caseline.client").addHandler(notices)
    events: asyncio.Queue[CaseEvent] = asyncio.Queue()

    async def watch() -> None:
        async for event in alice.follow([case_id], max_backoff=0.2):
            await events.put(event)

    watcher = asyncio.create_task(watch())
    try:
        for restart in range(3):
            await bob.post_note(case_id, f"before restart {restart}")
            assert (await asyncio.wait_for(events.get(), 30)).content == await last_content(bob, case_id)
            await relay.stop()
            notices.reconnecting.clear()
            await asyncio.wait_for(notices.reconnecting.wait(), 30)  # it noticed the cut
            await bob.post_note(case_id, f"while down {restart}")
            notices.reconnecting.clear()
            await asyncio.wait_for(notices.reconnecting.wait(), 30)  # a try against the dead port
            await relay.start()
            event = await asyncio.wait_for(events.get(), 30)
            assert event.content is not None and event.content["text"] == f"while down {restart}"
        assert not watcher.done()
        assert [e.seq for e in await alice.history(case_id)] == list(range(7))
    finally:
        watcher.cancel()
        logging.getLogger("caseline.client").removeHandler(notices)
        await relay.stop()


async def last_content(client: Client, case_id: bytes) -> dict[str, Any] | None:
    return (await client.history(case_id))[-1].content


class Closer:
    """A front that closes every reused keep-alive connection just as a request arrives on it.

    That is what a broker's idle timer does to a client that kept a pooled
    connection past it: the request is written, and the connection closes
    without an answer.
    """

    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        self.upstream, self.session = upstream, session
        self.used: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.dropped = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        if transport in self.used:
            self.dropped += 1
            transport.abort()
            raise asyncio.CancelledError  # nothing is written back: the connection is gone
        self.used.add(transport)
        data, status, ctype = await forward(self.session, self.upstream, request, await request.read())
        return web.Response(body=data, status=status, headers={"Content-Type": ctype} if ctype else {})


async def test_requests_survive_the_broker_closing_pooled_connections(
    net: Network, aiohttp_server: Any
) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    for i in range(3):
        await alice.post_note(case_id, f"note {i}")
    async with aiohttp.ClientSession() as session:
        closer = Closer(net.url, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", closer.handle)
        front = await aiohttp_server(app)
        reader = await net.device("ke-kra", "bob")
        await alice.add_members(case_id, [("ke-kra", "bob", "member")], share_history=True)
        await reader.login(server_url=str(front.make_url("")).rstrip("/"))
        events = await reader.sync(case_id)  # GETs on reused connections, each dropped once
        await reader.post_note(case_id, "and a post on a reused connection")
    assert closer.dropped >= 2
    assert [e.content["text"] for e in events if e.content and "text" in e.content] == [
        "note 0",
        "note 1",
        "note 2",
    ]
