"""Attachment blobs on the broker: the narrow ``BlobStore`` interface and the pure rules around it.

The broker keeps two things apart.  The *bytes* of uploads and blobs go
through ``BlobStore`` (``file_blobs.FileBlobStore`` on the data directory
today; an object store can take its place without touching a route).  The
*metadata* (who uploads what to which case, how far each upload got, which
blob an accepted update references, what the quotas count) lives in the SQL
``Store``, where it is transactional with the log.  Everything here is
sans-I/O: Range parsing, quota arithmetic and the blob address's running
hash.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Final, NewType, Protocol

from caseline.crypto.attachments import ciphertext_size
from caseline.schemas.errors import BrokerAgencyFull, BrokerCaseFull, BrokerRateLimited, BrokerTooLarge
from caseline.schemas.wire import MAX_ATTACHMENT_SIZE

#: A blob's content address: SHA-256 over the label, the ciphertext length and the ciphertext
#: (PROTOCOL.md §6.6); what names it in URLs (hex), on disk and in an envelope's ``blobs``.
Address = NewType("Address", bytes)
#: An upload's random 16-byte id: known only to the device that created it.
UploadId = NewType("UploadId", bytes)

#: The most bytes one file write or one read of a blob moves: memory stays flat per request.
IO_CHUNK: Final = 1024 * 1024


class UploadWriter(Protocol):
    """Appends to one upload from a given offset; ``close`` makes what was written durable."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """Flush and fsync what was written (also after a failed ``write``), then release the file."""
        ...


class BlobStore(Protocol):
    """The bytes only.  Every method is safe to call concurrently for different uploads/addresses."""

    async def open_upload(self, upload: UploadId, offset: int) -> UploadWriter:
        """Write ``upload`` from ``offset`` on; anything stored past ``offset`` is dropped first."""
        ...

    def read_upload(self, upload: UploadId) -> AsyncIterator[bytes]:
        """The upload's bytes so far, in chunks of at most ``IO_CHUNK``."""
        ...

    async def commit_upload(self, upload: UploadId, address: Address) -> None:
        """Move a complete upload to its content address, durably (atomic; idempotent)."""
        ...

    async def delete_upload(self, upload: UploadId) -> None: ...

    def read_blob(self, address: Address, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end - 1`` of a blob, in chunks of at most ``IO_CHUNK``."""
        ...

    async def has_upload(self, upload: UploadId) -> bool: ...

    async def delete_blob(self, address: Address) -> None: ...


# --------------------------------------------------------------------------- Range


@dataclasses.dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class Unsatisfiable(ValueError):
    """A Range the blob cannot satisfy (416, with ``Content-Range: bytes */size``)."""


_RANGE: Final = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One byte range of RFC 9110 §14.1.2 (``A-B``, ``A-``, ``-N``), or None for the whole blob.

    A header that is not one plain byte range (several ranges, other units,
    junk) is ignored, as the RFC allows: the whole blob is served.  A range
    that starts at or past the end is ``Unsatisfiable``.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable("empty suffix range")
        return ByteRange(max(0, size - n), size)
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None  # invalid: ignored, whole blob
    if start >= size:
        raise Unsatisfiable("range starts past the end")
    return ByteRange(start, end)


# --------------------------------------------------------------------------- quotas


@dataclasses.dataclass(frozen=True, slots=True)
class BlobLimits:
    """The attachment settings of ``Limits`` the admission of an upload needs (0: no limit)."""

    max_bytes: int
    case_quota: int
    agency_quota: int
    per_device: int


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """What a new upload is measured against, read in the transaction that records it.

    Bytes are blobs bound plus the declared lengths of uploads in progress, so
    two concurrent uploads cannot both fit into the same remaining room.
    """

    case_bytes: int
    agency_bytes: int
    device_uploads: int


def max_length(limits: BlobLimits) -> int:
    """The longest blob a file of ``max_bytes`` (plaintext) encrypts to: padding and tags included."""
    return ciphertext_size(min(limits.max_bytes or MAX_ATTACHMENT_SIZE, MAX_ATTACHMENT_SIZE))


def check_length(length: int, limits: BlobLimits) -> None:
    """Refuse a declared length no allowed file encrypts to (413, before anything is stored).

    The setting is about files (plaintext); the broker sees only the blob's
    length, so it compares with the length the largest allowed file has once
    padded and encrypted (PROTOCOL.md §6.6).
    """
    if length > max_length(limits):
        raise BrokerTooLarge(
            f"an attachment may be at most {limits.max_bytes} bytes (a blob of {max_length(limits)})"
        )


def admit(usage: Usage, length: int, limits: BlobLimits) -> None:
    """Refuse an upload that would pass a quota (507) or the device's uploads in progress (429)."""
    if limits.per_device and usage.device_uploads >= limits.per_device:
        raise BrokerRateLimited(
            f"this device has {limits.per_device} uploads in progress: finish or delete one first",
            retry_after=60,
        )
    if limits.case_quota and usage.case_bytes + length > limits.case_quota:
        raise BrokerCaseFull(
            f"the case's attachment quota of {limits.case_quota} bytes would be passed; nothing was stored"
        )
    if limits.agency_quota and usage.agency_bytes + length > limits.agency_quota:
        raise BrokerAgencyFull(
            f"the agency's attachment quota of {limits.agency_quota} bytes would be passed;"
            " nothing was stored"
        )
