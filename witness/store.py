"""The witness's state in SQLite: known logs, latest cosigned checkpoints, history, equivocations.

A witness that forgets what it cosigned can be made to cosign a fork, so durability is
the point of this module: rollback journal with ``synchronous=FULL``, and the whole
load-decide-persist of one add-checkpoint is one ``BEGIN IMMEDIATE`` transaction,
committed before the answer leaves.  Every call runs on one worker thread, so two
requests never interleave inside the witness (the rollback race in tlog-witness), and
the immediate lock keeps a second process from interleaving either.

The database carries the instance id of the key it was made with; opening it with
another key's id (or opening a missing or empty file) raises ``StateLost``: a witness
whose memory was lost must be retired, never restarted on blank state.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from caseline.crypto.merkle import EMPTY_ROOT
from caseline.crypto.note import ALG_ED25519, parse_vkey
from caseline.schemas.errors import UnsupportedError
from caseline.witness.core import AddCheckpoint, LogView, Outcome

T = TypeVar("T")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE logs (origin TEXT PRIMARY KEY, origin_hash TEXT NOT NULL UNIQUE, vkey TEXT NOT NULL);
CREATE TABLE latest (origin TEXT PRIMARY KEY REFERENCES logs, size INTEGER NOT NULL,
                     root BLOB NOT NULL, note BLOB NOT NULL);
CREATE TABLE history (origin TEXT NOT NULL REFERENCES logs, size INTEGER NOT NULL, root BLOB NOT NULL,
                      note BLOB NOT NULL, PRIMARY KEY (origin, size));
CREATE TABLE equivocations (id INTEGER PRIMARY KEY, origin TEXT NOT NULL REFERENCES logs,
                            note_a BLOB NOT NULL, note_b BLOB NOT NULL, time INTEGER NOT NULL,
                            UNIQUE (origin, note_a, note_b));
"""


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """Autocommit (transactions are explicit); ``mode=rw`` never creates a missing file."""
    return sqlite3.connect(
        f"file:{path}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False
    )


class StateLost(Exception):
    """The state database is missing, empty, or belongs to another witness key."""


def origin_hash(origin: str) -> str:
    """The monitoring path segment: lowercase hex SHA-256 of the origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


class WitnessStore:
    """One SQLite connection, used from one worker thread (``call``) or synchronously by the CLI."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-db")
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")

    @classmethod
    def create(cls, path: Path, instance_id: str) -> WitnessStore:
        """A fresh state database; refuses to overwrite one."""
        db = _connect(path, "rwc")
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            db.close()
            raise StateLost(f"{path} already holds a witness state")
        store = cls(db)
        db.executescript(f"BEGIN; {SCHEMA} COMMIT;")
        db.execute("INSERT INTO meta VALUES ('instance', ?)", (instance_id,))
        return store

    @classmethod
    def open(cls, path: Path, instance_id: str) -> WitnessStore:
        """The state database made with this key, or ``StateLost``."""
        try:
            db = sqlite3.connect(
                f"file:{path}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        except sqlite3.Error as exc:
            raise StateLost(str(exc)) from exc
        if row is None or row[0] != instance_id:
            db.close()
            raise StateLost("instance id mismatch")
        return cls(db)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.db.close()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the store's one worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # ------------------------------------------------------------------ logs

    def add_log(self, vkey_text: str) -> str:
        """Register a log by its Ed25519 note vkey; its origin is the key name."""
        origin, alg, _ = parse_vkey(vkey_text)
        if alg != ALG_ED25519:
            raise UnsupportedError("a log's key is an Ed25519 note key (signature type 0x01)")
        self.db.execute("INSERT INTO logs VALUES (?, ?, ?)", (origin, origin_hash(origin), vkey_text))
        return origin

    def logs(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT origin, vkey FROM logs ORDER BY origin"))

    # ------------------------------------------------------------------ reads for monitors

    def latest_note(self, hashed_origin: str) -> bytes | None:
        row = self.db.execute(
            "SELECT note FROM latest JOIN logs USING (origin) WHERE origin_hash = ?", (hashed_origin,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def equivocation(self, hashed_origin: str) -> tuple[bytes, bytes] | None:
        """The first equivocation recorded for the log, if any."""
        row = self.db.execute(
            "SELECT note_a, note_b FROM equivocations JOIN logs USING (origin) WHERE origin_hash = ? "
            "ORDER BY id LIMIT 1",
            (hashed_origin,),
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    # ------------------------------------------------------------------ add-checkpoint

    def add_checkpoint(
        self, request: AddCheckpoint, decide: Callable[[LogView | None], Outcome], now: int
    ) -> Outcome:
        """Load the log's view, decide, and persist the outcome, all in one transaction."""
        origin = request.checkpoint.origin
        self.db.execute("BEGIN IMMEDIATE")
        try:
            outcome = decide(self._view(origin, request.checkpoint.size))
            if outcome.equivocation is not None:
                self.db.execute(
                    "INSERT OR IGNORE INTO equivocations (origin, note_a, note_b, time) VALUES (?, ?, ?, ?)",
                    (origin, *outcome.equivocation, now),
                )
            if outcome.cosigned is not None:
                cp, note = request.checkpoint, outcome.cosigned.encode()
                self.db.execute(
                    "INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?)", (origin, cp.size, cp.root, note)
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?)", (origin, cp.size, cp.root, note)
                )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a failed COMMIT may have rolled back already
                self.db.execute("ROLLBACK")
            raise
        return outcome

    def _view(self, origin: str, size: int) -> LogView | None:
        log = self.db.execute("SELECT vkey FROM logs WHERE origin = ?", (origin,)).fetchone()
        if log is None:
            return None
        _, _, public_key = parse_vkey(log[0])
        latest = self.db.execute("SELECT size, root FROM latest WHERE origin = ?", (origin,)).fetchone()
        earlier = self.db.execute(
            "SELECT root, note FROM history WHERE origin = ? AND size = ?", (origin, size)
        ).fetchone()
        return LogView(
            public_key,
            0 if latest is None else latest[0],
            EMPTY_ROOT if latest is None else bytes(latest[1]),
            None if earlier is None else (bytes(earlier[0]), bytes(earlier[1])),
        )
