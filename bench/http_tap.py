"""A loopback TCP proxy that reads the HTTP/1.1 going through it: what was sent, what was acknowledged.

The attachment benchmarks (``bench.attachments``) and ``make chaos`` put it
between a client and the broker to measure what the product does, not what it
says it does: how many body bytes each PATCH carried, and which upload offsets
the broker acknowledged (a ``200`` with an ``UploadState``).  It can also cut
every connection at once, a network cut as the client sees it.

It only observes: every byte is forwarded unchanged, and a stream it cannot
parse (a WebSocket after its ``101``) is forwarded without being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections import deque
from collections.abc import Callable
from typing import Final

from caseline.schemas.api import UploadState
from caseline.schemas.errors import CaselineError

UPLOAD_PATH: Final = re.compile(r"^/v1/cases/([0-9a-f]+)/uploads(?:/([0-9a-f]+))?(?:\?.*)?$")
#: Request or response heads longer than this are not HTTP we know: the stream is no longer read.
MAX_HEAD: Final = 64 * 1024


@dataclasses.dataclass
class Request:
    method: str
    path: str
    upload: str | None  # hex upload id of an upload route
    offset: int | None  # a PATCH's Upload-Offset


@dataclasses.dataclass
class Tally:
    """What passed, since the last ``reset``; ``acked`` and ``lengths`` are kept across resets."""

    upstream_bytes: int = 0
    patch_body_bytes: int = 0  # PATCH body bytes forwarded to the broker
    patches: int = 0
    conflicts: int = 0  # PATCHes answered 409
    first_patch_offset: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The highest offset the broker acknowledged per upload (hex id), and each upload's length.
    acked: dict[str, int] = dataclasses.field(default_factory=dict)
    lengths: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Where each upload's bytes forwarded so far end (the last PATCH's offset plus its body so far).
    forwarded_to: dict[str, int] = dataclasses.field(default_factory=dict)


class _Framer:
    """Splits one direction of an HTTP/1.1 connection into messages (Content-Length or chunked).

    ``on_head(first_line, headers)`` returns the body framing: a length, ``-1``
    for chunked, or ``None`` to stop reading this stream (it is still forwarded).
    ``on_body(data)`` sees the body's bytes as they pass (chunked framing removed);
    ``on_end()`` is called when the message is complete.
    """

    def __init__(
        self,
        on_head: Callable[[str, dict[str, str]], int | None],
        on_body: Callable[[bytes], None],
        on_end: Callable[[], None],
    ) -> None:
        self.on_head, self.on_body, self.on_end = on_head, on_body, on_end
        self.buf = bytearray()
        self.state = "head"
        self.remaining = 0
        self.dead = False

    def feed(self, data: bytes) -> None:
        if self.dead:
            return
        self.buf += data
        while not self.dead:
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    self.dead = len(self.buf) > MAX_HEAD
                    return
                lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                del self.buf[: end + 4]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                framing = self.on_head(lines[0], headers)
                if framing is None:
                    self.dead = True
                    return
                if framing == -1:
                    self.state = "size"
                elif framing == 0:
                    self.on_end()
                else:
                    self.state, self.remaining = "body", framing
            elif self.state in ("body", "chunk"):
                if not self.buf:
                    return
                piece = bytes(self.buf[: self.remaining])
                del self.buf[: len(piece)]
                self.remaining -= len(piece)
                self.on_body(piece)
                if self.remaining == 0:
                    if self.state == "body":
                        self.state = "head"
                        self.on_end()
                    else:
                        self.state, self.remaining = "crlf", 2
            elif self.state == "crlf":
                take = min(self.remaining, len(self.buf))
                if not take:
                    return
                del self.buf[:take]
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "size"
            elif self.state in ("size", "trailer"):
                end = self.buf.find(b"\r\n")
                if end < 0:
                    self.dead = len(self.buf) > MAX_HEAD
                    return
                line = bytes(self.buf[:end]).decode("latin-1")
                del self.buf[: end + 2]
                if self.state == "trailer":
                    if not line:
                        self.state = "head"
                        self.on_end()
                    continue
                try:
                    size = int(line.split(";", 1)[0], 16)
                except ValueError:
                    self.dead = True
                    return
                if size == 0:
                    self.state = "trailer"
                else:
                    self.state, self.remaining = "chunk", size


class _Connection:
    """One client connection's two directions, parsed."""

    def __init__(self, tap: HttpTap) -> None:
        self.tap = tap
        self.pending: deque[Request] = deque()
        self.current: Request | None = None  # the request whose body is passing upstream
        self.response_of: Request | None = None
        self.status = 0
        self.body = bytearray()
        self.keep = False
        self.up = _Framer(self._request_head, self._request_body, self._request_end)
        self.down = _Framer(self._response_head, self._response_body, self._response_end)

    def _request_head(self, first: str, headers: dict[str, str]) -> int | None:
        method, _, rest = first.partition(" ")
        path = rest.rsplit(" ", 1)[0]
        found = UPLOAD_PATH.match(path)
        upload = found.group(2) if found else None
        offset = None
        if method == "PATCH" and upload is not None:
            with contextlib.suppress(ValueError):
                offset = int(headers.get("upload-offset", ""))
        request = Request(method, path, upload, offset)
        self.pending.append(request)
        self.current = request
        t = self.tap.tally
        if method == "PATCH" and upload is not None and offset is not None:
            t.patches += 1
            t.first_patch_offset.setdefault(upload, offset)
            t.forwarded_to[upload] = offset
        if headers.get("upgrade"):
            return None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return -1
        try:
            return int(headers.get("content-length", "0"))
        except ValueError:
            return None

    def _request_body(self, data: bytes) -> None:
        r = self.current
        if r is not None and r.method == "PATCH" and r.upload is not None:
            self.tap.tally.patch_body_bytes += len(data)
            self.tap.tally.forwarded_to[r.upload] = self.tap.tally.forwarded_to.get(r.upload, 0) + len(data)

    def _request_end(self) -> None:
        self.current = None

    def _response_head(self, first: str, headers: dict[str, str]) -> int | None:
        parts = first.split(" ", 2)
        try:
            self.status = int(parts[1])
        except (IndexError, ValueError):
            return None
        if self.status == 101:
            return None
        if 100 <= self.status < 200:
            return 0  # an interim answer: the request's real one follows
        self.response_of = self.pending.popleft() if self.pending else None
        r = self.response_of
        self.keep = r is not None and UPLOAD_PATH.match(r.path) is not None
        self.body.clear()
        if self.status == 409 and r is not None and r.method == "PATCH":
            self.tap.tally.conflicts += 1
        if (r is not None and r.method == "HEAD") or self.status in (204, 304):
            return 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return -1
        try:
            return int(headers.get("content-length", "0"))
        except ValueError:
            return None

    def _response_body(self, data: bytes) -> None:
        if self.keep and len(self.body) < 4096:
            self.body += data

    def _response_end(self) -> None:
        if not self.keep or self.status not in (200, 201):
            return
        try:
            state = UploadState.decode(bytes(self.body))
        except CaselineError:
            return
        upload = state.upload_id.hex()
        t = self.tap.tally
        t.lengths[upload] = state.length
        if self.response_of is not None and self.response_of.method == "PATCH":
            t.acked[upload] = max(t.acked.get(upload, 0), state.offset)


class HttpTap:
    """Listens on a free loopback port and forwards to ``127.0.0.1:upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.tally = Tally()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    def reset(self) -> None:
        """Start counting afresh (what was acknowledged is kept: it stays acknowledged)."""
        old = self.tally
        self.tally = Tally(acked=old.acked, lengths=old.lengths, forwarded_to=old.forwarded_to)

    def cut(self) -> None:
        """Drop every connection at once, both ways (an RST): a network cut."""
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()
        self.cuts += 1

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()  # the broker is down: the client sees a refused connection
            return
        conn = _Connection(self)
        self._live |= {client_w, broker_w}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while data := await src.read(1 << 18):
                    if upstream:
                        self.tally.upstream_bytes += len(data)
                        conn.up.feed(data)
                    else:
                        conn.down.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pump(client_r, broker_w, True), pump(broker_r, client_w, False))
        finally:
            self._live -= {client_w, broker_w}
