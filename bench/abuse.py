"""The broker under hostile load (issue 14): ``make abuse`` (``python -m bench.abuse``).

Method
------
A real broker (``caseline-server serve``, a subprocess on loopback, its own
default limits unless ``--config`` names an operator's TOML) with its stdout and
stderr in one log file.  Four real device profiles enrol as an officer would
(``bench.coldstart.enrol_device``): the honest device (alice, ke-kra), her
partner (juma, tz-tra), a malicious member of their case (mallory, tz-tra) and a
registered non-member (eve, ke-kra).

The honest device runs in this process, on ``caseline.client.Client``'s own
path: every ``POST_PERIOD_S`` it posts a note with ``Client.post_note`` (a sync,
the sealed update over HTTP, the signed receipt verified), timed from the call
to its return; every ``LOGIN_PERIOD_S`` a second connection with the same
device keys logs in (``BrokerConnection.login``: challenge, then session),
timed the same way.  A call that has not returned after ``HONEST_TIMEOUT_S``
is counted as an error (``TimeoutError``).

Each phase is ``--seconds`` without the flood (the baseline), then the flood,
started by a separate attacker process (so that the attack's own CPU does not
sit in the honest device's event loop), and once the flood is up, ``--seconds``
of the honest device under it.  Per phase the results hold the honest device's
p50/p99/max and errors for posts and logins in both windows, the attacker's
counters, the broker's RSS (``VmRSS``) and open descriptors (sampled every
``SAMPLE_S``, the peak kept), and how many bytes its log grew.  Every figure
carries the 1-minute load average at the end of its window: the machine is
shared.

Phases
------
In this order: the big entries stay in the honest case (on a broker without
byte-bounded pages they stop the honest device's syncs for good), so they and
the streams that read them come last.

slow-bodies      ``--slow`` connections from 127.0.0.2 onwards, each the headers of a
                 ``PUT /v1/agencies/{id}/revocations`` with ``Content-Length: 100000`` and
                 then one byte every ``DRIBBLE_S``; a cut connection is reopened.
challenge-flood  ``POST /v1/auth/challenge`` for the honest device's id, as fast as
                 ``WORKERS`` concurrent requests go, from 127.0.1.1-127.0.1.250.
failed-auth      ``GET /v1/cases`` with random bearer tokens as fast as possible from
                 127.0.0.3; one request in eight is the registered non-member's, reading
                 the honest case's entries from 127.0.0.5.
connection-flood As many idle TCP connections from 127.0.0.4 as the broker (or this
                 machine's descriptor limit, ``--max-connections``) allows, reopened
                 when cut.
big-entries      The malicious member posts notes of the largest size the note schema
                 allows, sealed by its own case view (the real core), back to back on
                 one connection from 127.0.0.6, waiting out each 429's Retry-After.
streams          The malicious member opens ``STREAMS`` WebSockets from 127.0.0.6 that
                 resume the (now big) case from 0 and never read (4 KiB receive
                 buffers); RSS before, at its peak, and after.

Traffic goes to 127.0.0.0/8 only; every loop is bounded by the phase's clock and
a count; the broker and every attacker process are stopped by their PIDs at the
end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime
import functools
import json
import multiprocessing
import os
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess  # nosec B404 - runs this interpreter's own caseline-server
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
from caseline.client.client import Client
from caseline.client.profile import profile_dir
from caseline.client.transport import BrokerConnection
from caseline.schemas import content as content_schemas
from caseline.schemas.api import ChallengeRequest, Cursor, Session, Subscribe

from bench.chaos import setup
from bench.coldstart import wall_ms
from bench.core import RESULTS, machine
from bench.devices import enrol_device, publish_crls
from bench.peers.common import latency_summary, loadavg
from tests.support.process import end_process, free_port
from tests.support.world import World

#: The honest device posts one note per this period (20 updates/s)...
POST_PERIOD_S: Final = 0.05
#: ...and a login (challenge + session) is timed once per this period, by alice's and juma's keys
#: in turn: each then logs in every 3 s, well within the broker's 30 logins per device and minute.
LOGIN_PERIOD_S: Final = 1.5
#: An honest call that has not returned after this long counts as an error.
HONEST_TIMEOUT_S: Final = 10.0
#: The honest device's first, unrecorded window: its first calls open connections and fill caches.
WARM_UP_S: Final = 2.0
#: The late member's one sync of the big case, at most.
LATE_SYNC_TIMEOUT_S: Final = 60.0
#: The broker's RSS and descriptors are read this often during a phase.
SAMPLE_S: Final = 0.1
#: A slow body's next byte follows this long after the previous one.
DRIBBLE_S: Final = 5.0
#: The slow bodies' declared length: far more than they will ever send.
SLOW_LENGTH: Final = 100_000
#: Concurrent requests in the challenge and failed-auth floods.
WORKERS: Final = 32
#: WebSockets the malicious member opens in the streams phase.
STREAMS: Final = 16
#: Source addresses of the challenge flood: 127.0.1.1-127.0.1.250.
CHALLENGE_SOURCES: Final = tuple(f"127.0.1.{i}" for i in range(1, 251))
#: Source addresses of the slow bodies, one connection each while they last: 127.0.0.2, then
#: 127.0.0.7-127.0.0.250 and 127.0.2.1-127.0.5.250 (127.0.0.3-6 are other phases' sources).
SLOW_SOURCES: Final = (
    "127.0.0.2",
    *(f"127.0.0.{i}" for i in range(7, 251)),
    *(f"127.0.{a}.{b}" for a in range(2, 6) for b in range(1, 251)),
)
#: Descriptors left to this machine when the connection flood sizes itself.
FD_MARGIN: Final = 500
#: Longest wait for an attacker to get its flood up (opening connections) or to report.
RAMP_TIMEOUT_S: Final = 120.0
#: Each phase's flood, in one line (the results and the table carry it), in the order they run:
#: the big entries stay in the honest case, so they and the streams that read them come last.
FLOODS: Final = {
    "slow-bodies": f"--slow connections, each a revocation PUT's headers (Content-Length {SLOW_LENGTH:,}), "
    f"then a byte every {DRIBBLE_S:g} s",
    "challenge-flood": f"POST /v1/auth/challenge for the honest device, {WORKERS} in flight, "
    f"from {len(CHALLENGE_SOURCES)} addresses",
    "failed-auth": f"GET /v1/cases with random bearer tokens, {WORKERS} in flight from 127.0.0.3; "
    "one in eight the non-member reading the honest case",
    "connection-flood": "idle TCP connections from 127.0.0.4 up to the descriptor limit, reopened when cut",
    "big-entries": "a malicious member posts the largest notes the schema allows, back to back, "
    "waiting out each 429",
    "streams": f"{STREAMS} WebSockets of the malicious member resume the big case from 0 and never read",
}
PHASES: Final = tuple(FLOODS)


# ------------------------------------------------------------------ the broker


class Served:
    """``caseline-server serve`` on a data directory, stdout and stderr into one log; stopped by PID."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log, self.port = data, log, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: Path | None = None) -> None:
        args = [sys.executable, "-m", "caseline.server.cli"]
        if config is not None:
            args += ["--config", str(config)]
        args += ["--data-dir", str(self.data), "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            offset = log.tell()  # a restart appends: only its own lines count
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # nosec B603
        deadline = time.monotonic() + 60
        while b"caseline broker ready" not in self.log.read_bytes()[offset:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the broker did not start: {self.log.read_text()[-800:]}")
            time.sleep(0.05)  # a bench waiting for a process's start-up line, not a test

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0

    def fd_limit(self) -> int:
        """The broker's soft RLIMIT_NOFILE (``/proc/PID/limits``)."""
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    def log_bytes(self) -> int:
        return self.log.stat().st_size

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)


# ------------------------------------------------------------------ the honest device


class Honest:
    """Alice's profile, her case, and connections with her keys and her partner's for the timed logins."""

    def __init__(self, client: Client, partner: Client, case_id: bytes, base: str) -> None:
        self.client, self.case_id = client, case_id
        self.login_conns = [
            BrokerConnection(base, keys=c.keys, server_key=c.server_key) for c in (client, partner)
        ]
        self.n = 0

    async def window(self, seconds: float) -> dict[str, Any]:
        """Posts every ``POST_PERIOD_S`` and logins every ``LOGIN_PERIOD_S`` for ``seconds``."""
        posts: list[float] = []
        logins: list[float] = []
        post_errors: collections.Counter[str] = collections.Counter()
        login_errors: collections.Counter[str] = collections.Counter()
        examples: dict[str, str] = {}
        end = time.monotonic() + seconds
        late = 0

        async def timed(call: Callable[[], Awaitable[object]], into: list[float], errors: Any) -> None:
            started = time.perf_counter()
            try:
                await asyncio.wait_for(call(), HONEST_TIMEOUT_S)
            except Exception as exc:
                kind = f"{type(exc).__name__} {getattr(exc, 'status', '')}".strip()
                errors[kind] += 1
                examples.setdefault(kind, str(exc)[:200])  # the client's own message: no token in it
            else:
                into.append((time.perf_counter() - started) * 1000)

        async def post_loop() -> None:
            nonlocal late
            due = time.monotonic()
            while (now := time.monotonic()) < end:
                if now < due:
                    await asyncio.sleep(due - now)
                self.n += 1
                post = functools.partial(self.client.post_note, self.case_id, f"honest update {self.n}")
                await timed(post, posts, post_errors)
                due += POST_PERIOD_S
                if time.monotonic() > due + POST_PERIOD_S:  # behind: no catch-up burst
                    late += 1
                    due = time.monotonic()

        async def login_loop() -> None:
            due = time.monotonic()
            while (now := time.monotonic()) < end:
                if now < due:
                    await asyncio.sleep(due - now)
                conn = self.login_conns[0]
                self.login_conns.append(self.login_conns.pop(0))  # the other device next time
                await timed(conn.login, logins, login_errors)
                due = max(due + LOGIN_PERIOD_S, time.monotonic())

        started = time.perf_counter()
        await asyncio.gather(post_loop(), login_loop())
        return {
            "seconds": round(time.perf_counter() - started, 2),
            "posts": {
                **_brief(latency_summary(posts)),
                "errors": sum(post_errors.values()),
                "error_kinds": dict(post_errors),
                "error_examples": {k: v for k, v in examples.items() if k in post_errors},
                "offered_per_s": round(1 / POST_PERIOD_S),
                "behind_schedule": late,
            },
            "logins": {
                **_brief(latency_summary(logins)),
                "errors": sum(login_errors.values()),
                "error_kinds": dict(login_errors),
                "error_examples": {k: v for k, v in examples.items() if k in login_errors},
            },
            "loadavg_1m": loadavg()[0],
        }

    async def close(self) -> None:
        for conn in self.login_conns:
            await conn.close()
        await self.client.close()


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "cdf_ms"}


class Sampler:
    """The broker's peak RSS and descriptor count while it runs (a task polling ``/proc``)."""

    def __init__(self, broker: Served) -> None:
        self.broker = broker
        self.rss_peak_kib = broker.rss_kib()
        self.fds_peak = broker.fds()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.rss_peak_kib = max(self.rss_peak_kib, self.broker.rss_kib())
            self.fds_peak = max(self.fds_peak, self.broker.fds())
            await asyncio.sleep(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


# ------------------------------------------------------------------ the attacks (in their own process)


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def _errno_name(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno

        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


class Tally:
    """An attack's counters, by name, as the results show them."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def result(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class _Held(asyncio.Protocol):
    """One attacker connection: what the broker answered, and whether it cut it."""

    def __init__(self, pool: set[_Held], tally: Tally, first: bytes = b"") -> None:
        self.pool, self.tally, self.first = pool, tally, first
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pool.add(self)
        if self.first:
            transport.write(self.first)

    def data_received(self, data: bytes) -> None:
        if not self.answered and data.startswith(b"HTTP/1."):
            self.answered = True
            self.tally.add(f"answered {data[9:12].decode(errors='replace')}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.discard(self)
        if self.transport is not None:
            self.tally.add("closed by broker" if not self.answered else "closed after an answer")

    def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None  # ours: not counted as a cut
            transport.abort()


async def _hold(
    port: int,
    tally: Tally,
    ready: Any,
    stop: Any,
    *,
    sources: list[str],
    target: int,
    first: bytes = b"",
    dribble: bool = False,
    max_attempts: int,
) -> dict[str, Any]:
    """Keep ``target`` connections open (from ``sources`` in turn), reopening what the broker cuts."""
    loop = asyncio.get_running_loop()
    pool: set[_Held] = set()
    attempts = 0
    peak = 0

    async def one(source: str) -> None:
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Held(pool, tally, first), "127.0.0.1", port, local_addr=(source, 0)
                ),
                5.0,
            )
            tally.add("opened")
        except (OSError, TimeoutError) as exc:
            tally.add(f"refused {_errno_name(exc)}")

    async def top_up() -> None:
        nonlocal attempts, peak
        while attempts < max_attempts:
            missing = min(target - len(pool), max_attempts - attempts, 500)
            if missing > 0:
                batch = [sources[(attempts + i) % len(sources)] for i in range(missing)]
                attempts += missing
                await asyncio.gather(*(one(s) for s in batch))
            peak = max(peak, len(pool))
            if not ready.is_set() and (len(pool) >= target or attempts >= target):
                ready.set()
            await asyncio.sleep(0.05 if len(pool) < target else 0.5)

    async def dribbler() -> None:
        while True:
            await asyncio.sleep(DRIBBLE_S)
            for held in list(pool):
                if held.transport is not None and not held.transport.is_closing():
                    held.transport.write(b"\x00")
                    tally.add("body bytes sent")

    tasks = [asyncio.create_task(top_up())]
    if dribble:
        tasks.append(asyncio.create_task(dribbler()))
    await asyncio.to_thread(stop.wait, RAMP_TIMEOUT_S * 10)
    for t in tasks:
        t.cancel()
    held_at_stop = len(pool)
    for held in list(pool):
        held.close()
    ready.set()
    return {"target": target, "open_peak": peak, "open_at_stop": held_at_stop, "attempts": attempts}


async def slow_bodies(p: dict[str, Any], tally: Tally, ready: Any, stop: Any) -> dict[str, Any]:
    head = (
        f"PUT /v1/agencies/{p['agency']}/revocations HTTP/1.1\r\nHost: 127.0.0.1:{p['port']}\r\n"
        f"Content-Type: application/msgpack\r\nContent-Length: {SLOW_LENGTH}\r\n\r\n"
    ).encode()
    n = p["slow"]
    return await _hold(
        p["port"],
        tally,
        ready,
        stop,
        sources=list(SLOW_SOURCES),
        target=n,
        first=head,
        dribble=True,
        max_attempts=n * 10,
    )


async def _flood(
    workers: int, stop: Any, request: Callable[[int], Awaitable[str]], tally: Tally, cap: int
) -> None:
    """``workers`` loops each making requests back to back until ``stop`` (or ``cap`` in all)."""
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < cap:
            sent += 1
            try:
                tally.add(await request(sent))  # the request's number, over all workers
            except Exception as exc:  # counted: a flood goes on whatever one request met
                tally.add(f"error {type(exc).__name__}")
            tally.add("sent")

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.to_thread(stop.wait, RAMP_TIMEOUT_S * 10)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _session(source: str, limit: int = 8) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(source, 0), limit=limit),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def challenge_flood(p: dict[str, Any], tally: Tally, ready: Any, stop: Any) -> dict[str, Any]:
    body = ChallengeRequest(device_id=bytes.fromhex(p["device_id"])).encode()
    url = f"{p['base']}/v1/auth/challenge"
    sessions = [_session(s, limit=2) for s in CHALLENGE_SOURCES]

    async def request(i: int) -> str:
        session = sessions[i % len(sessions)]
        async with session.post(url, data=body, headers={"Content-Type": "application/msgpack"}) as r:
            await r.read()
            return f"status {r.status}"

    try:
        ready.set()
        await _flood(WORKERS, stop, request, tally, cap=p["cap"])
    finally:
        for s in sessions:
            await s.close()
    return {"sources": len(CHALLENGE_SOURCES), "workers": WORKERS}


async def failed_auth(p: dict[str, Any], tally: Tally, ready: Any, stop: Any) -> dict[str, Any]:
    guesser, outsider = _session("127.0.0.3", limit=WORKERS), _session("127.0.0.5", limit=4)
    cases = f"{p['base']}/v1/cases"
    entries = f"{p['base']}/v1/cases/{p['case']}/entries?after=0"

    async def request(i: int) -> str:
        if i % 8 == 0:  # one in eight: the registered non-member at the honest case
            headers = {"Authorization": f"Bearer {p['eve_token']}"}
            async with outsider.get(entries, headers=headers) as r:
                await r.read()
                return f"non-member status {r.status}"
        headers = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
        async with guesser.get(cases, headers=headers) as r:
            await r.read()
            return f"random token status {r.status}"

    probe: dict[str, Any] = {}
    try:
        started = time.perf_counter()  # one non-member request alone first: what does it get?
        try:
            probe["status"] = await asyncio.wait_for(request(0), 10.0)
        except Exception as exc:
            probe["status"] = f"error {type(exc).__name__}"
        probe["ms"] = round((time.perf_counter() - started) * 1000, 1)
        ready.set()
        await _flood(WORKERS, stop, request, tally, cap=p["cap"])
    finally:
        await guesser.close()
        await outsider.close()
    return {
        "guesser_source": "127.0.0.3",
        "non_member_source": "127.0.0.5",
        "non_member_probe": probe,
        "workers": WORKERS,
    }


def biggest_note() -> str:
    """A note text within the schema (20,000 characters) whose content nears ``MAX_CONTENT_BYTES``."""
    markings = {"handling": "H2", "tlp": "AMBER+STRICT"}  # the longest markings a policy sets
    base = "\u3042" * 20000  # three UTF-8 bytes each
    size = len(content_schemas.encode_content("note", {"markings": markings, "lang": "en", "text": base}))
    wide = max(0, min(20000, content_schemas.MAX_CONTENT_BYTES - size - 512))
    return "\U0001f4e6" * wide + base[wide:]  # four bytes each for the first ``wide`` characters


async def big_entries(p: dict[str, Any], tally: Tally, ready: Any, stop: Any) -> dict[str, Any]:
    """Seal with the member's own view (the real core) and post back to back, waiting out each 429.

    Not ``Client.post``: it syncs before each post, which would slow the attacker
    down below the broker's rate limit.  Each refused update is sent again with
    the same bytes, as the client does.
    """
    case = bytes.fromhex(p["case"])
    client = await Client.open(Path(p["mallory_profile"]))
    try:
        await client.sync(case)
        view = await client.view(case)
    finally:
        await client.close()
    assert view.state is not None
    markings = {"handling": view.state.policy.handling, "tlp": view.state.policy.tlp}
    text = biggest_note()
    content = content_schemas.encode_content("note", {"markings": markings, "lang": "en", "text": text})
    url = f"{p['base']}/v1/cases/{p['case']}/updates"
    headers = {"Content-Type": "application/msgpack", "Authorization": f"Bearer {p['mallory_token']}"}
    deadline = time.monotonic() + RAMP_TIMEOUT_S * 10
    envelope: bytes | None = None
    async with _session("127.0.0.6", limit=1) as session:
        ready.set()
        while not stop.is_set() and time.monotonic() < deadline and tally.counts["sent"] < p["cap"]:
            if envelope is None:
                sealed = view.seal(
                    content_type="note", content=content, now=wall_ms(), nonce=secrets.token_bytes(24)
                )
                envelope = sealed.envelope
            tally.add("sent")
            try:
                async with session.post(url, data=envelope, headers=headers) as r:
                    await r.read()
                    status, retry = r.status, r.headers.get("Retry-After")
            except Exception as exc:  # counted; the same bytes go again
                tally.add(f"error {type(exc).__name__}")
                continue
            tally.add(f"status {status}")
            if status == 201:
                tally.add("bytes stored", len(envelope))
                envelope = None
            elif status == 429:
                pause = 1.0
                with contextlib.suppress(TypeError, ValueError):
                    pause = float(retry or 1.0)
                await asyncio.wait_for(asyncio.to_thread(stop.wait, min(pause, 5.0)), 10.0)
            else:
                tally.add("gave up")
                break
    return {"note_characters": len(text), "content_bytes": len(content), "source": "127.0.0.6"}


def _ws_frame(payload: bytes) -> bytes:
    """One masked binary WebSocket frame (RFC 6455 §5.2), as a client must send it."""
    mask = secrets.token_bytes(4)
    n = len(payload)
    head = bytes([0x82]) + (
        bytes([0x80 | n])
        if n < 126
        else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        if n < 65536
        else bytes([0x80 | 127]) + n.to_bytes(8, "big")
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def streams(p: dict[str, Any], tally: Tally, ready: Any, stop: Any) -> dict[str, Any]:
    """WebSockets opened by hand on sockets with a small receive buffer, and then never read."""
    loop = asyncio.get_running_loop()
    subscribe = Subscribe(cursors=(Cursor(case_id=bytes.fromhex(p["case"]), after=0),)).encode()
    held: list[socket.socket] = []
    for _ in range(STREAMS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            sock.bind(("127.0.0.6", 0))
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", p["port"])), 5.0)
            key = base64.b64encode(secrets.token_bytes(16)).decode()
            await loop.sock_sendall(
                sock,
                (
                    f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{p['port']}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {p['mallory_token']}\r\n\r\n"
                ).encode(),
            )
            answer = b""
            while b"\r\n\r\n" not in answer and len(answer) < 4096:  # the handshake's answer only
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 10.0)
                if not chunk:
                    break
                answer += chunk
            status = answer[9:12].decode(errors="replace") or "none"
            tally.add(f"handshake {status}")
            if status == "101":
                await loop.sock_sendall(sock, _ws_frame(subscribe))
                held.append(sock)
            else:
                sock.close()
        except (OSError, TimeoutError) as exc:
            tally.add(f"refused {_errno_name(exc)}")
            sock.close()
    ready.set()
    await asyncio.to_thread(stop.wait, RAMP_TIMEOUT_S * 10)
    open_at_stop = 0
    for sock in held:  # a stream the broker cut reads as EOF or a reset now; never read before
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK) != b"":
                    open_at_stop += 1
            except BlockingIOError:
                open_at_stop += 1
        sock.close()
    return {"streams": STREAMS, "source": "127.0.0.6", "open_at_stop": open_at_stop}


async def connection_flood(p: dict[str, Any], tally: Tally, ready: Any, stop: Any) -> dict[str, Any]:
    target = min(p["max_connections"], _raise_fd_limit() - FD_MARGIN)
    out = await _hold(
        p["port"], tally, ready, stop, sources=["127.0.0.4"], target=target, max_attempts=target * 5
    )
    return {**out, "source": "127.0.0.4"}


ATTACKS: Final[dict[str, Callable[[dict[str, Any], Tally, Any, Any], Awaitable[dict[str, Any]]]]] = {
    "slow-bodies": slow_bodies,
    "challenge-flood": challenge_flood,
    "failed-auth": failed_auth,
    "big-entries": big_entries,
    "streams": streams,
    "connection-flood": connection_flood,
}


def attacker(phase: str, params: dict[str, Any], ready: Any, stop: Any, out: Any) -> None:
    """An attacker process: runs one flood until ``stop``, then reports its counters."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the bench, which stops us by PID
    _raise_fd_limit()
    tally = Tally()
    started = time.perf_counter()

    async def run() -> dict[str, Any]:
        return await ATTACKS[phase](params, tally, ready, stop)

    try:
        info = asyncio.run(run())
    except Exception as exc:
        info = {"failed": f"{type(exc).__name__}: {exc}"}
        ready.set()
    seconds = time.perf_counter() - started
    sent = tally.counts.get("sent", 0)
    rate = {"sent_per_s": round(sent / seconds, 1)} if sent else {}  # the request floods only
    out.put({**info, "counts": tally.result(), "seconds": round(seconds, 2), **rate})


# ------------------------------------------------------------------ the run


async def phase(
    name: str, honest: Honest, broker: Served, *, params: dict[str, Any], seconds: float, live: list[Any]
) -> dict[str, Any]:
    print(f"== {name}: baseline {seconds:g} s (load {loadavg()[0]})", flush=True)
    log0 = broker.log_bytes()
    with Sampler(broker) as quiet:
        baseline = await honest.window(seconds)
    baseline["broker"] = {
        "rss_peak_kib": quiet.rss_peak_kib,
        "fds_peak": quiet.fds_peak,
        "log_growth_bytes": broker.log_bytes() - log0,
    }
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    rss_before, log1 = broker.rss_kib(), broker.log_bytes()
    proc = ctx.Process(target=attacker, args=(name, params, ready, stop, out), daemon=True)
    with Sampler(broker) as loud:
        proc.start()
        live.append(proc)
        try:
            ramp = time.perf_counter()
            await asyncio.to_thread(ready.wait, RAMP_TIMEOUT_S)
            ramp_s = time.perf_counter() - ramp
            print(f"   flood up after {ramp_s:.1f} s; {seconds:g} s under it", flush=True)
            flooded = await honest.window(seconds)
            rss_end = broker.rss_kib()
        finally:
            stop.set()
            ready.set()  # also frees our waiting thread if interrupted during the ramp
        try:
            attack = await asyncio.to_thread(out.get, True, RAMP_TIMEOUT_S)
        except Exception as exc:  # queue.Empty: the attacker hung; it is killed below
            attack = {"failed": f"no report: {type(exc).__name__}"}
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        live.remove(proc)
    await asyncio.sleep(1.0)  # a bench: let the broker notice the closed connections before reading RSS
    flooded["broker"] = {
        "rss_before_kib": rss_before,
        "rss_peak_kib": loud.rss_peak_kib,
        "rss_at_end_of_window_kib": rss_end,
        "rss_after_kib": broker.rss_kib(),
        "fds_peak": loud.fds_peak,
        "fd_limit": broker.fd_limit(),
        "log_growth_bytes": broker.log_bytes() - log1,
        "alive": broker.alive(),
    }
    flooded["ramp_s"] = round(ramp_s, 2)
    _print(name, baseline, flooded, attack)
    return {"flood_is": FLOODS[name], "baseline": baseline, "flood": flooded, "attacker": attack}


def _fmt(r: dict[str, Any]) -> str:
    if not r.get("samples"):
        return f"     -/     -/     -  err {r['errors']}"
    return f"{r['p50_ms']:6.1f}/{r['p99_ms']:6.1f}/{r['max_ms']:6.0f}  err {r['errors']}"


def _print(name: str, base: dict[str, Any], flood: dict[str, Any], attack: dict[str, Any]) -> None:
    for label, w in (("baseline", base), ("flood", flood)):
        print(
            f"   {label:<9} posts p50/p99/max ms {_fmt(w['posts'])}   logins {_fmt(w['logins'])}"
            f"   (load {w['loadavg_1m']})",
            flush=True,
        )
    b = flood["broker"]
    print(
        f"   broker RSS {b['rss_before_kib'] // 1024} -> peak {b['rss_peak_kib'] // 1024} -> "
        f"{b['rss_after_kib'] // 1024} MiB, fds peak {b['fds_peak']}, log +{b['log_growth_bytes']:,} B",
        flush=True,
    )
    print(f"   attacker {attack.get('counts', attack)}", flush=True)


async def session_token(client: Client, base: str) -> str:
    """A session of the client's device for an attacker to use: its own login, as the client does it."""
    got: list[str] = []

    async def keep(session: Session | None) -> None:
        if session is not None:
            got.append(session.token)

    conn = BrokerConnection(base, keys=client.keys, server_key=client.server_key)
    conn.on_session = keep
    try:
        await conn.login()
    finally:
        await conn.close()
    return got[0]


async def run(args: argparse.Namespace, root: Path, live: list[Any]) -> dict[str, Any]:
    world = World("bench-abuse")
    world.now = wall_ms()
    for agency in ("ke-kra", "tz-tra"):
        world.agency(agency)
    data, home = root / "broker", root / "home"
    setup(data, world)
    broker = Served(data, root / "broker.log")
    live.append(broker)
    # Set up on the built-in defaults: enrolling is not under test, and an operator's stricter
    # config may refuse its burst of logins from 127.0.0.1.  The phases run on ``--config``.
    broker.start()
    base = broker.base
    clients: list[Client] = []
    ready = False
    try:
        await publish_crls(world, base)
        for agency, user in (
            ("ke-kra", "alice"),
            ("tz-tra", "juma"),
            ("tz-tra", "mallory"),
            ("ke-kra", "eve"),
        ):
            clients.append(await enrol_device(world, base, home, key_dir=root, agency=agency, user=user))
        alice, juma, mallory, eve = clients
        case_id = await alice.create_case(
            title="Op. Hostile Load", members=[("tz-tra", "juma"), ("tz-tra", "mallory")]
        )
        for member in (juma, mallory):
            await member.sync(case_id)
        params = {
            "base": base,
            "port": broker.port,
            "agency": "ke-kra",
            "case": case_id.hex(),
            "device_id": alice.keys.device_id.hex(),
            "eve_token": await session_token(eve, base),
            "mallory_token": await session_token(mallory, base),
            "mallory_profile": str(profile_dir("mallory", home=home)),
            "slow": args.slow,
            "max_connections": args.max_connections,
            "cap": args.cap,
        }
        ready = True
    finally:  # an open profile holds a database thread that would keep this process alive
        for client in clients[1:] if ready else clients:
            await client.close()
    honest = Honest(alice, juma, case_id, base)
    phases: dict[str, Any] = {}
    try:
        if args.config is not None:  # sessions live in the broker's database: they outlast the restart
            broker.stop()
            broker.start(args.config)
        warm = await honest.window(WARM_UP_S)  # connections, caches and the JIT-less first calls
        print(f"== warm-up {WARM_UP_S:g} s: posts {_fmt(warm['posts'])} (not recorded)", flush=True)
        for name in args.phases:
            if not broker.alive():
                phases[name] = {"skipped": "the broker is no longer running"}
                continue
            phases[name] = await phase(name, honest, broker, params=params, seconds=args.seconds, live=live)
            phases[name]["command"] = f"{shlex.join(_command())}  # phase {name}"
        # After the streams, not before them: the page this sync makes the broker build would
        # leave freed memory in its heap for the streams' buffers, hiding them from its RSS.
        if "big-entries" in phases and "flood" in phases["big-entries"] and broker.alive():
            late = await late_sync(profile_dir("juma", home=home), case_id)
            phases["big-entries"]["late_member_sync"] = late
            print(f"== juma, offline during the big entries, syncs the case: {late}", flush=True)
    finally:
        await honest.close()
        broker.stop()
        if args.log is not None:
            shutil.copyfile(broker.log, args.log)
    return {
        "broker": {"config": str(args.config) if args.config else "built-in defaults"},
        "phases": phases,
    }


async def late_sync(profile: Path, case_id: bytes) -> dict[str, Any]:
    """A member who was offline during the big entries opens the case: one ``Client.sync``, timed.

    The honest device keeps up page by page while it posts; a member coming back
    finds every big entry at once, in pages the broker bounds by count alone.
    """
    client = await Client.open(profile)
    started = time.perf_counter()
    try:
        before = (await client.view(case_id)).count
        await asyncio.wait_for(client.sync(case_id), LATE_SYNC_TIMEOUT_S)
        after = (await client.view(case_id)).count
        out: dict[str, Any] = {"ok": True, "entries_fetched": after - before}
    except Exception as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    finally:
        await client.close()
    out["ms"] = round((time.perf_counter() - started) * 1000, 1)
    out["loadavg_1m"] = loadavg()[0]
    return out


def _command() -> list[str]:
    return [Path(sys.executable).name, "-m", "bench.abuse", *sys.argv[1:]]


def markdown(report: dict[str, Any]) -> str:
    """The short table for the closing note: each phase, without and with its flood."""

    def cell(r: dict[str, Any]) -> str:
        if not r.get("samples"):
            return f"- ({r['errors']} err)"
        return f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f} ({r['errors']} err)"

    lines = [
        f"Honest device during each flood (`{report['command']}`, {report['date']}, "
        f"broker config: {report['broker_config']}). Latencies in ms as p50 / p99 / max (errors); "
        "load = 1-minute load average at the end of the window.",
        "",
        "| phase | posts, no flood | posts, flood | logins, no flood | logins, flood | "
        "broker RSS peak (MiB) | log growth (B) | load | attacker |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["phases"].items():
        if "flood" not in r:
            lines.append(f"| {name} | {r.get('skipped', r.get('failed', '?'))} | | | | | | | |")
            continue
        b, f, a = r["baseline"], r["flood"], r["attacker"]
        counts = ", ".join(f"{k}: {v:,}" for k, v in a.get("counts", {}).items())
        lines.append(
            f"| {name} | {cell(b['posts'])} | {cell(f['posts'])} | {cell(b['logins'])} | "
            f"{cell(f['logins'])} | {f['broker']['rss_peak_kib'] / 1024:.0f} | "
            f"{f['broker']['log_growth_bytes']:,} | {b['loadavg_1m']} / {f['loadavg_1m']} | "
            f"{counts or a.get('failed', '')} |"
        )
    late = report["phases"].get("big-entries", {}).get("late_member_sync")
    if late is not None:
        outcome = f"{late['entries_fetched']:,} entries" if late["ok"] else f"**failed**: {late['error']}"
        lines += [
            "",
            f"After the big entries, a member who was offline during them syncs the case once: "
            f"{outcome} in {late['ms']:,.0f} ms (load {late['loadavg_1m']}).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="each window (default 10; 2 for a smoke run)"
    )
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--slow", type=int, default=800, help="slow-body connections (default 800)")
    parser.add_argument(
        "--max-connections", type=int, default=19_000, help="connection flood's cap (less the fd margin)"
    )
    parser.add_argument("--cap", type=int, default=2_000_000, help="requests at most per flood")
    parser.add_argument("--config", type=Path, help="the broker's TOML (default: its built-in defaults)")
    parser.add_argument("--out", default="abuse", help="results/<out>.json and .md")
    parser.add_argument("--log", type=Path, help="keep a copy of the broker's log here")
    args = parser.parse_args()
    live: list[Any] = []
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="caseline-abuse-") as tmp:
            result = asyncio.run(run(args, Path(tmp), live))
    except KeyboardInterrupt:
        print("interrupted: the broker and the attackers are stopped, nothing written", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        for thing in live:  # whatever is still running: the broker and attacker processes, by PID
            if isinstance(thing, Served):
                thing.stop()
            elif thing.is_alive():
                thing.kill()
                thing.join()
    report = {
        "benchmark": "bench.abuse",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(_command()),
        "machine": machine(),
        "seconds_per_window": args.seconds,
        "honest": {
            "post_period_s": POST_PERIOD_S,
            "login_period_s": LOGIN_PERIOD_S,
            "timeout_s": HONEST_TIMEOUT_S,
        },
        "broker_config": result["broker"]["config"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "phases": result["phases"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (RESULTS / f"{args.out}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    print(f"Wrote {RESULTS / (args.out + '.json')} and {RESULTS / (args.out + '.md')}")


if __name__ == "__main__":
    main()
