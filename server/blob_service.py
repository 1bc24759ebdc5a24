"""Attachment blobs on the broker, wired: uploads, completion, references and garbage collection.

The routes (``blob_routes.py``) decode and check who asks; this holds what
outlives a request: the in-memory state that keeps two PATCHes off one upload
and the running address hash of each upload, the lock that keeps garbage
collection from deleting bytes a completion is binding, the addresses being
posted right now (which collection must not take), and the periodic pass.

Order of effects, so that a crash anywhere leaves nothing acknowledged lost:

* a PATCH writes and fsyncs the bytes, then records the new offset; bytes
  past the recorded offset are dropped by the next PATCH (never acknowledged);
* completion records the blob (address bound to the case) first, then moves
  the file to its content address; a crash between the two is repaired at
  start-up (``recover``), since the upload row names the address;
* collection deletes rows first, then files (an orphan file wastes space; a
  row without its file would be a blob the broker cannot serve).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final

from caseline.crypto.attachments import AddressHasher
from caseline.schemas.errors import BrokerConflict, BrokerMissingBlob, BrokerStorageFull, CaselineError
from caseline.schemas.wire import Envelope, decode_signed
from caseline.server.blobs import (
    Address,
    BlobLimits,
    BlobStore,
    UploadId,
    admit,
    check_length,
)
from caseline.server.core import Limits
from caseline.server.metrics import Metrics
from caseline.server.store import Store, UploadRow

log = logging.getLogger("caseline.server")

#: Rows one collection pass handles of each kind; the next pass takes the rest.
GC_BATCH: Final = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Collected:
    """What one garbage-collection pass deleted."""

    uploads: int = 0
    upload_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.uploads or self.blobs)


def envelope_blobs(body: bytes) -> tuple[bytes, ...]:
    """The blob addresses a signed envelope names (none if it does not decode: the core refuses it)."""
    with contextlib.suppress(CaselineError):
        return Envelope.decode(decode_signed(body)[0]).blobs or ()
    return ()


def blob_limits(limits: Limits) -> BlobLimits:
    return BlobLimits(
        max_bytes=limits.attachment_max_bytes,
        case_quota=limits.attachment_case_quota_bytes,
        agency_quota=limits.attachment_agency_quota_bytes,
        per_device=limits.uploads_per_device,
    )


class Blobs:
    """Uploads and blobs of one broker process: its store's rows and its ``BlobStore``'s bytes."""

    def __init__(
        self,
        *,
        store: Store,
        files: BlobStore,
        limits: Limits,
        clock: Callable[[], int],
        metrics: Metrics,
        audit: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.store, self.files, self.limits, self.clock = store, files, limits, clock
        self.metrics, self.audit = metrics, audit
        #: Uploads a PATCH is writing now: a second PATCH on one is a conflict.
        self.patching: set[bytes] = set()
        #: Each upload's running address hash and the offset it reached (lost on restart:
        #: completion then reads the bytes back once).
        self.hashers: dict[bytes, tuple[int, AddressHasher]] = {}
        #: Addresses of updates being posted: collection keeps them whatever their age.
        self.pinned: collections.Counter[bytes] = collections.Counter()
        #: Completion's binding and collection's deleting of one address never interleave.
        self.lock = asyncio.Lock()
        self.settled = asyncio.Condition()

    # ---------------------------------------------------------------- uploads
    async def create(self, row: UploadRow) -> None:
        limits = blob_limits(self.limits)
        check_length(row.length, limits)
        try:
            await self.store.add_upload(row, lambda usage: admit(usage, row.length, limits))
        except BrokerStorageFull as exc:
            await self.audit(
                "blob-refused",
                f"case={row.case_id.hex()} reason={exc.code} length={row.length} by={row.device_id.hex()}",
            )
            raise

    @contextlib.asynccontextmanager
    async def writing(self, upload: bytes) -> AsyncIterator[None]:
        """Hold an upload for one PATCH (or DELETE): another one at the same time is a conflict.

        ``settled`` is notified when the hold ends (its bytes and offset recorded), so that
        a test waits on the event, not on a clock.
        """
        if upload in self.patching:
            raise BrokerConflict("another request is writing this upload; read its offset and retry")
        self.patching.add(upload)
        try:
            yield
        finally:
            self.patching.discard(upload)
            async with self.settled:
                self.settled.notify_all()

    def hasher_at(self, row: UploadRow, offset: int) -> AddressHasher | None:
        """The running address hash of an upload, if it has seen exactly its first ``offset`` bytes."""
        if offset == 0:
            return AddressHasher(row.length)
        held = self.hashers.get(row.upload_id)
        return held[1] if held is not None and held[0] == offset else None

    async def received(self, row: UploadRow, offset: int, hasher: AddressHasher | None) -> None:
        """Record bytes durably written up to ``offset``; complete the upload when it is whole."""
        if hasher is not None:
            self.hashers[row.upload_id] = (offset, hasher)
        if offset == row.length:
            await self._complete(row, hasher)  # records ``received = length`` in the same commit
        else:
            await self.store.set_upload_received(row.upload_id, offset)

    async def _complete(self, row: UploadRow, hasher: AddressHasher | None) -> None:
        upload = UploadId(row.upload_id)
        if hasher is None:
            hasher = AddressHasher(row.length)
            async for chunk in self.files.read_upload(upload):
                hasher.update(chunk)
        address = Address(hasher.digest())
        async with self.lock:
            await self.store.complete_upload(row.upload_id, address, now=self.clock())
            await self.files.commit_upload(upload, address)
        self.hashers.pop(row.upload_id, None)

    async def delete(self, row: UploadRow) -> None:
        await self.store.delete_upload(row.upload_id)
        if row.address is None:
            await self.files.delete_upload(UploadId(row.upload_id))
        self.hashers.pop(row.upload_id, None)

    # ---------------------------------------------------------------- references
    @contextlib.asynccontextmanager
    async def referencing(self, case_id: bytes, addresses: Sequence[bytes]) -> AsyncIterator[None]:
        """Refuse (422 *missing-blob*) an update naming a blob the case does not hold complete;
        keep the ones it names from collection until the post is done."""
        if not addresses:
            yield
            return
        self.pinned.update(addresses)
        try:
            missing = await self.store.missing_blobs(case_id, addresses)
            if missing:
                raise BrokerMissingBlob(
                    f"attachment blob {missing[0].hex()} is not uploaded complete to this case;"
                    " nothing was stored"
                )
            yield
        finally:
            self.pinned.subtract(addresses)
            self.pinned += collections.Counter()  # drop zero counts

    # ---------------------------------------------------------------- collection
    async def recover(self) -> int:
        """Finish moves a crash interrupted: uploads recorded complete whose bytes are still uploads."""
        moved = 0
        for row in await self.store.completed_uploads():
            upload = UploadId(row.upload_id)
            if row.address is not None and await self.files.has_upload(upload):
                await self.files.commit_upload(upload, Address(row.address))
                moved += 1
        return moved

    async def collect(self) -> Collected:
        """One garbage-collection pass at the clock's time; tests call it instead of waiting.

        Deleted: uploads past their ``expires_at`` (with their bytes), and blobs
        that no accepted, unpurged update referenced for ``blob_grace_seconds``
        (a purge by retention releases its update's blobs this way).
        """
        now = self.clock()
        uploads = upload_bytes = 0
        for row in await self.store.expired_uploads(now=now, limit=GC_BATCH):
            if row.upload_id in self.patching:
                continue
            if row.address is not None:
                await self.files.commit_upload(UploadId(row.upload_id), Address(row.address))
            await self.delete(row)
            if row.address is None:
                uploads += 1
                upload_bytes += row.received
        await self.store.mark_unreferenced(now=now)
        blobs = blob_bytes = 0
        async with self.lock:
            rows = await self.store.sweep_blobs(
                before=now - self.limits.blob_grace_seconds * 1000,
                keep=frozenset(self.pinned),
                limit=GC_BATCH,
            )
            for address in dict.fromkeys(r.address for r in rows):
                if not await self.store.blob_bound(address):
                    await self.files.delete_blob(Address(address))
                    blobs += 1
                    blob_bytes += next(r.size for r in rows if r.address == address)
        result = Collected(uploads, upload_bytes, blobs, blob_bytes)
        if result:
            self.metrics.blob_gc_deleted.labels("upload").inc(uploads)
            self.metrics.blob_gc_deleted.labels("blob").inc(blobs)
            await self.audit(
                "blob-gc",
                f"uploads={uploads} upload_bytes={upload_bytes} blobs={blobs} blob_bytes={blob_bytes}",
            )
        return result

    async def run(self, interval: float) -> None:
        """The periodic pass (``blob_gc_interval_seconds``)."""
        while True:
            await asyncio.sleep(interval)
            try:
                collected = await self.collect()
                if collected:
                    log.info(
                        "blob collection deleted %d uploads and %d blobs", collected.uploads, collected.blobs
                    )
            except Exception:
                log.exception("blob collection failed")
