"""Broker load benchmarks: ``make bench-load`` (``python -m bench.load``).

The broker runs as its own process (``caseline-server serve``) on loopback; the
load comes from separate worker processes.  Every update is a real sealed and
signed envelope from a real device key, sealed before the clock starts; the
broker verifies each one's signature, orders it in its case's hash chain,
commits it to SQLite (``synchronous=FULL``) and only then answers with a signed
receipt and delivers it.

Workloads (the shapes of ``bench/peers/common.py``, shared with the peers):
  idle        10,000 idle authenticated WebSockets: server memory per connection
              (measured first, on a fresh broker, so no earlier run's heap muddles it).
  throughput  50 senders (five 10-member cases): acknowledged durable updates/s, over
              both posting paths, each for ``SATURATE_SECONDS``:
              ``websocket``  each sender posts in order on its stream with up to 32 in flight
                             (``PostUpdate`` frames; results under ``throughput``);
              ``http``       each sender posts ``POST /v1/cases/{id}/updates`` on a keep-alive
                             connection, one request in flight, as ``Client.post`` does (it holds
                             the profile's posting lock, and the broker refuses a sender counter
                             that skips ahead, so HTTP cannot pipeline; ``throughput_http``).
  fanout      the same posts (WebSocket) while every member follows over WebSocket, in five
              10-member cases and then in one 50-member case: deliveries/s (each
              update counted once per member receiving it), for ``SATURATE_SECONDS``.
  latency     fixed rates (1,000 and 5,000 updates/s offered) with one follower
              per case: post-to-delivery p50/p95/p99.

``Caseline`` is one of the ``System`` s that ``bench.measure`` runs; ``make bench``
(``bench.compare``) runs it interleaved with the peers.  Alone, results go to
``bench/results/load.json``; every figure carries the CPU use of the broker, of
the load generator and of the rest of the (shared) machine while it ran, and
the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import Cursor, Delivery, PostResult, PostUpdate, Subscribe
from caseline.schemas.codec import unpack
from caseline.schemas.wire import LogReceipt, decode_signed

from bench.peers.common import (
    GROUP,
    IDLE_CONNECTIONS,
    LATENCY_SECONDS,
    RATES,
    SATURATE_SECONDS,
    SENDERS,
    WINDOW,
    Window,
    cpu_seconds,
    loadavg,
)
from tests.support.broker import Officer
from tests.support.process import UrlClient, free_port
from tests.support.world import World

RESULTS = Path(__file__).with_name("results")
MSGPACK = "application/msgpack"
DELIVERY_PREFIX = bytes([0x94, 0x01, Delivery.TAG])  # msgpack [1, 31, case, entry]
#: Posts/s each saturating run is sized for: every sender gets enough sealed updates to post at
#: this rate for ``SATURATE_SECONDS`` and a quarter more, and stops starting posts after
#: ``SATURATE_SECONDS``.  A run that ran out earlier says so (``pool_exhausted``, its ``wall_s``).
POOL_RATE = {"throughput": 7000, "http": 4000, 10: 6000, 50: 2000}


def pool(kind: str | int) -> int:
    """Sealed updates per sender for one saturating run of ``kind``."""
    return int(POOL_RATE[kind] * SATURATE_SECONDS * 1.25) // SENDERS + 1


#: Updates each sender posts in a profiled run (``profiled``), which stops when they are posted.
PER_SENDER = {"throughput": 120, 10: 120, 50: 40}
#: A note of this many characters makes a sealed envelope of about 1.2 KiB: 1 KiB of content.
NOTE_FILLER = 900


class Broker:
    def __init__(self, data: Path) -> None:
        self.data, self.port = data, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        config = self.data / "bench.toml"
        config.write_text(
            "[server]\nheartbeat = 600.0\nidle_timeout = 3600.0\n"
            "[limits]\nupdates_per_second = 1000000.0\nupdate_burst = 1000000.0\n"
            "bytes_per_second = 1e12\nbytes_burst = 1e12\nconnections_per_device = 100000\n"
            "anonymous_per_second = 1e6\nanonymous_burst = 1e6\n"
            # Off: the schemathesis suite, which runs this broker, sends hundreds of requests without
            # or with a wrong token from one address, and checks the 401s, not the limiter's 429s.
            "auth_failures_per_window = 0\n"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "caseline.server.cli",
                "--config",
                str(config),
                "--data-dir",
                str(self.data),
                "serve",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if b"ready" in line:
                return
        raise RuntimeError("broker did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def new_broker(tmp: Path) -> tuple[Broker, World]:
    """An initialised broker with two agencies registered (not yet started)."""
    broker = Broker(tmp)
    broker.cli("init")
    world = World("load")
    for agency in ("ke-kra", "tz-tra"):
        root = world.agency(agency)
        broker.cli(
            "agency", "add", agency, "--name", agency, "--country", "KE", "--root-key", root.public_key.hex()
        )
    return broker, world


async def prepare(broker: Broker, world: World, per_sender: int, members: int = GROUP) -> dict[str, Any]:
    """Enrol 50 devices in ``50 / members`` cases and seal every update in advance."""
    server_key = SigningKey((broker.data / "server.key").read_bytes())
    world.server_key = server_key
    base = f"http://127.0.0.1:{broker.port}"
    senders: list[dict[str, Any]] = []
    enrolled: list[tuple[Officer, bytes]] = []
    async with aiohttp.ClientSession() as session:
        client = UrlClient(session, base)
        for c in range(SENDERS // members):
            officers = [
                await Officer(
                    client, world, world.device("ke-kra" if i % 2 else "tz-tra", f"c{c}m{i}"), server_key
                ).enrol()
                for i in range(members)
            ]
            case_id = await officers[0].create_case([(o.device, "member") for o in officers[1:]])
            for o in officers[1:]:
                await o.sync(case_id)
            enrolled += [(o, case_id) for o in officers]
    # Sealed once every case exists: sealing takes seconds, longer than the broker keeps an idle
    # keep-alive connection open, and the session above would find its connection closed.
    filler = "x" * NOTE_FILLER
    for o, case_id in enrolled:
        envelopes = [o.seal(case_id, f"{o.device.user} {filler} {i}") for i in range(per_sender)]
        senders.append({"case": case_id, "token": o.token, "envelopes": envelopes})
    return {"base": base, "senders": senders}


# ------------------------------------------------------------------ worker processes


def _leaf_index(receipt: bytes) -> int:
    """The broker-log leaf index a receipt (a ``LogReceipt``) gives its entry."""
    return int(LogReceipt.decode(receipt).index)


async def _post_all(
    base: str,
    senders: list[dict[str, Any]],
    rate: float | None,
    out: Any,
    *,
    path: str = "websocket",
    seconds: float | None = None,
    indexes: bool = False,
) -> None:
    """Each sender posts its envelopes in counter order, over its stream (pipelined) or HTTP.

    ``rate`` paces the whole worker (updates/s); None posts as fast as the
    window of receipts allows.  ``seconds``: no post starts after that long.
    ``indexes``: also report each acknowledged post's log leaf index (from its
    receipt).  The clock starts once every stream is open, as it does for the
    peers' load generators.
    """
    sent: dict[bytes, float] = {}
    ack_ms: list[float] = []
    leaf_of: dict[str, int] = {}
    acked = 0
    exhausted = False
    interval = None if rate is None else len(senders) / rate
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        if path == "http":

            async def one_http(index: int, sender: dict[str, Any]) -> None:
                nonlocal acked, exhausted
                url = f"{base}/v1/cases/{sender['case'].hex()}/updates"
                headers = {"Authorization": f"Bearer {sender['token']}", "Content-Type": MSGPACK}
                next_at = time.perf_counter() + (0.0 if interval is None else interval * index / len(senders))
                for env in sender["envelopes"]:
                    if stop_at is not None and time.perf_counter() >= stop_at:
                        return
                    if interval is not None:
                        delay = next_at - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        next_at += interval
                    tbs, _ = decode_signed(env)
                    t0 = sent[tbs[:80]] = time.time()
                    async with session.post(url, data=env, headers=headers) as resp:
                        body = await resp.read()
                        if resp.status != 201:
                            raise RuntimeError(f"post failed: {resp.status} {body[:200]!r}")
                    ack_ms.append((time.time() - t0) * 1000)
                    acked += 1
                    if indexes:
                        leaf_of[tbs[:80].hex()] = _leaf_index(body)
                exhausted = True

            # The same start as the streams': every connection is open before the clock starts.
            for sender in senders:
                async with session.get(
                    f"{base}/v1/cases/{sender['case'].hex()}/entries?after=0&limit=1",
                    headers={"Authorization": f"Bearer {sender['token']}"},
                ) as resp:
                    await resp.read()
            start = time.perf_counter()
            stop_at = None if seconds is None else start + seconds
            await asyncio.gather(*(one_http(i, s) for i, s in enumerate(senders)))
            elapsed = time.perf_counter() - start
            out.put(
                {
                    "acked": acked,
                    "elapsed": elapsed,
                    "sent": {k.hex(): v for k, v in sent.items()},
                    "ack_ms": ack_ms,
                    "leaf_of": leaf_of,
                    "exhausted": exhausted,
                }
            )
            return
        sockets = []
        for sender in senders:
            ws = await session.ws_connect(
                f"{base}/v1/stream",
                headers={"Authorization": f"Bearer {sender['token']}"},
                max_msg_size=1 << 20,
            )
            # A cursor past the head: this connection posts and receives nothing of the case.
            await ws.send_bytes(Subscribe(cursors=(Cursor(case_id=sender["case"], after=2**62),)).encode())
            sockets.append(ws)

        async def one(index: int, sender: dict[str, Any], ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal exhausted
            window = asyncio.Semaphore(WINDOW)
            started: dict[int, float] = {}
            keys: dict[int, bytes] = {}
            posted = 0
            sending = True
            done = asyncio.Event()

            async def read() -> None:
                nonlocal acked
                count = 0
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY or unpack(msg.data)[1] != PostResult.TAG:
                        continue
                    result = PostResult.decode(msg.data)
                    if result.status != 201:
                        raise RuntimeError(f"post failed: {result.status} {result.problem}")
                    ack_ms.append((time.time() - started.pop(result.request_id)) * 1000)
                    if indexes:
                        leaf_of[keys.pop(result.request_id).hex()] = _leaf_index(result.receipt)
                    acked += 1
                    count += 1
                    window.release()
                    if not sending and count == posted:
                        done.set()
                        return

            reader = asyncio.create_task(read())
            # Spread the senders' phases evenly: a fixed-rate load, not synchronised bursts.
            next_at = time.perf_counter() + (0.0 if interval is None else interval * index / len(senders))
            for i, env in enumerate(sender["envelopes"]):
                if stop_at is not None and time.perf_counter() >= stop_at:
                    break
                if interval is not None:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                await window.acquire()
                tbs, _ = decode_signed(env)
                started[i] = sent[tbs[:80]] = time.time()
                keys[i] = tbs[:80]
                posted += 1
                await ws.send_bytes(PostUpdate(request_id=i, case_id=sender["case"], envelope=env).encode())
            else:
                exhausted = exhausted or stop_at is not None
            sending = False
            if posted and started:
                await done.wait()
            reader.cancel()
            await ws.close()

        start = time.perf_counter()
        stop_at = None if seconds is None else start + seconds
        await asyncio.gather(*(one(i, s, ws) for i, (s, ws) in enumerate(zip(senders, sockets, strict=True))))
        elapsed = time.perf_counter() - start
    out.put(
        {
            "acked": acked,
            "elapsed": elapsed,
            "sent": {k.hex(): v for k, v in sent.items()},
            "ack_ms": ack_ms,
            "leaf_of": leaf_of,
            "exhausted": exhausted,
        }
    )


def poster(
    base: str,
    senders: list[dict[str, Any]],
    rate: float | None,
    *,
    started: Any,
    go: Any,
    out: Any,
    path: str = "websocket",
    seconds: float | None = None,
    indexes: bool = False,
) -> None:
    started.put(os.getpid())  # imported and unpickled: the CPU it uses from here on is load
    go.wait()
    asyncio.run(_post_all(base, senders, rate, out, path=path, seconds=seconds, indexes=indexes))


async def _follow(base: str, followers: list[dict[str, Any]], expect: Any, ready: Any, out: Any) -> None:
    """Count deliveries until ``expect.value`` (a shared integer, 0 while not yet known) arrived."""
    received: dict[str, float] = {}
    count = 0
    last = 0.0
    done = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for f in followers:
            ws = await session.ws_connect(
                f"{base}/v1/stream", headers={"Authorization": f"Bearer {f['token']}"}, max_msg_size=1 << 20
            )
            await ws.send_bytes(Subscribe(cursors=(Cursor(case_id=f["case"], after=f["after"]),)).encode())
            sockets.append(ws)
        ready.set()
        first = None

        async def read(ws: aiohttp.ClientWebSocketResponse, record: bool) -> None:
            nonlocal count, first, last
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                if msg.data[:3] != DELIVERY_PREFIX:
                    continue  # a Notice or PostResult
                # Count every delivery; decode (and time) only on the recording sockets,
                # so that the figure measures the broker, not this process's decoder.
                now = time.time()
                last = time.perf_counter()
                first = first or last
                count += 1
                if record:
                    d = Delivery.decode(msg.data)
                    if d.entry.kind == "update":
                        tbs, _ = decode_signed(d.entry.body)
                        received[tbs[:80].hex()] = now
                if 0 < expect.value <= count:
                    done.set()

        async def known() -> None:  # the posters may finish after the last delivery arrived
            while not (0 < expect.value <= count):
                await asyncio.sleep(0.05)
            done.set()

        tasks = [asyncio.create_task(read(ws, f["record"])) for f, ws in zip(followers, sockets, strict=True)]
        tasks.append(asyncio.create_task(known()))
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = last - (first or last)
        for t in tasks:
            t.cancel()
    out.put({"delivered": count, "elapsed": elapsed, "received": received})


def follower(base: str, followers: list[dict[str, Any]], expect: Any, ready: Any, out: Any) -> None:
    asyncio.run(_follow(base, followers, expect, ready, out))


def run_posters(
    base: str,
    senders: list[dict[str, Any]],
    *,
    rate: float | None,
    workers: int,
    server_pid: int,
    followers: list[dict[str, Any]] | None = None,
    expect: int = 0,
    per_ack: int = 0,
    on_go: Callable[[], object] | None = None,
    path: str = "websocket",
    seconds: float | None = None,
    indexes: bool = False,
    extra: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Posting processes and a following one; also the CPU the broker and the load used, to show
    which side was the bottleneck (both over the same window, from the start signal to the results).

    The follower waits for ``expect`` deliveries, plus ``per_ack`` for each acknowledged post
    (known once the posters are done: a run limited by ``seconds`` posts what it managed).
    ``extra(ctx)`` may start one more process after the follower's (e.g. a log watcher); it
    returns a callable that gives that process's result after the posters are done.
    """
    ctx = multiprocessing.get_context("spawn")
    out, fout, go, started = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Queue()
    wanted = ctx.Value("q", 0 if per_ack else expect)
    fproc = None
    if followers:
        ready = ctx.Event()
        fproc = ctx.Process(target=follower, args=(base, followers, wanted, ready, fout))
        fproc.start()
        ready.wait(120)
    procs = [
        ctx.Process(
            target=poster,
            args=(base, senders[i::workers], None if rate is None else rate / workers),
            kwargs={
                "started": started,
                "go": go,
                "out": out,
                "path": path,
                "seconds": seconds,
                "indexes": indexes,
            },
        )
        for i in range(workers)
    ]
    collect = extra(ctx) if extra is not None else None
    for p in procs:
        p.start()
    watched = [started.get(timeout=120) for _ in procs] + ([fproc.pid] if fproc and fproc.pid else [])
    cpu0, window = sum(cpu_seconds(pid) for pid in watched), Window(server_pid)
    if on_go is not None:
        on_go()
    go.set()
    results = [out.get(timeout=900) for _ in procs]
    merged: dict[str, Any] = {
        "acked": sum(r["acked"] for r in results),
        "elapsed": max(r["elapsed"] for r in results),
        "sent": {k: v for r in results for k, v in r["sent"].items()},
        "ack_ms": [x for r in results for x in r["ack_ms"]],
        "leaf_of": {k: v for r in results for k, v in r["leaf_of"].items()},
        "exhausted": any(r["exhausted"] for r in results),
    }
    if per_ack:
        wanted.value = expect + per_ack * merged["acked"]
    if collect is not None:
        merged["extra"] = collect()
    if fproc is not None:
        merged["follow"] = fout.get(timeout=900)
    # Read the workers' CPU time before they exit (they wait for nothing once their result is out).
    merged["cpu"] = window.close(sum(cpu_seconds(pid) for pid in watched) - cpu0)
    for p in procs:
        p.join()
    if fproc is not None:
        fproc.join()
    return merged


# ------------------------------------------------------------------ workloads


def _latencies(r: dict[str, Any]) -> list[float]:
    received = r["follow"]["received"]
    return [(received[k] - t) * 1000 for k, t in r["sent"].items() if k in received]


class Caseline:
    """A fresh broker in a temporary directory, and the shapes of ``bench.peers.common`` against it."""

    name = "caseline"
    latency_rates: tuple[int, ...] = RATES

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="caseline-bench-")
        self.broker, self.world = new_broker(Path(self.tmp.name))
        self.broker.start()
        self.version = "this checkout"

    @property
    def pid(self) -> int:
        return self.broker.pid

    def stop(self) -> None:
        self.broker.stop()
        self.tmp.cleanup()

    def _run(self, prep: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return run_posters(prep["base"], prep["senders"], workers=1, server_pid=self.broker.pid, **kw)

    def throughput(self) -> dict[str, Any]:
        """50 senders in five 10-member cases, 32 posts in flight each on their streams: receipts/s."""
        return self._throughput("websocket")

    def throughput_http(self) -> dict[str, Any]:
        """50 senders, each posting over HTTP one at a time as ``Client.post`` does: receipts/s."""
        return self._throughput("http")

    def _throughput(self, path: str) -> dict[str, Any]:
        kind = "throughput" if path == "websocket" else "http"
        prep = asyncio.run(prepare(self.broker, self.world, pool(kind)))
        r = self._run(prep, rate=None, path=path, seconds=SATURATE_SECONDS)
        return {
            "path": path,
            "in_flight_per_sender": WINDOW if path == "websocket" else 1,
            "per_s": r["acked"] / r["elapsed"],
            "acked": r["acked"],
            "window_s": round(r["elapsed"], 2),
            "pool_exhausted": r["exhausted"],
            "cpu": r["cpu"],
            "ack_latency": r["ack_ms"],
        }

    def fanout(self, members: int) -> dict[str, Any]:
        """Every member follows its case from the genesis while all members post: deliveries/s."""
        prep = asyncio.run(prepare(self.broker, self.world, pool(members), members))
        followers = [
            {"case": s["case"], "token": s["token"], "after": 0, "record": False} for s in prep["senders"]
        ]
        for f in followers[::members]:
            f["record"] = True  # one timed member per case, as in the latency runs
        r = self._run(
            prep,
            rate=None,
            followers=followers,
            expect=len(followers),
            per_ack=members,
            seconds=SATURATE_SECONDS,
        )
        return {
            "path": "websocket",
            "per_s": r["follow"]["delivered"] / r["follow"]["elapsed"],
            "deliveries": r["follow"]["delivered"],
            "window_s": round(r["follow"]["elapsed"], 2),
            "pool_exhausted": r["exhausted"],
            "cpu": r["cpu"],
            "latency": _latencies(r),
        }

    def latency(self, rate: int) -> dict[str, Any]:
        """A fixed offered rate, one follower per case: post-to-delivery percentiles."""
        prep = asyncio.run(prepare(self.broker, self.world, max(1, int(rate * LATENCY_SECONDS) // SENDERS)))
        followers = [
            {"case": s["case"], "token": s["token"], "after": 0, "record": True}
            for s in prep["senders"][::GROUP]
        ]
        total = sum(len(s["envelopes"]) for s in prep["senders"]) + len(followers)
        r = self._run(prep, rate=rate, followers=followers, expect=total)
        return {
            "offered_per_s": rate,
            "achieved_per_s": round(r["acked"] / r["elapsed"], 1),
            "cpu": r["cpu"],
            "latency": _latencies(r),
            "ack_latency": r["ack_ms"],
        }

    def idle(self, connections: int) -> dict[str, Any]:
        return asyncio.run(idle(self.broker, self.world, connections))


async def idle(broker: Broker, world: World, n: int) -> dict[str, Any]:
    """Server memory per idle authenticated WebSocket subscribed to its (empty) stream."""
    prep = await prepare(broker, world, 0)
    token = prep["senders"][0]["token"]
    await asyncio.sleep(0.5)
    before = broker.rss_kib()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for _ in range(n):
            ws = await session.ws_connect(
                f"{prep['base']}/v1/stream", headers={"Authorization": f"Bearer {token}"}
            )
            await ws.send_bytes(Subscribe(cursors=()).encode())
            sockets.append(ws)
        await asyncio.sleep(1.0)  # a benchmark, not a test: let the server settle before reading RSS
        after = broker.rss_kib()
        for ws in sockets:
            await ws.close()
    return {
        "connections": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / n, 2),
        "loadavg": loadavg(),
    }


#: Updates per sender when profiling: enough load to outlast the profile's window.
PROFILE_PER_SENDER = {"throughput": 500, "fanout_10": 500, "fanout_50": 200}
PROFILE_SECONDS = 6.0


def profiled(workload: str) -> dict[str, Any]:
    """The broker under one saturating workload, sampled by py-spy for ``PROFILE_SECONDS``.

    ``workload`` is a key of the results (``throughput``, ``fanout_10``,
    ``fanout_50``, ``latency_5000``...); a latency run is profiled at its
    offered rate.  Returns what the run achieved and ``bench.profile.summarise``.
    """
    from bench import profile

    kind, _, arg = workload.partition("_")
    members = int(arg) if kind == "fanout" else GROUP
    rate = float(arg) if kind == "latency" else None
    per_sender = PROFILE_PER_SENDER.get(workload) or int((rate or 4000) * (PROFILE_SECONDS + 1) / SENDERS)
    with tempfile.TemporaryDirectory() as tmp:
        broker, world = new_broker(Path(tmp))
        broker.start()
        try:
            prep = asyncio.run(prepare(broker, world, per_sender, members))
            followers = None
            if kind == "fanout":
                followers = [
                    {"case": s["case"], "token": s["token"], "after": 0, "record": False}
                    for s in prep["senders"]
                ]
            elif kind == "latency":
                followers = [
                    {"case": s["case"], "token": s["token"], "after": 0, "record": True}
                    for s in prep["senders"][::GROUP]
                ]
            sent = sum(len(s["envelopes"]) for s in prep["senders"])
            expect = sent * (members if kind == "fanout" else 1) + len(followers or ())
            samples = Path(tmp) / "py-spy.txt"
            spy: list[Any] = []
            load = loadavg()
            r = run_posters(
                prep["base"],
                prep["senders"],
                rate=rate,
                workers=1,
                server_pid=broker.pid,
                followers=followers,
                expect=expect if followers else 0,
                on_go=lambda: spy.append(profile.record(broker.pid, PROFILE_SECONDS, samples)),
            )
            if spy and spy[0] is not None:
                spy[0].wait(PROFILE_SECONDS + 30)
        finally:
            broker.stop()
        if not samples.exists():
            return {"skipped": "py-spy wrote no samples (is ptrace allowed here?)"}
        achieved = {"acked_per_s": round(r["acked"] / r["elapsed"], 1)}
        if kind == "fanout":
            achieved["deliveries_per_s"] = round(r["follow"]["delivered"] / r["follow"]["elapsed"], 1)
        return {
            "workload": workload,
            "loadavg": load,
            "achieved": achieved,
            "cpu": r["cpu"],
            "profile": profile.summarise(samples),
        }


def main() -> None:
    """caseline alone (``make bench-load``): the same runs as ``make bench``, into load.json."""
    from bench.measure import WORKLOADS, measure

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", type=int, default=IDLE_CONNECTIONS)
    parser.add_argument("--only", choices=WORKLOADS, help="run one workload")
    args = parser.parse_args()
    report = measure([Caseline], args.repeats, args.idle, only=args.only)["caseline"]
    RESULTS.mkdir(exist_ok=True)
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_end": loadavg()}
    name = "load.json" if not args.only else f"load-{args.only}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(_brief(report), indent=1))


def _brief(value: Any) -> Any:
    """The report without its CDFs, for the terminal."""
    if isinstance(value, dict):
        return {k: _brief(v) for k, v in value.items() if k != "cdf_ms"}
    return value


if __name__ == "__main__":
    main()
