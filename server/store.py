"""The broker's storage interface: narrow, async, and the same for every backend.

The SQLite implementation (``sqlite_store.py``) is the embedded default; a
PostgreSQL one slots in behind the same ``Store`` protocol, and
``tests/test_store_contract.py`` runs one contract suite over every
implementation.  The contract that matters most: ``append`` returns only once
every entry it was given is durable, and either all of them are or none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from caseline.server.blobs import Usage

#: What bounding a page by bytes counts for each row on top of ``len(body) + len(receipt)``:
#: the msgpack framing of an ``Entry``, and the slot body a purged entry is served with.
ROW_OVERHEAD: Final = 128


@dataclasses.dataclass(frozen=True, slots=True)
class AgencyRow:
    agency_id: str
    name: str
    country: str
    root_key: bytes
    created_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: bytes
    agency_id: str
    user_id: str
    cert: bytes
    serial: int
    not_after: int


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRow:
    token_hash: bytes
    device_id: bytes
    expires_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class EntryRow:
    """One log entry as stored: ``kind`` is ``commit``, ``update``, or ``purged`` (an update
    whose body retention dropped; its slot and receipt remain)."""

    case_id: bytes
    seq: int
    kind: str
    body: bytes
    receipt: bytes
    #: ``(sender, epoch, counter)`` for updates: the idempotency key of a post.
    slot: tuple[bytes, int, int] | None
    created_at: int
    #: Where the entry's leaf sits in the broker log (None only before it is written).
    leaf_index: int | None = None
    #: The blob addresses an update's envelope names (``Envelope.blobs``): recorded as references.
    blobs: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CaseRow:
    case_id: bytes
    retention_days: int
    created_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    time: int
    event: str
    detail: str
    prev_hash: bytes
    hash: bytes
    #: Where the row's ``AuditLeaf`` sits in the broker log; None until a group commit seals it.
    leaf_index: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LogWrite:
    """What one group commit adds to the broker log, written with its entries in one transaction.

    ``leaves`` are ``(index, leaf bytes)`` in order; ``audit`` maps audit rows
    (by seq) to the index of their leaf; ``checkpoint`` is the signed note of
    the tree after the batch, of ``size`` leaves.
    """

    leaves: Sequence[tuple[int, bytes]]
    size: int
    checkpoint: bytes
    created_at: int
    audit: Sequence[tuple[int, int]] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CosignatureRow:
    size: int
    witness: str
    #: The signature line exactly as the witness returned it (``— name base64\n``).
    line: str
    #: The witness's timestamp, in seconds.
    time: int


@dataclasses.dataclass(frozen=True, slots=True)
class LegacyEntry:
    """A version-2-schema entry that has no leaf yet: what the in-place upgrade reads."""

    case_id: bytes
    seq: int
    receipt: bytes
    created_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class UploadRow:
    upload_id: bytes
    case_id: bytes
    device_id: bytes
    agency_id: str
    length: int
    #: Bytes durably stored: the offset the next PATCH must name.
    received: int
    created_at: int
    expires_at: int
    #: Set once the upload is complete (and its blob bound to the case).
    address: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class BlobRow:
    case_id: bytes
    address: bytes
    agency_id: str
    size: int
    created_at: int
    #: When no accepted, unpurged update of the case was found to reference it (None: one does).
    unreferenced_since: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class BlobTotals:
    """What ``/metrics`` shows of attachments: bytes on disk, uploads in progress, bytes still due."""

    stored_bytes: int
    uploads_in_progress: int
    bytes_in_flight: int


class Store(Protocol):
    """Everything the broker persists.  Implementations must be safe to call concurrently."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # agencies and devices
    async def add_agency(self, row: AgencyRow) -> None: ...
    async def get_agency(self, agency_id: str) -> AgencyRow | None: ...
    async def list_agencies(self) -> list[AgencyRow]: ...
    async def put_device(self, row: DeviceRow) -> None: ...
    async def get_device(self, device_id: bytes) -> DeviceRow | None: ...
    async def devices_of_user(self, agency_id: str, user_id: str) -> list[DeviceRow]: ...
    async def put_revocation_list(self, agency_id: str, number: int, data: bytes) -> None: ...
    async def get_revocation_list(self, agency_id: str) -> bytes | None: ...
    async def all_revocation_lists(self) -> list[bytes]: ...

    # sessions
    async def add_session(self, row: SessionRow) -> None: ...
    async def get_session(self, token_hash: bytes) -> SessionRow | None: ...
    async def delete_session(self, token_hash: bytes) -> None: ...
    async def delete_sessions_of(self, device_id: bytes) -> None: ...
    async def live_sessions(self, *, now: int, limit: int) -> list[tuple[SessionRow, bytes]]:
        """Sessions expiring after ``now``, the latest-expiring first, each with its device's certificate."""
        ...

    # cases and their logs
    async def append(
        self, entries: Sequence[EntryRow], cases: Sequence[CaseRow], log: LogWrite | None = None
    ) -> None: ...
    #: Entries from seq ``after`` on, in order: at most ``limit`` of them and, when ``max_bytes``
    #: is given, only as many as keep ``sum(len(body) + len(receipt) + ROW_OVERHEAD)`` within it,
    #: but always the first one (so any single entry can be read).  The bound must be applied in
    #: the query: never read ``limit`` large bodies to drop most of them.
    async def entries(
        self, case_id: bytes, *, after: int, limit: int, max_bytes: int | None = None
    ) -> list[EntryRow]: ...
    async def entry_at_slot(self, case_id: bytes, slot: tuple[bytes, int, int]) -> EntryRow | None: ...
    async def case_ids(self) -> list[bytes]: ...
    #: Make every update stored before ``before_time`` a ``purged`` entry: empty body, same
    #: seq, slot and receipt.  Returns how many were purged.
    async def purge(self, case_id: bytes, *, before_time: int) -> int: ...
    async def cases_with_retention(self) -> list[CaseRow]: ...
    #: The body bytes a case stores (a purged entry none): retention gives the difference back
    #: to ``Limits.case_max_bytes``.
    async def stored_bytes(self, case_id: bytes) -> int: ...
    #: Witnessed case retention: make these updates ``purged``, each with its new receipt
    #: (into a witnessed checkpoint).  Returns how many were purged.
    async def purge_with_receipts(self, case_id: bytes, items: Sequence[tuple[int, bytes]]) -> int: ...

    # attachment blobs (the bytes are in a ``blobs.BlobStore``; this is their bookkeeping)
    #: Record a new upload, in one transaction with ``admit(usage)`` (which raises to refuse it):
    #: usage is read in that transaction, so concurrent uploads cannot pass a quota together.
    async def add_upload(self, row: UploadRow, admit: Callable[[Usage], None]) -> None: ...
    async def get_upload(self, upload_id: bytes) -> UploadRow | None: ...
    async def set_upload_received(self, upload_id: bytes, received: int) -> None: ...
    #: Mark the upload complete and bind its blob to the upload's case (one transaction; a blob
    #: already bound keeps its row).  A new binding starts unreferenced at ``now``.
    async def complete_upload(self, upload_id: bytes, address: bytes, *, now: int) -> None: ...
    #: Returns whether there was such an upload.
    async def delete_upload(self, upload_id: bytes) -> bool: ...
    async def get_blob(self, case_id: bytes, address: bytes) -> BlobRow | None: ...
    #: Which of ``addresses`` are not complete blobs bound to the case, in the order given.
    async def missing_blobs(self, case_id: bytes, addresses: Sequence[bytes]) -> list[bytes]: ...
    #: Uploads whose ``expires_at`` is at or before ``now`` (complete or not), oldest first.
    async def expired_uploads(self, *, now: int, limit: int) -> list[UploadRow]: ...
    #: Garbage collection's mark step: a blob no accepted, unpurged update references becomes
    #: unreferenced since ``now`` (if it was not already); a referenced one stops being.
    async def mark_unreferenced(self, *, now: int) -> None: ...
    #: Garbage collection's sweep: delete (and return) blob rows unreferenced since before
    #: ``before``, except those whose address is in ``keep``.
    async def sweep_blobs(self, *, before: int, keep: frozenset[bytes], limit: int) -> list[BlobRow]: ...
    #: Whether any case still has this blob bound (its bytes must stay).
    async def blob_bound(self, address: bytes) -> bool: ...
    #: Every upload with an address whose bytes may still sit under ``uploads/`` (start-up recovery).
    async def completed_uploads(self) -> list[UploadRow]: ...
    async def blob_totals(self) -> BlobTotals: ...

    # audit log
    async def append_audit(self, event: str, detail: str, *, time: int) -> AuditRow: ...
    async def audit_rows(self, *, after: int = 0) -> list[AuditRow]: ...
    #: Audit retention: delete exactly these rows (``core_log.plan_audit_prune`` chose them from
    #: their sealed leaves), in one transaction, and only if each still has the seq, time, hash
    #: and leaf it was checked with; otherwise delete none.  Returns how many were deleted.
    async def prune_audit(self, rows: Sequence[AuditRow]) -> int: ...

    # the broker log
    async def log_leaves(self, start: int, end: int) -> list[bytes]: ...
    async def latest_checkpoint(self) -> tuple[int, bytes] | None: ...
    async def get_checkpoint(self, size: int) -> bytes | None: ...
    async def latest_witnessed(self) -> tuple[int, bytes] | None: ...
    async def add_cosignatures(self, rows: Sequence[CosignatureRow]) -> None: ...
    async def cosignatures(self, size: int) -> list[CosignatureRow]: ...
    #: Checkpoints with every cosignature at or before ``before`` (POSIX seconds), with them, by size.
    async def cosigned_checkpoints(self, *, before: int) -> list[tuple[int, bytes]]: ...
    async def last_cosigned_sizes(self) -> dict[str, int]: ...
    async def case_leaf_before(self, case_id: bytes, size: int) -> tuple[int, bytes] | None: ...
    async def put_witness_list(self, agency_id: str, number: int, data: bytes) -> None: ...
    async def get_witness_list(self, agency_id: str) -> bytes | None: ...
    async def all_witness_lists(self) -> list[bytes]: ...
    #: The in-place upgrade (schema 3): entries without a leaf, oldest first (created_at, case, seq).
    async def legacy_entries(self) -> list[LegacyEntry]: ...
    async def write_upgrade(
        self, log: LogWrite, receipts: Sequence[tuple[bytes, int, bytes, int]]
    ) -> None: ...
