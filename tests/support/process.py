"""A real broker over a real socket: the ``caseline-server`` process and a URL-bound client.

Shared by the tests that kill and restart the broker on one data directory
(durability, retention across restarts) and by ``bench/`` (load and chaos),
which drive the very same process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp


class UrlClient:
    """The subset of TestClient that ``Officer`` uses, over a real socket."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    def post(self, path: str, **kw: Any) -> Any:
        return self.session.post(self.base + path, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.session.get(self.base + path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.session.patch(self.base + path, **kw)


def free_port() -> int:
    """A loopback port free right now (the broker binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child: SIGTERM, then SIGKILL if it has not exited within 10 s (benches' brokers)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cli(data_dir: Path, *args: str) -> str:
    """Run one ``caseline-server`` operator command, as the operator would."""
    out = subprocess.run(
        [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(data_dir), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout


class Server:
    """The real ``caseline-server serve`` process on one data directory; killed, never mocked."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "caseline.server.cli",
            "--data-dir",
            str(self.data_dir),
            "serve",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        while True:  # wait for the event: the broker says it is listening
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
            if not line:
                raise RuntimeError("broker exited during start-up")
            if b"caseline broker ready" in line:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """A clean stop (SIGTERM, as an operator's service manager does), then reap it."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def wait(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
