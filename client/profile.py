"""Where a device keeps its state: one private directory per profile.

``CASELINE_HOME`` (or ``--home``) overrides the XDG data directory, and
``CASELINE_PROFILE`` (or ``--profile``) picks a profile inside it, so one
workstation can hold an officer's device and an administrator's agency root
without mixing them.  Directories are created owner-only; a profile directory
others can enter is refused rather than silently used.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from caseline.schemas.errors import ProfileError

PROFILE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_PROFILE: Final = "default"


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("CASELINE_HOME"):
        return Path(env["CASELINE_HOME"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "caseline"


def profile_dir(name: str | None = None, *, home: Path | None = None) -> Path:
    name = name or os.environ.get("CASELINE_PROFILE") or DEFAULT_PROFILE
    if not PROFILE_NAME.fullmatch(name):
        raise ProfileError(f"profile name {name!r} may hold only letters, digits, '.', '_' and '-'")
    return (home or home_dir()) / "profiles" / name


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` owner-only, or check an existing one is owner-only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private(path)
    return path


def check_private(path: Path, info: os.stat_result | None = None) -> None:
    """Refuse a file or directory that another user could read or that someone else owns.

    ``info`` is the ``fstat`` of a file already opened, so that what is checked is what is read.
    """
    info = path.stat() if info is None else info
    if info.st_uid != os.getuid():
        raise ProfileError(f"{path} belongs to another user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ProfileError(f"{path} is open to other users; run: chmod go-rwx {path}")


class PostingLock:
    """One process at a time seals and sends new updates from a profile.

    Two processes of one device (a ``follow`` window, a ``post`` from another
    terminal, a cron job) would otherwise both seal the device's next update at
    the same position, and the broker would refuse one of them.  Reading needs
    no lock: storing a verified entry twice is a no-op.  The lock is an
    advisory ``flock`` on a file in the profile, released by the kernel if the
    holder dies, so a crash never leaves it stuck.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "posting.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """The process id the holder wrote, for the one line that says who we wait for."""
        try:
            return self.path.read_text(encoding="ascii").strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
