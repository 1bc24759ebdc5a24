"""Live delivery over one WebSocket per device.

Each connection has a bounded queue and its own sender task, so fan-out never
awaits a client: ``publish`` only does ``put_nowait``, and a connection whose
queue is full is closed with a reason (the client catches up over HTTP).

The sender keeps, per case, the next sequence number the client expects.  An
entry below it is skipped (already sent); an entry above it means the queue
missed something (the client subscribed mid-stream, or joined the case), and the
gap is filled from storage first.  So a client that resumes from a cursor gets
exactly the missing entries, in order, and nothing twice.

Writes are coalesced: the sender takes everything its queue holds, frames it,
and hands it to the transport in one write (one system call per connection per
group commit, not one per entry).  It waits only when the socket's buffer is
past ``HIGH_WATER``, so a stalled reader stops its sender, its queue fills, and
it is cut off as before.

Nothing is written to a connection whose device is revoked or whose session
has expired by the broker's clock: ``guard`` is asked before every write of
deliveries, and a connection it stops closes itself (4003 revoked, 4002
session expired).  Timers close such streams at the moment too
(``deadlines.py``); this check does not depend on them being on time.

Memory is bounded in bytes, not only in items (issue 14, finding 6): each
connection counts the frames it holds (queued, taken but not yet written, and
what its transport still buffers), and a frame that would take it past
``stream_buffer_bytes`` closes it with ``CLOSE_SLOW`` instead.  Catch-up reads
storage by bytes too, at most what the connection's bound still allows.  A
closed connection drops every frame it held and its sender stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from caseline.schemas.api import Delivery, Entry, Notice
from caseline.server.core import Accepted, entry_of
from caseline.server.store import EntryRow

log = logging.getLogger("caseline.server.stream")

QUEUE_SIZE: Final = 1024
CLOSE_SLOW: Final = 4008
CLOSE_REVOKED: Final = 4003
CLOSE_LOGOUT: Final = 4001
#: The session the stream was opened with has expired: log in again and reconnect.
CLOSE_SESSION_EXPIRED: Final = 4002
#: Bytes waiting in a connection's transport past which its sender waits.
HIGH_WATER: Final = 256 * 1024
DRAIN_POLL: Final = 0.002

#: ``(case_id, after, limit, max_bytes)``: the store's byte-bounded page read.
Fetch = Callable[[bytes, int, int, int | None], Awaitable[list[EntryRow]]]
SLOW_REASON: Final = "slow consumer: catch up over HTTP and reconnect"
#: Why a connection must stop now, as a close (code, reason); None while it may go on.
Guard = Callable[[], tuple[int, str] | None]


def _never() -> tuple[int, str] | None:
    return None


def session_guard(
    clock: Callable[[], int],
    revoked_at: Callable[[], int | None] | None,
    expires_at: int | None,
) -> Guard:
    """A stream's guard: stop once the device's revocation or its session's expiry is reached.

    ``revoked_at`` is read on every call (a newer list may move it earlier)
    and must be cheap: the trust store's dict lookup, not a database read,
    since it runs once per write on every connection.  None switches a check
    off (``ServerConfig.stream_checks_revocation``, ``stream_session_expiry``).
    """

    def guard() -> tuple[int, str] | None:
        now = clock()
        if revoked_at is not None:
            at = revoked_at()
            if at is not None and now >= at:
                return CLOSE_REVOKED, "device revoked by its agency"
        if expires_at is not None and now >= expires_at:
            return CLOSE_SESSION_EXPIRED, "session expired: log in again"
        return None

    return guard


class Stopped(Exception):
    """The guard stopped the connection: its sender ends without writing anything more."""


@dataclasses.dataclass(slots=True)
class _Item:
    case_id: bytes
    seq: int
    frame: bytes | None  # the encoded Delivery; None: "catch up to the present" marker


def delivery_frame(case_id: bytes, entry: Entry) -> bytes:
    return Delivery(case_id=case_id, entry=entry).encode()


def ws_header(size: int) -> bytes:
    """RFC 6455 header of one final, unmasked, uncompressed binary frame (server to client)."""
    if size < 126:
        return struct.pack("!BB", 0x82, size)
    if size < 65536:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)


class Connection:
    """One device's live stream."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        device_id: bytes,
        fetch: Fetch,
        transport: asyncio.Transport | None = None,
        guard: Guard = _never,
        *,
        buffer_bytes: int = 0,
        page_bytes: int | None = None,
    ) -> None:
        self.ws = ws
        self.device_id = device_id
        self.fetch = fetch
        #: Asked before every write of deliveries and before every post (``session_guard``).
        self.guard = guard
        #: The most bytes of frames this connection may hold (0: no byte bound).
        self.buffer_bytes = buffer_bytes
        #: The most bytes one catch-up read from storage may return (None: no byte bound).
        self.page_bytes = page_bytes
        #: Bytes of frames offered and not yet processed by the sender (queue and its batch).
        self.held = 0
        #: Bytes of frames in ``_out`` (taken for sending, not yet written).
        self.out_bytes = 0
        #: The most bytes this connection ever held, transport buffer included (for tests, metrics).
        self.peak = 0
        #: Called when the connection must be cut as too slow (the hub closes it).
        self.overflow: Callable[[], None] = lambda: None
        #: The sender task (``run``), cancelled when the connection closes.
        self.task: asyncio.Task[None] | None = None
        #: The socket under ``ws``, written directly to coalesce frames; None: ``ws.send_bytes`` each.
        self.transport = transport
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_SIZE)
        self.next_seq: dict[bytes, int] = {}
        self.closing = False
        self.sent = 0
        self._out: list[bytes] = []  # Delivery frames accepted by ``_send``, not yet written
        self._replies: list[bytes] = []  # answers to posts, written together at the end of a loop turn
        self._closer: asyncio.Task[None] | None = None

    def is_closed(self) -> bool:
        """Whether the hub closed this connection (a method: it changes across awaits)."""
        return self.closing

    def buffered(self) -> int:
        """Bytes of frames this connection holds: queued, taken, and in its transport's buffer."""
        transport = self.transport
        pending = 0 if transport is None else transport.get_write_buffer_size()
        return self.held + self.out_bytes + pending

    def _note(self) -> int:
        size = self.buffered()
        self.peak = max(self.peak, size)
        return size

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes of frames keep this connection within its byte bound."""
        return not self.buffer_bytes or self.buffered() + size <= self.buffer_bytes

    def offer(self, item: _Item) -> bool:
        """Queue an item without waiting; False if the consumer is too slow (items or bytes)."""
        if self.closing:
            return True
        size = 0 if item.frame is None else len(item.frame)
        if not self.fits(size):
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        self.held += size
        self._note()
        return True

    def check(self) -> tuple[int, str] | None:
        """Ask the guard; if it says stop, close this connection with its code and say why."""
        stop = self.guard()
        if stop is not None:
            self.shut(*stop)
        return stop

    def shut(self, code: int, reason: str) -> None:
        """Close the WebSocket with ``code`` in the background; the stream's route then detaches it."""
        if self.closing:
            return
        self.closing = True

        async def close() -> None:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, message=reason.encode())

        self._closer = asyncio.get_running_loop().create_task(close())

    def release(self) -> None:
        """Drop every frame this connection holds and stop its sender: a closed stream keeps nothing."""
        self.closing = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self._out, self._replies = [], []
        self.held = self.out_bytes = 0
        self.next_seq.clear()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def run(self) -> None:
        with contextlib.suppress(Stopped):
            await self._run()

    async def _run(self) -> None:
        queue = self.queue
        while not self.closing:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            for item in items:
                try:
                    await self._process(item)
                finally:
                    if not self.closing and item.frame is not None:
                        self.held -= len(item.frame)
                if self.is_closed():
                    return
            await self._flush()

    async def _process(self, item: _Item) -> None:
        expected = self.next_seq.get(item.case_id)
        if expected is None:
            return  # not (or no longer) subscribed
        target = item.seq if item.frame is not None else None
        if target is None or target > expected:
            await self._catch_up(item.case_id, upto=target)
            expected = self.next_seq.get(item.case_id)
            if expected is None:
                return
        if item.frame is not None and item.seq == expected:
            await self._send(item.case_id, item.seq, item.frame)

    async def _catch_up(self, case_id: bytes, *, upto: int | None) -> None:
        """Fill a gap from storage, one byte-bounded read at a time, within the connection's bound."""
        while not self.closing:
            start = self.next_seq.get(case_id)
            if start is None:
                return
            limit = 256 if upto is None else min(256, upto - start)
            if limit <= 0:
                return
            await self._flush()  # what is already queued goes out before the storage read
            budget = self.page_bytes
            if self.buffer_bytes:
                room = self.buffer_bytes - self.buffered()
                budget = room if budget is None else min(budget, room)
                if budget <= 0:
                    self.overflow()
                    return
            rows = await self.fetch(case_id, start, limit, budget)
            if self.is_closed():
                return
            frames = [(row.seq, delivery_frame(case_id, entry_of(row))) for row in rows]
            got = len(rows)
            del rows  # the frames are what this connection holds from here on
            if not self.fits(sum(len(frame) for _, frame in frames)):
                self.overflow()  # one entry past what is left: the reader is too far behind
                return
            for seq, frame in frames:
                await self._send(case_id, seq, frame)
            if got < limit and (budget is None or not got):
                return

    async def _send(self, case_id: bytes, seq: int, frame: bytes) -> None:
        """Take the next entry of a case for sending; ``_flush`` writes it."""
        if self.next_seq.get(case_id) != seq:
            return
        self._out.append(frame)
        self.out_bytes += len(frame)
        self._note()
        self.next_seq[case_id] = seq + 1
        self.sent += 1

    async def _flush(self) -> None:
        frames, self._out = self._out, []
        if not frames:
            return
        if self.closing or self.check() is not None:
            raise Stopped  # revoked, expired or being closed: these frames are never written
        transport = self.transport
        if transport is None:
            self.out_bytes = 0
            for frame in frames:
                await self.ws.send_bytes(frame)
            return
        try:
            self._write(transport, frames)
        finally:
            self.out_bytes = 0
        del frames
        self._note()
        await self._drain(transport)

    async def reply(self, frame: bytes) -> None:
        """Send an answer to a post; the answers of one loop turn (one group commit) share a write."""
        transport = self.transport
        if transport is None:
            await self.ws.send_bytes(frame)
            return
        if self.ws.closed or transport.is_closing():
            raise ConnectionResetError("stream is closing")
        self._replies.append(frame)
        if len(self._replies) == 1:
            asyncio.get_running_loop().call_soon(self._write_replies, transport)
        await self._drain(transport)

    def _write_replies(self, transport: asyncio.Transport) -> None:
        frames, self._replies = self._replies, []
        with contextlib.suppress(ConnectionResetError):
            self._write(transport, frames)

    def _write(self, transport: asyncio.Transport, frames: list[bytes]) -> None:
        if self.ws.closed or transport.is_closing():
            raise ConnectionResetError("stream is closing")
        parts: list[bytes] = []
        for frame in frames:
            parts += (ws_header(len(frame)), frame)
        transport.write(b"".join(parts))

    @staticmethod
    async def _drain(transport: asyncio.Transport) -> None:
        while transport.get_write_buffer_size() > HIGH_WATER and not transport.is_closing():
            await asyncio.sleep(DRAIN_POLL)


class Hub:
    """Who is listening to which case; the fan-out seam (a NATS/Redis one can replace it)."""

    def __init__(self, *, fetch: Fetch, buffer_bytes: int = 0, page_bytes: int | None = None) -> None:
        self.fetch = fetch
        #: Each connection's byte bound and catch-up read size (``Limits``; 0 / None: none).
        self.buffer_bytes = buffer_bytes
        self.page_bytes = page_bytes
        self.by_device: dict[bytes, set[Connection]] = {}
        self.by_case: dict[bytes, set[Connection]] = {}
        self.members: Callable[[bytes], frozenset[bytes]] = lambda _case: frozenset()
        self.slow_disconnects = 0

    def connections(self) -> int:
        return sum(len(c) for c in self.by_device.values())

    def queue_depths(self) -> list[int]:
        return [c.queue.qsize() for conns in self.by_device.values() for c in conns]

    def buffered(self) -> list[int]:
        """Bytes of frames each connection holds (what ``stream_buffer_bytes`` bounds)."""
        return [c.buffered() for conns in self.by_device.values() for c in conns]

    def connection(self, ws: web.WebSocketResponse, device_id: bytes, guard: Guard = _never) -> Connection:
        """A new connection with this hub's storage reads and byte bounds."""
        return Connection(
            ws, device_id, self.fetch, guard=guard, buffer_bytes=self.buffer_bytes, page_bytes=self.page_bytes
        )

    def attach(self, conn: Connection) -> None:
        self.by_device.setdefault(conn.device_id, set()).add(conn)
        conn.overflow = lambda: self._slow(conn)

    def detach(self, conn: Connection) -> None:
        self.by_device.get(conn.device_id, set()).discard(conn)
        if not self.by_device.get(conn.device_id):
            self.by_device.pop(conn.device_id, None)
        for case_id in list(conn.next_seq):
            self._unsubscribe(conn, case_id)

    def subscribe(self, conn: Connection, case_id: bytes, after: int) -> None:
        conn.next_seq[case_id] = after
        self.by_case.setdefault(case_id, set()).add(conn)
        self._offer(conn, _Item(case_id, after, None))

    def _unsubscribe(self, conn: Connection, case_id: bytes) -> None:
        conn.next_seq.pop(case_id, None)
        subs = self.by_case.get(case_id)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.by_case[case_id]

    def publish(self, accepted: Accepted) -> None:
        """Called once an entry is durable: offer it to every subscribed connection."""
        # Encoded once, sent to every subscriber as the same bytes.
        entry = Entry(seq=accepted.seq, kind=accepted.kind, body=accepted.body, receipt=accepted.receipt)
        item = _Item(accepted.case_id, accepted.seq, delivery_frame(accepted.case_id, entry))
        for conn in list(self.by_case.get(accepted.case_id, ())):
            self._offer(conn, item)
        if accepted.kind == "commit":
            self._membership_changed(accepted, item)

    def _membership_changed(self, accepted: Accepted, item: _Item) -> None:
        members = accepted.state.members
        for device_id, conns in list(self.by_device.items()):
            for conn in list(conns):
                subscribed = accepted.case_id in conn.next_seq
                if device_id in members and not subscribed:
                    # A new member: stream the case from the genesis.
                    self.subscribe(conn, accepted.case_id, 0)
                    self._notify(conn, "joined", accepted.case_id)
                elif device_id not in members and subscribed:
                    # Removed: it still receives the commit that removed it (queued
                    # above), then nothing more of this case.
                    self.by_case.get(accepted.case_id, set()).discard(conn)

    def _notify(self, conn: Connection, kind: str, case_id: bytes) -> None:
        if conn.closing or conn.check() is not None:
            return  # a revoked or expired device learns nothing more, not even a case id

        async def send() -> None:
            with contextlib.suppress(Exception):
                await conn.ws.send_bytes(Notice(kind=kind, case_id=case_id, detail="").encode())

        asyncio.get_running_loop().create_task(send())

    def _offer(self, conn: Connection, item: _Item) -> None:
        if not conn.offer(item):
            self._slow(conn)

    def _slow(self, conn: Connection) -> None:
        if not conn.closing:
            self.slow_disconnects += 1
            self.close(conn, CLOSE_SLOW, SLOW_REASON)

    def close(self, conn: Connection, code: int, reason: str) -> None:
        if conn.closing:
            return
        self.detach(conn)
        conn.shut(code, reason)
        conn.release()

    def close_device(self, device_id: bytes, code: int, reason: str) -> None:
        for conn in list(self.by_device.get(device_id, ())):
            self.close(conn, code, reason)
