"""The broker's storage interface: narrow, async, and the same for every backend.

The SQLite implementation (``sqlite_store.py``) is the embedded default; a
PostgreSQL one slots in behind the same ``Store`` protocol, and
``tests/test_store_contract.py`` runs one contract suite over every
implementation.  The contract that matters most: ``append`` returns only once
every entry it was given is durable, and either all of them are or none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol


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

    # cases and their logs
    async def append(self, entries: Sequence[EntryRow], cases: Sequence[CaseRow]) -> None: ...
    async def entries(self, case_id: bytes, *, after: int, limit: int) -> list[EntryRow]: ...
    async def entry_at_slot(self, case_id: bytes, slot: tuple[bytes, int, int]) -> EntryRow | None: ...
    async def case_ids(self) -> list[bytes]: ...
    #: Make every update stored before ``before_time`` a ``purged`` entry: empty body, same
    #: seq, slot and receipt.  Returns how many were purged.
    async def purge(self, case_id: bytes, *, before_time: int) -> int: ...
    async def cases_with_retention(self) -> list[CaseRow]: ...

    # audit log
    async def append_audit(self, event: str, detail: str, *, time: int) -> AuditRow: ...
    async def audit_rows(self) -> list[AuditRow]: ...
