"""One contract suite, run against every storage implementation (SQLite today)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from caseline.schemas.errors import BrokerStorageFull
from caseline.server.blobs import BlobLimits, Usage, admit
from caseline.server.sqlite_store import SqliteStore, audit_hash
from caseline.server.store import (
    ROW_OVERHEAD,
    AgencyRow,
    BlobTotals,
    CaseRow,
    DeviceRow,
    EntryRow,
    SessionRow,
    Store,
    UploadRow,
)

from tests.support.olddb import make_old_db

IMPLEMENTATIONS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda p: SqliteStore(p / "store.sqlite3"),
}

CASE = b"c" * 16


def entry(
    seq: int, *, slot: tuple[bytes, int, int] | None = None, body: bytes = b"body", t: int = 1000
) -> EntryRow:
    return EntryRow(CASE, seq, "update" if slot else "commit", body, b"receipt%d" % seq, slot, t)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = IMPLEMENTATIONS[request.param](tmp_path)
    await s.open()
    yield s
    await s.close()


async def test_append_and_page(store: Store) -> None:
    await store.append([entry(0)], [CaseRow(CASE, 30, 1)])
    await store.append([entry(i, slot=(b"s" * 16, 0, i - 1)) for i in range(1, 6)], [])
    assert [e.seq for e in await store.entries(CASE, after=2, limit=2)] == [2, 3]
    assert (await store.entry_at_slot(CASE, (b"s" * 16, 0, 3))) == entry(4, slot=(b"s" * 16, 0, 3))
    assert await store.entry_at_slot(CASE, (b"s" * 16, 0, 9)) is None
    assert await store.case_ids() == [CASE]


async def test_a_page_bounded_by_bytes_stops_before_the_entry_past_it_but_holds_one(store: Store) -> None:
    sender = b"s" * 16
    await store.append([entry(0, body=b"g" * 100)], [CaseRow(CASE, 30, 1)])
    await store.append([entry(i, slot=(sender, 0, i - 1), body=b"u" * 1000) for i in range(1, 9)], [])
    cost = [len(e.body) + len(e.receipt) + ROW_OVERHEAD for e in await store.entries(CASE, after=0, limit=9)]
    three = sum(cost[1:4])
    assert [e.seq for e in await store.entries(CASE, after=1, limit=9, max_bytes=three)] == [1, 2, 3]
    assert [e.seq for e in await store.entries(CASE, after=1, limit=9, max_bytes=three - 1)] == [1, 2]
    assert [e.seq for e in await store.entries(CASE, after=1, limit=2, max_bytes=three)] == [1, 2]
    assert [e.seq for e in await store.entries(CASE, after=5, limit=9, max_bytes=1)] == [5]  # always one
    assert await store.entries(CASE, after=9, limit=9, max_bytes=three) == []
    assert await store.entries(CASE, after=0, limit=9, max_bytes=10**9) == await store.entries(
        CASE, after=0, limit=9
    )
    assert await store.stored_bytes(CASE) == 100 + 8 * 1000
    assert await store.purge(CASE, before_time=2000) == 8
    assert await store.stored_bytes(CASE) == 100
    assert await store.stored_bytes(b"x" * 16) == 0


async def test_a_failed_batch_stores_nothing(store: Store) -> None:
    await store.append([entry(0)], [CaseRow(CASE, 30, 1)])
    with pytest.raises(sqlite3.IntegrityError):
        await store.append([entry(1, slot=(b"s" * 16, 0, 0)), entry(0)], [])  # seq 0 again
    assert [e.seq for e in await store.entries(CASE, after=0, limit=10)] == [0]
    with pytest.raises(sqlite3.IntegrityError):  # one sender position, two entries
        await store.append([entry(1, slot=(b"s" * 16, 0, 0)), entry(2, slot=(b"s" * 16, 0, 0))], [])
    assert len(await store.entries(CASE, after=0, limit=10)) == 1


async def test_agencies_devices_sessions(store: Store) -> None:
    await store.add_agency(AgencyRow("ke-kra", "KRA", "KE", b"k" * 32, 1))
    assert await store.get_agency("ke-kra") == AgencyRow("ke-kra", "KRA", "KE", b"k" * 32, 1)
    await store.put_device(DeviceRow(b"d" * 16, "ke-kra", "alice", b"cert1", 1, 99))
    await store.put_device(DeviceRow(b"d" * 16, "ke-kra", "alice", b"cert0", 0, 99))  # older serial: ignored
    assert (await store.get_device(b"d" * 16)).cert == b"cert1"  # type: ignore[union-attr]
    assert [d.cert for d in await store.devices_of_user("ke-kra", "alice")] == [b"cert1"]
    await store.add_session(SessionRow(b"h" * 32, b"d" * 16, 50))
    assert (await store.get_session(b"h" * 32)) == SessionRow(b"h" * 32, b"d" * 16, 50)
    await store.delete_sessions_of(b"d" * 16)
    assert await store.get_session(b"h" * 32) is None


async def test_revocation_lists_only_move_forward(store: Store) -> None:
    await store.add_agency(AgencyRow("ke-kra", "KRA", "KE", b"k" * 32, 1))
    await store.put_revocation_list("ke-kra", 2, b"two")
    await store.put_revocation_list("ke-kra", 1, b"one")
    assert await store.get_revocation_list("ke-kra") == b"two"
    await store.put_revocation_list("ke-kra", 3, b"three")
    assert await store.all_revocation_lists() == [b"three"]


async def test_purge_drops_old_update_bodies_only(store: Store) -> None:
    await store.append([entry(0, t=10)], [CaseRow(CASE, 1, 1)])
    await store.append([entry(1, slot=(b"s" * 16, 0, 0), t=10), entry(2, slot=(b"s" * 16, 0, 1), t=5000)], [])
    assert await store.purge(CASE, before_time=1000) == 1
    rows = await store.entries(CASE, after=0, limit=10)
    assert [(r.kind, r.body) for r in rows] == [("commit", b"body"), ("purged", b""), ("update", b"body")]
    assert rows[1].receipt == b"receipt1"  # the chain stays checkable
    assert rows[1].slot == (b"s" * 16, 0, 0)  # and a retry still finds its slot
    assert await store.entry_at_slot(CASE, (b"s" * 16, 0, 0)) == rows[1]
    assert await store.purge(CASE, before_time=1000) == 0  # purging twice changes nothing


def upload_row(n: int, *, case: bytes = CASE, device: bytes = b"d" * 16, length: int = 100) -> UploadRow:
    return UploadRow(bytes([n]) * 16, case, device, "ke-kra", length, 0, 1000, 2000)


async def test_uploads_are_admitted_against_usage_in_their_transaction(store: Store) -> None:
    seen: list[Usage] = []
    limits = BlobLimits(max_bytes=0, case_quota=250, agency_quota=0, per_device=2)

    def check(usage: Usage) -> None:
        seen.append(usage)
        admit(usage, 100, limits)

    await store.add_upload(upload_row(1), check)
    await store.add_upload(upload_row(2, device=b"e" * 16), check)
    with pytest.raises(BrokerStorageFull):  # 200 declared in progress + 100 > 250
        await store.add_upload(upload_row(3, device=b"e" * 16), check)
    assert await store.get_upload(bytes([3]) * 16) is None  # refused: nothing stored
    assert seen[1] == Usage(case_bytes=100, agency_bytes=100, device_uploads=0)
    assert await store.blob_totals() == BlobTotals(stored_bytes=0, uploads_in_progress=2, bytes_in_flight=200)
    await store.set_upload_received(bytes([1]) * 16, 40)
    assert (await store.get_upload(bytes([1]) * 16)) == dataclasses.replace(upload_row(1), received=40)
    assert (await store.blob_totals()).bytes_in_flight == 160
    assert await store.delete_upload(bytes([2]) * 16) and not await store.delete_upload(bytes([2]) * 16)


async def test_a_completed_upload_binds_its_blob_and_references_keep_it(store: Store) -> None:
    address = b"a" * 32
    await store.append([entry(0)], [CaseRow(CASE, 30, 1)])
    await store.add_upload(upload_row(1), lambda usage: None)
    await store.complete_upload(bytes([1]) * 16, address, now=1500)
    row = await store.get_upload(bytes([1]) * 16)
    assert row is not None and (row.address, row.received) == (address, 100)
    blob = await store.get_blob(CASE, address)
    assert blob is not None and (blob.size, blob.agency_id, blob.unreferenced_since) == (100, "ke-kra", 1500)
    assert await store.get_blob(b"x" * 16, address) is None  # bound to its case only
    assert await store.missing_blobs(CASE, [address, b"b" * 32]) == [b"b" * 32]
    assert await store.completed_uploads() == [row]
    assert await store.blob_totals() == BlobTotals(stored_bytes=100, uploads_in_progress=0, bytes_in_flight=0)
    # An accepted update naming it: referenced, so the sweep keeps it.
    await store.append([dataclasses.replace(entry(1, slot=(b"s" * 16, 0, 0), t=1600), blobs=(address,))], [])
    blob = await store.get_blob(CASE, address)
    assert blob is not None and blob.unreferenced_since is None
    await store.mark_unreferenced(now=5000)
    assert await store.sweep_blobs(before=10_000, keep=frozenset(), limit=10) == []
    # Retention purges the update: the next mark finds the blob unreferenced from then.
    assert await store.purge(CASE, before_time=2000) == 1
    await store.mark_unreferenced(now=6000)
    assert await store.sweep_blobs(before=5999, keep=frozenset(), limit=10) == []
    assert await store.sweep_blobs(before=6000, keep=frozenset({address}), limit=10) == []  # pinned
    swept = await store.sweep_blobs(before=6000, keep=frozenset(), limit=10)
    assert [b.address for b in swept] == [address]
    assert not await store.blob_bound(address)
    assert await store.expired_uploads(now=1999, limit=10) == []
    assert [u.upload_id for u in await store.expired_uploads(now=2000, limit=10)] == [bytes([1]) * 16]


async def test_audit_log_is_hash_chained(store: Store) -> None:
    a = await store.append_audit("login", "device=1", time=5)
    b = await store.append_audit("commit", "case=2", time=6)
    assert b.prev_hash == a.hash
    assert b.hash == audit_hash(a.hash, 1, 6, "commit", "case=2")
    assert [r.event for r in await store.audit_rows()] == ["login", "commit"]


async def test_reopening_keeps_data_and_migrations_are_idempotent(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "db.sqlite3")
    await s.open()
    await s.append([entry(0)], [CaseRow(CASE, 30, 1)])
    await s.close()
    s = SqliteStore(tmp_path / "db.sqlite3")
    await s.open()
    assert len(await s.entries(CASE, after=0, limit=5)) == 1
    versions = await s.db.execute_fetchall("SELECT version FROM schema_version")
    assert [v[0] for v in versions] == [1, 2, 3, 4]
    mode = list(await s.db.execute_fetchall("PRAGMA journal_mode"))
    sync = list(await s.db.execute_fetchall("PRAGMA synchronous"))
    assert mode[0][0] == "wal"
    assert sync[0][0] == 2
    await s.close()


async def test_a_full_disk_is_a_clean_error_and_nothing_half_written(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "small.sqlite3", max_bytes=256 * 1024)
    await s.open()
    await s.append([entry(0)], [CaseRow(CASE, 30, 1)])
    seq, full = 1, False
    while seq < 10_000 and not full:
        try:
            await s.append([entry(seq, slot=(b"s" * 16, 0, seq), body=b"x" * 8192)], [])
            seq += 1
        except BrokerStorageFull:
            full = True
    assert full
    stored = await s.entries(CASE, after=0, limit=100_000)
    assert [r.seq for r in stored] == list(range(seq))  # everything acknowledged, nothing more
    await s.close()


async def test_migration_2_turns_version_1_purged_rows_into_purged_entries(tmp_path: Path) -> None:
    """Version 1 marked a purged update only by its empty body; start-up then took it for a damaged one."""
    db = make_old_db(tmp_path / "db.sqlite3", upto=1)
    db.execute("INSERT INTO cases (case_id, retention_days, created_at) VALUES (?, 0, 1)", (CASE,))
    for e in [entry(0), entry(1, slot=(b"s" * 16, 0, 0)), entry(2, slot=(b"s" * 16, 0, 1))]:
        slot = e.slot or (None, None, None)
        db.execute(
            "INSERT INTO entries (case_id, seq, kind, body, receipt, slot_sender, slot_epoch, slot_counter,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.case_id, e.seq, e.kind, e.body, e.receipt, *slot, e.created_at),
        )
    db.execute("UPDATE entries SET body = X'' WHERE seq = 1")  # what version 1's purge did
    db.close()
    s = SqliteStore(tmp_path / "db.sqlite3")
    await s.open()
    rows = await s.entries(CASE, after=0, limit=5)
    assert [r.kind for r in rows] == ["commit", "purged", "update"]
    await s.close()
