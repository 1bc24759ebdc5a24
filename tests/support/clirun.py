"""Run the real ``caseline`` CLI as a separate process, beside a library client.

The CLI is a process of its own in these tests, as it is for an officer: a
profile shared between it and a ``Client`` in the test's process is two
processes on one profile, the case the local store must get right.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from caseline.client.client import Client

from tests.support.agencies import PASSPHRASE


def cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "CASELINE_HOME": str(home), "CASELINE_PASSPHRASE": PASSPHRASE, "NO_COLOR": "1"}


async def start_cli(home: Path, *args: str, stdin: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "caseline.client.cli",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(home),
    )


async def finish(
    proc: asyncio.subprocess.Process, timeout: float = 120, stdin: bytes | None = None
) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()  # never leave a stray CLI behind a failed test
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli(home: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI to its end without blocking the loop that serves the broker."""
    return await finish(await start_cli(home, *args, stdin=stdin is not None), stdin=stdin)


def cli_home(profile: Client | Path) -> tuple[Path, str]:
    """A CASELINE_HOME whose profile is a library client's own: two processes, one profile."""
    directory = profile.directory if isinstance(profile, Client) else profile
    home = directory.parent / f"cli-home-{directory.name}"
    if not home.exists():
        (home / "profiles").mkdir(parents=True, mode=0o700)
        (home / "profiles" / directory.name).symlink_to(directory)
    return home, directory.name


async def until_following(proc: asyncio.subprocess.Process) -> None:
    """Wait for ``follow``'s own word that it has subscribed (its first line on stderr)."""
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=60)
        assert line, "follow ended before it subscribed"
        if b"following" in line:
            return
