"""Files on updates through the client library, against a real broker on loopback (issue 15).

Posting with files, a partner listing and saving them, a broker that tampers
with blobs, a member who lies about a file, uploads cut by a cancel or a
``kill -9`` and resumed, files that changed meanwhile, and the local limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from caseline.client.client import Client
from caseline.client.uploads import (
    AttachmentSource,
    CipherStream,
    Draft,
    DraftId,
    PlannedFile,
    UploadId,
    media_type_for,
    part_sizes,
    save_name,
)
from caseline.crypto.attachments import Sealer, ciphertext_size, seal_bytes
from caseline.schemas.errors import BrokerTooLarge, IntegrityError, UnknownError, UsageError
from caseline.server.core import Limits
from caseline.server.keys import METRICS

from tests.support.agencies import PARTNERS, PASSPHRASE, Network, start_network
from tests.support.hostile import HostileBroker, start_hostile

KIB = 1024
PART = 128 * KIB
NOTE: dict[str, Any] = {"markings": {"handling": "H0", "tlp": "GREEN"}, "lang": "en", "text": "seized"}


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes that differ at every offset, so a moved or repeated chunk cannot pass unnoticed."""
    out, n = bytearray(), 0
    while len(out) < size:
        out += hashlib.sha256(seed.to_bytes(4, "big") + n.to_bytes(8, "big")).digest()
        n += 1
    return bytes(out[:size])


class Progress:
    """A ``ProgressSink`` that remembers what it was told, and can signal after ``after`` bytes."""

    def __init__(self, after: int | None = None) -> None:
        self.calls: list[tuple[str, str | int]] = []
        self.sent = 0
        self.after = after
        self.reached = asyncio.Event()

    def start(self, name: str, total_bytes: int) -> None:
        self.calls.append(("start", total_bytes))

    def advance(self, n: int) -> None:
        self.calls.append(("advance", n))
        self.sent += n
        if self.after is not None and self.sent >= self.after:
            self.reached.set()

    def done(self) -> None:
        self.calls.append(("done", 0))


async def two_officers(net: Network) -> tuple[Client, Client, bytes]:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    alice.upload_part_size = PART
    return alice, juma, case_id


def received_by_broker(net: Network) -> int:
    """Upload bytes the broker stored, over every PATCH so far (its own counter)."""
    value = net.app[METRICS].registry.get_sample_value("caseline_blob_received_bytes_total")
    return int(value or 0)


async def updates_in_log(client: Client, case_id: bytes) -> int:
    await client.sync(case_id)
    return sum(1 for e in await client.history(case_id) if e.kind == "update")


# --------------------------------------------------------------------------- sans-I/O pieces


def test_parts_cover_the_rest_of_an_upload_exactly() -> None:
    assert part_sizes(0, 300, 128) == [128, 128, 44]
    assert part_sizes(200, 300, 128) == [100]
    assert part_sizes(300, 300, 128) == []


def test_a_resumed_cipher_stream_gives_the_suffix_of_the_whole() -> None:
    data, key = pattern(200 * KIB), bytes(range(32))
    _, blob = seal_bytes(data, name="f", media_type="text/plain", key=key)
    for skip in (0, 1, 65551, len(blob) - 1):
        stream = CipherStream(Sealer(len(data), key=key), skip=skip)
        got = bytearray()
        for i in range(0, len(data), 7000):
            stream.feed(data[i : i + 7000])
            got += stream.take(stream.ready)
        stream.finish()
        got += stream.take(stream.ready)
        assert bytes(got) == blob[skip:]


def test_a_draft_survives_its_encoding() -> None:
    f = PlannedFile(path="/x/a.jpg", size=5, mtime_ns=7, name="a.jpg", media_type="image/jpeg", key=bytes(32))
    done = dataclasses.replace(f, upload_id=UploadId(bytes(16)), sha256=bytes(32), address=b"\x01" * 32)
    draft = Draft(DraftId(b"d" * 16), b"c" * 16, "note", b"{}", (f, done), 9, key_name="posted:ab")
    assert Draft.decode(draft.draft_id, draft.case_id, 9, draft.encode()) == draft


def test_names_and_media_types() -> None:
    assert media_type_for("scan.PDF") == "application/pdf"
    assert media_type_for("no-extension") == "application/octet-stream"
    for bad in ("../etc/passwd", "a/b", "a\\b", "..", ".", "", "a\x00b"):
        with pytest.raises(UsageError):
            save_name(bad)
    assert save_name("photo 1.jpg") == "photo 1.jpg"


# --------------------------------------------------------------------------- posting and reading


async def test_two_files_across_chunks_and_parts_reach_the_partner_intact(
    net: Network, tmp_path: Path
) -> None:
    alice, juma, case_id = await two_officers(net)
    scan, photo = tmp_path / "scan.pdf", tmp_path / "photo.jpg"
    scan.write_bytes(pattern(700 * KIB + 3))  # 11 chunks, 6 parts of 128 KiB
    photo.write_bytes(pattern(5000, seed=1))
    progress = Progress()
    posted = await alice.post(case_id, "note", NOTE, attachments=[scan, photo], progress=progress)
    assert [c for c in progress.calls if c[0] == "start"] == [
        ("start", ciphertext_size(700 * KIB + 3)),
        ("start", ciphertext_size(5000)),
    ]
    assert progress.sent == ciphertext_size(700 * KIB + 3) + ciphertext_size(5000)

    await juma.sync(case_id)
    listed = await juma.attachments(case_id)
    assert [(a.name, a.media_type, a.size, a.index, a.update_id) for a in listed] == [
        ("scan.pdf", "application/pdf", 700 * KIB + 3, 0, posted.update_id),
        ("photo.jpg", "image/jpeg", 5000, 1, posted.update_id),
    ]
    assert await juma.attachments(case_id, posted.seq) == listed
    out = tmp_path / "juma"
    out.mkdir()
    saved = [await juma.save_attachment(case_id, posted.update_id, i, out) for i in (0, 1)]
    assert [p.name for p in saved] == ["scan.pdf", "photo.jpg"]
    for path, original, info in zip(saved, (scan, photo), listed, strict=True):
        assert path.read_bytes() == original.read_bytes()
        assert hashlib.sha256(path.read_bytes()).digest() == info.sha256
        assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "scan.pdf"]  # no temporary file left
    streamed = b"".join([p async for p in juma.open_attachment(case_id, posted.seq, 1)])
    assert streamed == photo.read_bytes()

    with pytest.raises(UsageError, match="exists"):  # never overwritten without force
        await juma.save_attachment(case_id, posted.update_id, 1, out)
    (out / "photo.jpg").write_bytes(b"old")
    await juma.save_attachment(case_id, posted.update_id, 1, out, force=True)
    assert (out / "photo.jpg").read_bytes() == photo.read_bytes()
    assert await alice.store.drafts() == [] and await alice.store.outbox() == []


async def test_a_stream_is_posted_and_a_wrong_size_refused_before_posting(
    net: Network, tmp_path: Path
) -> None:
    alice, juma, case_id = await two_officers(net)
    body = pattern(300 * KIB, seed=2)

    def chunks(data: bytes) -> Any:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 50_000):
                yield data[i : i + 50_000]

        return gen

    source = AttachmentSource("cctv.bin", "application/octet-stream", len(body), chunks(body))
    posted = await alice.post(case_id, "note", NOTE, attachments=[source])
    await juma.sync(case_id)
    assert b"".join([p async for p in juma.open_attachment(case_id, posted.seq, 0)]) == body

    before = await updates_in_log(alice, case_id)
    for declared in (len(body) + 1, len(body) - 1):
        short = AttachmentSource("cctv.bin", "application/octet-stream", declared, chunks(body))
        with pytest.raises(UsageError, match=r"changed|ended"):
            await alice.post(case_id, "note", NOTE, attachments=[short])
    assert await alice.store.drafts() == []  # a spent stream cannot resume: its post is dropped
    assert await updates_in_log(alice, case_id) == before


async def test_limits_are_refused_locally_with_nothing_sent(net: Network, tmp_path: Path) -> None:
    alice, _, case_id = await two_officers(net)
    files = []
    for i in range(17):
        files.append(tmp_path / f"f{i}.txt")
        files[-1].write_bytes(b"x")
    before = await updates_in_log(alice, case_id)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    unreadable = tmp_path / "secret.txt"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)
    cases: list[tuple[list[Any], str]] = [
        (files, "at most 16"),
        ([tmp_path], "is a directory"),
        ([fifo], "not a regular file"),
        ([tmp_path / "missing.txt"], "no such file"),
    ]
    if os.geteuid() != 0:  # root reads anything
        cases.append(([unreadable], "cannot read"))
    for given, why in cases:
        with pytest.raises(UsageError, match=why):
            await alice.post(case_id, "note", NOTE, attachments=given)
    assert await alice.store.drafts() == []
    assert await updates_in_log(alice, case_id) == before


async def test_a_file_over_the_brokers_maximum_is_refused_and_not_kept(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    (tmp_path / "net").mkdir()
    net = await start_network(aiohttp_server, tmp_path / "net", limits=Limits(attachment_max_bytes=64 * KIB))
    try:
        for agency in PARTNERS:
            await net.agency(*agency)
        alice, _, case_id = await two_officers(net)
        big = tmp_path / "big.bin"
        big.write_bytes(pattern(100 * KIB))
        with pytest.raises(BrokerTooLarge):
            await alice.post(case_id, "note", NOTE, attachments=[big])
        assert await alice.pending_uploads() == []  # refused for good: not journalled for a retry
        await alice.post_note(case_id, "the case goes on")
    finally:
        await net.close()


async def test_a_sender_name_that_leaves_the_directory_is_not_saved_as_is(
    net: Network, tmp_path: Path
) -> None:
    alice, juma, case_id = await two_officers(net)
    evil = tmp_path / "evil"
    evil.write_bytes(b"owned")
    source = AttachmentSource("../../escape.txt", "text/plain", 5, evil)
    posted = await alice.post(case_id, "note", NOTE, attachments=[source])
    await juma.sync(case_id)
    out = tmp_path / "out" / "deep"
    out.mkdir(parents=True)
    with pytest.raises(UsageError, match="not safe"):
        await juma.save_attachment(case_id, posted.seq, 0, out)
    assert list(out.iterdir()) == [] and not (tmp_path / "escape.txt").exists()
    saved = await juma.save_attachment(case_id, posted.seq, 0, out, filename="escape.txt")
    assert saved == out / "escape.txt" and saved.read_bytes() == b"owned"


async def test_a_voided_updates_files_are_not_listed_or_fetched(net: Network, tmp_path: Path) -> None:
    alice, juma, case_id = await two_officers(net)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(pattern(3000))
    kept = await juma.post(case_id, "note", NOTE, attachments=[photo])
    await net.admins["tz-tra"].revoke(juma.keys.device_id, reason="device-lost")
    late = await juma.post(case_id, "note", NOTE, attachments=[photo])  # the broker has not heard yet
    await net.publish("tz-tra")
    await alice.refresh_revocations(force=True)
    events = await alice.sync(case_id)
    assert [e.kind for e in events][-2:] == ["update", "voided"]
    assert [(a.seq, a.name) for a in await alice.attachments(case_id)] == [(kept.seq, "photo.jpg")]
    with pytest.raises(UnknownError):
        await alice.save_attachment(case_id, late.seq, 0, tmp_path)
    with pytest.raises(UnknownError):
        await alice.attachments(case_id, late.update_id)


# --------------------------------------------------------------------------- a hostile broker


@pytest.fixture
async def hostile(aiohttp_server: Any, net: Network) -> AsyncIterator[tuple[HostileBroker, str]]:
    async with aiohttp.ClientSession() as session:
        yield await start_hostile(aiohttp_server, net, session)


async def drain(stream: AsyncIterator[bytes]) -> int:
    return sum([len(p) async for p in stream])


async def fetch_blob(client: Client, case_id: bytes, address: bytes) -> bytes:
    async with client.broker.blob(case_id, address) as body:
        return b"".join([p async for p in body])


@pytest.mark.parametrize("attack", ["swap", "truncate", "extend", "corrupt", "other-case"])
async def test_a_tampered_blob_is_caught_and_never_saved(
    net: Network, hostile: tuple[HostileBroker, str], tmp_path: Path, attack: str
) -> None:
    broker, url = hostile
    alice, juma, case_id = await two_officers(net)
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(pattern(200 * KIB, seed=3))
    second.write_bytes(pattern(200 * KIB, seed=4))
    posted = await alice.post(case_id, "note", NOTE, attachments=[first, second])
    other_case = await alice.create_case(title="Other", members=[("tz-tra", "juma")])
    elsewhere = await alice.post(other_case, "note", NOTE, attachments=[second])
    [mine, twin] = await alice.attachments(case_id, posted.seq)
    [foreign] = await alice.attachments(other_case, elsewhere.seq)
    twin_blob = await fetch_blob(alice, case_id, twin.address)
    foreign_blob = await fetch_blob(alice, other_case, foreign.address)

    def rewrite(cid: bytes, address: bytes, blob: bytes) -> bytes:
        if address != mine.address:
            return blob
        return {
            "swap": twin_blob,
            "truncate": blob[: 65536 + 16],
            "extend": blob + blob[-(65536 + 16) :],
            "corrupt": blob[:1000] + bytes([blob[1000] ^ 1]) + blob[1001:],
            "other-case": foreign_blob,
        }[attack]

    broker.rewrite_blob = rewrite
    await juma.login(server_url=url)
    await juma.sync(case_id)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=posted.update_id.hex()[:16]):
        await juma.save_attachment(case_id, posted.update_id, 0, out)
    assert list(out.iterdir()) == []  # nothing under the final name, no temporary file
    with pytest.raises(IntegrityError):  # the stream raises before it ends
        await drain(juma.open_attachment(case_id, posted.update_id, 0))
    # The untouched file of the same update still comes through.
    assert (await juma.save_attachment(case_id, posted.update_id, 1, out)).read_bytes() == second.read_bytes()


async def test_a_cut_download_goes_on_from_where_it_was_cut(
    net: Network, hostile: tuple[HostileBroker, str], tmp_path: Path
) -> None:
    broker, url = hostile
    alice, juma, case_id = await two_officers(net)
    scan = tmp_path / "scan.tif"
    scan.write_bytes(pattern(400 * KIB, seed=11))
    posted = await alice.post(case_id, "note", NOTE, attachments=[scan])
    await juma.login(server_url=url)
    await juma.sync(case_id)
    broker.cut_blob_after = 150_000
    out = tmp_path / "out"
    out.mkdir()
    saved = await juma.save_attachment(case_id, posted.seq, 0, out)
    assert saved.read_bytes() == scan.read_bytes()
    assert broker.blob_ranges == [None, "bytes=150000-"]  # only the rest was asked for again


@pytest.mark.parametrize("lie", ["size", "sha256"])
async def test_a_member_who_lies_about_a_file_is_caught_by_the_partner(
    net: Network, tmp_path: Path, lie: str
) -> None:
    alice, juma, case_id = await two_officers(net)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(pattern(100 * KIB, seed=5))
    honest = await alice.post(case_id, "note", NOTE, attachments=[photo])
    [info] = await alice.attachments(case_id, honest.seq)
    [ref] = next(e for e in await alice.history(case_id) if e.seq == honest.seq).attachments
    forged = (
        dataclasses.replace(ref, size=ref.size - 1)
        if lie == "size"
        else dataclasses.replace(ref, sha256=hashlib.sha256(b"something else").digest())
    )
    # Alice's own device seals a record naming the real blob with a false size or hash.
    async with alice._posting():
        lied = await alice._seal_and_deliver(
            case_id, "note", json.dumps(NOTE).encode(), [forged], tries=3, key_name=None
        )
    await juma.sync(case_id)
    shown = [e for e in await juma.history(case_id) if e.seq == lied.seq]
    assert shown and shown[0].readable and shown[0].content == NOTE  # the update itself still shows
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=lied.update_id.hex()[:16]):
        await juma.save_attachment(case_id, lied.seq, 0, out)
    assert list(out.iterdir()) == []
    assert info.address == forged.address  # the very blob of the honest update, named falsely


# --------------------------------------------------------------------------- cut and resumed


async def test_an_upload_cut_mid_part_resumes_and_sends_at_most_one_part_again(
    net: Network, tmp_path: Path
) -> None:
    alice, juma, case_id = await two_officers(net)
    scan = tmp_path / "scan.tif"
    scan.write_bytes(pattern(900 * KIB, seed=6))
    length = ciphertext_size(900 * KIB)
    first = Progress(after=3 * PART)
    once = "seizure-report-7"
    task = asyncio.create_task(
        alice.post(case_id, "note", NOTE, attachments=[scan], progress=first, idempotency_key=once)
    )
    await first.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [draft] = await alice._drafts(case_id)
    assert draft.files[0].upload_id is not None and not draft.files[0].complete

    second = Progress()
    [posted] = await alice.flush(case_id, progress=second)
    resumed_from = second.calls[1][1] if second.calls[1][0] == "advance" else 0
    assert isinstance(resumed_from, int) and resumed_from >= 2 * PART  # it resumed, not restarted
    sent_again = first.sent - resumed_from
    assert 0 <= sent_again <= PART
    assert first.sent + (second.sent - resumed_from) <= length + PART
    assert length <= received_by_broker(net) <= length + PART  # the broker's own count agrees
    # The same post asked for again (a script's retry) is the one posted, not a second.
    again = await alice.post(case_id, "note", NOTE, attachments=[scan], idempotency_key=once)
    assert (again.update_id, again.seq) == (posted.update_id, posted.seq)
    await juma.sync(case_id)
    out = tmp_path / "out"
    out.mkdir()
    assert (await juma.save_attachment(case_id, posted.seq, 0, out)).read_bytes() == scan.read_bytes()
    assert await alice.store.drafts() == []


async def test_an_upload_the_broker_no_longer_holds_starts_again_from_its_first_byte(
    net: Network, tmp_path: Path
) -> None:
    alice, juma, case_id = await two_officers(net)
    scan = tmp_path / "scan.tif"
    scan.write_bytes(pattern(500 * KIB, seed=10))
    first = Progress(after=2 * PART)
    task = asyncio.create_task(alice.post(case_id, "note", NOTE, attachments=[scan], progress=first))
    await first.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [draft] = await alice._drafts(case_id)
    upload_id = draft.files[0].upload_id
    assert upload_id is not None
    await alice.broker.delete_upload(case_id, upload_id)  # as its grace period running out would
    again = Progress()
    [posted] = await alice.flush(case_id, progress=again)
    assert again.sent == ciphertext_size(500 * KIB)  # all of it, from byte 0
    await juma.sync(case_id)
    out = tmp_path / "out"
    out.mkdir()
    assert (await juma.save_attachment(case_id, posted.seq, 0, out)).read_bytes() == scan.read_bytes()


async def test_a_file_cut_short_while_it_is_sent_is_refused(net: Network, tmp_path: Path) -> None:
    alice, _, case_id = await two_officers(net)
    scan = tmp_path / "scan.tif"
    scan.write_bytes(pattern(3 * 1024 * KIB, seed=12))  # more than one read of 1 MiB
    before = await updates_in_log(alice, case_id)

    class Truncating(Progress):
        def advance(self, n: int) -> None:
            super().advance(n)
            os.truncate(scan, 100 * KIB)  # another program rewrites the file under the upload

    with pytest.raises(UsageError, match=r"ended before|changed while") as refused:
        await alice.post(case_id, "note", NOTE, attachments=[scan], progress=Truncating())
    assert "drop_pending" in str(refused.value)
    assert await updates_in_log(alice, case_id) == before
    [pending] = await alice.pending_uploads(case_id)
    assert await alice.drop_pending(pending.pending_id)


CHILD = r"""
import asyncio, json, signal, sys
from pathlib import Path
from caseline.client.client import Client

class Cut:
    sent = 0
    def start(self, name, total): pass
    def advance(self, n):
        self.sent += n
        if self.sent >= int(sys.argv[6]):
            print(self.sent - n, flush=True)  # bytes handed to the socket before the cut
            signal.pause()  # hold the loop here until the test's SIGKILL
    def done(self): pass

async def main():
    profile, passphrase, case, path, part = sys.argv[1:6]
    client = await Client.open(Path(profile), passphrase=passphrase)
    client.upload_part_size = int(part)
    note = json.loads(sys.argv[7])
    await client.post(bytes.fromhex(case), "note", note, attachments=[path], progress=Cut())

asyncio.run(main())
"""


async def test_kill_9_mid_upload_resumes_in_another_process(net: Network, tmp_path: Path) -> None:
    alice, juma, case_id = await two_officers(net)
    scan = tmp_path / "scan.tif"
    scan.write_bytes(pattern(1000 * KIB, seed=7))
    cut_at = 4 * PART + 1
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(alice.directory), PASSPHRASE, case_id.hex(), str(scan),
        str(PART), str(cut_at), json.dumps(NOTE),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    handed = int(await child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert handed >= 4 * PART

    progress = Progress()
    [posted] = await alice.flush(case_id, progress=progress)  # this process resumes the journalled post
    resumed_from = progress.calls[1][1]
    assert isinstance(resumed_from, int) and handed - PART <= resumed_from <= handed
    # Over both processes the broker stored the blob once, plus at most the part that was cut.
    assert ciphertext_size(1000 * KIB) <= received_by_broker(net) <= ciphertext_size(1000 * KIB) + PART
    await juma.sync(case_id)
    out = tmp_path / "out"
    out.mkdir()
    assert (await juma.save_attachment(case_id, posted.seq, 0, out)).read_bytes() == scan.read_bytes()


@pytest.mark.parametrize("change", ["size", "same-size-and-time"])
async def test_a_file_changed_between_cut_and_resume_is_refused(
    net: Network, tmp_path: Path, change: str
) -> None:
    alice, _, case_id = await two_officers(net)
    scan = tmp_path / "scan.tif"
    scan.write_bytes(pattern(600 * KIB, seed=8))
    before = await updates_in_log(alice, case_id)
    first = Progress(after=2 * PART)
    task = asyncio.create_task(alice.post(case_id, "note", NOTE, attachments=[scan], progress=first))
    await first.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    st = scan.stat()
    if change == "size":
        scan.write_bytes(pattern(600 * KIB + 1, seed=9))
        expected: type[Exception] = UsageError
    else:  # other bytes, same size, the modification time put back: only the address tells
        scan.write_bytes(pattern(600 * KIB, seed=9))
        os.utime(scan, ns=(st.st_atime_ns, st.st_mtime_ns))
        expected = IntegrityError
    with pytest.raises(expected, match="drop_pending"):
        await alice.flush(case_id)
    with pytest.raises(expected):  # the next post stops on it too, before sealing anything
        await alice.post_note(case_id, "later")
    assert await updates_in_log(alice, case_id) == before
    [pending] = await alice.pending_uploads(case_id)
    assert pending.files == (("scan.tif", 600 * KIB, False),)
    assert await alice.drop_pending(pending.pending_id)
    assert await alice.pending_uploads() == []
    await alice.post_note(case_id, "later")
    assert await updates_in_log(alice, case_id) == before + 1
    assert await alice.attachments(case_id) == []
