"""The device's local state in SQLite: pins, verified log entries, the outbox.

Only verified material is stored: an entry is written after ``CaseView.apply``
accepted it, so rebuilding a view is a replay of entries that already passed
every check (and passes them again).  Nothing here is plaintext: envelopes stay
sealed, and the outbox keeps its re-sealable content under the device's local
key.  The outbox is what makes posting exactly-once across crashes: an update is
written here, with its final bytes, before its first send.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aiosqlite
from caseline.client.profile import ensure_private_dir
from caseline.schemas.errors import ProfileError

#: How long a write waits for another process's write to the same profile.
BUSY_TIMEOUT_S: Final = 30.0
#: Version 1: the schema every profile had before migrations were read (issue 11).
SCHEMA_V1: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (
    agency_id TEXT PRIMARY KEY, root_key BLOB NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS crls (agency_id TEXT PRIMARY KEY, number INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    case_id BLOB NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL,
    receipt BLOB NOT NULL, PRIMARY KEY (case_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cases (case_id BLOB PRIMARY KEY, read_upto INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS outbox (
    update_id BLOB PRIMARY KEY, case_id BLOB NOT NULL, envelope BLOB NOT NULL,
    sealed_content BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS issued (
    serial INTEGER PRIMARY KEY, device_id BLOB NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
    cert BLOB NOT NULL, issued_at INTEGER NOT NULL, published INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS revoked (
    device_id BLOB PRIMARY KEY, serial INTEGER NOT NULL, revoked_at INTEGER NOT NULL, reason TEXT NOT NULL);
"""
#: Version 2: sealed snapshots of verified case views and the events they produced,
#: so that opening a profile does not re-verify every case from its genesis.
SCHEMA_V2: Final = """
CREATE TABLE views (
    case_id BLOB PRIMARY KEY, count INTEGER NOT NULL, version INTEGER NOT NULL, sealed BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    case_id BLOB NOT NULL, seq INTEGER NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (case_id, seq)
) WITHOUT ROWID;
"""
#: Version 3: the witnessed log (issue 12).  Agencies' signed witness lists, and per case
#: how far a witness quorum vouches for this device's view and since when entries wait.
SCHEMA_V3: Final = """
CREATE TABLE witness_lists (agency_id TEXT PRIMARY KEY, number INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE finality (
    case_id BLOB PRIMARY KEY, final INTEGER NOT NULL, witnessed_at INTEGER, pending_since INTEGER,
    receipt BLOB
) WITHOUT ROWID;
"""
#: Version 4: posts with files, journalled (sealed) before their first byte is sent (issue 15;
#: client/uploads.py says why they are not outbox rows until their blobs are complete).
SCHEMA_V4: Final = """
CREATE TABLE drafts (
    draft_id BLOB PRIMARY KEY, case_id BLOB NOT NULL, sealed BLOB NOT NULL, created_at INTEGER NOT NULL);
"""
#: Version 5: per case, where its requests stand (client/workflow.py), sealed like its events,
#: so that ``caseline due`` over a thousand cases opens one small row each, not every event.
SCHEMA_V5: Final = """
CREATE TABLE workflow (
    case_id BLOB PRIMARY KEY, open_sealed BLOB NOT NULL, rest_sealed BLOB NOT NULL) WITHOUT ROWID;
"""
#: ``MIGRATIONS[n]`` takes a database from ``user_version`` n to n + 1.  Append only:
#: a released migration is never edited, since profiles out there already ran it.
MIGRATIONS: Final[tuple[str, ...]] = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5)
SCHEMA_VERSION: Final = len(MIGRATIONS)


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    kind: str
    body: bytes
    receipt: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """An update sealed and saved but not yet acknowledged by the broker."""

    update_id: bytes
    case_id: bytes
    envelope: bytes
    sealed_content: bytes
    created_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Issued:
    serial: int
    device_id: bytes
    user_id: str
    role: str
    cert: bytes
    issued_at: int
    published: bool


async def schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def migrate(db: aiosqlite.Connection) -> None:
    """Bring ``db`` to ``SCHEMA_VERSION``, one numbered migration after another.

    Each step runs in one ``BEGIN IMMEDIATE`` transaction together with the new
    ``user_version``, so a crash leaves the database at a version it really has,
    and two processes opening one profile at once cannot both migrate it (the
    second waits for the write lock, then re-reads the version).  A database
    newer than this code is refused rather than opened: older code would not
    know which of its rows it may ignore.
    """
    version = await schema_version(db)
    if version > SCHEMA_VERSION:
        raise ProfileError(
            f"this profile's database is version {version}; this caseline knows up to"
            f" {SCHEMA_VERSION}: upgrade caseline to open it"
        )
    while version < SCHEMA_VERSION:
        await db.execute("BEGIN IMMEDIATE")
        try:
            version = await schema_version(db)  # another process may have migrated meanwhile
            if version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        await db.execute(statement)
                version += 1
                await db.execute(f"PRAGMA user_version={version}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise


class LocalStore:
    """One profile's database (``state.db``), owner-only, WAL, fully synchronous."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    @classmethod
    async def open(cls, directory: Path) -> LocalStore:
        ensure_private_dir(directory)
        path = directory / "state.db"
        # Several processes may hold one profile (a ``follow`` window and a ``post``):
        # WAL lets readers go on beside a writer, and the busy timeout makes a
        # writer wait its turn instead of failing at once.
        db = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_S)
        path.chmod(0o600)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    @staticmethod
    def locked(directory: Path) -> bool:
        """Whether the profile's keys are sealed under a passphrase (a peek, read-only, no loop)."""
        path = directory / "state.db"
        if not path.exists():
            return False
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                row = db.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return False  # Client.open says what is wrong with it
        return row is not None and bytes(row[0]) != b"key-file"

    # -- meta
    async def get(self, key: str) -> bytes | None:
        async with self.db.execute("SELECT value FROM meta WHERE key=?", (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else bytes(row[0])

    async def put(self, key: str, value: bytes) -> None:
        await self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        await self.db.commit()

    async def restore(self, saved: dict[str, bytes | None]) -> None:
        """Put back meta values read earlier with ``get``: a key that was absent is removed."""
        for key, value in saved.items():
            if value is None:
                await self.db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                await self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        await self.db.commit()

    # -- trust
    async def pins(self) -> dict[str, bytes]:
        async with self.db.execute("SELECT agency_id, root_key FROM pins ORDER BY agency_id") as cur:
            return {row[0]: bytes(row[1]) async for row in cur}

    async def pin(self, agency_id: str, root_key: bytes, now: int) -> None:
        await self.db.execute("INSERT OR REPLACE INTO pins VALUES (?, ?, ?)", (agency_id, root_key, now))
        await self.db.commit()

    async def unpin(self, agency_id: str) -> bool:
        cur = await self.db.execute("DELETE FROM pins WHERE agency_id=?", (agency_id,))
        await self.db.execute("DELETE FROM crls WHERE agency_id=?", (agency_id,))
        await self.db.commit()
        return cur.rowcount > 0

    async def crls(self) -> list[bytes]:
        async with self.db.execute("SELECT body FROM crls") as cur:
            return [bytes(row[0]) async for row in cur]

    async def put_crl(self, agency_id: str, number: int, body: bytes) -> None:
        """Keep the newest list: another process of this profile may have stored a later one."""
        await self.db.execute(
            "INSERT INTO crls VALUES (?, ?, ?) ON CONFLICT (agency_id) DO UPDATE SET"
            " number = excluded.number, body = excluded.body WHERE excluded.number > crls.number",
            (agency_id, number, body),
        )
        await self.db.commit()

    # -- the witnessed log
    async def witness_lists(self) -> list[bytes]:
        async with self.db.execute("SELECT body FROM witness_lists") as cur:
            return [bytes(row[0]) async for row in cur]

    async def put_witness_list(self, agency_id: str, number: int, body: bytes) -> None:
        await self.db.execute(
            "INSERT INTO witness_lists VALUES (?, ?, ?) ON CONFLICT (agency_id) DO UPDATE SET"
            " number = excluded.number, body = excluded.body WHERE excluded.number > witness_lists.number",
            (agency_id, number, body),
        )
        await self.db.commit()

    async def finality(self, case_id: bytes) -> tuple[int, int | None, int | None]:
        """``(final, witnessed_at, pending_since)`` of a case: nothing vouched for, by default."""
        async with self.db.execute(
            "SELECT final, witnessed_at, pending_since FROM finality WHERE case_id=?", (case_id,)
        ) as cur:
            row = await cur.fetchone()
        return (0, None, None) if row is None else (int(row[0]), row[1], row[2])

    async def put_finality(
        self,
        case_id: bytes,
        final: int,
        witnessed_at: int | None,
        pending_since: int | None,
        receipt: bytes | None = None,
    ) -> None:
        """Finality only grows, whichever process of the profile learns more first.

        ``receipt`` is the log receipt of entry ``final - 1`` into the witnessed
        checkpoint, cosignatures included: what an evidence bundle carries.
        """
        await self.db.execute(
            "INSERT INTO finality VALUES (?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET"
            " witnessed_at = CASE WHEN excluded.final >= final"
            " THEN excluded.witnessed_at ELSE witnessed_at END,"
            " receipt = CASE WHEN excluded.final >= final AND excluded.receipt IS NOT NULL"
            " THEN excluded.receipt ELSE receipt END,"
            " final = max(final, excluded.final),"
            " pending_since = excluded.pending_since",
            (case_id, final, witnessed_at, pending_since, receipt),
        )
        await self.db.commit()

    async def finalities(self) -> dict[bytes, tuple[int, int | None]]:
        """``case_id -> (final, witnessed_at)`` of every case a witness quorum vouched for."""
        async with self.db.execute("SELECT case_id, final, witnessed_at FROM finality") as cur:
            return {bytes(row[0]): (int(row[1]), row[2]) async for row in cur}

    async def finality_receipt(self, case_id: bytes) -> bytes | None:
        async with self.db.execute("SELECT receipt FROM finality WHERE case_id=?", (case_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- case logs
    async def case_ids(self) -> list[bytes]:
        async with self.db.execute("SELECT case_id FROM cases ORDER BY rowid") as cur:
            return [bytes(row[0]) async for row in cur]

    async def entries(self, case_id: bytes, after: int = 0) -> list[StoredEntry]:
        async with self.db.execute(
            "SELECT seq, kind, body, receipt FROM entries WHERE case_id=? AND seq>=? ORDER BY seq",
            (case_id, after),
        ) as cur:
            return [StoredEntry(row[0], row[1], bytes(row[2]), bytes(row[3])) async for row in cur]

    async def add_entries(self, case_id: bytes, entries: list[StoredEntry]) -> list[StoredEntry]:
        """Store verified entries; return those another process had stored first at the same seqs.

        Storing an entry twice is a no-op, since two processes of one profile
        verify the same log.  The caller compares what it got back with what it
        verified: a different entry at the same seq means the broker showed the
        two processes two histories.
        """
        if not entries:
            return []
        await self.db.execute("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", (case_id,))
        cur = await self.db.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?) ON CONFLICT (case_id, seq) DO NOTHING",
            [(case_id, e.seq, e.kind, e.body, e.receipt) for e in entries],
        )
        await self.db.commit()
        if cur.rowcount == len(entries):  # every one was new: nothing to compare
            return []
        ours = {e.seq: e for e in entries}
        stored = await self.entries(case_id, after=entries[0].seq)
        return [e for e in stored if e.seq in ours and e != ours[e.seq]]

    async def entry_counts(self) -> dict[bytes, int]:
        """How many entries of each case this profile holds (seqs start at 0 and have no gaps)."""
        async with self.db.execute("SELECT case_id, max(seq) + 1 FROM entries GROUP BY case_id") as cur:
            return {bytes(row[0]): int(row[1]) async for row in cur}

    async def read_upto(self, case_id: bytes) -> int:
        async with self.db.execute("SELECT read_upto FROM cases WHERE case_id=?", (case_id,)) as cur:
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def mark_read(self, case_id: bytes, upto: int) -> None:
        await self.db.execute("UPDATE cases SET read_upto=max(read_upto, ?) WHERE case_id=?", (upto, case_id))
        await self.db.commit()

    # -- outbox
    async def outbox(self, case_id: bytes | None = None) -> list[Pending]:
        query = "SELECT update_id, case_id, envelope, sealed_content, created_at FROM outbox"
        args: tuple[bytes, ...] = ()
        if case_id is not None:
            query += " WHERE case_id=?"
            args = (case_id,)
        async with self.db.execute(query + " ORDER BY rowid", args) as cur:
            return [Pending(bytes(r[0]), bytes(r[1]), bytes(r[2]), bytes(r[3]), r[4]) async for r in cur]

    async def add_pending(self, pending: Pending) -> None:
        await self._insert_pending(pending)
        await self.db.commit()

    async def _insert_pending(self, pending: Pending) -> None:
        await self.db.execute(
            "INSERT INTO outbox VALUES (?, ?, ?, ?, ?)",
            (
                pending.update_id,
                pending.case_id,
                pending.envelope,
                pending.sealed_content,
                pending.created_at,
            ),
        )

    async def drop_pending(self, update_id: bytes) -> None:
        await self.db.execute("DELETE FROM outbox WHERE update_id=?", (update_id,))
        await self.db.commit()

    # -- posts with files, before their update is sealed
    async def drafts(self, case_id: bytes | None = None) -> list[tuple[bytes, bytes, bytes, int]]:
        """``(draft_id, case_id, sealed, created_at)`` in the order they were journalled."""
        query = "SELECT draft_id, case_id, sealed, created_at FROM drafts"
        args: tuple[bytes, ...] = ()
        if case_id is not None:
            query += " WHERE case_id=?"
            args = (case_id,)
        async with self.db.execute(query + " ORDER BY rowid", args) as cur:
            return [(bytes(r[0]), bytes(r[1]), bytes(r[2]), int(r[3])) async for r in cur]

    async def put_draft(self, draft_id: bytes, case_id: bytes, sealed: bytes, created_at: int) -> None:
        """Journal a draft, or replace its sealed state (an upload id or an address learnt)."""
        await self.db.execute(
            "INSERT INTO drafts VALUES (?, ?, ?, ?)"
            " ON CONFLICT (draft_id) DO UPDATE SET sealed=excluded.sealed",
            (draft_id, case_id, sealed, created_at),
        )
        await self.db.commit()

    async def drop_draft(self, draft_id: bytes) -> bool:
        cur = await self.db.execute("DELETE FROM drafts WHERE draft_id=?", (draft_id,))
        await self.db.commit()
        return cur.rowcount > 0

    async def promote_draft(self, draft_id: bytes, pending: Pending) -> None:
        """The draft's update is sealed: it becomes an outbox row, in one transaction.

        A crash leaves either the draft (sealed again on resume, under a fresh
        counter: the first sealing never left this device) or the outbox row
        (sent as is), never both, so a post with files is never sent twice.
        """
        try:
            await self.db.execute("DELETE FROM drafts WHERE draft_id=?", (draft_id,))
            await self._insert_pending(pending)
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise

    # -- agency administration
    async def issued(self) -> list[Issued]:
        async with self.db.execute("SELECT * FROM issued ORDER BY serial") as cur:
            return [Issued(r[0], bytes(r[1]), r[2], r[3], bytes(r[4]), r[5], bool(r[6])) async for r in cur]

    async def next_serial(self) -> int:
        async with self.db.execute("SELECT coalesce(max(serial), 0) + 1 FROM issued") as cur:
            row = await cur.fetchone()
        return 1 if row is None else int(row[0])

    async def add_issued(self, issued: Issued) -> None:
        await self.db.execute(
            "INSERT INTO issued VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                issued.serial,
                issued.device_id,
                issued.user_id,
                issued.role,
                issued.cert,
                issued.issued_at,
                int(issued.published),
            ),
        )
        await self.db.commit()

    async def mark_published(self, serial: int) -> None:
        await self.db.execute("UPDATE issued SET published=1 WHERE serial=?", (serial,))
        await self.db.commit()

    async def revoked(self) -> list[tuple[bytes, int, int, str]]:
        async with self.db.execute("SELECT * FROM revoked ORDER BY revoked_at, device_id") as cur:
            return [(bytes(r[0]), r[1], r[2], r[3]) async for r in cur]

    async def add_revoked(self, device_id: bytes, serial: int, revoked_at: int, reason: str) -> None:
        """Revoke, or move an existing revocation earlier; never later (that would un-revoke a window)."""
        await self.db.execute(
            "INSERT INTO revoked VALUES (?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
            " reason = excluded.reason, revoked_at = excluded.revoked_at"
            " WHERE excluded.revoked_at < revoked.revoked_at",
            (device_id, serial, revoked_at, reason),
        )
        await self.db.commit()

    # -- cold start: sealed view snapshots and events (see client/viewstore.py)
    async def view_snapshot(self, case_id: bytes) -> tuple[int, int, bytes] | None:
        """``(count, version, sealed)`` of the stored snapshot of a case, if any."""
        async with self.db.execute(
            "SELECT count, version, sealed FROM views WHERE case_id=?", (case_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), int(row[1]), bytes(row[2]))

    async def put_view_snapshot(self, case_id: bytes, count: int, version: int, sealed: bytes) -> bool:
        """Keep a snapshot unless one at least as far along is stored (another process's).

        Two processes on one profile (a ``follow`` and a ``post``) both save;
        the one that verified further wins, whichever writes last.
        """
        cur = await self.db.execute(
            "INSERT INTO views VALUES (?, ?, ?, ?) ON CONFLICT(case_id) DO UPDATE SET"
            " count = excluded.count, version = excluded.version, sealed = excluded.sealed"
            " WHERE excluded.count > views.count",
            (case_id, count, version, sealed),
        )
        await self.db.commit()
        return cur.rowcount > 0

    async def drop_view_snapshot(self, case_id: bytes) -> None:
        await self.db.execute("DELETE FROM views WHERE case_id=?", (case_id,))
        await self.db.commit()

    async def put_events(self, case_id: bytes, rows: list[tuple[int, bytes]]) -> None:
        """Sealed events by the log position that produced them (re-verification replaces them)."""
        if not rows:
            return
        await self.db.executemany(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?)", [(case_id, seq, sealed) for seq, sealed in rows]
        )
        await self.db.commit()

    async def events(self, case_id: bytes, after: int = 0) -> list[tuple[int, bytes]]:
        async with self.db.execute(
            "SELECT seq, sealed FROM events WHERE case_id=? AND seq>=? ORDER BY seq", (case_id, after)
        ) as cur:
            return [(int(row[0]), bytes(row[1])) async for row in cur]

    # -- where requests stand (client/workflow_index.py): the open rows apart from the rest,
    # so that ``due`` over every case reads and opens only what is still owed.
    async def workflow(self, case_id: bytes) -> tuple[bytes, bytes] | None:
        async with self.db.execute(
            "SELECT open_sealed, rest_sealed FROM workflow WHERE case_id=?", (case_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    async def workflows(self, *, full: bool) -> list[tuple[bytes, bytes, bytes | None]]:
        """``(case_id, open part, rest or None)`` of every case's index; the rest only if ``full``."""
        query = (
            "SELECT case_id, open_sealed, rest_sealed FROM workflow"
            if full
            else "SELECT case_id, open_sealed, NULL FROM workflow"
        )
        async with self.db.execute(query) as cur:
            return [(bytes(r[0]), bytes(r[1]), None if r[2] is None else bytes(r[2])) async for r in cur]

    async def update_workflow(
        self, case_id: bytes, change: Callable[[tuple[bytes, bytes] | None], tuple[bytes, bytes]]
    ) -> None:
        """Read, change and write a case's index in one write transaction.

        Two processes of one profile (a ``follow`` and a ``post``) each fold
        the events they stored; without the lock, the later write would drop
        what the other had folded meanwhile.  ``change`` is synchronous, so no
        other coroutine of this process runs inside the transaction either.
        """
        if not self.db.in_transaction:  # else another coroutine's statement opened one: join it
            await self.db.execute("BEGIN IMMEDIATE")
        try:
            async with self.db.execute(
                "SELECT open_sealed, rest_sealed FROM workflow WHERE case_id=?", (case_id,)
            ) as cur:
                row = await cur.fetchone()
            parts = change(None if row is None else (bytes(row[0]), bytes(row[1])))
            await self.db.execute("INSERT OR REPLACE INTO workflow VALUES (?, ?, ?)", (case_id, *parts))
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise

    async def drop_workflow(self, case_id: bytes) -> None:
        await self.db.execute("DELETE FROM workflow WHERE case_id=?", (case_id,))
        await self.db.commit()

    async def receipts(self, case_id: bytes, seqs: list[int]) -> dict[int, bytes]:
        """The stored receipts of some entries of a case (each was verified before it was stored)."""
        out: dict[int, bytes] = {}
        for seq in seqs:
            async with self.db.execute(
                "SELECT receipt FROM entries WHERE case_id=? AND seq=?", (case_id, seq)
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                out[seq] = bytes(row[0])
        return out

    async def entry_bodies(self, case_id: bytes, seqs: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for seq in seqs:
            async with self.db.execute(
                "SELECT body FROM entries WHERE case_id=? AND seq=?", (case_id, seq)
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                out[seq] = bytes(row[0])
        return out
