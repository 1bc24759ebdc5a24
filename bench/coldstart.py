"""Cold start of the client (issue 11): ``make bench`` (``python -m bench.coldstart``).

Method
------
A real broker (``caseline-server serve``, a subprocess on loopback) and real
profiles.  The devices enrol, pin, log in and create their cases over HTTP.
Then, to avoid a day of HTTP posting, the bulk of each case — Juma's notes —
is sealed with the protocol core, receipted with the broker's own key, and
written into the broker's database (broker stopped) and into Alice's profile
through ``Client._accept``, the same verify-and-store path a sync takes (so
her snapshot and events are the real ones).  The broker is then restarted and
every measured command is the real thing:

(a) ``caseline post`` to the 100,000-entry case, as a fresh process: its CPU
    (user + system, ``os.wait4`` of the child) minus that of ``python -c pass``.
    Median of ``REPEATS`` runs, after one warm-up run that also leaves a session.
(b) the HTTP requests that post made, from the broker's own request counter
    (``/metrics``), warm session.
(c) ``Client.open`` plus ``view()`` of 10 cases × 10,000 entries, in process
    (wall clock), median of ``REPEATS``.

Each figure is printed with the command that produced it and the load average.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import secrets
import statistics
import subprocess  # nosec B404 - runs this interpreter and the project's own CLI
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from caseline.client.client import Client
from caseline.client.profile import profile_dir
from caseline.client.store import StoredEntry
from caseline.crypto.caselog import KIND_UPDATE, entry_hash, next_head, sign_receipt
from caseline.crypto.keys import SigningKey
from caseline.server.sqlite_store import SqliteStore
from caseline.server.store import EntryRow

from bench.chaos import BrokerProcess, setup
from bench.core import RESULTS, machine
from bench.devices import enrol_device, publish_crls
from tests.support.process import free_port
from tests.support.world import World, note

BIG: Final = int(os.environ.get("COLDSTART_BIG", "100000"))
SMALL_CASES: Final = 10
SMALL: Final = int(os.environ.get("COLDSTART_SMALL", "10000"))
REPEATS: Final = 5
TARGET_POST_CPU_S: Final = 0.5
TARGET_REQUESTS: Final = 2
TARGET_OPEN_S: Final = 0.3
CHUNK: Final = 2000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def child_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """User + system CPU seconds of one child process (``os.wait4``), and its stdout."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)  # nosec B603
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {text}")
    return usage.ru_utime + usage.ru_stime, text


async def requests_served(base: str, token: str) -> dict[str, float]:
    """The broker's request counter by route (its /metrics, Prometheus text)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as s,
        s.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        text = await r.text()
    out: dict[str, float] = {}
    for m in re.finditer(
        r'^caseline_requests_total\{route="([^"]*)",status="(\d+)"\} ([0-9.e+]+)$', text, re.M
    ):
        if m.group(1) != "/metrics":
            key = f"{m.group(1)} {m.group(2)}"
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


class Deployment:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "broker"
        self.home = root / "home"
        self.world = World("bench-coldstart")
        self.world.now = wall_ms()
        for agency in ("ke-kra", "tz-tra"):
            self.world.agency(agency)
        init = subprocess.run(  # nosec B603
            [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(self.data), "init"],
            check=True,
            capture_output=True,
            text=True,
        )
        found = re.search(r"operator token \(for /metrics; shown once\): (\S+)", init.stdout)
        assert found is not None, init.stdout
        self.operator_token = found.group(1)
        setup(self.data, self.world)
        self.server_key = SigningKey((self.data / "server.key").read_bytes())
        self.broker = BrokerProcess(self.data, free_port())

    async def device(self, agency: str, user: str) -> Client:
        return await enrol_device(
            self.world, self.broker.base, self.home, key_dir=self.root, agency=agency, user=user
        )

    async def publish_crls(self) -> None:
        await publish_crls(self.world, self.broker.base)


async def build(dep: Deployment) -> tuple[bytes, list[bytes]]:
    """Cases over HTTP, then their bulk written with the core.  Returns (big case, small cases)."""
    await dep.broker.start()
    await dep.publish_crls()
    alice, juma = await dep.device("ke-kra", "alice"), await dep.device("tz-tra", "juma")
    big = await alice.create_case(title="Op. Hundred Thousand", members=[("tz-tra", "juma")])
    small = [
        await alice.create_case(title=f"Op. Ten Thousand {i}", members=[("tz-tra", "juma")])
        for i in range(SMALL_CASES)
    ]
    sizes = {big: BIG, **dict.fromkeys(small, SMALL)}
    views = {}
    for case_id in sizes:
        await juma.sync(case_id)
        views[case_id] = await juma.view(case_id)
    await alice.close()
    await juma.close()
    assert dep.broker.proc is not None
    dep.broker.proc.terminate()
    await dep.broker.proc.wait()

    store = SqliteStore(dep.data / "broker.sqlite3")
    await store.open()
    alice = await Client.open(profile_dir("alice", home=dep.home))
    try:
        for case_id, size in sizes.items():
            started = time.perf_counter()
            view = views[case_id]
            assert view.me is not None
            sender = view.me.device_id
            head = (await alice.view(case_id)).head
            content = note("Consignment inspected at the border post; seals intact, manifest matches.")
            for start in range(1, size, CHUNK):
                rows, entries = [], []
                for seq in range(start, min(start + CHUNK, size)):
                    sealed = view.seal(
                        content_type="note", content=content, now=dep.world.now, nonce=secrets.token_bytes(24)
                    )
                    eh = entry_hash(KIND_UPDATE, sealed.envelope)
                    head = next_head(head, seq, eh)
                    receipt = sign_receipt(
                        dep.server_key, case_id=case_id, seq=seq, entry_hash=eh, head=head, time=dep.world.now
                    )
                    slot = (sender, 0, seq - 1)  # Juma's counter: his first update in epoch 0 is seq 1
                    rows.append(
                        EntryRow(case_id, seq, KIND_UPDATE, sealed.envelope, receipt, slot, dep.world.now)
                    )
                    entries.append(StoredEntry(seq, KIND_UPDATE, sealed.envelope, receipt))
                await store.append(rows, [])
                await alice._accept(case_id, entries)
            took = time.perf_counter() - started
            print(f"  built case {case_id.hex()[:12]}: {size:,} entries in {took:.0f} s", flush=True)
    finally:
        await alice.close()  # seals the snapshots
        await store.close()
    return big, small


def cli(dep: Deployment, *args: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("caseline")),
        "--home",
        str(dep.home),
        "--profile",
        "alice",
        "--json",
        *args,
    ]


async def measure(dep: Deployment, big: bytes, small: list[bytes]) -> dict[str, Any]:
    await dep.broker.start()
    env = {**os.environ}
    post = cli(dep, "post", big.hex(), "--type", "note", "--field", "text=container MSKU 123 released")
    warm_cpu, _ = child_cpu(post, env)  # warm-up: the broker loads the case; a session is kept
    baseline = [child_cpu([sys.executable, "-c", "pass"], env)[0] for _ in range(REPEATS)]
    posts = []
    for _ in range(REPEATS):
        posts.append(child_cpu(post, env)[0])
    before = await requests_served(dep.broker.base, dep.operator_token)
    child_cpu(post, env)
    after = await requests_served(dep.broker.base, dep.operator_token)
    made = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    crl = sum(v for k, v in made.items() if "/revocations" in k)
    post_cpu = statistics.median(posts) - statistics.median(baseline)
    load_post = load()

    opens, open_cpu = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        client = await Client.open(profile_dir("alice", home=dep.home))
        counts = [(await client.view(c)).count for c in small]
        opens.append(time.perf_counter() - wall)
        open_cpu.append(time.process_time() - cpu)
        await client.close()
    assert all(n == SMALL for n in counts), counts
    load_open = load()
    assert dep.broker.proc is not None
    dep.broker.proc.terminate()
    await dep.broker.proc.wait()
    return {
        "post_cpu_s": {
            "command": " ".join(post),
            "median_s": round(post_cpu, 3),
            "runs_s": [round(p, 3) for p in posts],
            "baseline_python_c_pass_s": [round(b, 3) for b in baseline],
            "warm_up_run_s": round(warm_cpu, 3),
            "target_s": TARGET_POST_CPU_S,
            "verdict": "PASS" if post_cpu <= TARGET_POST_CPU_S else "MISS",
            "loadavg": load_post,
        },
        "post_requests": {
            "command": " ".join(post),
            "requests": sum(made.values()),
            "revocation_requests": crl,
            "by_route": made,
            "target": TARGET_REQUESTS,
            "verdict": "PASS" if sum(made.values()) <= TARGET_REQUESTS else "MISS",
            "verdict_excluding_revocation_checks": "PASS"
            if sum(made.values()) - crl <= TARGET_REQUESTS
            else "MISS",
            "loadavg": load_post,
        },
        "open_10x10k_s": {
            "command": "Client.open(profile) + view() of each of 10 cases (in process)",
            "median_s": round(statistics.median(opens), 3),
            "runs_s": [round(o, 3) for o in opens],
            "cpu_runs_s": [round(o, 3) for o in open_cpu],
            "target_s": TARGET_OPEN_S,
            "verdict": "PASS" if statistics.median(opens) <= TARGET_OPEN_S else "MISS",
            "loadavg": load_open,
        },
    }


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caseline-coldstart-") as tmp:
        dep = Deployment(Path(tmp))
        print(
            f"building: one case of {BIG:,} entries and {SMALL_CASES} of {SMALL:,} (load {load()})",
            flush=True,
        )
        big, small = await build(dep)
        return await measure(dep, big, small)


def main() -> None:
    started = time.perf_counter()
    print("caseline client cold start (issue 11)")
    results = asyncio.run(run())
    for name, r in results.items():
        figure = r.get("median_s", r.get("requests"))
        target = r.get("target_s", r.get("target"))
        print(f"  {name:<16} {figure!s:>8}  target {target}  {r['verdict']}  (load {r['loadavg']})")
        print(f"      {r['command']}")
        if name == "post_requests":
            print(f"      by route: {r['by_route']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "bench.coldstart",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": {"big": BIG, "small_cases": SMALL_CASES, "small": SMALL},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    path = RESULTS / "coldstart.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
