"""Files the CLI writes or reads that hold secrets or certificates.

A certificate or an evidence bundle is written owner-only (0600), and never
over an existing file unless ``--force`` says so: an accidental overwrite
loses the earlier one, and ``agency issue`` would also have minted a second
certificate for nothing, so the caller checks ``refuse_existing`` before
doing the work.  A passphrase file gets the same check as a key file: one
that other users can read is refused (exit 6).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from caseline.client.profile import check_private
from caseline.schemas.errors import UsageError


def refuse_existing(path: Path, *, force: bool, option: str = "-o") -> None:
    """Refuse, before any work is done, to replace a file the person did not ask to replace,
    or to write where nothing can be written (a missing or read-only folder)."""
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: there is no folder {folder}; create it or give another {option}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder {folder} is not writable; give another {option}")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name")
    if path.exists() and not force:
        raise UsageError(f"{path} already exists: add --force to replace it, or give another {option}")


def write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to a new owner-only file; with ``force``, replace ``path`` atomically."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            refuse_existing(path, force=False)
            raise
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def read_passphrase_file(path: Path) -> str:
    """The passphrase in ``path``, refused like a key file if other users could read it.

    The file is opened once, not through a symbolic link, and the open file is
    checked: a check of the name and a second open to read would leave a moment
    in which another file could be put in its place.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link: give the passphrase file itself") from None
        raise exc
    with os.fdopen(fd, "rb") as f:
        check_private(path, os.fstat(f.fileno()))
        return f.read().decode("utf-8").rstrip("\r\n")
