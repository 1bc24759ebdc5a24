"""Attachments end to end (issue 15): ``make bench-attachments`` (``python -m bench.attachments``).

Method
------
A real broker (``caseline-server serve``, a subprocess on loopback, on its
built-in defaults but for the rate limits, which chaos's config lifts, and the
attachment limits named below) and real device profiles that enrol as officers
do (``bench.coldstart.enrol_device``).  Every transfer is the product's own
path: ``Client.post(..., attachments=[path])`` and ``Client.save_attachment``
(which verifies every chunk, the plaintext's SHA-256 and the blob's address
before it moves the file into place), each timed from the call to its return.

throughput    One file of ``--size`` (1 GiB; ``--size 4GiB`` once, with the broker's
              ``attachment_max_bytes`` above it, shows offsets past 4 GiB work), random
              bytes written in 1 MiB pieces into a temporary directory, posted by one
              device and saved by its partner.  Each side runs in a subprocess of its own
              (``python -m bench.attachments worker``), so that its resident set is its
              own: ``VmRSS`` of the client and of the broker is sampled every 100 ms, and
              the growth over each one's value just before the call is reported.  MB/s =
              file bytes / wall time of the call (10^6 bytes).  The saved file's SHA-256
              is compared with the original's as well.
client-kill   A 256 MiB upload by a client subprocess that talks to the broker through
              ``bench.http_tap`` (a loopback proxy that counts PATCH body bytes and reads
              the broker's acknowledgements).  After two acknowledged PATCHes and a few
              MiB of the next one, the client is killed with SIGKILL; a new client process
              repeats the post (same idempotency key) and resumes it.  Re-sent bytes =
              PATCH body bytes after the resume minus the bytes the broker was missing
              (its upload's length minus its offset once the cut PATCH was recorded).
broker-kill   The same upload; the broker is killed with SIGKILL right after an
              acknowledged PATCH (``--broker-kills`` times, while the upload lasts) and
              restarted on the same data directory.  After each restart the upload's
              offset (``GET .../uploads/{id}``) must be at least the highest offset the
              broker had acknowledged.  The client (restarted if it gave up) finishes, and
              the partner saves and verifies the file.
small         A 200 KiB photo posted with its update at ``--rate`` (50) posts/s, open loop,
              by ``--posters`` (5) devices in turn, each in a process of its own, for
              ``--seconds`` (10) after a warm-up:
              the time from ``Client.post`` to its verified receipt, p50/p95/p99, and the
              HTTP requests a post makes (the broker's own ``/metrics`` counter).

Every figure carries the command and the 1-minute load average: the machine is
shared.  Results: ``bench/results/attachments.json`` (a run updates the
scenarios it ran and keeps the others) and README's attachments table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from caseline.client.client import Client
from caseline.client.profile import profile_dir
from caseline.client.transport import BrokerConnection
from caseline.schemas.api import UploadState

from bench.chaos import CONFIG
from bench.chaos_uploads import file_sha256, parse_size, write_random
from bench.coldstart import Deployment, requests_served
from bench.core import RESULTS, machine
from bench.devices import enrol_device
from bench.http_tap import HttpTap
from bench.peers.common import cpu_seconds, latency_summary
from bench.profile import record as spy_record
from bench.profile import summarise
from tests.support.world import note

MiB: Final = 1024**2
GiB: Final = 1024**3
SAMPLE_S: Final = 0.1
PIECE: Final = MiB
TARGET_MB_S: Final = 150.0
TARGET_RSS_MIB: Final = 64.0
TARGET_SMALL_P50_MS: Final = 30.0
#: The client's largest PATCH (spec: parts of at most 16 MiB): the client-kill target is one part.
PART_MAX: Final = 16 * MiB
PHOTO: Final = 200 * 1024
SMALL_POSTERS: Final = 5
WARM_UP_POSTS: Final = 3
README_START: Final = "<!-- attachments-bench:start (written by `make bench-attachments`) -->"
README_END: Final = "<!-- attachments-bench:end -->"


def human(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def config(max_bytes: int) -> str:
    """Chaos's config (rate limits lifted) with the attachment limits this bench needs."""
    return CONFIG + (
        f"attachment_max_bytes = {max_bytes}\n"
        "attachment_case_quota_bytes = 0\nattachment_agency_quota_bytes = 0\n"
    )


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ the client side, in a subprocess


async def worker(params: dict[str, Any]) -> dict[str, Any]:
    """One transfer by one profile: ``ready`` on stdout, then on ``go`` from stdin the timed call."""
    client = await Client.open(Path(params["profile"]))
    try:
        case_id = bytes.fromhex(params["case"])
        await client.sync(case_id)
        if params["op"] == "small":
            for _ in range(WARM_UP_POSTS):  # sessions, views, connections
                await client.post(case_id, "note", note("warm-up"), attachments=[params["file"]])
        print("ready", flush=True)
        go = ""
        if not params.get("auto"):
            go = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if params["op"] == "small":
            return await small_poster(client, case_id, params, float(go))
        started, cpu = time.perf_counter(), time.process_time()
        if params["op"] == "upload":
            posted = await client.post(
                case_id,
                "note",
                note("seizure photographs and the scanned manifest"),
                attachments=[params["file"]],
                idempotency_key=params["key"],
            )
            wall = time.perf_counter() - started
            return {
                "ok": True, "wall_s": wall, "cpu_s": time.process_time() - cpu,
                "update": posted.update_id.hex(), "seq": posted.seq,
            }  # fmt: skip
        saved = await client.save_attachment(
            case_id, bytes.fromhex(params["update"]), 0, Path(params["directory"])
        )
        wall = time.perf_counter() - started
        return {"ok": True, "wall_s": wall, "cpu_s": time.process_time() - cpu, "path": str(saved)}
    finally:
        await client.close()


async def small_poster(
    client: Client, case_id: bytes, params: dict[str, Any], start: float
) -> dict[str, Any]:
    """Post the photo every ``interval`` seconds from ``start`` (wall clock) plus this poster's phase,
    open loop: a post that ends late does not push the next one's due time."""
    interval, photo = params["interval"], params["file"]
    due, end = start + params["phase"], start + params["seconds"]
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    n = 0
    while due < end:
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        n += 1
        t0 = time.perf_counter()
        try:
            await client.post(case_id, "note", note(f"photo {n}"), attachments=[photo])
        except Exception as exc:  # counted: the parent reports each kind
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        else:
            latencies.append((time.perf_counter() - t0) * 1000)
            lags.append((time.time() - due) * 1000)
        due += interval
    return {"ok": True, "latencies": latencies, "lags": lags, "errors": errors, "ended": time.time()}


def worker_main(raw: str) -> None:
    try:
        result = asyncio.run(worker(json.loads(raw)))
    except Exception as exc:  # the parent reports it; the message is the client's own
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)


class Worker:
    """A client subprocess: started, told to go, sampled, killed by its PID if need be."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.attachments", "worker", json.dumps(self.params),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            rest = await self.proc.stdout.read()
            raise RuntimeError(f"the client did not start: {(line + rest).decode(errors='replace')[-500:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def go(self, line: str = "go") -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def result(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        out = await self.proc.stdout.read()
        await self.proc.wait()
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            result = {"ok": False, "error": f"exit {self.proc.returncode}: {out[-300:]!r}"}
        return result

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


class RssSampler:
    """``VmRSS`` of some processes every ``SAMPLE_S``: the value at the start and the peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: rss_kib(pid) for name, pid in pids.items()}
        self.peak = dict(self.start)
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))
            self.samples += 1
            await asyncio.sleep(SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def report(self) -> dict[str, Any]:
        return {
            name: {
                "start_mib": round(self.start[name] / 1024, 1),
                "peak_mib": round(self.peak[name] / 1024, 1),
                "growth_mib": round((self.peak[name] - self.start[name]) / 1024, 1),
            }
            for name in self.pids
        } | {"samples": self.samples}


# ------------------------------------------------------------------ the deployment


class Bench:
    """A broker, a case and its devices: alice posts, juma saves, carol goes through the tap."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.dep = Deployment(root)
        self.dep.broker.config = config(max_bytes)
        self.tap = HttpTap(self.dep.broker.port)
        self.case = b""
        self.sessions: dict[str, str] = {}

    @property
    def broker(self) -> Any:
        return self.dep.broker

    def profile(self, user: str) -> Path:
        return profile_dir(user, home=self.dep.home)

    async def start(self, posters: int) -> None:
        await self.broker.start()
        await self.tap.start()
        await self.dep.publish_crls()
        world, home, root = self.dep.world, self.dep.home, self.dep.root
        direct = [("ke-kra", "alice"), ("tz-tra", "juma")] + [("ke-kra", f"s{i}") for i in range(posters)]
        clients = [await self.dep.device(agency, user) for agency, user in direct]
        clients.append(
            await enrol_device(world, self.tap.base, home, key_dir=root, agency="ke-kra", user="carol")
        )
        try:
            alice = clients[0]
            members = [(a, u) for a, u in direct[1:]] + [("ke-kra", "carol")]
            self.case = await alice.create_case(title="Op. Heavy Luggage", members=members)
            for c in clients[1:]:
                await c.sync(self.case)
        finally:
            for c in clients:
                await c.close()
        self.sessions["carol"] = await self.session("carol")

    async def session(self, user: str) -> str:
        """A session of ``user``'s device, straight to the broker, to read its uploads' state."""
        client = await Client.open(self.profile(user))
        try:
            conn = BrokerConnection(self.broker.base, keys=client.keys, server_key=client.server_key)
            got: list[str] = []

            async def keep(session: Any) -> None:
                if session is not None:
                    got.append(session.token)

            conn.on_session = keep
            try:
                await conn.login()
            finally:
                await conn.close()
        finally:
            await client.close()
        return got[0]

    async def upload_state(self, user: str, upload: str) -> UploadState:
        import aiohttp

        url = f"{self.broker.base}/v1/cases/{self.case.hex()}/uploads/{upload}"
        async with aiohttp.ClientSession() as s:
            for _ in range(2):
                async with s.get(url, headers={"Authorization": f"Bearer {self.sessions[user]}"}) as r:
                    body = await r.read()
                    if r.status == 401:
                        self.sessions[user] = await self.session(user)
                        continue
                    if r.status != 200:
                        raise RuntimeError(f"GET upload answered {r.status}: {body[:200]!r}")
                    return UploadState.decode(body)
        raise RuntimeError("no session for the upload's device")

    async def stop(self) -> None:
        await self.tap.close()
        if self.broker.up.is_set():
            await self.broker.kill()

    def worker(self, user: str, **params: Any) -> Worker:
        return Worker({"profile": str(self.profile(user)), "case": self.case.hex(), **params})

    async def verify_download(self, update: str, sha256: str) -> dict[str, Any]:
        """juma saves the file (``save_attachment`` verifies it); its SHA-256 must be the original's."""
        out = self.root / "saved"
        out.mkdir(exist_ok=True)
        w = self.worker("juma", op="download", update=update, directory=str(out), auto=True)
        await w.start()
        result = await w.result()
        if result.get("ok"):
            saved = Path(result["path"])
            result["sha256_matches"] = file_sha256(saved) == sha256
            saved.unlink()
        return result


# ------------------------------------------------------------------ scenarios


async def timed_transfer(
    b: Bench, w: Worker, profile: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Start ``w``, sample it and the broker from just before ``go`` to its result.

    ``profile``: also py-spy both processes for the transfer (files ``<profile>-client.txt``
    and ``-broker.txt``); the summaries go into the RSS report under ``profile``.
    """
    await w.start()
    assert b.broker.proc is not None
    pids = {"client": w.pid, "broker": b.broker.proc.pid}
    spies = {}
    if profile is not None:
        for name, pid in pids.items():
            spy = spy_record(pid, 600, profile.with_name(f"{profile.name}-{name}.txt"))
            if spy is not None:
                spies[name] = spy
    load_before = load1()
    broker_cpu = cpu_seconds(pids["broker"])
    with RssSampler(pids) as sampler:
        w.go()
        result = await w.result()
    result["broker_cpu_s"] = cpu_seconds(pids["broker"]) - broker_cpu
    report = sampler.report()
    for name, spy in spies.items():
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        await asyncio.to_thread(spy.wait, 60)
        out = profile.with_name(f"{profile.name}-{name}.txt") if profile else None
        if out is not None and out.exists():
            report.setdefault("profile", {})[name] = summarise(out)
    if not result.get("ok"):
        raise RuntimeError(f"the transfer failed: {result.get('error')}")
    return result, report, load_before


async def throughput(b: Bench, size: int, *, profile: bool = False) -> dict[str, Any]:
    source = b.root / "big.bin"
    print(f"  writing {human(size)} of random bytes ...", flush=True)
    sha = write_random(source, size)
    try:
        up, up_rss, up_load = await timed_transfer(
            b,
            b.worker("alice", op="upload", file=str(source), key=f"throughput-{size}"),
            b.root / "upload" if profile else None,
        )
        out = b.root / "saved"
        out.mkdir(exist_ok=True)
        down, down_rss, down_load = await timed_transfer(
            b,
            b.worker("juma", op="download", update=up["update"], directory=str(out)),
            b.root / "download" if profile else None,
        )
        saved = Path(down["path"])
        matches = file_sha256(saved) == sha
        saved.unlink()
    finally:
        source.unlink(missing_ok=True)

    def side(result: dict[str, Any], rss: dict[str, Any], load: float) -> dict[str, Any]:
        mb_s = size / 1e6 / result["wall_s"]
        worst = max(rss["client"]["growth_mib"], rss["broker"]["growth_mib"])
        spied = rss.pop("profile", None)
        return {
            **({"profile": spied} if spied else {}),
            "wall_s": round(result["wall_s"], 2),
            "cpu_s": {"client": round(result["cpu_s"], 2), "broker": round(result["broker_cpu_s"], 2)},
            "mb_per_s": round(mb_s, 1),
            "rss": rss,
            "target_mb_per_s": TARGET_MB_S,
            "target_rss_growth_mib": TARGET_RSS_MIB,
            "verdict": "PASS" if mb_s >= TARGET_MB_S and worst <= TARGET_RSS_MIB else "MISS",
            "loadavg_before": load,
            "loadavg_after": load1(),
        }

    return {
        "size_bytes": size,
        "upload": side(up, up_rss, up_load),
        "download": side(down, down_rss, down_load),
        "saved_file_sha256_matches": matches,
    }


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` (the tap's counters or a process) until true: a bench watching a transfer."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(0.005)


async def client_kill(b: Bench, size: int) -> dict[str, Any]:
    source = b.root / "kill.bin"
    sha = write_random(source, size)
    try:
        b.tap.reset()
        w = b.worker("carol", op="upload", file=str(source), key="client-kill")
        await w.start()
        w.go()
        t = b.tap.tally

        def mid_third_part() -> bool:
            if w.proc is not None and w.proc.returncode is not None:
                return True
            if len(t.acked) != 1:
                return False
            upload, acked = next(iter(t.acked.items()))
            ahead = t.forwarded_to.get(upload, 0) - acked
            return (t.patches >= 3 and ahead >= 4 * MiB) or t.patches >= 4

        await wait_for(mid_third_part, 300, "two acknowledged PATCHes and part of a third")
        await w.kill()
        if not t.acked:
            raise RuntimeError("the client finished or failed before two PATCHes were acknowledged")
        upload, acked_at_kill = next(iter(t.acked.items()))
        length = t.lengths[upload]
        forwarded = t.forwarded_to[upload]
        # The broker records what arrived of the cut PATCH once it sees the connection drop.
        deadline = time.monotonic() + 10
        while (state := await b.upload_state("carol", upload)).offset < forwarded:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        offset_at_kill = state.offset
        sent_before = t.patch_body_bytes
        b.tap.reset()
        t = b.tap.tally
        resumed = b.worker("carol", op="upload", file=str(source), key="client-kill")
        await resumed.start()
        resumed.go()
        result = await resumed.result()
        if not result.get("ok"):
            raise RuntimeError(f"the resumed upload failed: {result.get('error')}")
        missing = length - offset_at_kill
        resent = t.patch_body_bytes - missing
        check = await b.verify_download(result["update"], sha)
    finally:
        source.unlink(missing_ok=True)
    return {
        "size_bytes": size,
        "blob_length": length,
        "acknowledged_at_kill": acked_at_kill,
        "forwarded_at_kill": forwarded,
        "broker_offset_after_kill": offset_at_kill,
        "patch_bytes_before_kill": sent_before,
        "patch_bytes_after_resume": t.patch_body_bytes,
        "resent_bytes": resent,
        "sent_in_all_minus_length": sent_before + t.patch_body_bytes - length,
        "resume_first_offset": t.first_patch_offset.get(upload),
        "conflicts_after_resume": t.conflicts,
        "resume_wall_s": round(result["wall_s"], 2),  # the post call, as the client timed it
        "partner_download_verified": bool(check.get("ok") and check.get("sha256_matches")),
        "target_resent_bytes": PART_MAX,
        "verdict": "PASS" if 0 <= resent <= PART_MAX and check.get("sha256_matches") else "MISS",
        "loadavg": load1(),
    }


async def broker_kill(b: Bench, size: int, kills: int) -> dict[str, Any]:
    source = b.root / "broker-kill.bin"
    sha = write_random(source, size)
    checks: list[dict[str, Any]] = []
    attempts = 0
    b.tap.reset()
    t = b.tap.tally
    done: dict[str, Any] = {}

    async def client() -> None:
        nonlocal attempts
        while True:
            await b.broker.up.wait()
            attempts += 1
            w = b.worker("carol", op="upload", file=str(source), key="broker-kill", auto=True)
            try:
                await w.start()
                result = await w.result()
            except (RuntimeError, TimeoutError) as exc:
                result = {"ok": False, "error": str(exc)}
            finally:
                await w.kill()
            if result.get("ok"):
                done.update(result)
                return

    runner = asyncio.create_task(client())
    try:
        for _ in range(kills):
            before = dict(t.acked)

            def acked_more(before: dict[str, int] = before) -> bool:
                return runner.done() or any(v > before.get(k, 0) for k, v in t.acked.items())

            await wait_for(acked_more, 300, "an acknowledged PATCH")
            if runner.done():
                break
            upload, acked = max(t.acked.items(), key=lambda kv: kv[1] - before.get(kv[0], 0))
            if acked >= t.lengths.get(upload, acked + 1):
                break  # complete: nothing left to cut
            await b.broker.kill()
            await b.broker.start()
            state = await b.upload_state("carol", upload)
            checks.append(
                {
                    "acknowledged": acked,
                    "offset_after_restart": state.offset,
                    "kept": state.offset >= acked,
                    "loadavg": load1(),
                }
            )
        await asyncio.wait_for(runner, 600)
    finally:
        runner.cancel()
        source_ok = source.exists()
    check = await b.verify_download(done["update"], sha) if done else {"ok": False}
    source.unlink(missing_ok=True)
    lost = sum(1 for c in checks if not c["kept"])
    verified = bool(check.get("ok") and check.get("sha256_matches"))
    return {
        "size_bytes": size,
        "kills": len(checks),
        "acknowledged_offsets_checked": len(checks),
        "acknowledged_bytes_lost": lost,
        "checks": checks,
        "client_runs": attempts,
        "partner_download_verified": verified,
        "source_kept": source_ok,
        "verdict": "PASS" if checks and not lost and verified else "MISS",
        "loadavg": load1(),
    }


async def small_files(b: Bench, rate: float, seconds: float, posters: int) -> dict[str, Any]:
    """``posters`` devices, each in its own process (as bench/load.py's workers), post in turn."""
    photo = b.root / "photo.jpg"
    write_random(photo, PHOTO)
    interval = posters / rate
    workers = [
        b.worker(f"s{i}", op="small", file=str(photo), interval=interval, phase=interval * i / posters,
                 seconds=seconds)
        for i in range(posters)
    ]  # fmt: skip
    try:
        await asyncio.gather(*(w.start() for w in workers))
        before = await requests_served(b.broker.base, b.dep.operator_token)
        load_before = load1()
        start = time.time() + 0.5
        for w in workers:
            w.go(repr(start))
        results = await asyncio.gather(*(w.result() for w in workers))
        after = await requests_served(b.broker.base, b.dep.operator_token)
    finally:
        for w in workers:
            await w.kill()
        photo.unlink(missing_ok=True)
    failed = [r.get("error") for r in results if not r.get("ok")]
    if failed:
        raise RuntimeError(f"a poster failed: {failed[0]}")
    latencies = [x for r in results for x in r["latencies"]]
    lags = [x for r in results for x in r["lags"]]
    errors: dict[str, int] = {}
    for r in results:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    wall = max(r["ended"] for r in results) - start
    made = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    posts = len(latencies)
    summary = {k: v for k, v in latency_summary(latencies).items() if k != "cdf_ms"}
    p50 = summary.get("p50_ms")
    return {
        "photo_bytes": PHOTO,
        "offered_per_s": rate,
        "posters": posters,
        "seconds": round(wall, 1),
        "posts": posts,
        "achieved_per_s": round(posts / wall, 1),
        "errors": errors,
        "call_to_receipt": summary,
        "due_to_receipt": {k: v for k, v in latency_summary(lags).items() if k != "cdf_ms"},
        "requests_per_post": round(sum(made.values()) / posts, 2) if posts else None,
        "requests_by_route": {k: int(v) for k, v in sorted(made.items())},
        "target_p50_ms": TARGET_SMALL_P50_MS,
        "verdict": "PASS" if p50 is not None and p50 <= TARGET_SMALL_P50_MS and not errors else "MISS",
        "loadavg_before": load_before,
        "loadavg_after": load1(),
    }


# ------------------------------------------------------------------ report


def command() -> str:
    return shlex.join([".venv/bin/python", "-m", "bench.attachments", *sys.argv[1:]])


def _verdict(text: str) -> str:
    return "met" if text == "PASS" else "**missed**"


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| what | result | target | command, load |", "|---|---|---|---|"]
    for key, r in sorted(results.items()):
        if key.startswith("throughput_"):
            size = human(r["size_bytes"])
            for way, verb in (
                ("upload", "posted with `Client.post`"),
                ("download", "saved with `Client.save_attachment`"),
            ):
                s = r[way]
                lines.append(
                    f"| {size} file {verb}, end to end (encryption and verification included) | "
                    f"{s['mb_per_s']:,.0f} MB/s ({s['wall_s']} s; CPU client {s['cpu_s']['client']} s, "
                    f"broker {s['cpu_s']['broker']} s); RSS growth client "
                    f"{s['rss']['client']['growth_mib']} MiB, "
                    f"broker {s['rss']['broker']['growth_mib']} MiB | "
                    f"≥ {TARGET_MB_S:.0f} MB/s, ≤ {TARGET_RSS_MIB:.0f} MiB: {_verdict(s['verdict'])} | "
                    f"`{r['command']}`, load {s['loadavg_before']}–{s['loadavg_after']} |"
                )
    if "client_kill" in results:
        r = results["client_kill"]
        lines.append(
            f"| `kill -9` of the client mid-upload ({human(r['size_bytes'])}), resumed by a new process: "
            f"bytes sent again | {r['resent_bytes']:,} (broker at {r['broker_offset_after_kill']:,} "
            f"of {r['blob_length']:,}; partner's download verified: {r['partner_download_verified']}) | "
            f"≤ one part ({human(PART_MAX)}): {_verdict(r['verdict'])} | "
            f"`{r['command']}`, load {r['loadavg']} |"
        )
    if "broker_kill" in results:
        r = results["broker_kill"]
        lines.append(
            f"| `kill -9` of the broker after an acknowledged PATCH ({human(r['size_bytes'])}), "
            f"restarted on its data | {r['kills']} kills, {r['acknowledged_bytes_lost']} acknowledged "
            f"offsets short; {r['client_runs']} client runs; partner's download verified: "
            f"{r['partner_download_verified']} | nothing acknowledged lost: {_verdict(r['verdict'])} | "
            f"`{r['command']}`, load {r['loadavg']} |"
        )
    if "small" in results:
        r = results["small"]
        lat = r["call_to_receipt"]
        lines.append(
            f"| {r['photo_bytes'] // 1024} KiB photo posted with its update, "
            f"{r['offered_per_s']:g}/s offered "
            f"({r['achieved_per_s']}/s achieved, {r['seconds']} s): call to receipt p50 / p95 / p99 | "
            f"{lat.get('p50_ms', 0):.0f} / {lat.get('p95_ms', 0):.0f} / {lat.get('p99_ms', 0):.0f} ms, "
            f"{r['requests_per_post']} HTTP requests a post | p50 ≤ {TARGET_SMALL_P50_MS:.0f} ms: "
            f"{_verdict(r['verdict'])} | `{r['command']}`, load {r['loadavg_before']}–{r['loadavg_after']} |"
        )
    return lines


def write_readme(readme: Path, results: dict[str, Any], date: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        print(f"{readme} has no attachments block: left as it is")
        return
    block = "\n".join(
        [README_START, "", f"Last updated {date[:10]} on this 2-core shared machine (MB = 10^6 bytes):", "",
         *table(results), "", README_END]
    )  # fmt: skip
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + block + tail, encoding="utf-8")


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    max_bytes = max(2 * GiB, args.size + GiB)
    b = Bench(root, max_bytes=max_bytes)
    results: dict[str, Any] = {}
    try:
        await b.start(args.posters if "small" in args.only else 0)
        print(f"broker up, case {b.case.hex()[:12]} (load {load1()})", flush=True)
        if "throughput" in args.only:
            r = await throughput(b, args.size, profile=args.profile)
            results[f"throughput_{human(args.size).replace(' ', '')}"] = r
            for way in ("upload", "download"):
                s = r[way]
                print(
                    f"  {way}: {s['mb_per_s']} MB/s, CPU s {s['cpu_s']}, RSS {s['rss']}, {s['verdict']}",
                    flush=True,
                )
        if "client-kill" in args.only:
            r = results["client_kill"] = await client_kill(b, args.kill_size)
            print(f"  client kill: resent {r['resent_bytes']:,} bytes, {r['verdict']}: {r}", flush=True)
        if "broker-kill" in args.only:
            r = results["broker_kill"] = await broker_kill(b, args.kill_size, args.broker_kills)
            print(f"  broker kill: {r}", flush=True)
        if "small" in args.only:
            r = results["small"] = await small_files(b, args.rate, args.seconds, args.posters)
            print(f"  small files: {r}", flush=True)
    finally:
        await b.stop()
    for r in results.values():
        r["command"] = command()
    return results


SCENARIOS: Final = ("throughput", "client-kill", "broker-kill", "small")


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        worker_main(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=parse_size, default=GiB, help="the throughput file (default 1GiB)")
    p.add_argument("--kill-size", type=parse_size, default=256 * MiB, help="the killed uploads (256MiB)")
    p.add_argument("--broker-kills", type=int, default=3)
    p.add_argument("--rate", type=float, default=50.0, help="small files: posts/s offered")
    p.add_argument("--seconds", type=float, default=10.0, help="small files: the measured window")
    p.add_argument("--posters", type=int, default=SMALL_POSTERS, help="small files: posting devices")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--profile", action="store_true", help="py-spy the client and broker during throughput")
    p.add_argument("--no-readme", dest="readme", action="store_false")
    p.add_argument("--out", type=Path, default=RESULTS / "attachments.json")
    args = p.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="caseline-attachments-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    old: dict[str, Any] = {}
    if args.out.exists():
        old = json.loads(args.out.read_text(encoding="utf-8"))
    merged = {**old.get("results", {}), **{k: {**v, "date": date} for k, v in results.items()}}
    out: dict[str, Any] = {
        "benchmark": "bench.attachments",
        "date": date,
        "machine": machine(),
        "results": merged,
    }
    out["wall_seconds_last_run"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"Wrote {args.out}")
    if args.readme:
        write_readme(Path("README.md"), merged, date)
    print("\n".join(table(merged)))
    missed = [k for k, v in results.items() if v.get("verdict") == "MISS" or any(
        isinstance(s, dict) and s.get("verdict") == "MISS" for s in v.values())]  # fmt: skip
    if missed:
        print(f"missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
