"""Issue 14, findings 9 and 10: what the broker gives away besides the case content.

* Backups and the files ``init`` writes hold secrets or their hashes: they are
  owner-only (0600) whatever the umask, and a backup never overwrites a file
  unless told to.
* A device that is not a member of a case learns nothing from a case route,
  not even that the case exists: its answer is byte for byte the answer for a
  case id nobody ever used, decided from the same in-memory state with the
  same storage calls.  A member its scopes refuse still gets its 403.
* The user directory (another agency's device certificates) is for devices that
  read cases: a bot without the ``read`` scope is refused it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from caseline.server import cli as server_cli
from caseline.witness import cli as witness_cli

#: Every honest answer in these tests comes back well within this (seconds); a bound, not a measurement.
ANSWER_TIMEOUT = 10.0
PROBLEM_JSON = "application/problem+json"


# --------------------------------------------------------------------------- finding 9: files


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def initialised(tmp_path: Path) -> Path:
    data = tmp_path / "broker"
    assert server_cli.main(["--data-dir", str(data), "init"]) == 0
    add = ["agency", "add", "ke-kra", "--name", "KRA", "--country", "KE", "--root-key", "ab" * 32]
    assert server_cli.main(["--data-dir", str(data), *add]) == 0
    return data


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_a_backup_is_owner_only_whatever_the_umask(
    tmp_path: Path, mask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with umask(mask):
        data = initialised(tmp_path)
        dest = tmp_path / "out" / "backup.sqlite3"
        dest.parent.mkdir()
        assert server_cli.main(["--data-dir", str(data), "backup", str(dest)]) == 0
    assert mode(dest) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["backup.sqlite3"]  # no temporary left
    with contextlib.closing(sqlite3.connect(dest)) as db:  # a usable copy of what the broker holds
        assert db.execute("SELECT agency_id FROM agencies").fetchall() == [("ke-kra",)]


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_files_init_writes_are_owner_only(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        data = initialised(tmp_path)
        witness = tmp_path / "witness"
        assert witness_cli.main(["--data-dir", str(witness), "init", "--name", "witness.example/w1"]) == 0
    for name in ("server.key", "operator.token.sha256", "broker.sqlite3"):
        assert mode(data / name) == 0o600, name
    assert mode(data) == 0o700
    assert mode(witness / "witness.key") == 0o600


def test_a_backup_never_overwrites_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = initialised(tmp_path)
    dest = tmp_path / "backup.sqlite3"
    dest.write_bytes(b"yesterday's backup")
    dest.chmod(0o644)
    capsys.readouterr()
    assert server_cli.main(["--data-dir", str(data), "backup", str(dest)]) != 0
    _, err = capsys.readouterr()
    assert dest.read_bytes() == b"yesterday's backup"
    assert err.count("\n") == 1 and "exists" in err and "--force" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.sqlite3", "broker"]
    with umask(0o022):
        assert server_cli.main(["--data-dir", str(data), "backup", "--force", str(dest)]) == 0
    assert mode(dest) == 0o600 and dest.read_bytes().startswith(b"SQLite format 3\x00")
