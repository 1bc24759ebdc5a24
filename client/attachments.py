"""Files on updates, the I/O side: uploading, resuming, listing, opening and saving attachments.

A mixin of ``Client``.  The decisions are client/uploads.py's and the
cryptography is crypto/attachments.py's; this module reads and writes files
(in a thread, about 1 MiB at a time, so memory stays flat whatever the size)
and talks to the broker's upload and blob routes (PROTOCOL.md §9).

For a web app
-------------
Everything here is the same API the CLI uses: pass ``progress`` (any object
with ``start``/``advance``/``done``, ``uploads.ProgressSink``) to ``post`` and
``save_attachment`` to drive a progress UI; pass an ``AttachmentSource`` whose
``open`` returns an async iterator to post bytes that are not in a file (an
HTTP request body, say — not resumable after a crash); read a file with
``open_attachment`` and act on its bytes only once the iterator has ended
without raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from caseline.client import uploads
from caseline.client.store import LocalStore
from caseline.client.uploads import (
    PART_SIZE,
    READ_SIZE,
    AttachmentInfo,
    AttachmentSource,
    CipherStream,
    Draft,
    DraftId,
    PendingUpload,
    PlannedFile,
    ProgressSink,
    UploadId,
)
from caseline.crypto import primitives as P
from caseline.crypto.attachments import Opener, Sealer
from caseline.schemas.errors import (
    BrokerNotFound,
    BrokerRefusal,
    BrokerUnauthorized,
    BrokerUnavailable,
    CaselineError,
    IntegrityError,
    InvalidValueError,
    MalformedError,
    NotAllowedError,
    UnknownError,
    UsageError,
)
from caseline.schemas.wire import AttachmentRef

if TYPE_CHECKING:
    from caseline.client.core import CaseEvent
    from caseline.client.keystore import DeviceSecrets
    from caseline.client.transport import BrokerConnection

log = logging.getLogger("caseline.client")

#: What a path, or a source, may be when given to ``post``.
Attachable = str | os.PathLike[str] | AttachmentSource
#: The names an upload's state may take once the broker no longer has it.
GONE_STATUSES: Final = (404, 410)
#: Times a cut download goes on from where it was cut before giving up.
DOWNLOAD_TRIES: Final = 5
_NAME_KIND = next(f.metadata["wire"] for f in dataclasses.fields(AttachmentRef) if f.name == "name")


class _NoProgress:
    def start(self, name: str, total_bytes: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


def _check_name(name: str) -> str:
    try:
        return str(_NAME_KIND.check(name, "file name"))
    except MalformedError:
        raise UsageError(
            f"{name!r} cannot be an attachment's name (1 to 255 characters, no control characters)"
        ) from None


def _stat_file(path: Path) -> os.stat_result:
    """The file as it is now: a regular file this process can read, or a usage error."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory: attach the files in it one by one")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is not a regular file (a pipe, socket or device cannot be attached)")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    return st


def plan_files(
    attachments: Sequence[Attachable], rng: Callable[[int], bytes]
) -> list[tuple[PlannedFile, AttachmentSource | None]]:
    """Check every file before anything is sent, and give each a fresh key.

    Refused as the caller's mistake: more than 16 files, a directory, a pipe
    or device, a missing or unreadable file, a name or media type the
    protocol cannot carry.  A stream's source is kept beside its plan (it
    cannot be re-opened from the journal).
    """
    uploads.check_count(len(attachments))
    out: list[tuple[PlannedFile, AttachmentSource | None]] = []
    for item in attachments:
        source: AttachmentSource | None = None
        if isinstance(item, AttachmentSource):
            name, media_type = _check_name(item.name), uploads.check_media_type(item.media_type)
            if isinstance(item.open, Path):
                path: Path | None = item.open
            else:
                if item.size < 0:
                    raise UsageError(f"{name!r}: a stream's size cannot be negative")
                path, source = None, item
        else:
            path = Path(os.fspath(item))
            name = _check_name(path.name)
            media_type = uploads.media_type_for(name)
        if path is None:
            size, mtime, where = item.size if isinstance(item, AttachmentSource) else 0, 0, None
        else:
            st = _stat_file(path)
            if isinstance(item, AttachmentSource) and item.size != st.st_size:
                raise UsageError(f"{path} has {st.st_size} bytes, not the {item.size} declared")
            size, mtime, where = st.st_size, st.st_mtime_ns, str(path.resolve())
        try:
            planned = PlannedFile(
                path=where,
                size=size,
                mtime_ns=mtime,
                name=name,
                media_type=media_type,
                key=uploads.new_key(rng),
            )
            planned.length  # noqa: B018 - refuses a size beyond what an update can carry
        except InvalidValueError as exc:
            raise UsageError(f"{name!r}: {exc}") from None
        out.append((planned, source))
    return out


class Attachments:
    """``Client``'s attachment methods (a mixin: ``Client`` supplies the rest)."""

    #: Bytes per PATCH: at most ``PART_SIZE``; a smaller value re-sends less after a cut.
    upload_part_size: int = PART_SIZE

    if TYPE_CHECKING:
        store: LocalStore
        clock: Callable[[], int]
        _secrets: DeviceSecrets

        @property
        def broker(self) -> BrokerConnection: ...
        async def history(self, case_id: bytes) -> list[CaseEvent]: ...

    # ---------------------------------------------------------------- the journal
    def _draft_aad(self, draft_id: bytes, case_id: bytes) -> bytes:
        return P.label("outbox draft") + P.lp(draft_id) + P.lp(case_id)

    async def _journal(self, draft: Draft) -> None:
        nonce = secrets.token_bytes(P.AEAD_NONCE_SIZE)
        sealed = nonce + P.xchacha_seal(
            self._secrets.local_key, nonce, draft.encode(), self._draft_aad(draft.draft_id, draft.case_id)
        )
        await self.store.put_draft(draft.draft_id, draft.case_id, sealed, draft.created_at)

    async def _drafts(self, case_id: bytes | None = None) -> list[Draft]:
        out = []
        for draft_id, cid, sealed, created_at in await self.store.drafts(case_id):
            aad = self._draft_aad(draft_id, cid)
            nonce, body = sealed[: P.AEAD_NONCE_SIZE], sealed[P.AEAD_NONCE_SIZE :]
            plain = P.xchacha_open(self._secrets.local_key, nonce, body, aad)
            out.append(Draft.decode(DraftId(draft_id), cid, created_at, plain))
        return out

    async def _new_draft(
        self,
        case_id: bytes,
        content_type: str,
        content: bytes,
        files: Sequence[PlannedFile],
        key_name: str | None = None,
    ) -> Draft:
        draft = Draft(
            draft_id=DraftId(secrets.token_bytes(16)),
            case_id=case_id,
            content_type=content_type,
            content=content,
            files=tuple(files),
            created_at=self.clock(),
            key_name=key_name,
        )
        await self._journal(draft)  # before the first byte is sent
        return draft

    async def pending_uploads(self, case_id: bytes | None = None) -> list[PendingUpload]:
        """Posts with files this device journalled and has not posted yet, oldest first.

        The next ``post`` or ``flush`` finishes them; one that cannot be
        finished (its file changed) stays here until ``drop_pending``.
        """
        return [
            PendingUpload(
                pending_id=d.draft_id,
                case_id=d.case_id,
                content_type=d.content_type,
                created_at=d.created_at,
                files=tuple((f.name, f.size, f.complete) for f in d.files),
            )
            for d in await self._drafts(case_id)
        ]

    async def drop_pending(self, pending_id: bytes) -> bool:
        """Forget a post this device journalled but did not finish: a draft with files, or an
        outbox update.  Its uploads in progress are abandoned at the broker (best effort).

        The way out after a post with files was stopped (a file changed since
        it was attached, a stream that cannot be re-read); the error names the
        id.  True if there was such a post.
        """
        for draft in await self._drafts():
            if draft.draft_id == pending_id:
                for f in draft.files:
                    if f.upload_id is not None and not f.complete:
                        with contextlib.suppress(CaselineError):
                            await self.broker.delete_upload(draft.case_id, f.upload_id)
                return await self.store.drop_draft(draft.draft_id)
        if any(p.update_id == pending_id for p in await self.store.outbox()):
            await self.store.drop_pending(pending_id)
            return True
        return False

    # ---------------------------------------------------------------- uploading
    async def _upload_draft(
        self,
        draft: Draft,
        *,
        sources: Sequence[AttachmentSource | None] = (),
        progress: ProgressSink | None = None,
        tries: int = 5,
    ) -> Draft:
        """Upload every file of ``draft`` not yet complete; the draft with every blob checked.

        A post the broker refuses for good (too large, over quota, no longer
        a member) is dropped, as the outbox drops a refused update: sending
        it again would meet the same answer.  So is a post with a stream that
        fails in this run: the stream is spent, the journal could never
        finish it.  A cut keeps it journalled for the next run.
        """
        for index, planned in enumerate(draft.files):
            if planned.complete:
                continue
            source = sources[index] if index < len(sources) else None
            if planned.path is None and source is None:
                raise UsageError(
                    f"the post with {planned.name!r} was cut while its bytes came from a stream, which"
                    f" cannot be read again: drop it (Client.drop_pending({draft.draft_id.hex()!r}))"
                    " and post it anew"
                )
            try:
                done = await self._upload_file(draft, index, source, progress or _NoProgress(), tries)
            except Exception as exc:
                if any(s is not None for s in sources) or (
                    isinstance(exc, BrokerRefusal) and not _resumable(exc)
                ):
                    await self.drop_pending(draft.draft_id)
                raise
            draft = draft.with_file(index, done)
            if not all(f.complete for f in draft.files):
                # The last file needs no entry of its own: the caller seals the update and
                # turns the draft into an outbox row in one transaction next, and a crash in
                # between finds that blob complete at the broker and re-reads only the file.
                await self._journal(draft)
        return draft

    async def _upload_file(
        self, draft: Draft, index: int, source: AttachmentSource | None, progress: ProgressSink, tries: int
    ) -> PlannedFile:
        """One file to a complete, checked blob, resuming from the broker's offset after a cut.

        A cut (no answer, a dropped connection, an offset the broker does not
        hold) is retried up to ``tries`` times from the broker's offset; a
        stream is not (it cannot be re-read).  A refusal (quota, size,
        membership) is raised at once.
        """
        # The upload id learnt in one attempt is the one the next attempt resumes.
        latest = [draft.files[index]]
        for attempt in range(1, tries + 1):
            try:
                done = await self._upload_once(draft, index, latest, source, progress)
                progress.done()
                return done
            except BrokerRefusal as exc:
                if not _resumable(exc) or source is not None or attempt == tries:
                    raise
                log.info("an upload was cut (%s); resuming from the broker's offset", exc.code)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _upload_once(
        self,
        draft: Draft,
        index: int,
        latest: list[PlannedFile],
        source: AttachmentSource | None,
        progress: ProgressSink,
    ) -> PlannedFile:
        planned = latest[0]
        case_id, length = draft.case_id, planned.length
        state = None
        if planned.upload_id is not None:
            try:
                state = await self.broker.upload_state(case_id, planned.upload_id, length)
            except BrokerRefusal as exc:
                if exc.status not in GONE_STATUSES and not isinstance(exc, BrokerNotFound):
                    raise
                log.info("an upload expired at the broker; starting it again from its first byte")
        if state is None:
            state = await self.broker.create_upload(case_id, length)
            planned = latest[0] = dataclasses.replace(planned, upload_id=UploadId(state.upload_id))
            await self._journal(draft.with_file(index, planned))  # the next run resumes this upload
        upload_id = UploadId(state.upload_id)
        offset = uploads.resume_from(state.offset, length)
        if planned.path is not None:
            self._check_unchanged(planned, draft)
        sealer = Sealer(planned.size, key=planned.key)
        cipher = CipherStream(sealer, skip=offset)
        reader = self._plaintext(planned, source)
        progress.start(planned.name, length)
        if offset:
            progress.advance(offset)  # what the broker already holds, from an earlier run
        failed: list[BaseException] = []  # what stopped a body: aiohttp reports only a cut
        try:
            for size in uploads.part_sizes(offset, length, min(self.upload_part_size, PART_SIZE)):
                body = self._part(cipher, reader, size, progress=progress, planned=planned, failed=failed)
                try:
                    state = await self.broker.patch_upload(
                        case_id, upload_id, offset=offset, size=size, body=body, length=length
                    )
                except BrokerRefusal:
                    if failed:
                        raise failed[0] from None
                    raise
                offset += size
                if state.offset != offset:
                    raise MalformedError(f"the broker holds {state.offset} bytes of the upload, not {offset}")
            while not cipher.finished:  # complete before this run: rebuild the hashes only
                await self._refill(cipher, reader, planned)
                cipher.take(cipher.ready)
        except UsageError as exc:
            if planned.path is None:
                raise  # a stream's post is dropped by the caller
            raise UsageError(f"{exc} (drop it: Client.drop_pending({draft.draft_id.hex()!r}))") from None
        finally:
            await reader.aclose()
        if not state.address or not P.constant_time_equal(state.address, sealer.address):
            raise IntegrityError(
                f"the broker's blob for {planned.name!r} is not what this device encrypted (its address"
                " differs): the file changed since its upload began, or the broker altered it; nothing"
                f" was posted (drop it: Client.drop_pending({draft.draft_id.hex()!r}))"
            )
        return dataclasses.replace(planned, upload_id=upload_id, sha256=sealer.sha256, address=sealer.address)

    @staticmethod
    def _check_unchanged(planned: PlannedFile, draft: Draft) -> None:
        assert planned.path is not None  # noqa: S101 - the caller checked  # nosec B101
        try:
            st = Path(planned.path).stat()
            same = (st.st_size, st.st_mtime_ns) == (planned.size, planned.mtime_ns)
        except OSError:
            same = False
        if not same:
            raise UsageError(
                f"{planned.name!r} changed (or went) since it was attached, so the journalled post"
                f" cannot be finished: drop it (Client.drop_pending({draft.draft_id.hex()!r})) and post"
                " it anew"
            )

    async def _plaintext(
        self, planned: PlannedFile, source: AttachmentSource | None
    ) -> AsyncGenerator[bytes, None]:
        """The file's bytes from its first, ~1 MiB at a time, read in a thread."""
        if planned.path is None:
            if source is None or isinstance(source.open, Path):
                raise UsageError(f"{planned.name!r} has no source to read")
            async for piece in source.open():
                yield bytes(piece)
            return
        try:
            f = await asyncio.to_thread(Path(planned.path).open, "rb")
        except OSError as exc:
            raise UsageError(f"{planned.name!r} cannot be read any more ({exc.strerror})") from None
        try:
            while True:
                try:
                    piece = await asyncio.to_thread(f.read, READ_SIZE)
                except OSError as exc:
                    raise UsageError(f"{planned.name!r} could not be read ({exc.strerror})") from None
                if not piece:
                    break
                yield piece
        finally:
            await asyncio.to_thread(f.close)

    async def _refill(self, cipher: CipherStream, reader: AsyncIterator[bytes], planned: PlannedFile) -> None:
        """Encrypt the next piece of the file (or finish it); a size that changed is refused."""
        try:
            piece = await anext(reader, None)
            if piece is None:
                cipher.finish()
            else:
                # ~1 MiB of encryption and hashing off the event loop: the socket drains meanwhile.
                await asyncio.to_thread(cipher.feed, piece)
        except InvalidValueError as exc:  # the Sealer: more or fewer bytes than attached
            raise UsageError(
                f"{planned.name!r} changed while it was sent ({exc}); nothing was posted"
            ) from None

    async def _part(
        self,
        cipher: CipherStream,
        reader: AsyncIterator[bytes],
        size: int,
        *,
        progress: ProgressSink,
        planned: PlannedFile,
        failed: list[BaseException],
    ) -> AsyncIterator[bytes]:
        """Exactly ``size`` bytes of ciphertext for one PATCH body, produced as it is sent.

        The next piece is read and encrypted in a thread while this one goes to the socket
        (both release the GIL), so sending and encryption overlap.  ``cipher`` is touched
        by one of them at a time: a piece is taken before the next refill starts, and the
        refill is awaited before the cipher is looked at again.
        """
        sent = 0
        ahead: asyncio.Future[None] | None = None
        try:
            while sent < size:
                if ahead is not None:
                    await ahead
                    ahead = None
                while not cipher.ready or cipher.skipping:
                    if cipher.finished:
                        raise UsageError(
                            f"{planned.name!r} ended before its declared size; nothing was posted"
                        )
                    await self._refill(cipher, reader, planned)
                piece = cipher.take(min(cipher.ready, size - sent, READ_SIZE))
                sent += len(piece)
                if sent < size and not cipher.finished and cipher.ready < READ_SIZE:
                    ahead = asyncio.ensure_future(self._refill(cipher, reader, planned))
                progress.advance(len(piece))
                yield piece
        except CaselineError as exc:
            failed.append(exc)
            raise
        finally:
            if ahead is not None:  # a body cut mid-way: let the refill finish before the reader closes
                with contextlib.suppress(BaseException):
                    await asyncio.shield(ahead)

    # ---------------------------------------------------------------- reading
    async def _attachment_event(self, case_id: bytes, update: bytes | int) -> CaseEvent:
        for event in await self.history(case_id):
            if event.kind != "update" or not event.readable:
                continue  # voided, unreadable: never listed, never fetched
            if (isinstance(update, int) and event.seq == update) or (
                isinstance(update, bytes) and event.update_id == update
            ):
                if event.violation is not None:
                    author = event.author.name if event.author else "its author"
                    raise NotAllowedError(
                        f"update #{event.seq} by {author} is a marking violation ({event.violation.rule}):"
                        f" {event.violation.message}; its files are not opened"
                    )
                return event
        raise UnknownError("no update of this case that this device can read has that id")

    async def attachments(self, case_id: bytes, update: bytes | int | None = None) -> list[AttachmentInfo]:
        """The files of the verified updates this device holds (one update's: its id or seq).

        From the signed records only: a voided update's files are never listed.
        """
        if update is None:  # a marking violation's files are not valid content: not listed
            events = [
                e
                for e in await self.history(case_id)
                if e.kind == "update" and e.readable and e.violation is None
            ]
        else:
            events = [await self._attachment_event(case_id, update)]
        return [
            AttachmentInfo.of(e.update_id or b"", e.seq, i, a)
            for e in events
            for i, a in enumerate(e.attachments)
        ]

    async def _ref(self, case_id: bytes, update: bytes | int, index: int) -> tuple[CaseEvent, AttachmentRef]:
        event = await self._attachment_event(case_id, update)
        if not 0 <= index < len(event.attachments):
            raise UnknownError(
                f"update {event.seq} has {len(event.attachments)} attachment(s); no number {index}"
            )
        return event, event.attachments[index]

    async def open_attachment(self, case_id: bytes, update: bytes | int, index: int) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive and authenticate, chunk by chunk; memory stays flat.

        Each piece passed its chunk's check, but only the iterator ending
        without raising proves the file whole (its length, its last chunk, its
        SHA-256 and blob address as the signed update declares): do not act on
        the bytes before that.  Anything wrong raises ``IntegrityError``
        naming the update.
        """
        event, ref = await self._ref(case_id, update, index)
        async for piece in self._opened(case_id, event, index, ref):
            yield piece

    async def _opened(
        self, case_id: bytes, event: CaseEvent, index: int, ref: AttachmentRef
    ) -> AsyncIterator[bytes]:
        opener = Opener(ref)
        received = 0
        try:
            for attempt in range(1, DOWNLOAD_TRIES + 1):
                try:
                    # A cut download goes on with ``Range`` from the bytes already opened:
                    # the Opener's state is the hash of everything before, nothing is re-read.
                    async with self.broker.blob(case_id, ref.address, start=received) as body:
                        async for piece in body:
                            received += len(piece)
                            plain = opener.feed(piece)
                            if plain:
                                yield plain
                    break
                except BrokerUnavailable:
                    if attempt == DOWNLOAD_TRIES:
                        raise
                    log.info("a download was cut; going on from byte %d", received)
            last = opener.finish()
        except IntegrityError as exc:
            uid = (event.update_id or b"").hex()[:16]
            raise IntegrityError(
                f"attachment {index} ({ref.name!r}) of update {uid}… (entry {event.seq}) failed"
                f" verification: {exc}"
            ) from None
        if last:
            yield last

    async def fetch_attachment_into(
        self,
        case_id: bytes,
        update: bytes | int,
        index: int,
        fileobj: IO[bytes],
        *,
        progress: ProgressSink | None = None,
    ) -> AttachmentInfo:
        """Write one attachment's verified bytes into ``fileobj``; its description once all checked.

        On ``IntegrityError`` (or any other error) what was written is not the
        file: the caller discards it.  ``save_attachment`` and evidence export
        are built on this.
        """
        event, ref = await self._ref(case_id, update, index)
        sink = progress or _NoProgress()
        sink.start(ref.name, ref.size)
        async for piece in self._opened(case_id, event, index, ref):
            await asyncio.to_thread(fileobj.write, piece)
            sink.advance(len(piece))
        sink.done()
        return AttachmentInfo.of(event.update_id or b"", event.seq, index, ref)

    async def save_attachment(
        self,
        case_id: bytes,
        update: bytes | int,
        index: int,
        directory: str | os.PathLike[str],
        *,
        filename: str | None = None,
        force: bool = False,
        progress: ProgressSink | None = None,
    ) -> Path:
        """Download, verify and save one attachment in ``directory``; the path it was saved as.

        The bytes go to a temporary file (``.NAME.part-XXXX``, owner-only) in
        that directory, are verified whole and fsync'd, and only then take the
        final name — so a failed or tampered download leaves nothing under it,
        and its temporary file is removed.  An existing file is never
        overwritten without ``force`` (checked again atomically at the end).
        ``filename`` is the name to save under, already sanitised by the
        caller; without it the sender's name is used if it has no path
        separator, NUL, and is not ``.`` or ``..``.
        """
        _, ref = await self._ref(case_id, update, index)
        name = uploads.save_name(filename if filename is not None else ref.name)
        target_dir = Path(os.fspath(directory))
        if not target_dir.is_dir():
            raise UsageError(f"{target_dir} is not a directory")
        final = target_dir / name
        if not force and (final.exists() or final.is_symlink()):
            raise UsageError(f"{final} exists: give another directory or name, or force overwriting it")
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name[:100]}.part-", dir=target_dir)
        except OSError as exc:
            raise UsageError(f"cannot write in {target_dir} ({exc.strerror})") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                await self.fetch_attachment_into(case_id, update, index, f, progress=progress)
                await asyncio.to_thread(f.flush)
                await asyncio.to_thread(os.fsync, f.fileno())
            if force:
                os.replace(tmp, final)
            else:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise UsageError(
                        f"{final} exists: give another directory or name, or force overwriting it"
                    ) from None
                tmp.unlink()
            _fsync_dir(target_dir)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise UsageError(f"cannot save {final} ({exc.strerror})") from None
            raise
        return final


def _resumable(exc: BrokerRefusal) -> bool:
    """A cut or a passing refusal (overload, an expired session, an offset moved): go on later."""
    return exc.transient or isinstance(exc, BrokerUnauthorized) or exc.status == 409


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
