"""The embedded storage backend: SQLite through aiosqlite, WAL, ``synchronous=FULL``.

Durability: ``append`` writes a batch of entries in one transaction and returns
only after COMMIT, i.e. after the fsync; if the transaction fails nothing of the
batch is stored.  Group commit (many posts, one fsync) is the caller's batching,
see ``server/service.py``.  Start-up refuses a database that is not in WAL mode with full
synchronisation, and applies numbered migrations from ``migrations/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite
from caseline.schemas.errors import BrokerStorageFull
from caseline.server.blobs import Usage
from caseline.server.store import (
    ROW_OVERHEAD,
    AgencyRow,
    AuditRow,
    BlobRow,
    BlobTotals,
    CaseRow,
    CosignatureRow,
    DeviceRow,
    EntryRow,
    LegacyEntry,
    LogWrite,
    SessionRow,
    UploadRow,
)

SQLITE_FULL_CODES: Final = {sqlite3.SQLITE_FULL}


def _migrations() -> list[tuple[int, str]]:
    folder = importlib.resources.files("caseline.server") / "migrations"
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), item.read_text()))
    return sorted(found)


class SqliteStore:
    """``Store`` on one SQLite file."""

    def __init__(self, path: Path | str, *, max_bytes: int | None = None, create: bool = True) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        #: False: open an existing database only, never make an empty one (the operator's
        #: commands other than ``init``: a mistyped data directory must not become a new broker).
        self.create = create
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one write transaction at a time on the one connection

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        if self.create:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        else:
            uri = f"{Path(self.path).absolute().as_uri()}?mode=rw"
            self._db = await aiosqlite.connect(uri, isolation_level=None, uri=True)
        try:
            await self._configure()
        except BaseException:
            # A damaged or foreign file: close the connection, or its thread keeps the process alive.
            await self.close()
            raise

    async def _configure(self) -> None:
        db = self.db
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        if self.max_bytes is not None:
            page_size = (await (await db.execute("PRAGMA page_size")).fetchone())[0]  # type: ignore[index]
            await db.execute(f"PRAGMA max_page_count={max(1, self.max_bytes // page_size)}")
        mode = (await (await db.execute("PRAGMA journal_mode")).fetchone())[0]  # type: ignore[index]
        sync = (await (await db.execute("PRAGMA synchronous")).fetchone())[0]  # type: ignore[index]
        if str(mode).lower() != "wal" or int(sync) != 2:  # 2 = FULL
            raise RuntimeError(f"database must run in WAL mode with synchronous=FULL (got {mode}, {sync})")
        await self._migrate()

    async def _migrate(self) -> None:
        db = self.db
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT")
        row = await (await db.execute("SELECT MAX(version) FROM schema_version")).fetchone()
        current = (row[0] if row else None) or 0
        for version, sql in _migrations():
            if version <= current:
                continue
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";\n"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    # ---------------------------------------------------------------- writes
    async def _write(self, sql: str, params: tuple[object, ...]) -> None:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                await self.db.execute(sql, params)
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            await self.db.execute("ROLLBACK")

    async def append(
        self, entries: Sequence[EntryRow], cases: Sequence[CaseRow], log: LogWrite | None = None
    ) -> None:
        """Write new cases, log entries and the broker log's leaves and checkpoint in one
        transaction; return once it is durable."""
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                if cases:
                    await self.db.executemany(
                        "INSERT INTO cases (case_id, retention_days, created_at) VALUES (?, ?, ?)",
                        [(c.case_id, c.retention_days, c.created_at) for c in cases],
                    )
                if entries:
                    await self.db.executemany(
                        "INSERT INTO entries (case_id, seq, kind, body, receipt, slot_sender, slot_epoch,"
                        " slot_counter, created_at, leaf_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [_entry_params(e) for e in entries],
                    )
                    refs = [(e.case_id, e.seq, a) for e in entries for a in e.blobs]
                    if refs:
                        await self.db.executemany(
                            "INSERT OR IGNORE INTO blob_refs (case_id, seq, address) VALUES (?, ?, ?)", refs
                        )
                        await self.db.executemany(
                            "UPDATE blobs SET unreferenced_since = NULL WHERE case_id = ? AND address = ?",
                            [(c, a) for c, _, a in refs],
                        )
                if log is not None:
                    await self._write_log(log)
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def _write_log(self, log: LogWrite) -> None:
        db = self.db
        await db.executemany("INSERT INTO log_leaves (idx, leaf) VALUES (?, ?)", log.leaves)
        await db.execute(
            "INSERT INTO checkpoints (size, note, created_at) VALUES (?, ?, ?)",
            (log.size, log.checkpoint, log.created_at),
        )
        if log.audit:
            await db.executemany(
                "UPDATE audit SET leaf_index = ? WHERE seq = ? AND leaf_index IS NULL",
                [(index, seq) for seq, index in log.audit],
            )

    async def write_upgrade(self, log: LogWrite, receipts: Sequence[tuple[bytes, int, bytes, int]]) -> None:
        """The in-place upgrade's one transaction: leaves, checkpoint, every receipt rewritten."""
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                await self._write_log(log)
                await self.db.executemany(
                    "UPDATE entries SET receipt = ?, leaf_index = ? WHERE case_id = ? AND seq = ?",
                    [(receipt, index, case_id, seq) for case_id, seq, receipt, index in receipts],
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def add_cosignatures(self, rows: Sequence[CosignatureRow]) -> None:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                await self.db.executemany(
                    "INSERT INTO cosignatures (size, witness, line, time) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, time = excluded.time",
                    [(r.size, r.witness, r.line, r.time) for r in rows],
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def put_witness_list(self, agency_id: str, number: int, data: bytes) -> None:
        await self._write(
            "INSERT INTO witness_lists (agency_id, number, data) VALUES (?, ?, ?)"
            " ON CONFLICT (agency_id) DO UPDATE SET number = excluded.number, data = excluded.data"
            " WHERE excluded.number > witness_lists.number",
            (agency_id, number, data),
        )

    async def add_agency(self, row: AgencyRow) -> None:
        await self._write(
            "INSERT INTO agencies (agency_id, name, country, root_key, created_at) VALUES (?, ?, ?, ?, ?)",
            (row.agency_id, row.name, row.country, row.root_key, row.created_at),
        )

    async def put_device(self, row: DeviceRow) -> None:
        await self._write(
            "INSERT INTO devices (device_id, agency_id, user_id, cert, serial, not_after)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET"
            " cert = excluded.cert, serial = excluded.serial, not_after = excluded.not_after"
            " WHERE excluded.serial > devices.serial",
            (row.device_id, row.agency_id, row.user_id, row.cert, row.serial, row.not_after),
        )

    async def put_revocation_list(self, agency_id: str, number: int, data: bytes) -> None:
        await self._write(
            "INSERT INTO revocation_lists (agency_id, number, data) VALUES (?, ?, ?)"
            " ON CONFLICT (agency_id) DO UPDATE SET number = excluded.number, data = excluded.data"
            " WHERE excluded.number > revocation_lists.number",
            (agency_id, number, data),
        )

    async def add_session(self, row: SessionRow) -> None:
        await self._write(
            "INSERT INTO sessions (token_hash, device_id, expires_at) VALUES (?, ?, ?)",
            (row.token_hash, row.device_id, row.expires_at),
        )

    async def delete_session(self, token_hash: bytes) -> None:
        await self._write("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def delete_sessions_of(self, device_id: bytes) -> None:
        await self._write("DELETE FROM sessions WHERE device_id = ?", (device_id,))

    async def purge(self, case_id: bytes, *, before_time: int) -> int:
        """Turn updates older than the cut-off into ``purged`` entries; commits stay (they are membership).

        A purged entry keeps its sequence number, its slot and its receipt; only the
        body goes.  The kind changes with it, so that no reader takes the empty body
        for a damaged update.
        """
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                cursor = await self.db.execute(
                    "UPDATE entries SET kind = 'purged', body = X'' WHERE case_id = ? AND kind = 'update'"
                    " AND created_at < ?",
                    (case_id, before_time),
                )
                await self.db.execute("COMMIT")
                return cursor.rowcount
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def purge_with_receipts(self, case_id: bytes, items: Sequence[tuple[int, bytes]]) -> int:
        """Purge the given updates of a witnessed case, each keeping a receipt into a witnessed checkpoint."""
        if not items:
            return 0
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                purged = 0
                for seq, receipt in items:
                    cursor = await self.db.execute(
                        "UPDATE entries SET kind = 'purged', body = X'', receipt = ?"
                        " WHERE case_id = ? AND seq = ? AND kind = 'update'",
                        (receipt, case_id, seq),
                    )
                    purged += cursor.rowcount
                await self.db.execute("COMMIT")
                return purged
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    # ---------------------------------------------------------------- attachment blobs
    async def add_upload(self, row: UploadRow, admit: Callable[[Usage], None]) -> None:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                admit(await self._usage(row))
                await self.db.execute(
                    "INSERT INTO uploads (upload_id, case_id, device_id, agency_id, length, received,"
                    " created_at, expires_at, address) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    (
                        row.upload_id,
                        row.case_id,
                        row.device_id,
                        row.agency_id,
                        row.length,
                        row.received,
                        row.created_at,
                        row.expires_at,
                    ),
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc
            except BaseException:
                await self._rollback()
                raise

    async def _usage(self, row: UploadRow) -> Usage:
        async def one(sql: str, *params: object) -> int:
            found = await (await self.db.execute(sql, params)).fetchone()
            return int(found[0] or 0) if found is not None else 0

        return Usage(
            case_bytes=await one(
                "SELECT (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE address IS NULL AND case_id = ?)"
                " + (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE case_id = ?)",
                row.case_id,
                row.case_id,
            ),
            agency_bytes=await one(
                "SELECT (SELECT COALESCE(SUM(length), 0) FROM uploads"
                " WHERE address IS NULL AND agency_id = ?)"
                " + (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE agency_id = ?)",
                row.agency_id,
                row.agency_id,
            ),
            device_uploads=await one(
                "SELECT COUNT(*) FROM uploads WHERE address IS NULL AND device_id = ?", row.device_id
            ),
        )

    async def get_upload(self, upload_id: bytes) -> UploadRow | None:
        row = await (
            await self.db.execute(
                "SELECT upload_id, case_id, device_id, agency_id, length, received, created_at, expires_at,"
                " address FROM uploads WHERE upload_id = ?",
                (upload_id,),
            )
        ).fetchone()
        return None if row is None else _upload_row(row)

    async def set_upload_received(self, upload_id: bytes, received: int) -> None:
        await self._write(
            "UPDATE uploads SET received = ? WHERE upload_id = ? AND address IS NULL", (received, upload_id)
        )

    async def complete_upload(self, upload_id: bytes, address: bytes, *, now: int) -> None:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                await self.db.execute(
                    "UPDATE uploads SET address = ?, received = length WHERE upload_id = ?",
                    (address, upload_id),
                )
                await self.db.execute(
                    "INSERT OR IGNORE INTO blobs (case_id, address, agency_id, size, created_at,"
                    " unreferenced_since) SELECT case_id, ?, agency_id, length, ?, ? FROM uploads"
                    " WHERE upload_id = ?",
                    (address, now, now, upload_id),
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def delete_upload(self, upload_id: bytes) -> bool:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                cursor = await self.db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
                await self.db.execute("COMMIT")
                return cursor.rowcount > 0
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def get_blob(self, case_id: bytes, address: bytes) -> BlobRow | None:
        row = await (
            await self.db.execute(
                "SELECT case_id, address, agency_id, size, created_at, unreferenced_since FROM blobs"
                " WHERE case_id = ? AND address = ?",
                (case_id, address),
            )
        ).fetchone()
        return None if row is None else _blob_row(row)

    async def missing_blobs(self, case_id: bytes, addresses: Sequence[bytes]) -> list[bytes]:
        missing = []
        for address in addresses:
            if await self.get_blob(case_id, address) is None:
                missing.append(address)
        return missing

    async def expired_uploads(self, *, now: int, limit: int) -> list[UploadRow]:
        rows = await self.db.execute_fetchall(
            "SELECT upload_id, case_id, device_id, agency_id, length, received, created_at, expires_at,"
            " address FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [_upload_row(r) for r in rows]

    async def completed_uploads(self) -> list[UploadRow]:
        rows = await self.db.execute_fetchall(
            "SELECT upload_id, case_id, device_id, agency_id, length, received, created_at, expires_at,"
            " address FROM uploads WHERE address IS NOT NULL ORDER BY created_at"
        )
        return [_upload_row(r) for r in rows]

    async def mark_unreferenced(self, *, now: int) -> None:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                await self.db.execute(
                    "UPDATE blobs SET unreferenced_since = ? WHERE unreferenced_since IS NULL AND NOT EXISTS"
                    " (SELECT 1 FROM blob_refs r JOIN entries e ON e.case_id = r.case_id AND e.seq = r.seq"
                    " WHERE r.case_id = blobs.case_id AND r.address = blobs.address AND e.kind = 'update')",
                    (now,),
                )
                await self.db.execute(
                    "UPDATE blobs SET unreferenced_since = NULL"
                    " WHERE unreferenced_since IS NOT NULL AND EXISTS"
                    " (SELECT 1 FROM blob_refs r JOIN entries e ON e.case_id = r.case_id AND e.seq = r.seq"
                    " WHERE r.case_id = blobs.case_id AND r.address = blobs.address AND e.kind = 'update')"
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def sweep_blobs(self, *, before: int, keep: frozenset[bytes], limit: int) -> list[BlobRow]:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                rows = [
                    _blob_row(r)
                    for r in await self.db.execute_fetchall(
                        "SELECT case_id, address, agency_id, size, created_at, unreferenced_since FROM blobs"
                        " WHERE unreferenced_since IS NOT NULL"
                        " AND unreferenced_since <= ? ORDER BY unreferenced_since LIMIT ?",
                        (before, limit),
                    )
                ]
                rows = [r for r in rows if r.address not in keep]
                await self.db.executemany(
                    "DELETE FROM blobs WHERE case_id = ? AND address = ?",
                    [(r.case_id, r.address) for r in rows],
                )
                await self.db.execute("COMMIT")
                return rows
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    async def blob_bound(self, address: bytes) -> bool:
        row = await (
            await self.db.execute("SELECT 1 FROM blobs WHERE address = ? LIMIT 1", (address,))
        ).fetchone()
        return row is not None

    async def blob_totals(self) -> BlobTotals:
        stored = await (
            await self.db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM blobs GROUP BY address)"
            )
        ).fetchone()
        flight = await (
            await self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length - received), 0) FROM uploads WHERE address IS NULL"
            )
        ).fetchone()
        if stored is None or flight is None:  # aggregates always return a row
            return BlobTotals(0, 0, 0)
        return BlobTotals(
            stored_bytes=int(stored[0]), uploads_in_progress=int(flight[0]), bytes_in_flight=int(flight[1])
        )

    async def append_audit(self, event: str, detail: str, *, time: int) -> AuditRow:
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                row = await (
                    await self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                ).fetchone()
                seq, prev = (0, bytes(32)) if row is None else (row[0] + 1, row[1])
                digest = audit_hash(prev, seq, time, event, detail)
                await self.db.execute(
                    "INSERT INTO audit (seq, time, event, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, time, event, detail, prev, digest),
                )
                await self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc
        return AuditRow(seq=seq, time=time, event=event, detail=detail, prev_hash=prev, hash=digest)

    async def prune_audit(self, rows: Sequence[AuditRow]) -> int:
        """Delete these audit rows, all or none; see ``Store.prune_audit``."""
        async with self._lock:
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                deleted = 0
                for row in rows:
                    cursor = await self.db.execute(
                        "DELETE FROM audit WHERE seq = ? AND time = ? AND hash = ? AND leaf_index = ?",
                        (row.seq, row.time, row.hash, row.leaf_index),
                    )
                    deleted += cursor.rowcount
                if deleted != len(rows):  # a row changed since it was checked against its leaf
                    await self._rollback()
                    return 0
                await self.db.execute("COMMIT")
                return deleted
            except sqlite3.Error as exc:
                await self._rollback()
                raise _translate(exc) from exc

    # ---------------------------------------------------------------- reads
    async def get_agency(self, agency_id: str) -> AgencyRow | None:
        row = await (
            await self.db.execute(
                "SELECT agency_id, name, country, root_key, created_at FROM agencies WHERE agency_id = ?",
                (agency_id,),
            )
        ).fetchone()
        return None if row is None else AgencyRow(*row)

    async def list_agencies(self) -> list[AgencyRow]:
        rows = await self.db.execute_fetchall(
            "SELECT agency_id, name, country, root_key, created_at FROM agencies ORDER BY agency_id"
        )
        return [AgencyRow(*r) for r in rows]

    async def get_device(self, device_id: bytes) -> DeviceRow | None:
        row = await (
            await self.db.execute(
                "SELECT device_id, agency_id, user_id, cert, serial, not_after FROM devices"
                " WHERE device_id = ?",
                (device_id,),
            )
        ).fetchone()
        return None if row is None else DeviceRow(*row)

    async def devices_of_user(self, agency_id: str, user_id: str) -> list[DeviceRow]:
        rows = await self.db.execute_fetchall(
            "SELECT device_id, agency_id, user_id, cert, serial, not_after FROM devices"
            " WHERE agency_id = ? AND user_id = ? ORDER BY device_id LIMIT 256",
            (agency_id, user_id),
        )
        return [DeviceRow(*r) for r in rows]

    async def get_revocation_list(self, agency_id: str) -> bytes | None:
        row = await (
            await self.db.execute("SELECT data FROM revocation_lists WHERE agency_id = ?", (agency_id,))
        ).fetchone()
        return None if row is None else bytes(row[0])

    async def all_revocation_lists(self) -> list[bytes]:
        rows = await self.db.execute_fetchall("SELECT data FROM revocation_lists ORDER BY agency_id")
        return [bytes(r[0]) for r in rows]

    async def get_session(self, token_hash: bytes) -> SessionRow | None:
        row = await (
            await self.db.execute(
                "SELECT token_hash, device_id, expires_at FROM sessions WHERE token_hash = ?",
                (token_hash,),
            )
        ).fetchone()
        return None if row is None else SessionRow(*row)

    async def live_sessions(self, *, now: int, limit: int) -> list[tuple[SessionRow, bytes]]:
        rows = await self.db.execute_fetchall(
            "SELECT s.token_hash, s.device_id, s.expires_at, d.cert FROM sessions s"
            " JOIN devices d ON d.device_id = s.device_id"
            " WHERE s.expires_at > ? ORDER BY s.expires_at DESC LIMIT ?",
            (now, limit),
        )
        return [(SessionRow(bytes(r[0]), bytes(r[1]), r[2]), bytes(r[3])) for r in rows]

    async def entries(
        self, case_id: bytes, *, after: int, limit: int, max_bytes: int | None = None
    ) -> list[EntryRow]:
        if max_bytes is None:
            rows = await self.db.execute_fetchall(
                "SELECT case_id, seq, kind, body, receipt, slot_sender, slot_epoch, slot_counter, created_at"
                " FROM entries WHERE case_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (case_id, after, limit),
            )
            return [_entry_row(r) for r in rows]
        # One statement, one snapshot: sizes first (length() of a blob reads no content), a
        # running sum over them, then the bodies of the prefix that fits and no others.
        rows = await self.db.execute_fetchall(
            "WITH firstn AS (SELECT seq, length(body) + length(receipt) + ? AS size FROM entries"
            " WHERE case_id = ? AND seq >= ? ORDER BY seq LIMIT ?),"
            " sized AS (SELECT seq, SUM(size) OVER (ORDER BY seq) AS total,"
            " ROW_NUMBER() OVER (ORDER BY seq) AS n FROM firstn)"
            " SELECT e.case_id, e.seq, e.kind, e.body, e.receipt, e.slot_sender, e.slot_epoch,"
            " e.slot_counter, e.created_at FROM sized s JOIN entries e ON e.case_id = ? AND e.seq = s.seq"
            " WHERE s.total <= ? OR s.n = 1 ORDER BY e.seq",
            (ROW_OVERHEAD, case_id, after, limit, case_id, max_bytes),
        )
        return [_entry_row(r) for r in rows]

    async def entry_at_slot(self, case_id: bytes, slot: tuple[bytes, int, int]) -> EntryRow | None:
        row = await (
            await self.db.execute(
                "SELECT case_id, seq, kind, body, receipt, slot_sender, slot_epoch, slot_counter, created_at"
                " FROM entries WHERE case_id = ? AND slot_sender = ? AND slot_epoch = ? AND slot_counter = ?",
                (case_id, *slot),
            )
        ).fetchone()
        return None if row is None else _entry_row(row)

    async def case_ids(self) -> list[bytes]:
        rows = await self.db.execute_fetchall("SELECT case_id FROM cases ORDER BY created_at")
        return [bytes(r[0]) for r in rows]

    async def stored_bytes(self, case_id: bytes) -> int:
        row = await (
            await self.db.execute("SELECT SUM(length(body)) FROM entries WHERE case_id = ?", (case_id,))
        ).fetchone()
        return int(row[0] or 0) if row is not None else 0

    async def cases_with_retention(self) -> list[CaseRow]:
        rows = await self.db.execute_fetchall("SELECT case_id, retention_days, created_at FROM cases")
        return [CaseRow(bytes(r[0]), r[1], r[2]) for r in rows]

    async def audit_rows(self, *, after: int = 0) -> list[AuditRow]:
        """Audit rows from seq ``after`` on, in order."""
        rows = await self.db.execute_fetchall(
            "SELECT seq, time, event, detail, prev_hash, hash, leaf_index FROM audit WHERE seq >= ?"
            " ORDER BY seq",
            (after,),
        )
        return [AuditRow(*r) for r in rows]

    # ---------------------------------------------------------------- the broker log
    async def log_leaves(self, start: int, end: int) -> list[bytes]:
        rows = await self.db.execute_fetchall(
            "SELECT leaf FROM log_leaves WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        )
        return [bytes(r[0]) for r in rows]

    async def latest_checkpoint(self) -> tuple[int, bytes] | None:
        row = await (
            await self.db.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def get_checkpoint(self, size: int) -> bytes | None:
        row = await (await self.db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,))).fetchone()
        return None if row is None else bytes(row[0])

    async def latest_witnessed(self) -> tuple[int, bytes] | None:
        row = await (
            await self.db.execute(
                "SELECT c.size, c.note FROM checkpoints c WHERE c.size = (SELECT MAX(size) FROM cosignatures)"
            )
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def cosignatures(self, size: int) -> list[CosignatureRow]:
        rows = await self.db.execute_fetchall(
            "SELECT size, witness, line, time FROM cosignatures WHERE size = ? ORDER BY witness", (size,)
        )
        return [CosignatureRow(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    async def cosigned_checkpoints(self, *, before: int) -> list[tuple[int, bytes]]:
        rows = await self.db.execute_fetchall(
            "SELECT c.size, c.note, group_concat(s.line, '') FROM checkpoints c JOIN cosignatures s"
            " ON s.size = c.size GROUP BY c.size HAVING MAX(s.time) <= ? ORDER BY c.size",
            (before,),
        )
        return [(int(r[0]), bytes(r[1]) + str(r[2]).encode()) for r in rows]

    async def last_cosigned_sizes(self) -> dict[str, int]:
        rows = await self.db.execute_fetchall("SELECT witness, MAX(size) FROM cosignatures GROUP BY witness")
        return {str(r[0]): int(r[1]) for r in rows}

    async def case_leaf_before(self, case_id: bytes, size: int) -> tuple[int, bytes] | None:
        """The case's last entry whose leaf is in the first ``size`` leaves: (index, leaf).

        Leaf indexes grow with seq within a case, so this walks back from the
        case's newest entry and stops at the first hit.
        """
        row = await (
            await self.db.execute(
                "SELECT l.idx, l.leaf FROM entries e JOIN log_leaves l ON l.idx = e.leaf_index"
                " WHERE e.case_id = ? AND e.leaf_index < ? ORDER BY e.seq DESC LIMIT 1",
                (case_id, size),
            )
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def get_witness_list(self, agency_id: str) -> bytes | None:
        row = await (
            await self.db.execute("SELECT data FROM witness_lists WHERE agency_id = ?", (agency_id,))
        ).fetchone()
        return None if row is None else bytes(row[0])

    async def all_witness_lists(self) -> list[bytes]:
        rows = await self.db.execute_fetchall("SELECT data FROM witness_lists ORDER BY agency_id")
        return [bytes(r[0]) for r in rows]

    async def legacy_entries(self) -> list[LegacyEntry]:
        """Entries written before schema 3, in the order the upgrade makes their leaves.

        Order: by ``created_at`` (the group commit that wrote them), then case id,
        then seq.  Within one case that is seq order, because a case's entries
        are written in seq order, so the tree's order agrees with every case's.
        """
        rows = await self.db.execute_fetchall(
            "SELECT case_id, seq, receipt, created_at FROM entries WHERE leaf_index IS NULL"
            " ORDER BY created_at, case_id, seq"
        )
        return [LegacyEntry(bytes(r[0]), int(r[1]), bytes(r[2]), int(r[3])) for r in rows]


def audit_hash(prev: bytes, seq: int, time: int, event: str, detail: str) -> bytes:
    """Each audit row hashes its predecessor: editing or deleting a row breaks the chain."""
    h = hashlib.sha256(b"caseline/v1 audit")
    for part in (
        prev,
        seq.to_bytes(8, "big"),
        time.to_bytes(8, "big"),
        event.encode(),
        detail.encode(),
    ):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


def _upload_row(r: Any) -> UploadRow:
    upload_id, case_id, device_id, agency_id, length, received, created, expires, address = r
    return UploadRow(
        bytes(upload_id),
        bytes(case_id),
        bytes(device_id),
        str(agency_id),
        int(length),
        int(received),
        int(created),
        int(expires),
        None if address is None else bytes(address),
    )


def _blob_row(r: Any) -> BlobRow:
    case_id, address, agency_id, size, created, since = r
    return BlobRow(bytes(case_id), bytes(address), str(agency_id), int(size), int(created), since)


def _entry_params(e: EntryRow) -> tuple[object, ...]:
    slot = e.slot or (None, None, None)
    return (
        e.case_id,
        e.seq,
        e.kind,
        e.body,
        e.receipt,
        slot[0],
        slot[1],
        slot[2],
        e.created_at,
        e.leaf_index,
    )


def _entry_row(r: Any) -> EntryRow:
    case_id, seq, kind, body, receipt, s_sender, s_epoch, s_counter, created = r
    slot = None if s_sender is None else (bytes(s_sender), int(s_epoch), int(s_counter))
    return EntryRow(bytes(case_id), int(seq), str(kind), bytes(body), bytes(receipt), slot, int(created))


def _translate(exc: sqlite3.Error) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in SQLITE_FULL_CODES or "database or disk is full" in str(exc):
        return BrokerStorageFull("the broker's storage is full; nothing was stored")
    if isinstance(exc, sqlite3.IntegrityError):
        return exc
    return exc
