"""A compromised broker for tests: the real broker behind a proxy that holds its keys.

The proxy forwards every request to the real broker, and lets a test rewrite
what a given device is shown: the case log (drop, reorder, duplicate, replay,
alter, fork per device) and directory answers.  Because it holds the broker's
receipt key, it re-signs receipts and heads for whatever log it invents, so
the honest client's only defence is the protocol itself, which is the point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from caseline.crypto.caselog import entry_hash, next_head, sign_receipt
from caseline.crypto.commits import log_anchor
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import Directory, Entry, EntryPage
from caseline.server.core import token_hash
from caseline.server.keys import STORE

from tests.support.agencies import Network

Log = list[tuple[str, bytes]]
#: (asking device, case id, the real log) -> the log that device is shown.
LogRewrite = Callable[[bytes, bytes, Log], Log]
DirectoryRewrite = Callable[[Directory], Directory]
#: (case id, blob address, the real blob) -> the bytes served for it.
BlobRewrite = Callable[[bytes, bytes, bytes], bytes]


def signed_page(key: SigningKey, case_id: bytes, log: Log, after: int, *, time: int = 0) -> EntryPage:
    """What a broker holding the receipt key serves for an invented log."""
    head, entries = log_anchor(case_id), []
    for seq, (kind, body) in enumerate(log):
        eh = entry_hash(kind, body)
        head = next_head(head, seq, eh)
        receipt = sign_receipt(key, case_id=case_id, seq=seq, entry_hash=eh, head=head, time=time)
        entries.append(Entry(seq=seq, kind=kind, body=body, receipt=receipt))
    return EntryPage(case_id=case_id, entries=tuple(entries[after:]), count=len(log))


async def forward(
    session: aiohttp.ClientSession, upstream: str, request: web.Request, body: bytes
) -> tuple[bytes, int, str]:
    """Pass one request on to the real broker: its body, status and content type."""
    headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")}
    async with session.request(
        request.method, upstream + request.path_qs, data=body or None, headers=headers
    ) as r:
        return await r.read(), r.status, r.headers.get("Content-Type", "")


def refusing_posts(session: aiohttp.ClientSession, upstream: str) -> web.Application:
    """A broker that serves reads but answers every post with 503 (an outbox's update stays sealed)."""

    async def overloaded(request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/updates"):
            return web.json_response({"type": "about:blank", "detail": "overloaded"}, status=503)
        data, status, ctype = await forward(session, upstream, request, await request.read())
        return web.Response(body=data, status=status, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", overloaded)
    return app


class HostileBroker:
    def __init__(self, net: Network, session: aiohttp.ClientSession) -> None:
        self.net, self.session = net, session
        self.rewrite_log: LogRewrite | None = None
        self.rewrite_directory: DirectoryRewrite | None = None
        self.rewrite_challenge: Callable[[bytes], bytes] | None = None
        self.rewrite_blob: BlobRewrite | None = None
        #: Cut the connection of the next blob download after this many bytes (once).
        self.cut_blob_after: int | None = None
        #: The ``Range`` header of every blob download asked for, in order (None: none sent).
        self.blob_ranges: list[str | None] = []
        #: Serve the (rewritten) log even to a device the real broker refuses.
        self.serve_anyone = False
        #: The key receipts are re-signed with (another broker's key, to test pinning).
        self.receipt_key = net.server_key

    async def device_of(self, request: web.Request) -> bytes:
        token = request.headers.get("Authorization", "").partition(" ")[2]
        row = await self.net.app[STORE].get_session(token_hash(token)) if token else None
        return b"" if row is None else row.device_id

    async def blob(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        """A blob download, ``Range`` and ``Content-Range`` passed through, rewritten or cut."""
        asked = request.headers.get("Range")
        self.blob_ranges.append(asked)
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if asked is not None:
            headers["Range"] = asked
        async with self.session.get(self.net.url + request.path_qs, headers=headers) as r:
            data, status = await r.read(), r.status
            passed = {k: r.headers[k] for k in ("Content-Type", "Content-Range") if k in r.headers}
        if status == 200 and self.rewrite_blob:
            data = self.rewrite_blob(bytes.fromhex(parts[2]), bytes.fromhex(parts[4]), data)
        cut, self.cut_blob_after = self.cut_blob_after, None
        if cut is None or status >= 300:
            return web.Response(body=data, status=status, headers=passed)
        response = web.StreamResponse(status=status, headers=passed)
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[:cut])
        assert request.transport is not None
        request.transport.close()  # the rest never comes: a network cut mid-body
        return response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if (
            request.method == "GET"
            and len(parts) == 5
            and parts[:2] == ["v1", "cases"]
            and parts[3] == "blobs"
        ):
            return await self.blob(request, parts)
        data, status, ctype = await forward(self.session, self.net.url, request, await request.read())
        if (
            (status == 200 or self.serve_anyone)
            and self.rewrite_log
            and len(parts) == 4
            and parts[3] == "entries"
        ):
            status, ctype = 200, "application/msgpack"
            case_id = bytes.fromhex(parts[2])
            rows = await self.net.app[STORE].entries(case_id, after=0, limit=1_000_000)
            log = self.rewrite_log(await self.device_of(request), case_id, [(r.kind, r.body) for r in rows])
            after = int(request.query.get("after", "0"))
            now = time.time_ns() // 1_000_000
            data = signed_page(self.receipt_key, case_id, log, after, time=now).encode()
        if status == 200 and self.rewrite_challenge and parts == ["v1", "auth", "challenge"]:
            data = self.rewrite_challenge(data)
        if status == 200 and self.rewrite_directory and parts[:2] == ["v1", "directory"]:
            data = self.rewrite_directory(Directory.decode(data)).encode()
        return web.Response(body=data, status=status, headers={"Content-Type": ctype})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


async def start_hostile(
    aiohttp_server: Any, net: Network, session: aiohttp.ClientSession
) -> tuple[HostileBroker, str]:
    hostile = HostileBroker(net, session)
    server = await aiohttp_server(hostile.app())
    return hostile, str(server.make_url("")).rstrip("/")
