"""Posting files: what the caller hands over, the journal that survives a crash, the part arithmetic.

Sans-I/O.  ``Client.post(..., attachments=...)`` (client/attachments.py) is
the shell: it stats and reads files, talks to the broker and keeps the journal
in the profile's database; everything it decides — what a draft holds, where
a resumed upload starts, how a blob is cut into parts, which name is safe to
save under — is here, so a web app driving uploads decides the same way.

Why a journal ("draft") and not the outbox row alone
----------------------------------------------------
An outbox row holds an update's final sealed bytes, and those name each
blob's address, which is known only once the whole file was encrypted.  So a
post with files is journalled first as a draft — its content, and per file
the path, size, modification time, name, media type, the file's key and the
upload id — sealed under the device's local key like everything else in the
outbox, never a key or a name in clear on disk.  The uploads run from the
draft; once every blob is complete and its address checked, the update is
sealed and the draft becomes an outbox row in one transaction, and the usual
exactly-once path posts it.

Resuming
--------
Encryption is deterministic under the journalled key, so a resumed upload
re-reads and re-encrypts the file from its start, throws away the ciphertext
up to the broker's offset (which rebuilds the running hashes) and sends only
from there.  The broker keeps whatever it fsync'd, so at most the one part
that was in flight is sent again.  A file whose size or modification time
changed since it was journalled is refused, and so is one whose ciphertext no
longer has the address the broker computed: the update is never posted with
a wrong reference.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final, NewType, Protocol

from caseline.crypto.attachments import KEY_SIZE, Sealer, ciphertext_size
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import MalformedError, UsageError
from caseline.schemas.wire import MAX_ATTACHMENTS, MEDIA_TYPE, AttachmentRef

#: The broker's id for one upload in progress (16 bytes).
UploadId = NewType("UploadId", bytes)
#: The local journal's id for one post with files.
DraftId = NewType("DraftId", bytes)

#: The most bytes one PATCH carries (the broker's own maximum is 64 MiB by default).
PART_SIZE: Final = 16 * 1024 * 1024
#: How much of a file is read (and encrypted) at a time: memory stays near this.
READ_SIZE: Final = 1024 * 1024
#: The media type of a file whose name says nothing.
OCTET_STREAM: Final = "application/octet-stream"
DRAFT_VERSION: Final = 1


class ProgressSink(Protocol):
    """Told how a transfer goes, file by file: a CLI draws bars, a web app pushes events.

    ``start`` opens one file's transfer (its name as the update carries it and
    the bytes to move: the ciphertext size for an upload, the plaintext size
    for a download), ``advance`` reports bytes moved since the last call, and
    ``done`` closes it.  A resumed upload starts at the broker's offset, so
    its first ``advance`` may be large.  Calls come on the event loop and must
    not block.
    """

    def start(self, name: str, total_bytes: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def done(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class AttachmentSource:
    """A file to attach that is not a path, or a path under another name or media type.

    ``open`` is either a path, or a function returning a fresh async iterator
    of the file's bytes (any piece sizes).  ``size`` is needed before the
    first byte (it fixes the padding and the blob's length); a stream that
    yields more or fewer bytes is refused before anything is posted.

    A stream cannot be read again: an upload from one that is interrupted by
    a kill or a crash does not resume (the journalled post must be dropped
    with ``Client.drop_pending``); one from a path resumes like a path.
    """

    name: str
    media_type: str
    size: int
    open: Callable[[], AsyncIterator[bytes]] | Path


@dataclasses.dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """One file of a verified update, as ``Client.attachments`` lists it (no key)."""

    update_id: bytes
    seq: int
    index: int
    name: str
    media_type: str
    size: int
    sha256: bytes
    address: bytes

    @classmethod
    def of(cls, update_id: bytes, seq: int, index: int, ref: AttachmentRef) -> AttachmentInfo:
        return cls(
            update_id=update_id,
            seq=seq,
            index=index,
            name=ref.name,
            media_type=ref.media_type,
            size=ref.size,
            sha256=ref.sha256,
            address=ref.address,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class PendingUpload:
    """A post with files journalled on this device and not yet posted (``Client.pending_uploads``).

    ``pending_id`` is what ``Client.drop_pending`` takes; ``files`` gives each
    file's name, size and whether its blob is complete at the broker.
    """

    pending_id: bytes
    case_id: bytes
    content_type: str
    created_at: int
    files: tuple[tuple[str, int, bool], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of a draft: where it comes from, its key, and how far its upload got.

    ``path`` is None for a stream.  ``upload_id`` is set once the broker
    created the upload; ``sha256`` and ``address`` once the whole blob is
    stored and its address checked — then the file is never read again.
    """

    path: str | None
    size: int
    mtime_ns: int
    name: str
    media_type: str
    key: bytes
    upload_id: UploadId | None = None
    sha256: bytes | None = None
    address: bytes | None = None

    @property
    def length(self) -> int:
        """The blob's length: what the broker stores."""
        return ciphertext_size(self.size)

    @property
    def complete(self) -> bool:
        return self.address is not None

    def ref(self) -> AttachmentRef:
        if self.sha256 is None or self.address is None:
            raise UsageError(f"{self.name!r} is not uploaded yet")
        return AttachmentRef(
            name=self.name,
            media_type=self.media_type,
            size=self.size,
            sha256=self.sha256,
            address=self.address,
            key=self.key,
        )

    def _row(self) -> list[object]:
        return [
            self.path,
            self.size,
            self.mtime_ns,
            self.name,
            self.media_type,
            self.key,
            self.upload_id,
            self.sha256,
            self.address,
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class Draft:
    """A post with files, journalled before its first byte is sent (see the module's text)."""

    draft_id: DraftId
    case_id: bytes
    content_type: str
    content: bytes
    files: tuple[PlannedFile, ...]
    created_at: int
    #: Where the post's idempotency key records its update once sealed (``Client.post``).
    key_name: str | None = None

    def encode(self) -> bytes:
        """The plaintext the shell seals under the local key (it holds keys and names)."""
        rows = [f._row() for f in self.files]
        return pack([DRAFT_VERSION, self.content_type, self.content, rows, self.key_name])

    @classmethod
    def decode(cls, draft_id: DraftId, case_id: bytes, created_at: int, data: bytes) -> Draft:
        try:
            version, content_type, content, rows, key_name = unpack(data, max_size=len(data))
            if version != DRAFT_VERSION:
                raise ValueError(f"draft format {version}")
            files = tuple(
                PlannedFile(
                    path=None if r[0] is None else str(r[0]),
                    size=int(r[1]),
                    mtime_ns=int(r[2]),
                    name=str(r[3]),
                    media_type=str(r[4]),
                    key=bytes(r[5]),
                    upload_id=None if r[6] is None else UploadId(bytes(r[6])),
                    sha256=None if r[7] is None else bytes(r[7]),
                    address=None if r[8] is None else bytes(r[8]),
                )
                for r in rows
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise MalformedError("a journalled post with files does not decode") from exc
        key = None if key_name is None else str(key_name)
        return cls(draft_id, case_id, str(content_type), bytes(content), files, created_at, key)

    def with_file(self, index: int, planned: PlannedFile) -> Draft:
        files = list(self.files)
        files[index] = planned
        return dataclasses.replace(self, files=tuple(files))

    @property
    def refs(self) -> tuple[AttachmentRef, ...]:
        return tuple(f.ref() for f in self.files)

    def same_post(self, content_type: str, content: bytes, names: list[tuple[str, int]]) -> bool:
        """Whether a new ``post`` call is this draft's retry (same content, same files by name and size)."""
        return (self.content_type, self.content) == (content_type, content) and names == [
            (f.name, f.size) for f in self.files
        ]


def media_type_for(name: str) -> str:
    """The media type a file's name suggests, else ``application/octet-stream``."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed is None:
        return OCTET_STREAM
    guessed = guessed.lower()
    try:
        MEDIA_TYPE.check(guessed, "media type")
    except MalformedError:
        return OCTET_STREAM
    return guessed


def check_count(n: int) -> None:
    if n > MAX_ATTACHMENTS:
        raise UsageError(f"an update carries at most {MAX_ATTACHMENTS} files, not {n}")


def check_media_type(media_type: str) -> str:
    try:
        return str(MEDIA_TYPE.check(media_type, "media type"))
    except MalformedError as exc:
        raise UsageError(f"{media_type!r} is not a media type (type/subtype, lowercase): {exc}") from None


def new_key(rng: Callable[[int], bytes]) -> bytes:
    """A fresh file key (the caller passes ``secrets.token_bytes``)."""
    return rng(KEY_SIZE)


def resume_from(offset: int, length: int) -> int:
    """Where a resumed upload starts: the broker's offset, checked against the blob's length."""
    if not 0 <= offset <= length:
        raise MalformedError(f"the broker says {offset} bytes of a {length}-byte upload are stored")
    return offset


def part_sizes(offset: int, length: int, part_size: int) -> list[int]:
    """The PATCH bodies that take an upload from ``offset`` to ``length``, each ≤ ``part_size``.

    An empty list when nothing is left (a blob is never empty, so an upload
    always has at least one part the first time).
    """
    if part_size <= 0:
        raise UsageError("an upload part holds at least one byte")
    sizes = []
    while offset < length:
        n = min(part_size, length - offset)
        sizes.append(n)
        offset += n
    return sizes


class CipherStream:
    """A file's ciphertext cut into the exact slices PATCH bodies need, from any offset.

    The shell feeds plaintext as it reads it and takes ciphertext; the first
    ``skip`` bytes of ciphertext (what the broker already holds) are dropped
    as they are produced, which rebuilds the Sealer's hashes without
    sending them.  At most one read's worth of ciphertext is buffered.
    """

    def __init__(self, sealer: Sealer, *, skip: int = 0) -> None:
        self.sealer = sealer
        self._skip = skip
        self._buffer = bytearray()
        self.finished = False

    def _keep(self, data: bytes) -> None:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buffer += data

    def feed(self, plaintext: bytes) -> None:
        self._keep(self.sealer.feed(plaintext))

    def finish(self) -> None:
        self._keep(self.sealer.finish())
        self.finished = True

    @property
    def ready(self) -> int:
        """Ciphertext bytes waiting to be taken."""
        return len(self._buffer)

    @property
    def skipping(self) -> bool:
        return self._skip > 0

    def take(self, n: int) -> bytes:
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out


def save_name(name: str) -> str:
    """The minimal check on a name to save under when the caller gave none.

    The CLI sanitises names properly and passes its result; a library caller
    that passes nothing gets the sender's name only if it cannot leave the
    directory: no path separator, no NUL, not ``.`` or ``..``, not empty.
    """
    bad = ("/", "\\", "\x00")
    if name in ("", ".", "..") or any(c in name for c in bad) or (os.altsep and os.altsep in name):
        raise UsageError(f"the attachment's name {name!r} is not safe to save under: give a file name")
    return name
