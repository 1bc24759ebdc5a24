"""Attachment blobs on a real broker (PROTOCOL.md §9 "Blobs"), over raw HTTP.

Uploads in parts, resumption after a cut, downloads whole and by Range, the
limits and quotas, who may touch what, references from posted updates and
garbage collection (driven by the world's clock: ``Blobs.collect`` is called,
nothing waits for a timer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

from aiohttp import ClientResponse
from caseline.crypto.attachments import blob_address, ciphertext_size, seal_bytes
from caseline.crypto.updates import seal_update
from caseline.schemas.api import UPLOAD_OFFSET_HEADER, UPLOAD_PART_TYPE, UploadRequest, UploadState
from caseline.schemas.wire import AttachmentRef
from caseline.server.file_blobs import BLOBS_DIR
from caseline.server.keys import BLOBS, CONFIG

from tests.conftest import Deployment
from tests.support.broker import Officer
from tests.support.world import note

KIB = 1024


def payload(size: int, seed: str = "blob") -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def auth(o: Officer) -> dict[str, str]:
    return {"Authorization": f"Bearer {o.token}"}


async def start(o: Officer, case_id: bytes, length: int) -> ClientResponse:
    return await o.client.post(
        f"/v1/cases/{case_id.hex()}/uploads",
        data=UploadRequest(length=length).encode(),
        headers=o.headers(),
    )


async def started(o: Officer, case_id: bytes, length: int) -> UploadState:
    r = await start(o, case_id, length)
    assert r.status == 201, await r.text()
    state = UploadState.decode(await r.read())
    assert r.headers["Location"] == f"/v1/cases/{case_id.hex()}/uploads/{state.upload_id.hex()}"
    assert (state.length, state.offset, state.address) == (length, 0, b"")
    return state


def upload_path(case_id: bytes, upload_id: bytes) -> str:
    return f"/v1/cases/{case_id.hex()}/uploads/{upload_id.hex()}"


async def patch(o: Officer, case_id: bytes, upload_id: bytes, offset: int, data: bytes) -> ClientResponse:
    return await o.client.patch(
        upload_path(case_id, upload_id),
        data=data,
        headers={**auth(o), "Content-Type": UPLOAD_PART_TYPE, UPLOAD_OFFSET_HEADER: str(offset)},
    )


async def state_of(o: Officer, case_id: bytes, upload_id: bytes) -> UploadState:
    r = await o.client.get(upload_path(case_id, upload_id), headers=auth(o))
    assert r.status == 200, await r.text()
    return UploadState.decode(await r.read())


async def upload(o: Officer, case_id: bytes, data: bytes, part: int = 16 * KIB) -> bytes:
    state = await started(o, case_id, len(data))
    for offset in range(0, len(data), part):
        r = await patch(o, case_id, state.upload_id, offset, data[offset : offset + part])
        assert r.status == 200, await r.text()
    final = UploadState.decode(await r.read())
    assert final.offset == len(data)
    return final.address


async def download(o: Officer, case_id: bytes, address: bytes, **headers: str) -> ClientResponse:
    return await o.client.get(
        f"/v1/cases/{case_id.hex()}/blobs/{address.hex()}", headers={**auth(o), **headers}
    )


async def problem(r: ClientResponse) -> str:
    body = await r.json(content_type=None)
    return str(body["type"]).rsplit("/", 1)[-1]


async def two_members(d: Deployment) -> tuple[Officer, Officer, bytes]:
    alice = await d.officer("ke-kra", "alice")
    bob = await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    await bob.sync(case_id)
    return alice, bob, case_id


async def test_upload_in_parts_then_download_whole_and_by_range(deployment: Deployment) -> None:
    alice, bob, case_id = await two_members(deployment)
    data = payload(50 * KIB + 123)
    state = await started(alice, case_id, len(data))
    r = await patch(alice, case_id, state.upload_id, 0, data[: 20 * KIB])
    assert r.status == 200, await r.text()
    assert UploadState.decode(await r.read()).offset == 20 * KIB
    assert (await state_of(alice, case_id, state.upload_id)).offset == 20 * KIB
    r = await patch(alice, case_id, state.upload_id, 20 * KIB, data[20 * KIB : 40 * KIB])
    assert r.status == 200
    r = await patch(alice, case_id, state.upload_id, 40 * KIB, data[40 * KIB :])
    assert r.status == 200
    final = UploadState.decode(await r.read())
    assert final.offset == len(data) and final.address == blob_address(data)
    assert (await state_of(alice, case_id, state.upload_id)).address == final.address

    # Bob, another member, reads it: whole, then by ranges.
    r = await download(bob, case_id, final.address)
    assert r.status == 200
    assert await r.read() == data
    assert r.headers["ETag"] == f'"{final.address.hex()}"'
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = await download(bob, case_id, final.address, Range="bytes=100-199")
    assert r.status == 206
    assert await r.read() == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    r = await download(bob, case_id, final.address, Range="bytes=-10")
    assert (r.status, await r.read()) == (206, data[-10:])
    r = await download(bob, case_id, final.address, Range=f"bytes={len(data) - 5}-")
    assert (r.status, await r.read()) == (206, data[-5:])
    r = await download(bob, case_id, final.address, Range=f"bytes={len(data)}-")
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    r = await bob.client.head(f"/v1/cases/{case_id.hex()}/blobs/{final.address.hex()}", headers=auth(bob))
    assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)
    assert await r.read() == b""


async def test_wrong_offset_is_409_with_the_stored_offset(deployment: Deployment) -> None:
    alice, _, case_id = await two_members(deployment)
    state = await started(alice, case_id, 10 * KIB)
    assert (await patch(alice, case_id, state.upload_id, 0, bytes(4 * KIB))).status == 200
    for wrong in (0, 3 * KIB, 5 * KIB):
        r = await patch(alice, case_id, state.upload_id, wrong, bytes(KIB))
        assert r.status == 409, wrong
        assert r.headers[UPLOAD_OFFSET_HEADER] == str(4 * KIB)
        assert await problem(r) == "conflict"
    assert (await state_of(alice, case_id, state.upload_id)).offset == 4 * KIB


async def test_a_part_past_the_length_is_413_and_stores_nothing(deployment: Deployment) -> None:
    alice, _, case_id = await two_members(deployment)
    state = await started(alice, case_id, 10 * KIB)
    assert (await patch(alice, case_id, state.upload_id, 0, bytes(8 * KIB))).status == 200
    r = await patch(alice, case_id, state.upload_id, 8 * KIB, bytes(2 * KIB + 1))
    assert r.status == 413 and await problem(r) == "too-large"
    assert (await state_of(alice, case_id, state.upload_id)).offset == 8 * KIB
    file = deployment.app[CONFIG].data_dir / BLOBS_DIR / "uploads" / state.upload_id.hex()
    assert file.stat().st_size == 8 * KIB


async def test_length_limits_quotas_and_uploads_in_progress(make_deployment) -> None:  # type: ignore[no-untyped-def]
    from caseline.server.core import Limits

    limits = Limits(
        attachment_max_bytes=100 * KIB,
        attachment_case_quota_bytes=150 * KIB,
        attachment_agency_quota_bytes=220 * KIB,
        uploads_per_device=3,
        upload_part_max_bytes=64 * KIB,
    )
    d = await make_deployment(limits=limits)
    alice, bob, case_id = await two_members(d)
    # The maximum is about files: a blob longer than a 100 KiB file encrypts to is refused.
    r = await start(alice, case_id, ciphertext_size(100 * KIB) + 1)
    assert r.status == 413 and await problem(r) == "too-large"
    # A part over upload_part_max_bytes is refused before a byte is read.
    big = await started(alice, case_id, 100 * KIB)
    r = await patch(alice, case_id, big.upload_id, 0, bytes(64 * KIB + 1))
    assert r.status == 413
    # The case quota counts uploads in progress by their declared length.
    r = await start(alice, case_id, 60 * KIB)
    assert r.status == 507 and await problem(r) == "case-full"
    small = await started(alice, case_id, 50 * KIB)
    # Uploads in progress per device: a third is allowed in the case's room, a fourth not.
    r = await start(bob, case_id, KIB)
    assert r.status == 507  # the case is full for Bob too
    # Freed by DELETE.
    r = await alice.client.delete(upload_path(case_id, small.upload_id), headers=auth(alice))
    assert r.status == 204
    assert (await start(bob, case_id, 50 * KIB)).status == 201

    # The agency quota: ke-kra's uploads over every case.
    other = await alice.create_case([])
    await started(alice, other, 100 * KIB)
    r = await start(alice, other, 40 * KIB)  # room in the case, none in the agency
    assert r.status == 507 and await problem(r) == "agency-full"
    # Uploads in progress per device: a third is fine, a fourth is not.
    assert (await start(alice, other, KIB)).status == 201
    r = await start(alice, other, KIB)
    assert r.status == 429 and await problem(r) == "rate-limited"


async def test_who_may_touch_uploads_and_blobs(deployment: Deployment) -> None:
    d = deployment
    alice = await d.officer("ke-kra", "alice")
    bob = await d.officer("tz-tra", "bob")
    watcher = await d.officer("tz-tra", "watcher")
    bot = await d.officer("ke-kra", "scanner", role="bot", scopes=("alert",))
    stranger = await d.officer("ke-kra", "stranger")
    case_id = await alice.create_case(
        [(bob.device, "member"), (watcher.device, "observer"), (bot.device, "member")]
    )
    other_case = await stranger.create_case([])
    data = payload(8 * KIB)
    address = await upload(alice, case_id, data)
    mine = await started(alice, case_id, 4 * KIB)

    # A non-member: the same 404 as for a case that does not exist, on every route.
    r = await start(stranger, case_id, KIB)
    assert r.status == 404 and await problem(r) == "unknown-case"
    r = await download(stranger, case_id, address)
    assert r.status == 404 and await problem(r) == "unknown-case"
    r = await patch(stranger, case_id, mine.upload_id, 0, bytes(KIB))
    assert r.status == 404 and await problem(r) == "unknown-case"
    # An observer reads, but does not upload.
    r = await start(watcher, case_id, KIB)
    assert r.status == 403 and await problem(r) == "not-allowed"
    assert (await download(watcher, case_id, address)).status == 200
    # A bot without the read scope uploads, but does not download.
    assert (await start(bot, case_id, KIB)).status == 201
    r = await download(bot, case_id, address)
    assert r.status == 403 and await problem(r) == "not-allowed"
    # Another member cannot see, patch or delete Alice's upload.
    for method in ("GET", "DELETE"):
        r = await bob.client.request(method, upload_path(case_id, mine.upload_id), headers=auth(bob))
        assert r.status == 404 and await problem(r) == "not-found", method
    r = await patch(bob, case_id, mine.upload_id, 0, bytes(KIB))
    assert r.status == 404 and await problem(r) == "not-found"
    assert (await state_of(alice, case_id, mine.upload_id)).offset == 0
    # A blob of this case is not served through another case, even to a member of both.
    r = await download(stranger, other_case, address)
    assert r.status == 404 and await problem(r) == "not-found"
    # An upload is not reachable through another case's URL either.
    r = await stranger.client.get(upload_path(other_case, mine.upload_id), headers=auth(stranger))
    assert r.status == 404


async def test_a_member_removed_mid_upload_is_refused_on_the_next_part(deployment: Deployment) -> None:
    alice, bob, case_id = await two_members(deployment)
    state = await started(bob, case_id, 8 * KIB)
    assert (await patch(bob, case_id, state.upload_id, 0, bytes(4 * KIB))).status == 200
    r = await alice.change(case_id, [(alice.device, "owner")])
    assert r.status == 201, await r.text()
    r = await patch(bob, case_id, state.upload_id, 4 * KIB, bytes(4 * KIB))
    assert r.status == 404 and await problem(r) == "unknown-case"
    r = await bob.client.get(upload_path(case_id, state.upload_id), headers=auth(bob))
    assert r.status == 404


async def _open_patch(
    d: Deployment, o: Officer, case_id: bytes, upload_id: bytes, *, offset: int, declared: int, sent: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a PATCH's headers and the first bytes of its body on a raw connection; wait until the
    broker has written them (not yet acknowledged: the body is not complete)."""
    server = d.client.server
    reader, writer = await asyncio.open_connection(str(server.host), server.port)
    head = (
        f"PATCH {upload_path(case_id, upload_id)} HTTP/1.1\r\n"
        f"Host: {server.host}\r\nAuthorization: Bearer {o.token}\r\n"
        f"Content-Type: {UPLOAD_PART_TYPE}\r\n{UPLOAD_OFFSET_HEADER}: {offset}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    blobs = d.app[BLOBS]
    async with blobs.settled:
        await blobs.settled.wait_for(lambda: _stored(d, upload_id) == offset + len(sent))
    return reader, writer


async def _settled(d: Deployment, upload_id: bytes) -> None:
    blobs = d.app[BLOBS]
    async with blobs.settled:
        await blobs.settled.wait_for(lambda: upload_id not in blobs.patching)


async def _cut_patch(
    d: Deployment, o: Officer, case_id: bytes, upload_id: bytes, *, offset: int, declared: int, sent: bytes
) -> None:
    """Send part of a PATCH, then hang up; return once the broker recorded what arrived."""
    _, writer = await _open_patch(d, o, case_id, upload_id, offset=offset, declared=declared, sent=sent)
    writer.close()
    await writer.wait_closed()
    await _settled(d, upload_id)


def _stored(d: Deployment, upload_id: bytes) -> int:
    file = d.app[CONFIG].data_dir / BLOBS_DIR / "uploads" / upload_id.hex()
    return file.stat().st_size if file.exists() else 0


async def test_a_cut_patch_keeps_what_arrived_and_the_upload_resumes(deployment: Deployment) -> None:
    alice, bob, case_id = await two_members(deployment)
    data = payload(64 * KIB, "cut")
    state = await started(alice, case_id, len(data))
    assert (await patch(alice, case_id, state.upload_id, 0, data[: 8 * KIB])).status == 200
    await _cut_patch(
        deployment,
        alice,
        case_id,
        state.upload_id,
        offset=8 * KIB,
        declared=40 * KIB,
        sent=data[8 * KIB : 30 * KIB],
    )
    offset = (await state_of(alice, case_id, state.upload_id)).offset
    assert offset == 30 * KIB  # every byte that arrived, durably
    r = await patch(alice, case_id, state.upload_id, offset, data[offset:])
    assert r.status == 200, await r.text()
    final = UploadState.decode(await r.read())
    assert final.address == blob_address(data)
    r = await download(bob, case_id, final.address)
    assert await r.read() == data


async def test_gc_deletes_stale_uploads_and_unreferenced_blobs(deployment: Deployment) -> None:
    d = deployment
    alice, _, case_id = await two_members(d)
    blobs, root = d.app[BLOBS], d.app[CONFIG].data_dir / BLOBS_DIR
    grace = d.app[CONFIG].limits.upload_grace_seconds * 1000
    stale = await started(alice, case_id, 8 * KIB)
    assert (await patch(alice, case_id, stale.upload_id, 0, bytes(KIB))).status == 200
    address = await upload(alice, case_id, payload(4 * KIB))
    blob_file = root / address.hex()[:2] / address.hex()[2:4] / address.hex()
    assert blob_file.exists() and (root / "uploads" / stale.upload_id.hex()).exists()
    assert not await blobs.collect()  # nothing is old enough yet
    d.world.now += grace
    collected = await blobs.collect()
    assert (collected.uploads, collected.upload_bytes) == (1, KIB)
    assert not (root / "uploads" / stale.upload_id.hex()).exists()
    assert collected.blobs == 1 and not blob_file.exists()
    await alice.login()  # a day passed: the session expired
    r = await alice.client.get(upload_path(case_id, stale.upload_id), headers=auth(alice))
    assert r.status == 404
    assert (await download(alice, case_id, address)).status == 404


async def test_metrics_show_blob_figures(deployment: Deployment, tmp_path: Path) -> None:
    import secrets

    from caseline.server.core import token_hash

    d = deployment
    alice, _, case_id = await two_members(d)
    await upload(alice, case_id, payload(6 * KIB))
    state = await started(alice, case_id, 10 * KIB)
    assert (await patch(alice, case_id, state.upload_id, 0, bytes(KIB))).status == 200
    r = await download(alice, case_id, blob_address(payload(6 * KIB)), Range="bytes=0-99")
    await r.read()
    token = secrets.token_urlsafe(32)
    d.app[CONFIG].operator_token_path.write_bytes(token_hash(token))
    r = await d.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    text = await r.text()
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("caseline_blob") and not line.startswith("#")
    }
    assert figures["caseline_blob_stored_bytes"] == 6 * KIB
    assert figures["caseline_blob_uploads_in_progress"] == 1
    assert figures["caseline_blob_upload_bytes_in_flight"] == 9 * KIB
    assert figures["caseline_blob_received_bytes_total"] == 7 * KIB
    assert figures["caseline_blob_served_bytes_total"] == 100


def seal_with(o: Officer, case_id: bytes, refs: list[AttachmentRef]) -> bytes:
    """An update of ``o``'s naming ``refs`` (its envelope's ``blobs``), sealed by the real core.

    The view's sending chain is not moved on: a refused post leaves the counter
    free, and each test posts at most one accepted update per officer this way.
    """
    view = o.views[case_id]
    me, state, secret = view.me, view.state, view._epoch_secret  # the core's own parts
    assert me is not None and state is not None and secret is not None
    chain, counter, prev_own = view._send_position(me, state, secret)
    sealed = seal_update(
        keys=me,
        state=state,
        counter=counter,
        message_key=chain.peek(counter),
        prev_own=prev_own,
        seen=[],
        log=view.position(),
        content_type="note",
        content=note("seizure photo attached"),
        now=o.world.now,
        nonce=o.world.rng(24),
        attachments=refs,
    )
    return sealed.envelope


async def upload_file(o: Officer, case_id: bytes, data: bytes, name: str = "photo.jpg") -> AttachmentRef:
    ref, blob = seal_bytes(data, name=name, media_type="image/jpeg", key=o.world.rng(32))
    assert await upload(o, case_id, blob) == ref.address
    return ref


async def test_an_update_naming_a_blob_the_case_lacks_is_refused(deployment: Deployment) -> None:
    d = deployment
    alice, bob, case_id = await two_members(d)
    other = await alice.create_case([])
    here = await upload_file(alice, case_id, payload(5 * KIB, "here"))
    elsewhere = await upload_file(alice, other, payload(5 * KIB, "elsewhere"))
    partial_ref, partial_blob = seal_bytes(
        payload(5 * KIB, "partial"), name="p.jpg", media_type="image/jpeg", key=d.world.rng(32)
    )
    started_upload = await started(alice, case_id, len(partial_blob))
    assert (await patch(alice, case_id, started_upload.upload_id, 0, partial_blob[:KIB])).status == 200
    unknown = dataclasses.replace(here, address=d.world.rng(32))
    before = (await alice.entries(case_id)).count
    for refs in ([unknown], [elsewhere], [partial_ref], [here, unknown]):
        r = await alice.post(case_id, seal_with(alice, case_id, refs))
        assert r.status == 422, await r.text()
        assert await problem(r) == "missing-blob"
    assert (await alice.entries(case_id)).count == before
    r = await alice.post(case_id, seal_with(alice, case_id, [here]))
    assert r.status == 201, await r.text()
    await bob.sync(case_id)  # Bob's real core accepts it: envelope blobs match the signed refs
    assert (await alice.entries(case_id)).count == before + 1
    # Referenced: kept past the grace period; the unreferenced one in the other case goes.
    await alice.login()
    d.world.now += d.app[CONFIG].limits.blob_grace_seconds * 1000
    collected = await d.app[BLOBS].collect()
    assert (collected.blobs, collected.uploads) == (1, 1)  # the other case's blob, the partial upload
    await alice.login()
    assert (await download(alice, case_id, here.address)).status == 200
    assert (await download(alice, other, elsewhere.address)).status == 404


async def test_a_blob_released_by_retention_goes_after_the_grace_period(deployment: Deployment) -> None:
    from caseline.server.app import purge_expired

    d = deployment
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([], retention_days=1)
    ref = await upload_file(alice, case_id, payload(3 * KIB))
    r = await alice.post(case_id, seal_with(alice, case_id, [ref]))
    assert r.status == 201, await r.text()
    blobs = d.app[BLOBS]
    root = d.app[CONFIG].data_dir / BLOBS_DIR
    blob_file = root / ref.address.hex()[:2] / ref.address.hex()[2:4] / ref.address.hex()
    d.world.now += 2 * 86400 * 1000  # past the blob grace: still referenced, so kept
    assert not await blobs.collect() and blob_file.exists()
    assert await purge_expired(d.app) == 1  # retention purges the update...
    assert not await blobs.collect() and blob_file.exists()  # ...which releases the blob from now
    d.world.now += d.app[CONFIG].limits.blob_grace_seconds * 1000
    collected = await blobs.collect()
    assert collected.blobs == 1
    assert not blob_file.exists()


async def test_a_backup_carries_the_blobs_and_a_restore_puts_them_back(
    deployment: Deployment, tmp_path: Path
) -> None:
    import os
    import sqlite3

    from caseline.server import backups
    from caseline.server.config import ServerConfig

    d = deployment
    alice, _, case_id = await two_members(d)
    data = payload(9 * KIB, "evidence")
    address = await upload(alice, case_id, data)
    in_progress = await started(alice, case_id, 4 * KIB)
    dest = tmp_path / "backups" / "broker.sqlite3"
    dest.parent.mkdir()
    copy = await asyncio.to_thread(backups.backup, d.app[CONFIG].db_path, dest, force=False)
    assert copy == backups.BlobCopy(copied=1, missing=0)
    relative = Path(address.hex()[:2], address.hex()[2:4], address.hex())
    assert (backups.blobs_beside(dest) / relative).read_bytes() == data

    key_file = tmp_path / "server.key"
    key_file.write_bytes(d.server_key.seed)
    os.chmod(key_file, 0o600)
    restored = ServerConfig(data_dir=tmp_path / "restored")
    await asyncio.to_thread(backups.restore, dest, restored, server_key_file=key_file, force=False)
    assert (restored.data_dir / BLOBS_DIR / relative).read_bytes() == data
    db = sqlite3.connect(restored.db_path)
    try:  # the upload in progress has no bytes in the backup: it is dropped, its client starts again
        assert db.execute(
            "SELECT COUNT(*) FROM uploads WHERE upload_id = ?", (in_progress.upload_id,)
        ).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM blobs").fetchone() == (1,)
    finally:
        db.close()


async def test_a_stalled_patch_is_cut_keeps_its_bytes_and_holds_nothing_more(make_deployment) -> None:  # type: ignore[no-untyped-def]
    from caseline.server.core import Limits

    d = await make_deployment(limits=Limits(body_grace=0.5, body_min_rate=1024.0, uploads_per_device=2))
    alice, _, case_id = await two_members(d)
    first = await started(alice, case_id, 8 * KIB)
    await started(alice, case_id, 8 * KIB)
    r = await start(alice, case_id, KIB)  # a slow uploader holds at most uploads_per_device uploads
    assert r.status == 429 and await problem(r) == "rate-limited"
    reader, writer = await _open_patch(
        d, alice, case_id, first.upload_id, offset=0, declared=4 * KIB, sent=bytes(100)
    )
    # While it trickles, the same upload takes no second writer.
    r = await patch(alice, case_id, first.upload_id, 0, bytes(KIB))
    assert r.status == 409 and await problem(r) == "conflict"
    answer = await reader.read()  # the broker cuts the stalled body and closes the connection
    assert answer.startswith(b"HTTP/1.1 408"), answer[:40]
    writer.close()
    await _settled(d, first.upload_id)
    assert (await state_of(alice, case_id, first.upload_id)).offset == 100  # what arrived is kept


async def test_kill_9_of_the_broker_loses_no_acknowledged_part(tmp_path: Path) -> None:
    """``caseline-server serve`` in a process: PATCH parts, kill -9 after an acknowledged one,
    restart, and the acknowledged offset and bytes are all there (then the upload completes)."""
    import aiohttp
    from caseline.crypto.keys import SigningKey

    from tests.support.process import Server, UrlClient, cli, free_port
    from tests.support.world import World

    world = World("blob-kill")
    world.agency("ke-kra")
    cli(tmp_path, "init")
    root = world.roots["ke-kra"]
    cli(
        tmp_path,
        "agency",
        "add",
        "ke-kra",
        "--name",
        "KRA",
        "--country",
        "KE",
        "--root-key",
        root.public_key.hex(),
    )
    server_key = SigningKey((tmp_path / "server.key").read_bytes())
    world.server_key = server_key
    server = Server(tmp_path, free_port())
    await server.start()
    data = payload(200 * KIB, "kill")
    try:
        async with aiohttp.ClientSession() as session:
            client = UrlClient(session, f"http://127.0.0.1:{server.port}")
            alice = await Officer(client, world, world.device("ke-kra", "alice"), server_key).enrol()
            case_id = await alice.create_case([])
            state = await started(alice, case_id, len(data))
            for offset in range(0, 120 * KIB, 40 * KIB):
                r = await patch(alice, case_id, state.upload_id, offset, data[offset : offset + 40 * KIB])
                assert r.status == 200, await r.text()
            acknowledged = UploadState.decode(await r.read()).offset
            server.kill()
            await server.wait()
            await server.start()
            await alice.login()
            assert (await state_of(alice, case_id, state.upload_id)).offset == acknowledged == 120 * KIB
            r = await patch(alice, case_id, state.upload_id, acknowledged, data[acknowledged:])
            assert r.status == 200, await r.text()
            assert UploadState.decode(await r.read()).address == blob_address(data)
            r = await download(alice, case_id, blob_address(data))
            assert await r.read() == data
    finally:
        server.kill()
        await server.wait()
    # The stopped broker's operator collects now: with no grace, the unreferenced blob goes.
    config = tmp_path / "gc.toml"
    config.write_text("[limits]\nblob_grace_seconds = 0\n")
    out = cli(tmp_path, "gc", "--config", str(config))
    assert out == f"deleted 0 stale uploads (0 bytes received) and 1 unreferenced blobs ({len(data)} bytes)\n"
    address = blob_address(data).hex()
    assert not (tmp_path / BLOBS_DIR / address[:2] / address[2:4] / address).exists()


def test_the_attachment_settings_are_read_strictly(tmp_path: Path) -> None:
    import pytest
    from caseline.server.config import ConfigError, load_config

    path = tmp_path / "caseline-server.toml"
    path.write_text(
        "[limits]\nattachment_max_bytes = 1048576\nattachment_case_quota_bytes = 0\n"
        "uploads_per_device = 2\nblob_gc_interval_seconds = 60\n"
    )
    limits = load_config(path, env={}).limits
    assert (limits.attachment_max_bytes, limits.attachment_case_quota_bytes) == (1048576, 0)
    assert (limits.uploads_per_device, limits.blob_gc_interval_seconds) == (2, 60)
    assert limits.upload_grace_seconds == 86400  # a default
    for text, says in (
        ("upload_grace_second = 10", "did you mean 'upload_grace_seconds'"),
        ("uploads_per_device = -1", "0 or more"),
        ('attachment_max_bytes = "2GiB"', "a whole number"),
        ("blob_grace_seconds = 1.5", "a whole number"),
        ("blob_gc_interval_seconds = inf", "finite"),
    ):
        path.write_text(f"[limits]\n{text}\n")
        with pytest.raises(ConfigError, match=says):
            load_config(path, env={})
