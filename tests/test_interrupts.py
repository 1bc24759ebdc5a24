"""Ctrl-C ends a command at once and cleanly: exit 130, no traceback, nothing lost.

The broker sits behind a front that holds chosen requests until the test lets
them go, so SIGINT reaches the CLI exactly while it waits on the broker, the
moment an officer gives up on a slow link.  An update sealed before the
interrupt stays in the outbox and the next run sends it, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from caseline.client.client import Client
from caseline.schemas.errors import EXIT_INTERRUPTED, EXIT_OK
from caseline.server.keys import STORE

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_env, cli_home, finish, start_cli
from tests.support.hostile import forward


class Front:
    """Forwards to the real broker, except that it holds requests ``hold`` picks."""

    def __init__(self, net: Network, session: aiohttp.ClientSession) -> None:
        self.net, self.session = net, session
        self.hold: Callable[[web.Request], bool] = lambda _: False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.hold(request):
            self.held.set()
            await self.release.wait()
        data, status, ctype = await forward(self.session, self.net.url, request, body)
        return web.Response(body=data, status=status, headers={"Content-Type": ctype} if ctype else {})


@pytest.fixture
async def front(aiohttp_server: Any, net: Network) -> AsyncIterator[tuple[Front, str]]:
    async with aiohttp.ClientSession() as session:
        front = Front(net, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", front.handle)
        server = await aiohttp_server(app)
        yield front, str(server.make_url("")).rstrip("/")
        front.release.set()


async def officer_behind(net: Network, url: str) -> tuple[Client, bytes, Path, str]:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    await alice.login(server_url=url)  # the CLI will read the broker's URL from the profile
    home, profile = cli_home(alice)
    return alice, case_id, home, profile


async def interrupt_when_held(front: Front, proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    await asyncio.wait_for(front.held.wait(), timeout=60)
    proc.send_signal(signal.SIGINT)
    return await finish(proc, timeout=60)


def assert_clean(err: str) -> None:
    for mark in ("Traceback", "RuntimeError", "Event loop is closed", "Exception ignored"):
        assert mark not in err, err


async def test_ctrl_c_while_case_show_waits_on_the_broker(net: Network, front: tuple[Front, str]) -> None:
    proxy, url = front
    _, case_id, home, profile = await officer_behind(net, url)
    proxy.hold = lambda r: r.path.endswith("/entries")
    proc = await start_cli(home, "--profile", profile, "case", "show", case_id.hex())
    code, _, err = await interrupt_when_held(proxy, proc)
    assert code == EXIT_INTERRUPTED
    assert_clean(err)


async def test_ctrl_c_during_a_post_keeps_the_update_for_the_next_run(
    net: Network, front: tuple[Front, str]
) -> None:
    proxy, url = front
    _, case_id, home, profile = await officer_behind(net, url)
    proxy.hold = lambda r: r.method == "POST" and r.path.endswith("/updates")
    post = ("--json", "--profile", profile, "post", case_id.hex(), "--type", "note", "--field", "text=once")
    code, _, err = await interrupt_when_held(proxy, await start_cli(home, *post))
    assert code == EXIT_INTERRUPTED
    assert_clean(err)
    proxy.hold, proxy.release = (lambda _: False), asyncio.Event()
    proxy.release.set()
    # The held request may yet reach the broker; either way the next run sends the same bytes.
    code, out, err = await cli(home, *post)
    assert code == EXIT_OK, err
    rows = await net.app[STORE].entries(case_id, after=0, limit=100)
    assert [r.kind for r in rows] == ["commit", "update"]  # exactly one copy
    assert json.loads(out)["seq"] == 1


async def test_ctrl_c_at_the_passphrase_prompt_ends_at_once(net: Network, tmp_path: Path) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    env = cli_env(home)
    del env["CASELINE_PASSPHRASE"]
    main, child = pty.openpty()  # a terminal, so the CLI prompts
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caseline.client.cli", "--profile", profile, "case", "list",
        stdin=child, stdout=child, stderr=child, env=env,
    )  # fmt: skip
    os.close(child)
    seen = b""
    loop = asyncio.get_running_loop()
    while b"Passphrase" not in seen:
        seen += await loop.run_in_executor(None, os.read, main, 1024)
    proc.send_signal(signal.SIGINT)  # and no Enter
    code = await asyncio.wait_for(proc.wait(), timeout=30)
    os.close(main)
    assert code == EXIT_INTERRUPTED


async def test_ctrl_c_while_the_command_is_still_loading(tmp_path: Path) -> None:
    """The console script's entry point: Ctrl-C among the imports is a clean 130 too."""
    script = "import sys; from caseline.client.entry import main; sys.argv[0] = 'caseline'; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-c", script, "whoami",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CASELINE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    # The CLI's own imports are under way once its crypto stack is loading (rich comes
    # later, and only when there is something to show).
    while not any("caseline.crypto.primitives" in line for line in seen):
        line = (await asyncio.wait_for(proc.stderr.readline(), timeout=60)).decode()
        assert line, "the command ended before it loaded its crypto stack"
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    code, _, err = await finish(proc, timeout=60)
    assert code == EXIT_INTERRUPTED
    assert_clean(err)
