"""Matrix Synapse, the durable-chat yardstick: ``m.room.encrypted`` events through the client API.

Synapse is installed from PyPI into its own venv under ``bench/.peers/synapse``
(never into caseline's dependencies), configured with SQLite, bound to
127.0.0.1 on a free port, its rate limits raised out of the way, and stopped by
PID at the end.  Every event is an ``m.room.encrypted`` event whose content is
shaped like a Megolm message with 1 KiB of plaintext (about 1.5 KiB of
base64): Synapse stores and relays it opaquely, as caseline's broker does with
sealed updates, but verifies no signature over it.  Events are sent with
``PUT /rooms/{room}/send/m.room.encrypted/{txn}`` and received by long-polling
``/sync``, the way Matrix clients do; there is no WebSocket.

The load generator is aiohttp in separate processes (one sending, one
following), like caseline's, since here the server is far slower than the
client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp

from bench.peers.common import (
    GROUP,
    PAYLOAD,
    PEERS,
    SENDERS,
    Process,
    Skipped,
    Window,
    cpu_seconds,
    free_port,
    loadavg,
)

VENV: Final = PEERS / "synapse"
HOME: Final = PEERS / "synapse-data"
#: Pinned so that a rerun measures the same server; the version the anchors were measured on.
SPEC: Final = "matrix-synapse==1.163.2"
API: Final = "/_matrix/client/v3"
CONCURRENCY: Final = 16  # PUTs in flight in the saturating runs
#: Sized for at least ``SATURATE_SECONDS`` (10 s) at the rates of 2026-11-22 (78 sends/s;
#: 315 and 790 deliveries/s in 10- and 50-member rooms).
THROUGHPUT_EVENTS: Final = 1000
FANOUT_EVENTS: Final = {10: 400, 50: 200}
#: Synapse's ceiling is about a hundred events/s here, so its latency run is at a rate it can sustain.
LATENCY_RATE: Final = 20
LATENCY_EVENTS: Final = 200
IDLE_BATCH: Final = 200  # long-polls opened before waiting for Synapse to take them
STALL_SECONDS: Final = 60.0
HIGH: Final = {"per_second": 1e6, "burst_count": 1e6}
T = TypeVar("T")


def install() -> str:
    """The pinned Synapse in its own venv (created and filled only when missing); its version."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = [str(python), "-c", "import synapse; print(synapse.__version__)"]
    have = subprocess.run(probe, capture_output=True, text=True, check=False)
    if have.returncode != 0 or have.stdout.split()[:1] != [SPEC.split("==")[1]]:
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SPEC]
        done = subprocess.run(pip, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise Skipped(f"pip install {SPEC} failed: {done.stderr.strip()[-300:]}")
        have = subprocess.run(probe, capture_output=True, text=True, check=True)
    return have.stdout.split()[0]  # without the "(b=branch,commit)" it reads from the current git checkout


def configure(port: int) -> tuple[list[Path], str]:
    """A fresh data directory: Synapse's generated config, then our overrides on top of it.

    Synapse merges ``-c`` files key by key, and JSON is YAML, so the overrides
    need no YAML library here.  Besides loopback and SQLite: rate limits raised
    very high, shared-secret registration, presence off and logging at WARNING
    (both cost Synapse CPU per request that a benchmark of messaging should not
    charge it), and a cheap bcrypt for the set-up's registrations only.
    """
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    generated = HOME / "homeserver.yaml"
    subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            "localhost",
            "--config-path",
            str(generated),
            "--data-directory",
            str(HOME),
            "--generate-config",
            "--report-stats=no",
        ],
        check=True,
        capture_output=True,
    )
    secret = secrets.token_hex(32)
    log_config = HOME / "log.yaml"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
                "handlers": {
                    "file": {
                        "class": "logging.FileHandler",
                        "filename": str(HOME / "homeserver.log"),
                        "formatter": "plain",
                    }
                },
                "root": {"level": "WARNING", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }
        )
    )
    overrides = {
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(HOME / "homeserver.db")}},
        "log_config": str(log_config),
        "pid_file": str(HOME / "homeserver.pid"),
        "registration_shared_secret": secret,
        "enable_registration": False,
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        "bcrypt_rounds": 4,
        "rc_message": HIGH,
        "rc_registration": HIGH,
        "rc_registration_token_validity": HIGH,
        "rc_login": {"address": HIGH, "account": HIGH, "failed_attempts": HIGH},
        "rc_admin_redaction": HIGH,
        "rc_joins": {"local": HIGH, "remote": HIGH},
        "rc_joins_per_room": HIGH,
        "rc_3pid_validation": HIGH,
        "rc_invites": {"per_room": HIGH, "per_user": HIGH, "per_issuer": HIGH},
        "rc_third_party_invite": HIGH,
        "rc_room_creation": HIGH,
        "rc_key_requests": HIGH,
        "rc_presence": {"per_user": HIGH},
        "rc_delayed_event_mgmt": HIGH,
        "rc_reports": HIGH,
        "rc_media_create": HIGH,
        "rc_user_directory": HIGH,
        "rc_profile": HIGH,
    }
    extra = HOME / "bench.yaml"
    extra.write_text(json.dumps(overrides, indent=1))
    return [generated, extra], secret


# ------------------------------------------------------------------ the client side


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode()


def encrypted_content(index: int) -> dict[str, str]:
    """An ``m.room.encrypted`` content shaped like Megolm over ``PAYLOAD`` bytes of event JSON.

    A Megolm message is a version byte, the ratchet index, the AES-CBC
    ciphertext (the plaintext padded to 16 bytes), an 8-byte MAC and a 64-byte
    signature.  Its first 8 bytes here carry our ``index`` so that a follower
    can tell which send it is receiving (the rest is random: nothing compresses).
    """
    size = 1 + 4 + 3 + (PAYLOAD // 16 + 1) * 16 + 8 + 64
    return {
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": _b64(os.urandom(32)),
        "ciphertext": _b64(index.to_bytes(8, "big") + os.urandom(size - 8)),
        "session_id": _b64(os.urandom(32)),
        "device_id": "BENCHDEVICE",
    }


def index_of(content: dict[str, Any]) -> int:
    return int.from_bytes(base64.b64decode(content["ciphertext"][:12])[:8], "big")


async def _json(response: aiohttp.ClientResponse) -> Any:
    if response.status != 200:
        raise RuntimeError(
            f"{response.method} {response.url.path}: {response.status} {await response.text()}"
        )
    return await response.json()


async def register(session: aiohttp.ClientSession, base: str, secret: str, name: str) -> dict[str, str]:
    """The admin API's shared-secret registration (HMAC-SHA1 over nonce, name, password, role)."""
    url = f"{base}/_synapse/admin/v1/register"
    async with session.get(url) as r:
        nonce = (await _json(r))["nonce"]
    password = secrets.token_hex(8)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), name.encode(), password.encode(), b"notadmin"]))
    body = {"nonce": nonce, "username": name, "password": password, "admin": False, "mac": mac.hexdigest()}
    async with session.post(url, json=body) as r:
        answer = await _json(r)
    return {"user_id": answer["user_id"], "token": answer["access_token"]}


async def create_room(session: aiohttp.ClientSession, base: str, members: list[dict[str, str]]) -> str:
    """A private, encrypted room of ``members``: the first creates it and invites, the others join."""
    owner, others = members[0], members[1:]
    body = {
        "preset": "private_chat",
        "invite": [m["user_id"] for m in others],
        "initial_state": [
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    }
    async with session.post(f"{base}{API}/createRoom", json=body, headers=auth(owner["token"])) as r:
        room: str = (await _json(r))["room_id"]
    for m in others:
        async with session.post(f"{base}{API}/rooms/{room}/join", json={}, headers=auth(m["token"])) as r:
            await _json(r)
    return room


_filters = 0


async def make_filter(
    session: aiohttp.ClientSession, base: str, user: dict[str, str], rooms: list[str]
) -> str:
    """A sync filter for the encrypted events of ``rooms`` only, up to 100 a sync (Synapse's cap).

    Each filter differs from the last (an unused ``not_types``): Synapse gives the same
    JSON the same filter id, and caches a sync response under its filter id for
    two minutes, so a follower starting with a reused id could be handed an old
    position and count an earlier run's events.
    """
    global _filters  # noqa: PLW0603 - a counter for this process, nothing more
    _filters += 1
    none: dict[str, Any] = {"types": []}
    body = {
        "presence": none,
        "account_data": none,
        "room": {
            "rooms": rooms,
            "timeline": {
                "types": ["m.room.encrypted"],
                "not_types": [f"bench.unused.{_filters}"],
                "limit": 100,
            },
            "state": {"types": [], "lazy_load_members": True},
            "ephemeral": none,
            "account_data": none,
        },
    }
    url = f"{base}{API}/user/{user['user_id']}/filter"
    async with session.post(url, json=body, headers=auth(user["token"])) as r:
        filter_id: str = (await _json(r))["filter_id"]
    return filter_id


async def _sync(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    filter_id: str,
    *,
    since: str | None,
    timeout_ms: int,
) -> dict[str, Any]:
    params = {"filter": filter_id, "timeout": str(timeout_ms)}
    if since is not None:
        params["since"] = since
    async with session.get(f"{base}{API}/sync", params=params, headers=auth(token)) as r:
        body: dict[str, Any] = await _json(r)
    return body


# ------------------------------------------------------------------ worker processes


async def _send(
    base: str, jobs: list[dict[str, Any]], rate: float | None, signals: tuple[Any, Any, Any]
) -> None:  # pragma: no cover - runs in a child process
    """PUT every job's event: CONCURRENCY at a time, or paced per sender at ``rate`` events/s."""
    started, go, out = signals
    contents = {j["index"]: encrypted_content(j["index"]) for j in jobs}  # built before the clock
    sent: dict[int, float] = {}
    put_ms: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def put(job: dict[str, Any]) -> None:
            url = f"{base}{API}/rooms/{job['room']}/send/m.room.encrypted/t{job['index']}"
            sent[job["index"]] = start = time.time()
            async with session.put(url, json=contents[job["index"]], headers=auth(job["token"])) as r:
                await _json(r)
            put_ms.append((time.time() - start) * 1000)

        started.put(os.getpid())  # from here on, this process's CPU is load
        go.wait()
        t0 = time.perf_counter()
        if rate is None:
            queue = list(reversed(jobs))

            async def worker() -> None:
                while queue:
                    await put(queue.pop())

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        else:
            by_sender: dict[str, list[dict[str, Any]]] = {}
            for job in jobs:
                by_sender.setdefault(job["token"], []).append(job)
            interval = len(by_sender) / rate

            async def paced(offset: float, own: list[dict[str, Any]]) -> None:
                next_at = t0 + offset
                for job in own:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                    await put(job)

            n = len(by_sender)
            await asyncio.gather(*(paced(interval * i / n, own) for i, own in enumerate(by_sender.values())))
        elapsed = time.perf_counter() - t0
    out.put({"sent": sent, "put_ms": put_ms, "elapsed": elapsed})


def sender(base: str, jobs: list[dict[str, Any]], rate: float | None, signals: tuple[Any, Any, Any]) -> None:
    asyncio.run(_send(base, jobs, rate, signals))  # pragma: no cover


async def _follow(
    base: str, followers: list[dict[str, Any]], expect: int, ready: Any, out: Any
) -> None:  # pragma: no cover - runs in a child process
    """Each follower long-polls /sync from where it stood; count events, time the recorded ones."""
    received: dict[int, float] = {}
    count = gaps = 0
    first = last = 0.0
    done = asyncio.Event()
    progress = time.monotonic()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        for f in followers:
            f["since"] = (await _sync(session, base, f["token"], f["filter"], since=None, timeout_ms=0))[
                "next_batch"
            ]
        ready.set()

        async def follow(f: dict[str, Any]) -> None:
            nonlocal count, gaps, first, last, progress
            since = f["since"]
            while not done.is_set():
                body = await _sync(session, base, f["token"], f["filter"], since=since, timeout_ms=30_000)
                now = time.time()
                since = body["next_batch"]
                for room in body.get("rooms", {}).get("join", {}).values():
                    timeline = room.get("timeline", {})
                    gaps += bool(timeline.get("limited"))
                    for event in timeline.get("events", []):
                        if event.get("type") != "m.room.encrypted":
                            continue
                        count += 1
                        first, last, progress = first or now, now, time.monotonic()
                        if f["record"]:
                            received[index_of(event["content"])] = now
                if count >= expect:
                    done.set()

        tasks = [asyncio.create_task(follow(f)) for f in followers]
        while not done.is_set() and time.monotonic() - progress < STALL_SECONDS:
            await asyncio.sleep(0.1)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        for t in tasks:
            t.cancel()
    out.put({"delivered": count, "elapsed": last - first, "received": received, "gaps": gaps})


def follower(base: str, followers: list[dict[str, Any]], expect: int, ready: Any, out: Any) -> None:
    asyncio.run(_follow(base, followers, expect, ready, out))  # pragma: no cover


def run_load(
    base: str,
    jobs: list[dict[str, Any]],
    *,
    server_pid: int,
    rate: float | None = None,
    followers: list[dict[str, Any]] | None = None,
    expect: int = 0,
) -> dict[str, Any]:
    """One sending process and, if asked, one following process; results merged, with CPU use."""
    ctx = multiprocessing.get_context("spawn")
    out, fout, go, started = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = []
    try:
        if followers:
            ready = ctx.Event()
            fproc = ctx.Process(target=follower, args=(base, followers, expect, ready, fout))
            fproc.start()
            procs.append(fproc)
            if not ready.wait(300):
                raise RuntimeError("Synapse followers did not get ready")
        sproc = ctx.Process(target=sender, args=(base, jobs, rate, (started, go, out)))
        sproc.start()
        procs.append(sproc)
        pids = [started.get(timeout=300)] + [p.pid for p in procs[:-1] if p.pid]
        cpu0, window = sum(cpu_seconds(pid) for pid in pids), Window(server_pid)
        go.set()
        result: dict[str, Any] = out.get(timeout=900)
        if followers:
            result["follow"] = fout.get(timeout=900)
        result["cpu"] = window.close(sum(cpu_seconds(pid) for pid in pids) - cpu0)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    return result


async def _idle(
    base: str, users: list[dict[str, Any]], n: int, hold: Any, ready: Any
) -> None:  # pragma: no cover
    """``n`` pending long-poll /syncs, Synapse's equivalent of an idle subscribed connection."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        tasks = []
        for i in range(n):
            u = users[i % len(users)]
            coro = _sync(session, base, u["token"], u["filter"], since=u["since"], timeout_ms=600_000)
            tasks.append(asyncio.create_task(coro))
            if i % IDLE_BATCH == IDLE_BATCH - 1:
                await asyncio.sleep(0.05)  # Twisted's listen backlog is small: do not flood it
        ready.set()
        while not hold.is_set():
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()


def idler(base: str, users: list[dict[str, Any]], n: int, hold: Any, ready: Any) -> None:
    asyncio.run(_idle(base, users, n, hold, ready))  # pragma: no cover


# ------------------------------------------------------------------ the workloads


class Synapse:
    """One fresh Synapse with 50 registered users, and the shapes of ``common`` against it."""

    name = "synapse"
    latency_rates: tuple[int, ...] = (LATENCY_RATE,)

    def __init__(self) -> None:
        self.version = install()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        configs, self.secret = configure(self.port)
        args: list[str | Path] = [VENV / "bin" / "python", "-m", "synapse.app.homeserver"]
        for c in configs:
            args += ["-c", c]
        self.process = Process(args, HOME / "stdout.log")
        self.next_index = 0
        self.generation = 0
        try:
            asyncio.run(self._wait_ready())
            self.users = _with_session(self._register)
        except BaseException:
            self.process.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()

    async def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.proc.poll() is not None:
                    raise RuntimeError(f"Synapse exited with {self.process.proc.returncode}; see {HOME}")
                try:
                    async with session.get(f"{self.base}/_matrix/client/versions") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"Synapse did not answer within {timeout:.0f} s")

    async def _register(self, session: aiohttp.ClientSession) -> list[dict[str, str]]:
        """50 new users: each run has its own, as each caseline run has new devices."""
        self.generation += 1
        return [
            await register(session, self.base, self.secret, f"g{self.generation}u{i}") for i in range(SENDERS)
        ]

    async def _rooms(
        self, session: aiohttp.ClientSession, size: int
    ) -> list[tuple[str, list[dict[str, str]]]]:
        """New users in new ``size``-member rooms.

        Fresh for every run, as caseline's cases are: in rooms that kept every earlier
        run's events, unread by members that never send a read receipt, Synapse's
        sends slowed down by half from one run to the next.
        """
        users = await self._register(session)
        groups = [users[i : i + size] for i in range(0, SENDERS, size)]
        return [(await create_room(session, self.base, g), g) for g in groups]

    def _jobs(self, rooms: list[tuple[str, list[dict[str, str]]]], total: int) -> list[dict[str, Any]]:
        """``total`` sends spread round-robin over every member of every room."""
        senders = [(room, u) for room, members in rooms for u in members]
        out = []
        for k in range(total):
            room, u = senders[k % len(senders)]
            out.append({"room": room, "token": u["token"], "index": self.next_index})
            self.next_index += 1
        return out

    async def _followers(
        self, session: aiohttp.ClientSession, rooms: list[tuple[str, list[dict[str, str]]]], all_members: bool
    ) -> list[dict[str, Any]]:
        """Every member of each room (fan-out) or only its first (latency); the first is timed."""
        out = []
        for room, members in rooms:
            for i, u in enumerate(members if all_members else members[:1]):
                filter_id = await make_filter(session, self.base, u, [room])
                out.append({"token": u["token"], "filter": filter_id, "record": i == 0})
        return out

    def throughput(self) -> dict[str, Any]:
        """600 events from the 50 members of five rooms, 16 PUTs in flight: events stored/s."""
        rooms = _with_session(self._rooms, GROUP)
        r = run_load(self.base, self._jobs(rooms, THROUGHPUT_EVENTS), server_pid=self.process.pid)
        return {"per_s": len(r["put_ms"]) / r["elapsed"], "cpu": r["cpu"], "ack_latency": r["put_ms"]}

    def fanout(self, members: int) -> dict[str, Any]:
        """Every member of ``members``-member rooms syncing while 16 PUTs are in flight: events/s received."""
        rooms = _with_session(self._rooms, members)
        followers = _with_session(self._followers, rooms, True)
        events = FANOUT_EVENTS[members]
        r = run_load(
            self.base,
            self._jobs(rooms, events),
            server_pid=self.process.pid,
            followers=followers,
            expect=events * members,
        )
        if r["follow"]["delivered"] != events * members:
            raise RuntimeError(f"Synapse delivered {r['follow']['delivered']} of {events * members}")
        return {
            "per_s": r["follow"]["delivered"] / r["follow"]["elapsed"],
            "deliveries": r["follow"]["delivered"],
            "limited_syncs": r["follow"]["gaps"],
            "cpu": r["cpu"],
        }

    def latency(self, rate: int) -> dict[str, Any]:
        """Sends paced at ``rate``/s over the 50 senders, one syncing member per room timed."""
        rooms = _with_session(self._rooms, GROUP)
        followers = _with_session(self._followers, rooms, False)
        jobs = self._jobs(rooms, LATENCY_EVENTS)
        r = run_load(
            self.base, jobs, server_pid=self.process.pid, rate=rate, followers=followers, expect=len(jobs)
        )
        received = r["follow"]["received"]
        return {
            "offered_per_s": rate,
            "achieved_per_s": round(len(r["put_ms"]) / r["elapsed"], 1),
            "sent": len(r["sent"]),
            "delivered": r["follow"]["delivered"],
            "limited_syncs": r["follow"]["gaps"],
            "cpu": r["cpu"],
            "latency": [(received[i] - t) * 1000 for i, t in r["sent"].items() if i in received],
            "ack_latency": r["put_ms"],
        }

    def idle(self, n: int) -> dict[str, Any]:
        """Synapse's memory per pending long-poll /sync (its idle, subscribed connection)."""

        async def prepare(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
            users = []
            for u in self.users:
                filter_id = await make_filter(session, self.base, u, [])
                body = await _sync(session, self.base, u["token"], filter_id, since=None, timeout_ms=0)
                users.append({**u, "filter": filter_id, "since": body["next_batch"]})
            return users

        users = _with_session(prepare)
        time.sleep(0.5)
        before = self.process.rss_kib()
        ctx = multiprocessing.get_context("spawn")
        hold, ready = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=idler, args=(self.base, users, n, hold, ready))
        proc.start()
        try:
            ready.wait(600)
            # Wait until Synapse has taken every request: its CPU goes quiet.
            quiet_since = time.monotonic()
            cpu = self.process.cpu_seconds()
            while time.monotonic() - quiet_since < 2.0:
                time.sleep(0.5)
                now = self.process.cpu_seconds()
                if now - cpu > 0.05:
                    quiet_since = time.monotonic()
                cpu = now
            after = self.process.rss_kib()
            connections = _established(self.port)
        finally:
            hold.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        return {
            "connections": n,
            "established_at_server": connections,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": round((after - before) / n, 2),
            "loadavg": loadavg(),
        }


def _with_session(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await fn(session, *args)`` on a fresh aiohttp session, from synchronous code."""

    async def run() -> T:
        async with aiohttp.ClientSession() as session:
            return await fn(session, *args)

    return asyncio.run(run())


def _established(port: int) -> int:
    """TCP connections established to 127.0.0.1:``port`` (from /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":
            count += 1
    return count
