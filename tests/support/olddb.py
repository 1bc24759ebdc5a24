"""A broker database as an older caseline wrote it: only the migrations up to a version.

Migrations are applied the way ``SqliteStore._migrate`` applies them, so that a
test can write rows in an old schema and then let the current code open (and
upgrade) the data directory.  Nothing binary is kept in the repository.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from caseline.server.sqlite_store import _migrations


def make_old_db(path: Path, *, upto: int) -> sqlite3.Connection:
    """Create ``path`` at schema ``upto`` and return an open connection to it (autocommit)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT")
    for version, sql in _migrations():
        if version > upto:
            break
        for statement in sql.split(";\n"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return db
