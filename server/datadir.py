"""The broker's data directory: what is in it, and the rules for opening and writing its files.

Only ``init`` (and ``restore``) make a data directory; every other command
opens one for use and refuses a missing or half-made one.  A mistyped
``--data-dir`` must not become a new, empty broker with its own database.

Every secret file (the key, the operator token's hash, the database and its
backups) is owner-only from its first byte, whatever the umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from caseline.crypto.keys import SigningKey
from caseline.schemas.errors import UsageError
from caseline.server.config import ServerConfig
from caseline.server.core import token_hash

KEY_BYTES = 32
#: Held (``flock`` LOCK_EX) by a serving broker for its lifetime; ``init`` and ``restore`` take it too.
SERVE_LOCK: Final = "serve.lock"


def init_hint(data_dir: Path) -> str:
    return f"run `caseline-server --data-dir {shlex.quote(str(data_dir))} init` first"


def require_initialised(config: ServerConfig) -> None:
    """Refuse, in one line naming the path, a data directory that ``init`` did not make."""
    data_dir = config.data_dir
    if not data_dir.exists():
        raise UsageError(f"no data directory at {data_dir}; {init_hint(data_dir)}")
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir} is not a directory; give the broker's data directory with --data-dir")
    if not config.key_path.exists() and config.db_path.exists():
        raise UsageError(
            f"{data_dir} has a database but no server.key; copy the broker's key there"
            " (`caseline-server restore --server-key-file` does it for a backup)"
        )
    for path in (config.key_path, config.db_path):
        if not path.exists():
            raise UsageError(
                f"{data_dir} is not an initialised data directory (no {path.name}); {init_hint(data_dir)}"
            )


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock, or refuse at once: a broker is running on it.

    ``serve`` holds it for as long as it runs, so a second broker on the same
    database, or a ``restore --force`` that would rename a file over the
    database a running broker has open (and delete its write-ahead log), is
    refused before it touches anything.  The kernel drops the lock when its
    holder exits, however it exits: a killed broker leaves no stale lock.
    """
    path = data_dir / SERVE_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise UsageError(f"the broker is running on {data_dir}{pid}; stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_server_key(path: Path) -> SigningKey:
    """The broker's receipt key: 32 bytes, owner-only, as ``init`` wrote it."""
    try:
        seed = path.read_bytes()
        mode = path.stat().st_mode & 0o077
    except FileNotFoundError:
        raise UsageError(f"no server key at {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read the server key {path}: {exc.strerror}") from None
    if len(seed) != KEY_BYTES:
        raise UsageError(f"{path} is not a caseline server key (it must be {KEY_BYTES} bytes)")
    if mode:
        raise UsageError(f"{path} is readable by others; chmod 600 it")
    return SigningKey(seed)


def mint_operator_token(config: ServerConfig) -> str:
    """A new operator token for ``/metrics``; only its hash is kept, and it replaces the old one."""
    token = secrets.token_urlsafe(32)
    replace_private(config.operator_token_path, token_hash(token))
    return token


def make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def create_private(path: Path, data: bytes) -> None:
    """Write a new secret file, owner-only (0600) from the start: no window when others may read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def replace_private(path: Path, data: bytes) -> None:
    """Replace a secret file at once: a reader sees the old content or the new, never a part."""
    tmp = private_temp_file(path)
    try:
        tmp.write_bytes(data)
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def private_temp_file(beside: Path) -> Path:
    """An empty file only the owner may read or write, in ``beside``'s directory.

    ``mkstemp`` creates it with O_EXCL and mode 0600 (never wider, whatever the
    umask); the explicit ``fchmod`` also undoes a umask that would have left the
    owner unable to write.  SQLite gives its journal the database file's mode.
    """
    fd, name = tempfile.mkstemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return Path(name)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
