"""HTTP handlers of attachment blobs (PROTOCOL.md §9 "Blobs"): uploads, PATCH parts, downloads.

Every request is checked on its own: a session, current membership of the
case (a non-member gets the same 404 *unknown-case* as for entries), a role
that may post for uploads, read access for downloads.  An upload is seen,
patched and deleted only by the device that created it.  Bodies are streamed:
a PATCH is read in pieces, at the broker's minimum body rate, and written to
the ``BlobStore`` in chunks of at most ``blobs.IO_CHUNK``; a download is sent
from it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from caseline.schemas.api import UPLOAD_OFFSET_HEADER, UPLOAD_PART_TYPE, UploadRequest, UploadState
from caseline.schemas.errors import (
    BrokerConflict,
    BrokerNotFound,
    BrokerRangeNotSatisfiable,
    BrokerTooLarge,
    BrokerUnsupportedMediaType,
    MalformedError,
    NotAllowedError,
)
from caseline.schemas.wire import HASH_SIZE
from caseline.server.blob_service import Blobs
from caseline.server.blobs import IO_CHUNK, Address, Unsatisfiable, UploadId, parse_range
from caseline.server.keys import BLOBS, CLOCK, CONFIG, CORE, METRICS, SESSION_CERT, STORE
from caseline.server.routes import authenticate, body_pace, hex_id, paced_chunk, read_body
from caseline.server.store import UploadRow

OCTETS: Final = "application/octet-stream"
#: An ``UploadRequest`` is a few bytes.
UPLOAD_REQUEST_BYTES: Final = 64


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/cases/{case_id}/uploads", create_upload)
    r.add_get("/v1/cases/{case_id}/uploads/{upload_id}", get_upload, allow_head=False)
    r.add_patch("/v1/cases/{case_id}/uploads/{upload_id}", patch_upload)
    r.add_delete("/v1/cases/{case_id}/uploads/{upload_id}", delete_upload)
    r.add_get("/v1/cases/{case_id}/blobs/{address}", get_blob)


def _state(row: UploadRow) -> web.Response:
    state = UploadState(
        upload_id=row.upload_id,
        length=row.length,
        offset=row.received,
        expires_at=row.expires_at,
        address=row.address or b"",
    )
    return web.Response(body=state.encode(), content_type="application/msgpack")


async def _uploader(request: web.Request) -> tuple[bytes, bytes]:
    """(case, device) for a current member whose role may post; anyone else is refused here."""
    device_id = await authenticate(request)
    case_id = hex_id(request, "case_id")
    runtime = request.app[CORE].member_runtime(case_id, device_id)
    if runtime.state.members[device_id].role == "observer":
        raise NotAllowedError("observers of a case do not upload to it")
    return case_id, device_id


async def _own_upload(request: web.Request) -> tuple[Blobs, UploadRow]:
    case_id, device_id = await _uploader(request)
    upload_id = hex_id(request, "upload_id")
    row = await request.app[STORE].get_upload(upload_id)
    if row is None or row.case_id != case_id or row.device_id != device_id:
        raise BrokerNotFound("no such upload in this case for this device")
    return request.app[BLOBS], row


async def create_upload(request: web.Request) -> web.Response:
    case_id, device_id = await _uploader(request)
    asked = UploadRequest.decode(await read_body(request, limit=UPLOAD_REQUEST_BYTES))
    if asked.length == 0:
        raise MalformedError("an upload has at least one byte")
    now = request.app[CLOCK]()
    row = UploadRow(
        upload_id=secrets.token_bytes(16),
        case_id=case_id,
        device_id=device_id,
        agency_id=request[SESSION_CERT].agency_id,
        length=asked.length,
        received=0,
        created_at=now,
        expires_at=now + request.app[CONFIG].limits.upload_grace_seconds * 1000,
    )
    await request.app[BLOBS].create(row)
    response = _state(row)
    response.set_status(201)
    response.headers["Location"] = f"/v1/cases/{case_id.hex()}/uploads/{row.upload_id.hex()}"
    return response


async def get_upload(request: web.Request) -> web.Response:
    _, row = await _own_upload(request)
    return _state(row)


async def delete_upload(request: web.Request) -> web.Response:
    blobs, row = await _own_upload(request)
    async with blobs.writing(row.upload_id):
        await blobs.delete(row)
    return web.Response(status=204)


def _offset_header(request: web.Request) -> int:
    text = request.headers.get(UPLOAD_OFFSET_HEADER, "")
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise MalformedError(f"a PATCH needs an {UPLOAD_OFFSET_HEADER} header: a non-negative integer")
    return int(text)


async def patch_upload(request: web.Request) -> web.Response:
    """Append one part at ``Upload-Offset``; the bytes are fsync'd before the answer.

    A body cut part-way (the sender's connection dropped, or the broker cut it
    for arriving too slowly) keeps every byte that arrived: the offset moves to
    the end of what was durably written, and the client resumes from there.
    """
    blobs, row = await _own_upload(request)
    limits = request.app[CONFIG].limits
    if request.content_type != UPLOAD_PART_TYPE:
        raise BrokerUnsupportedMediaType(f"a PATCH body is {UPLOAD_PART_TYPE}")
    offset = _offset_header(request)
    size = request.content_length
    if size is None:
        raise MalformedError("a PATCH needs a Content-Length")
    if limits.upload_part_max_bytes and size > limits.upload_part_max_bytes:
        raise BrokerTooLarge(f"a PATCH may carry at most {limits.upload_part_max_bytes} bytes")
    if offset != row.received or row.address is not None:
        raise BrokerConflict(
            f"the upload's stored offset is {row.received}", headers={UPLOAD_OFFSET_HEADER: str(row.received)}
        )
    if offset + size > row.length:
        raise BrokerTooLarge(f"the part ends past the upload's declared length of {row.length} bytes")
    async with blobs.writing(row.upload_id):
        received = await _receive(request, blobs, row, offset, size)
    stored = await request.app[STORE].get_upload(row.upload_id)
    if received < offset + size or stored is None:
        raise MalformedError("the body ended before its Content-Length")
    return _state(stored)


async def _receive(request: web.Request, blobs: Blobs, row: UploadRow, offset: int, size: int) -> int:
    """Stream the body to the upload; return the offset durably recorded (also when cut)."""
    pace = body_pace(request)
    hasher = blobs.hasher_at(row, offset)
    writer = await blobs.files.open_upload(UploadId(row.upload_id), offset)
    written, buffer = 0, bytearray()

    async def flush() -> None:
        nonlocal written, hasher
        if buffer:
            data = bytes(buffer)
            if hasher is None:
                await writer.write(data)
            else:  # both release the GIL: hash while the bytes go to disk, off the event loop
                try:
                    await asyncio.gather(writer.write(data), asyncio.to_thread(hasher.update, data))
                except BaseException:
                    hasher = None  # it may have seen bytes that were not written: completion re-reads
                    raise
            written += len(data)
            buffer.clear()
            async with blobs.settled:
                blobs.settled.notify_all()

    async def persist() -> None:
        try:
            await flush()
        finally:
            await writer.close()
            if written:
                await blobs.received(row, offset + written, hasher)
                request.app[METRICS].blob_received.inc(written)

    try:
        while written + len(buffer) < size:
            chunk = await paced_chunk(request, pace)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) < IO_CHUNK and (more := request.content.read_nowait(IO_CHUNK - len(buffer))):
                buffer += more
            pace.add(len(buffer))
            # Written as soon as the socket has nothing more buffered: bytes that arrived are on
            # disk before the next wait, so a connection cut later loses none of them.
            await flush()
    finally:
        # Shielded: a sender that hangs up must not cancel the bookkeeping of what it sent,
        # and the upload stays held (``Blobs.writing``) until that bookkeeping is done.
        task = asyncio.ensure_future(persist())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
    return offset + written


async def get_blob(request: web.Request) -> web.StreamResponse:
    """The blob, or one byte range of it (206; 416 if unsatisfiable), streamed from the store."""
    device_id = await authenticate(request)
    case_id = hex_id(request, "case_id")
    request.app[CORE].require_reader(case_id, device_id)
    text = request.match_info["address"]
    if len(text) != 2 * HASH_SIZE:
        raise MalformedError(f"a blob address is {2 * HASH_SIZE} hex digits")
    try:
        address = Address(bytes.fromhex(text))
    except ValueError:
        raise MalformedError("a blob address is hex") from None
    row = await request.app[STORE].get_blob(case_id, address)
    if row is None:
        raise BrokerNotFound("no complete blob with this address in this case")
    try:
        wanted = parse_range(request.headers.get("Range"), row.size)
    except Unsatisfiable:
        raise BrokerRangeNotSatisfiable(
            "the range asked for is outside the blob", headers={"Content-Range": f"bytes */{row.size}"}
        ) from None
    start, end = (0, row.size) if wanted is None else (wanted.start, wanted.end)
    response = web.StreamResponse(
        status=200 if wanted is None else 206,
        headers={"Accept-Ranges": "bytes", "ETag": f'"{address.hex()}"', "Content-Type": OCTETS},
    )
    if wanted is not None:
        response.headers["Content-Range"] = wanted.content_range(row.size)
    response.content_length = end - start
    await response.prepare(request)
    if request.method != "HEAD":
        await _send(request, response, request.app[BLOBS].files.read_blob(address, start, end))
    await response.write_eof()
    return response


async def _send(request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes]) -> None:
    served = 0
    try:
        async for chunk in chunks:
            await response.write(chunk)
            served += len(chunk)
    finally:
        request.app[METRICS].blob_served.inc(served)
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
