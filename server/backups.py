"""Online backups of the broker's database, and restoring one into a data directory.

A backup is the database alone.  The server key is deliberately not in it
(SECURITY.md: a backup copy leaked must not let anyone sign receipts as the
broker), so ``restore`` takes the key from the data directory or from
``--server-key-file``, and checks the backup against it before putting it in
place: the audit log's chain and the broker log's checkpoint, signed with that
key.  The operator token's hash is not in it either: it is a credential of the
deployment, not data; a restored directory without one gets a fresh token.

Attachment blobs are files, not rows: a backup ``DEST`` gets a folder
``DEST.blobs`` beside it holding every blob its database snapshot names,
copied after the snapshot (blobs are content-addressed and never change, so a
copy is the blob or nothing; one the broker's garbage collection deleted
meanwhile was unreferenced, and is only counted as missing).  Uploads in
progress are not in a backup: ``restore`` drops them, and their clients start
them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import sqlite3
from pathlib import Path
from typing import BinaryIO

from caseline.crypto.keys import SigningKey
from caseline.schemas.errors import UsageError, VerificationError
from caseline.server import audit_verify
from caseline.server.config import ServerConfig
from caseline.server.datadir import (
    create_private,
    exclusive,
    fsync,
    load_server_key,
    make_private_dir,
    mint_operator_token,
    private_temp_file,
)
from caseline.server.sqlite_store import SqliteStore

#: Tables every caseline database has from its first migration.
_TABLES = frozenset({"agencies", "devices", "cases", "entries", "audit"})


class BackupError(UsageError):
    """A backup or restore that cannot be done as asked: the destination, the source or the key."""


def check_destination(dest: Path, *, force: bool) -> None:
    if not dest.parent.is_dir():
        raise BackupError(f"the folder {dest.parent} does not exist; create it or choose another destination")
    if dest.is_dir():
        raise BackupError(
            f"{dest} is a folder; give the backup's file name, e.g. {dest / 'broker-backup.sqlite3'}"
        )
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; refusing to overwrite it (--force replaces it)")


def blobs_beside(path: Path) -> Path:
    """Where the attachment blobs of the backup at ``path`` are: ``PATH.blobs``."""
    return path.with_name(path.name + ".blobs")


@dataclasses.dataclass(frozen=True, slots=True)
class BlobCopy:
    copied: int
    #: Blobs the database names whose files were gone (deleted by garbage collection meanwhile).
    missing: int


def _blob_addresses(db: Path) -> list[bytes]:
    # immutable: read without a -wal or -shm file appearing beside it (nothing writes it meanwhile).
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone():
            return []
        return [bytes(r[0]) for r in conn.execute("SELECT DISTINCT address FROM blobs ORDER BY address")]
    finally:
        conn.close()


def create_private_file(path: Path) -> BinaryIO:
    """A new file, owner-only from its first byte whatever the umask."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def copy_blobs(db: Path, source: Path, dest: Path) -> BlobCopy:
    """Copy every blob database ``db`` names from the blob folder ``source`` to ``dest`` (fsync'd)."""
    copied = missing = 0
    for address in _blob_addresses(db):
        text = address.hex()
        relative = Path(text[:2], text[2:4], text)
        if not (source / relative).is_file():
            missing += 1
            continue
        target = dest / relative
        make_private_dir(target.parent)
        if not target.exists():
            with open(source / relative, "rb") as src, create_private_file(target) as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        copied += 1
    return BlobCopy(copied, missing)


def backup(db_path: Path, dest: Path, *, force: bool) -> BlobCopy:
    """An online backup through SQLite's backup API: consistent while the broker serves.

    The copy holds device certificates, session-token hashes, the audit log and
    every entry, so it is owner-only (0600) from its first byte whatever the
    umask: SQLite writes into a private temporary file in DEST's directory,
    which is then linked into place.  DEST appears only once complete, and an
    existing DEST is kept unless ``force`` says to replace it.
    """
    check_destination(dest, force=force)
    tmp = private_temp_file(dest)
    try:
        _copy(_open_existing(db_path), tmp)
        if force:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # fails if DEST appeared meanwhile: never clobbers
            except FileExistsError:
                raise BackupError(f"{dest} exists; refusing to overwrite it (--force replaces it)") from None
    finally:
        tmp.unlink(missing_ok=True)
    # After the snapshot: every blob it names was complete before it was taken.
    return copy_blobs(dest, db_path.parent / "blobs", blobs_beside(dest))


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    events: int
    #: What the check of the backup noted; among them, that no checkpoint let the key be checked.
    notes: list[str]
    #: A new operator token when the data directory had none (shown once), else None: the old one stands.
    operator_token: str | None
    key_installed: bool


def restore(source: Path, config: ServerConfig, *, server_key_file: Path | None, force: bool) -> Restored:
    """``_restore`` under the data directory's lock, which a serving broker holds (``exclusive``).

    Renaming a file over a database that a running broker has open, and
    deleting its write-ahead log, would lose what it writes and corrupt what
    it reads: with a broker running, this is refused before anything changes.
    A directory that does not exist yet has no broker on it (``serve`` needs
    the database this makes last).
    """
    held: contextlib.AbstractContextManager[None] = (
        exclusive(config.data_dir) if config.data_dir.is_dir() else contextlib.nullcontext()
    )
    with held:
        return _restore(source, config, server_key_file=server_key_file, force=force)


def _restore(source: Path, config: ServerConfig, *, server_key_file: Path | None, force: bool) -> Restored:
    """Put a backup in place as ``config``'s database, with the key it needs, once it verifies.

    Nothing in the data directory changes unless every check passed: the copy
    is made and verified beside the database, then renamed over it.  An old
    database's ``-wal`` and ``-shm`` files are removed first, since SQLite
    would otherwise replay the old write-ahead log onto the restored file.
    """
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    _check_is_caseline(source)
    if config.db_path.exists() and not force:
        raise BackupError(
            f"{config.data_dir} already holds a database; stop its broker, and give --force to replace it"
        )
    key, install_key = _restore_key(config, server_key_file)
    make_private_dir(config.data_dir)
    tmp = private_temp_file(config.db_path)
    try:
        _copy(sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True), tmp)  # never writes it
        verdict = asyncio.run(_verify(tmp, key))
        _drop_uploads_in_progress(tmp)
        if verdict.broken:
            raise VerificationError(
                f"the backup does not verify with this server key ({verdict.broken[0]}); nothing was restored"
            )
        for stale in ("-wal", "-shm"):
            Path(f"{config.db_path}{stale}").unlink(missing_ok=True)
        os.replace(tmp, config.db_path)
    finally:
        for leftover in ("", "-wal", "-shm"):
            Path(f"{tmp}{leftover}").unlink(missing_ok=True)
    if install_key:
        create_private(config.key_path, key.seed)
    token = None if config.operator_token_path.exists() else mint_operator_token(config)
    notes = list(verdict.notes)
    blobs = copy_blobs(config.db_path, blobs_beside(source), config.data_dir / "blobs")
    if blobs.missing:
        notes.append(f"{blobs.missing} attachment blobs the backup names are not in {blobs_beside(source)}")
    if verdict.leaves == 0:
        notes.append("the backup holds no signed checkpoint, so the key could not be checked against it")
    return Restored(verdict.events, notes, token, install_key)


def _drop_uploads_in_progress(db: Path) -> None:
    """Their bytes are not in a backup: the clients start those uploads again (404 on the old id)."""
    conn = sqlite3.connect(db)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'uploads'").fetchone():
            with conn:
                conn.execute("DELETE FROM uploads WHERE address IS NULL")
    finally:
        conn.close()


def _restore_key(config: ServerConfig, server_key_file: Path | None) -> tuple[SigningKey, bool]:
    """The key to restore with, and whether it must be written into the data directory."""
    if config.key_path.exists():
        key = load_server_key(config.key_path)
        if server_key_file is not None and load_server_key(server_key_file).seed != key.seed:
            raise BackupError(
                f"{config.key_path} is another key than {server_key_file}; nothing was restored"
            )
        return key, False
    if server_key_file is None:
        raise BackupError(
            f"{config.data_dir} has no server.key, and backups do not hold it:"
            " give the broker's key with --server-key-file"
        )
    return load_server_key(server_key_file), True


async def _verify(db: Path, key: SigningKey) -> audit_verify.AuditVerdict:
    store = SqliteStore(db, create=False)
    await store.open()
    try:
        return await audit_verify.verify(store, key.public_key)
    finally:
        await store.close()


def _open_existing(path: Path) -> sqlite3.Connection:
    """Open a database that must exist: ``mode=rw`` never creates an empty one."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True)


def _check_is_caseline(path: Path) -> None:
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            (integrity,) = db.execute("PRAGMA quick_check").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        raise BackupError(f"{path} is not a caseline backup (not an SQLite database)") from None
    if not tables >= _TABLES:
        raise BackupError(f"{path} is not a caseline backup (an SQLite database without the broker's tables)")
    if integrity != "ok":
        raise VerificationError(f"{path} is damaged (SQLite's check: {integrity}); nothing was restored")


def _copy(src: sqlite3.Connection, dest: Path) -> None:
    try:
        out = sqlite3.connect(dest)
        try:
            with out:
                src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
    fsync(dest)
