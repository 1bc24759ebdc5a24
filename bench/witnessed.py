"""The witnessed log under load: ``python -m bench.witnessed`` (``make bench``, ``make bench-load``).

Two workloads, each against real processes on loopback; results go to
``bench/results/witnessed.json`` with the command, the load average and the CPU
each process used.

``witnessed``
    A broker (``caseline-server serve``) and TWO witnesses (``caseline-witness
    serve``, one per agency), set up as operators do: ``caseline-server log
    vkey`` gives the log's vkey, ``caseline-witness log add`` trusts it, and
    each agency's root signs a witness list (key and URL) that is PUT to
    ``/v1/agencies/{id}/witnesses``.  The broker then pushes every checkpoint
    to both witnesses itself.  50 senders in five 10-member cases post over
    their streams at ``RATE`` updates/s offered in all, for ``SECONDS``, one
    follower per case (as in the latency runs).  Per post:

    * post-to-delivery: send time to the follower's receipt of its delivery;
    * post-to-witnessed: send time until a checkpoint covering the post's leaf
      (its index, from the post's receipt) carries BOTH witnesses'
      cosignatures, as a member sees it: a separate process polls
      ``GET /v1/log/witnessed`` (``Accept: text/plain``, the witnessed note
      with its cosignature lines) every ``POLL_S`` on a keep-alive connection,
      and stamps each new witnessed size when the poll that returned it came
      back.  The figure is therefore an upper bound, late by at most one poll
      period plus one request (both recorded in the results).

``witness``
    One ``caseline-witness serve`` process alone, cosigning: one client
    process sends ``add-checkpoint`` requests one after another on one
    keep-alive connection, for ``SECONDS``.  The log grows by ``STEP`` leaves
    per checkpoint; every request carries the real consistency proof from the
    previous size, and every note is signed by the log's key.  The requests are
    made before the clock starts, so the figure is the witness's (HTTP, the
    proof check, the log signature check, a ``synchronous=FULL`` SQLite
    commit and an Ed25519 cosignature per request).  Cosignatures/s; the
    first and last cosignatures are verified.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
from caseline.crypto.certs import issue_witness_list
from caseline.crypto.merkle import Tree, leaf_hash
from caseline.crypto.note import (
    ALG_ED25519,
    Checkpoint,
    Note,
    b64,
    log_origin,
    parse_signature_lines,
    parse_vkey,
    sign_note,
    verify_cosignature,
    vkey,
)
from caseline.crypto.primitives import ed25519_keypair_from_seed
from caseline.schemas.wire import Witness

from bench.load import RESULTS, Broker, _brief, new_broker, prepare, run_posters
from bench.peers.common import (
    GROUP,
    SATURATE_SECONDS,
    SENDERS,
    cpu_seconds,
    free_port,
    latency_summary,
    loadavg,
)
from tests.support.process import end_process

RATE: Final = 1000  # updates/s offered in the witnessed run
SECONDS: Final = SATURATE_SECONDS  # of load in each run here
POLL_S: Final = 0.002  # the log watcher's pause between two polls of /v1/log/witnessed
STEP: Final = 8  # leaves per checkpoint in the witness run
WITNESS_POOL_RATE: Final = 4000  # cosignatures/s the witness run's requests are made for
AGENCIES: Final = ("ke-kra", "tz-tra")
TARGETS: Final = {
    "post_to_witnessed_p50_ms": 25.0,
    "post_to_delivery_p99_ms": 10.0,
    "cosignatures_per_s": 2000.0,
}


class WitnessProcess:
    """``caseline-witness`` in a data directory of its own: init, trust one log, serve; stop by PID."""

    def __init__(self, data: Path, name: str, log_vkey: str) -> None:
        self.data, self.name, self.port = data, name, free_port()
        self._cli("init", "--name", name)
        self._cli("log", "add", log_vkey)
        _, _, self.public_key = parse_vkey(self._cli("vkey").strip())
        self.log_path = data.parent / f"{data.name}.log"
        self.log = self.log_path.open("ab")
        args = [sys.executable, "-m", "caseline.witness.cli", "--data-dir", str(data), "serve"]
        self.proc = subprocess.Popen(
            [*args, "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while b"ready" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"witness {name} did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)

    def _cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "caseline.witness.cli", "--data-dir", str(self.data), *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        end_process(self.proc)
        self.log.close()


# ------------------------------------------------------------------ witnessed: broker + two witnesses


def _cosigned_by(note: bytes, names: set[str]) -> int | None:
    """The checkpoint's size if the note carries a cosignature line of every witness in ``names``."""
    parsed = Note.parse(note)
    signers = {s.name for s in parsed.signatures}
    if not names <= signers:
        return None
    return Checkpoint.parse(parsed.text).size


async def _watch(base: str, token: str, names: set[str], *, stop: Any, out: Any, poll: float) -> None:
    seen: list[tuple[int, float]] = []  # (witnessed size, wall time the poll returned)
    polls, best = 0, 0
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/plain"}
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        while not stop.is_set():
            async with session.get(f"{base}/v1/log/witnessed", headers=headers) as resp:
                body = await resp.read()
                status = resp.status
            now = time.time()
            polls += 1
            if status == 200:
                size = _cosigned_by(body, names)
                if size is not None and size > best:
                    best = size
                    seen.append((size, now))
            await asyncio.sleep(poll)
    elapsed = time.perf_counter() - started
    out.put({"seen": seen, "polls": polls, "poll_period_ms": round(1000 * elapsed / max(1, polls), 3)})


def watcher(
    base: str, token: str, names: list[str], *, ready: Any, stop: Any, out: Any, poll: float = POLL_S
) -> None:
    ready.set()
    asyncio.run(_watch(base, token, set(names), stop=stop, out=out, poll=poll))


def _register_witnesses(broker: Broker, world: Any, witnesses: dict[str, WitnessProcess]) -> None:
    """Each agency's root signs its witness list; the lists go to the broker as agencies publish them."""

    async def put() -> None:
        async with aiohttp.ClientSession() as session:
            for agency_id, w in witnesses.items():
                signed = issue_witness_list(
                    world.roots[agency_id],
                    number=1,
                    issued_at=int(time.time() * 1000),
                    witnesses=[Witness(name=w.name, public_key=w.public_key, url=w.url)],
                )
                async with session.put(
                    f"http://127.0.0.1:{broker.port}/v1/agencies/{agency_id}/witnesses",
                    data=signed,
                    headers={"Content-Type": "application/msgpack"},
                ) as resp:
                    if resp.status != 204:
                        raise RuntimeError(f"witness list refused: {resp.status} {await resp.text()}")

    asyncio.run(put())


async def _witnessed_size(base: str, token: str, names: set[str]) -> int:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/plain"}
    async with aiohttp.ClientSession() as s, s.get(f"{base}/v1/log/witnessed", headers=headers) as r:
        body = await r.read()
        return (_cosigned_by(body, names) or 0) if r.status == 200 else 0


def witnessed(rate: int = RATE, seconds: float = SECONDS, poll: float = POLL_S) -> dict[str, Any]:
    """The broker with two witnesses at a fixed offered rate: post-to-delivery and post-to-witnessed."""
    with tempfile.TemporaryDirectory(prefix="caseline-witnessed-") as tmp:
        root = Path(tmp)
        (root / "broker").mkdir()
        broker, world = new_broker(root / "broker")
        log_vkey = next(
            line.split(": ", 1)[1]
            for line in subprocess.run(
                [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(broker.data), "log", "vkey"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()
            if line.startswith("vkey: ")
        )
        witnesses: dict[str, WitnessProcess] = {}
        try:
            for agency_id in AGENCIES:
                witnesses[agency_id] = WitnessProcess(
                    root / f"witness-{agency_id}", f"witness.{agency_id}.bench", log_vkey
                )
            broker.start()
            _register_witnesses(broker, world, witnesses)
            names = {w.name for w in witnesses.values()}
            prep = asyncio.run(prepare(broker, world, max(1, int(rate * seconds) // SENDERS)))
            token = prep["senders"][0]["token"]
            deadline = time.monotonic() + 30
            while asyncio.run(_witnessed_size(prep["base"], token, names)) == 0:  # the setup is witnessed
                if time.monotonic() > deadline:
                    raise RuntimeError("no checkpoint got both witnesses' cosignatures in 30 s")
                time.sleep(0.1)
            followers = [
                {"case": s["case"], "token": s["token"], "after": 0, "record": True}
                for s in prep["senders"][::GROUP]
            ]
            total = sum(len(s["envelopes"]) for s in prep["senders"]) + len(followers)
            wcpu0 = {a: cpu_seconds(w.pid) for a, w in witnesses.items()}
            t0 = time.perf_counter()

            def extra(ctx: Any) -> Callable[[], Any]:
                ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
                proc = ctx.Process(
                    target=watcher,
                    args=(prep["base"], token, sorted(names)),
                    kwargs={"ready": ready, "stop": stop, "out": out, "poll": poll},
                )
                proc.start()
                ready.wait(60)

                def collect() -> Any:
                    # The last posts' checkpoint needs a round of pushes: give it time, then stop.
                    time.sleep(3.0)
                    stop.set()
                    result = out.get(timeout=60)
                    proc.join()
                    return result

                return collect

            r = run_posters(
                prep["base"],
                prep["senders"],
                rate=rate,
                workers=1,
                server_pid=broker.pid,
                followers=followers,
                expect=total,
                indexes=True,
                extra=extra,
            )
            wall = time.perf_counter() - t0
            witness_cores = {
                w.name: round((cpu_seconds(w.pid) - wcpu0[a]) / wall, 3) for a, w in witnesses.items()
            }
        finally:
            broker.stop()
            for w in witnesses.values():
                w.stop()
    seen = r["extra"]["seen"]
    sizes = [size for size, _ in seen]
    to_witnessed: list[float] = []
    never = 0
    for key, sent in r["sent"].items():
        index = r["leaf_of"].get(key)
        if index is None:
            continue
        at = bisect_right(sizes, index)  # the first witnessed size > index covers the leaf
        if at == len(sizes):
            never += 1
            continue
        to_witnessed.append((seen[at][1] - sent) * 1000)
    received = r["follow"]["received"]
    to_delivery = [(received[k] - t) * 1000 for k, t in r["sent"].items() if k in received]
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(r["acked"] / r["elapsed"], 1),
        "window_s": round(r["elapsed"], 2),
        "posting_path": "websocket (PostUpdate frames), as in the latency runs",
        "witnesses": sorted(names),
        "post_to_delivery": latency_summary(to_delivery),
        "post_to_witnessed": latency_summary(to_witnessed),
        "posts_never_seen_witnessed": never,
        "ack_latency": latency_summary(r["ack_ms"]),
        "watcher": {
            "method": "GET /v1/log/witnessed (Accept: text/plain) polled by one follower's session",
            "polls": r["extra"]["polls"],
            "poll_period_ms": r["extra"]["poll_period_ms"],
            "witnessed_sizes_seen": len(seen),
        },
        "cpu": r["cpu"],
        "witness_cores": witness_cores,
    }


# ------------------------------------------------------------------ witness: one witness alone


def _requests(count: int) -> tuple[str, str, list[bytes], bytes, Tree]:
    """``count`` add-checkpoint bodies for one log growing by ``STEP`` leaves each."""
    public_key, secret_key = ed25519_keypair_from_seed(os.urandom(32))
    origin = log_origin(public_key)
    tree = Tree()
    bodies: list[bytes] = []
    old = 0
    for n in range(count):
        for i in range(STEP):
            tree.append(leaf_hash(b"bench leaf %d" % (n * STEP + i)))
        size = tree.size
        proof = tree.consistency_proof(old, size) if old else []
        text = Checkpoint(origin, size, tree.root(size)).body()
        note = Note(text, (sign_note(text, name=origin, secret_key=secret_key),)).encode()
        bodies.append(b"old %d\n" % old + b"".join(b64(h).encode() + b"\n" for h in proof) + b"\n" + note)
        old = size
    return origin, vkey(origin, ALG_ED25519, public_key), bodies, public_key, tree


async def _cosign_all(url: str, bodies: list[bytes], seconds: float) -> dict[str, Any]:
    per_call: list[float] = []
    answers: list[bytes] = []
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async with session.get(url + "/healthz") as resp:  # the connection is open before the clock
            await resp.read()
        start = time.perf_counter()
        stop_at = start + seconds
        for body in bodies:
            if time.perf_counter() >= stop_at:
                break
            t0 = time.perf_counter()
            async with session.post(url + "/add-checkpoint", data=body) as resp:
                answer = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"add-checkpoint {sent}: {resp.status} {answer[:200]!r}")
            per_call.append((time.perf_counter() - t0) * 1000)
            sent += 1
            if sent == 1:
                answers.append(answer)
        elapsed = time.perf_counter() - start
    answers.append(answer)
    return {"cosigned": sent, "elapsed": elapsed, "per_call": per_call, "answers": answers}


def cosigner(url: str, bodies: list[bytes], seconds: float, *, started: Any, go: Any, out: Any) -> None:
    started.put(os.getpid())
    go.wait()
    out.put(asyncio.run(_cosign_all(url, bodies, seconds)))


def witness_rate(seconds: float = SECONDS) -> dict[str, Any]:
    """Cosignatures/s of one witness process, sequential requests on one keep-alive connection."""
    count = int(WITNESS_POOL_RATE * seconds * 1.25)
    made = time.perf_counter()
    origin, log_vkey, bodies, _, tree = _requests(count)
    made = time.perf_counter() - made
    with tempfile.TemporaryDirectory(prefix="caseline-witness-bench-") as tmp:
        w = WitnessProcess(Path(tmp) / "witness", "witness.bench/w1", log_vkey)
        try:
            ctx = multiprocessing.get_context("spawn")
            started, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
            proc = ctx.Process(
                target=cosigner,
                args=(w.url, bodies, seconds),
                kwargs={"started": started, "go": go, "out": out},
            )
            proc.start()
            client_pid = started.get(timeout=120)
            load = loadavg()
            wcpu0, ccpu0, t0 = cpu_seconds(w.pid), cpu_seconds(client_pid), time.perf_counter()
            go.set()
            r = out.get(timeout=seconds + 120)
            wall = time.perf_counter() - t0
            wcpu, ccpu = cpu_seconds(w.pid) - wcpu0, cpu_seconds(client_pid) - ccpu0
            proc.join()
        finally:
            w.stop()
    # The first and the last answers are real cosignatures of the checkpoints sent.
    for n, answer in ((1, r["answers"][0]), (r["cosigned"], r["answers"][-1])):
        text = Checkpoint(origin, n * STEP, tree.root(n * STEP)).body()
        verify_cosignature(text, parse_signature_lines(answer)[0], name=w.name, public_key=w.public_key)
    return {
        "cosignatures_per_s": round(r["cosigned"] / r["elapsed"], 1),
        "cosignatures": r["cosigned"],
        "window_s": round(r["elapsed"], 2),
        "pool_exhausted": r["cosigned"] == len(bodies),
        "leaves_per_checkpoint": STEP,
        "final_tree_size": r["cosigned"] * STEP,
        "requests_made_in_s": round(made, 1),
        "per_call": latency_summary(r["per_call"]),
        "cpu": {
            "wall_s": round(wall, 2),
            "witness_cores": round(wcpu / wall, 2),
            "client_cores": round(ccpu / wall, 2),
            "loadavg": load,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["witnessed", "witness"])
    parser.add_argument("--rate", type=int, default=RATE, help="offered updates/s in the witnessed run")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between two polls of the log")
    args = parser.parse_args()
    if args.seconds < SATURATE_SECONDS:
        parser.error(f"--seconds must be at least {SATURATE_SECONDS}")
    report: dict[str, Any] = {
        "benchmark": "bench.witnessed",
        "command": " ".join(["python -m bench.witnessed", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "loadavg_start": loadavg(),
        "targets": TARGETS,
    }
    if args.only in (None, "witness"):
        print(
            f"== witness: one caseline-witness, {args.seconds:.0f} s (load average {loadavg()})", flush=True
        )
        report["witness"] = witness_rate(args.seconds)
        print(json.dumps(_brief(report["witness"]), indent=1), flush=True)
    if args.only in (None, "witnessed"):
        print(
            f"== witnessed: broker + 2 witnesses at {args.rate}/s for {args.seconds:.0f} s"
            f" (load average {loadavg()})",
            flush=True,
        )
        report["witnessed"] = witnessed(args.rate, args.seconds, args.poll)
        print(json.dumps(_brief(report["witnessed"]), indent=1), flush=True)
    report["loadavg_end"] = loadavg()
    RESULTS.mkdir(exist_ok=True)
    name = "witnessed.json" if not args.only else f"witnessed-{args.only}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=1) + "\n")
    print("Wrote", RESULTS / name)


if __name__ == "__main__":
    main()
