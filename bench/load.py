"""Broker load benchmarks: ``make bench-load`` (``python -m bench.load``).

The broker runs as its own process (``caseline-server serve``) on loopback; the
load comes from separate worker processes.  Every update is a real sealed and
signed envelope from a real device key, sealed before the clock starts.

Workloads:
  throughput  50 senders (five 10-member cases), each posting its updates in order
              on its stream with up to 32 in flight: acknowledged durable updates/s.
  fanout      the same posts while every member follows over WebSocket:
              deliveries/s (each update counted once per member receiving it).
  latency     fixed rates (1,000 and 5,000 updates/s offered) with one follower
              per case: post-to-delivery p50/p95/p99.
  idle        N idle authenticated WebSockets: server memory per connection.

Results go to ``bench/results/load.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import Cursor, Delivery, PostResult, PostUpdate, Subscribe
from caseline.schemas.codec import unpack
from caseline.schemas.wire import decode_signed

from tests.broker import Officer
from tests.test_durability import UrlClient, free_port
from tests.world import World

RESULTS = Path(__file__).with_name("results")
CASES, MEMBERS = 5, 10
DELIVERY_PREFIX = bytes([0x94, 0x01, Delivery.TAG])  # msgpack [1, 31, case, entry]


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

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


async def prepare(broker: Broker, world: World, per_sender: int) -> dict[str, Any]:
    """Enrol 50 devices in five 10-member cases and seal every update in advance."""
    server_key = SigningKey((broker.data / "server.key").read_bytes())
    world.server_key = server_key
    base = f"http://127.0.0.1:{broker.port}"
    senders: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        client = UrlClient(session, base)
        for c in range(CASES):
            officers = [
                await Officer(
                    client, world, world.device("ke-kra" if i % 2 else "tz-tra", f"c{c}m{i}"), server_key
                ).enrol()
                for i in range(MEMBERS)
            ]
            case_id = await officers[0].create_case([(o.device, "member") for o in officers[1:]])
            for o in officers[1:]:
                await o.sync(case_id)
            for o in officers:
                envelopes = [o.seal(case_id, f"{o.device.user} {'x' * 900} {i}") for i in range(per_sender)]
                senders.append({"case": case_id, "token": o.token, "envelopes": envelopes})
    return {"base": base, "senders": senders}


# ------------------------------------------------------------------ worker processes


WINDOW = 32  # updates a sender keeps in flight on its stream


async def _post_all(base: str, senders: list[dict[str, Any]], rate: float | None, out: Any) -> None:
    """Each sender posts its envelopes in counter order over its own stream, pipelined.

    ``rate`` paces the whole worker (updates/s); None posts as fast as the
    window of receipts allows.
    """
    sent: dict[bytes, float] = {}
    ack_ms: list[float] = []
    acked = 0
    interval = None if rate is None else len(senders) / rate
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(index: int, sender: dict[str, Any]) -> None:
            nonlocal acked
            ws = await session.ws_connect(
                f"{base}/v1/stream",
                headers={"Authorization": f"Bearer {sender['token']}"},
                max_msg_size=1 << 20,
            )
            # A cursor past the head: this connection posts and receives nothing of the case.
            await ws.send_bytes(Subscribe(cursors=(Cursor(case_id=sender["case"], after=2**62),)).encode())
            window = asyncio.Semaphore(WINDOW)
            started: dict[int, float] = {}
            total = len(sender["envelopes"])
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
                    acked += 1
                    count += 1
                    window.release()
                    if count == total:
                        done.set()
                        return

            reader = asyncio.create_task(read())
            # Spread the senders' phases evenly: a fixed-rate load, not synchronised bursts.
            next_at = time.perf_counter() + (0.0 if interval is None else interval * index / len(senders))
            for i, env in enumerate(sender["envelopes"]):
                if interval is not None:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                await window.acquire()
                tbs, _ = decode_signed(env)
                started[i] = sent[tbs[:80]] = time.time()
                await ws.send_bytes(PostUpdate(request_id=i, case_id=sender["case"], envelope=env).encode())
            if total:
                await done.wait()
            reader.cancel()
            await ws.close()

        start = time.perf_counter()
        await asyncio.gather(*(one(i, s) for i, s in enumerate(senders)))
        elapsed = time.perf_counter() - start
    out.put(
        {"acked": acked, "elapsed": elapsed, "sent": {k.hex(): v for k, v in sent.items()}, "ack_ms": ack_ms}
    )


def poster(base: str, senders: list[dict[str, Any]], rate: float | None, go: Any, out: Any) -> None:
    go.wait()
    asyncio.run(_post_all(base, senders, rate, out))


async def _follow(base: str, followers: list[dict[str, Any]], expect: int, ready: Any, out: Any) -> None:
    received: dict[str, float] = {}
    count = 0
    done = asyncio.Event()
    async with aiohttp.ClientSession() as session:
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
            nonlocal count, first
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                if msg.data[:3] != DELIVERY_PREFIX:
                    continue  # a Notice or PostResult
                # Count every delivery; decode (and time) only on the recording sockets,
                # so that the figure measures the broker, not this process's decoder.
                now = time.time()
                first = first or time.perf_counter()
                count += 1
                if record:
                    d = Delivery.decode(msg.data)
                    if d.entry.kind == "update":
                        tbs, _ = decode_signed(d.entry.body)
                        received[tbs[:80].hex()] = now
                if count >= expect:
                    done.set()

        tasks = [asyncio.create_task(read(ws, i < CASES)) for i, ws in enumerate(sockets)]
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - (first or time.perf_counter())
        for t in tasks:
            t.cancel()
    out.put({"delivered": count, "elapsed": elapsed, "received": received})


def follower(base: str, followers: list[dict[str, Any]], expect: int, ready: Any, out: Any) -> None:
    asyncio.run(_follow(base, followers, expect, ready, out))


def run_posters(
    base: str,
    senders: list[dict[str, Any]],
    *,
    rate: float | None,
    workers: int,
    followers: list[dict[str, Any]] | None = None,
    expect: int = 0,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out, fout, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    fproc = None
    if followers:
        ready = ctx.Event()
        fproc = ctx.Process(target=follower, args=(base, followers, expect, ready, fout))
        fproc.start()
        ready.wait(120)
    procs = [
        ctx.Process(
            target=poster, args=(base, senders[i::workers], None if rate is None else rate / workers, go, out)
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    merged: dict[str, Any] = {
        "acked": sum(r["acked"] for r in results),
        "elapsed": max(r["elapsed"] for r in results),
        "sent": {k: v for r in results for k, v in r["sent"].items()},
        "ack_ms": [x for r in results for x in r["ack_ms"]],
    }
    if fproc is not None:
        merged["follow"] = fout.get(timeout=900)
        fproc.join()
    return merged


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def throughput(broker: Broker, world: World, args: argparse.Namespace) -> dict[str, float]:
    runs = []
    for _ in range(args.repeats):
        prep = asyncio.run(prepare(broker, world, args.per_sender))
        cpu0 = broker.cpu_seconds()
        r = run_posters(prep["base"], prep["senders"], rate=None, workers=1)
        runs.append((r["acked"] / r["elapsed"], (broker.cpu_seconds() - cpu0) / r["elapsed"]))
    rates = [rate for rate, _ in runs]
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "server_cpu_cores": statistics.median(cpu for _, cpu in runs),
    }


def fanout(broker: Broker, world: World, args: argparse.Namespace) -> dict[str, float]:
    """Every member follows its case from the genesis while all members post."""
    fan = []
    for _ in range(args.repeats):
        prep = asyncio.run(prepare(broker, world, args.per_sender))
        followers = [{"case": s["case"], "token": s["token"], "after": 0} for s in prep["senders"]]
        total = sum(len(s["envelopes"]) for s in prep["senders"]) * MEMBERS + len(followers)
        r = run_posters(
            prep["base"], prep["senders"], rate=None, workers=1, followers=followers, expect=total
        )
        fan.append(r["follow"]["delivered"] / r["follow"]["elapsed"])
    return {"deliveries_per_s_median": statistics.median(fan), "min": min(fan), "max": max(fan)}


def latency(broker: Broker, world: World, rate: int) -> dict[str, float]:
    """A fixed offered rate, one follower per case: post-to-delivery percentiles."""
    prep = asyncio.run(prepare(broker, world, max(20, rate * 4 // 50)))
    followers = []
    for c in range(CASES):
        s = prep["senders"][c * MEMBERS]
        followers.append({"case": s["case"], "token": s["token"], "after": 0})
    total = sum(len(s["envelopes"]) for s in prep["senders"]) + len(followers)
    r = run_posters(prep["base"], prep["senders"], rate=rate, workers=1, followers=followers, expect=total)
    lat = [
        (r["follow"]["received"][k] - t) * 1000 for k, t in r["sent"].items() if k in r["follow"]["received"]
    ]
    return {
        "achieved_per_s": r["acked"] / r["elapsed"],
        "receipt_p50_ms": percentile(r["ack_ms"], 0.5),
        "receipt_p99_ms": percentile(r["ack_ms"], 0.99),
        "p50_ms": percentile(lat, 0.5),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99),
        "samples": len(lat),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-sender", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument(
        "--only", choices=["throughput", "fanout", "latency", "idle"], help="run one workload"
    )
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        broker.cli("init")
        world = World("load")
        for agency in ("ke-kra", "tz-tra"):
            root = world.agency(agency)
            broker.cli(
                "agency",
                "add",
                agency,
                "--name",
                agency,
                "--country",
                "KE",
                "--root-key",
                root.public_key.hex(),
            )
        broker.start()
        try:
            wanted = {args.only} if args.only else {"throughput", "fanout", "latency", "idle"}
            if "throughput" in wanted:
                report["throughput"] = throughput(broker, world, args)
            if "fanout" in wanted:
                report["fanout_10_members"] = fanout(broker, world, args)
            if "latency" in wanted:
                for rate in (1000, 5000):
                    report[f"latency_{rate}_per_s"] = latency(broker, world, rate)
            if "idle" in wanted:
                report["idle"] = asyncio.run(idle(broker, world, args.idle))
        finally:
            broker.stop()
    RESULTS.mkdir(exist_ok=True)
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    name = "load.json" if not args.only else f"load-{args.only}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


async def idle(broker: Broker, world: World, n: int) -> dict[str, Any]:
    prep = await prepare(broker, world, 0)
    token = prep["senders"][0]["token"]
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
        "kib_per_connection": (after - before) / n,
    }


if __name__ == "__main__":
    main()
