"""The client's ``state.db`` is migrated in numbered steps and never opened when newer than the code."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from caseline.client.store import MIGRATIONS, SCHEMA_VERSION, LocalStore, StoredEntry
from caseline.schemas.errors import ProfileError

#: The schema exactly as caseline wrote it before migrations were read (user_version 1).
OLD_V1_SCHEMA = """
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
CASE = bytes(range(16))


def make_v1_profile(directory: Path) -> None:
    directory.mkdir(mode=0o700)
    db = sqlite3.connect(directory / "state.db")
    db.executescript(OLD_V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('agency', ?)", (b"ke-kra",))
    db.execute("INSERT INTO cases (case_id, read_upto) VALUES (?, 3)", (CASE,))
    db.execute("INSERT INTO entries VALUES (?, 0, 'commit', ?, ?)", (CASE, b"genesis", b"receipt"))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def user_version(directory: Path) -> int:
    db = sqlite3.connect(directory / "state.db")
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


async def test_a_version_1_profile_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    profile = tmp_path / "old"
    make_v1_profile(profile)
    store = await LocalStore.open(profile)
    try:
        assert await store.get("agency") == b"ke-kra"
        assert await store.read_upto(CASE) == 3
        assert await store.entries(CASE) == [StoredEntry(0, "commit", b"genesis", b"receipt")]
        tables = {row[0] async for row in await store.db.execute("SELECT name FROM sqlite_master")}
        assert {"views", "events"} <= tables
    finally:
        await store.close()
    assert user_version(profile) == SCHEMA_VERSION == len(MIGRATIONS)
    # Opening again runs nothing twice (a CREATE TABLE without IF NOT EXISTS would fail).
    await (await LocalStore.open(profile)).close()


async def test_a_fresh_profile_gets_every_migration(tmp_path: Path) -> None:
    await (await LocalStore.open(tmp_path / "new")).close()
    assert user_version(tmp_path / "new") == SCHEMA_VERSION


async def test_a_database_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "future"
    make_v1_profile(profile)
    db = sqlite3.connect(profile / "state.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ProfileError, match="upgrade caseline"):
        await LocalStore.open(profile)
    assert user_version(profile) == SCHEMA_VERSION + 1  # left as it was


async def test_a_failed_migration_leaves_the_version_where_it_was(tmp_path: Path) -> None:
    profile = tmp_path / "half"
    make_v1_profile(profile)
    db = sqlite3.connect(profile / "state.db")
    db.execute("CREATE TABLE events (x INTEGER)")  # migration 2 will collide with this
    db.commit()
    db.close()
    with pytest.raises(sqlite3.OperationalError):
        await LocalStore.open(profile)
    assert user_version(profile) == 1
    db = sqlite3.connect(profile / "state.db")
    try:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert "views" not in names  # rolled back with the failed step
