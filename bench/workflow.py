"""``caseline due`` and ``caseline stats`` over 1,000 cases x 100 requests (issue 16's targets).

Method.  A real profile (a bot device, so no passphrase KDF is in the
timings) gets a request index of 100,000 rows written through the profile
store's own API, the one the client's fold writes when it verifies a case:
``due`` and ``stats`` read that index and nothing else.  Posting 100,000
real requests and acks through a broker instead would take hours at the
broker's measured few thousand posts/s plus each client's verification, and
would time the same reads.  The rows are generated from a seed with the
states a year of traffic leaves: answered on time and late, extended (then
answered or still open), refused on several Article 6 grounds, open and not
yet due, and overdue; five agencies, the profile's own in about half.

Then, each for at least ``--seconds`` (10 s) of repeats, the median of the
runs: (a) ``Client.due()`` in-process, (b) the ``caseline due --offline
--json`` process's wall time, (c) ``Client.requests()`` and the reciprocity
figures in-process, (d) the ``caseline stats --offline --format json``
process's wall time.  The processes' start-up is measured alone too
(``caseline --version``, and ``python -c pass``), so a miss can be told
apart from the interpreter's start.  Results: bench/results/workflow.json
and, unless ``--no-readme``, README's table between the workflow-bench
markers; the load average before and after each workload is printed and kept.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess  # nosec B404 - the CLI under test
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from caseline.client.client import Client
from caseline.client.core import Author, CaseEvent, Member
from caseline.client.reciprocity import reciprocity
from caseline.client.workflow import Workflow
from caseline.schemas.content import DEADLINES
from caseline.schemas.handling import format_time

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results" / "workflow.json"
README: Final = ROOT / "README.md"
START, END = "<!-- workflow-bench:start (written by `make bench-workflow`) -->", "<!-- workflow-bench:end -->"
ME: Final = "ke-kra"
AGENCIES: Final = ("ke-kra", "tz-tra", "ug-ura", "rw-rra", "bi-obr")
GROUNDS: Final = ("not-available", "request-incomplete", "national-security", "jeopardises-investigation")
DAY_MS: Final = 86_400_000
TARGETS: Final = {"due": 0.5, "stats": 2.0}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _author(agency: str) -> Author:
    return Author(agency, "bench", agency.encode().ljust(16, b"\0")[:16], "officer")


def _update(case_id: bytes, seq: int, agency: str, content_type: str, **fields: Any) -> CaseEvent:
    content = {"markings": {"handling": "H0", "tlp": "GREEN"}, "lang": "en", **fields}
    return CaseEvent(
        case_id,
        seq,
        "update",
        1,
        _author(agency),
        0,
        readable=True,
        content_type=content_type,
        content=content,
        update_id=hashlib.sha256(case_id + seq.to_bytes(8, "big")).digest(),
    )


def generate(cases: int, per_case: int, now: int, seed: int = 16) -> dict[bytes, Workflow]:
    """Each case's request fold, from request, ack and reply events a year of traffic leaves.

    The events go through ``Workflow.add`` (the fold the client runs on verified
    events) with their trusted times, so the rows are what real traffic makes.
    """
    rng = random.Random(seed)
    categories = list(DEADLINES)
    out: dict[bytes, Workflow] = {}
    for _ in range(cases):
        case_id = rng.randbytes(32)
        partners = sorted(rng.sample(AGENCIES[1:], 2))
        flow = Workflow(case_id)
        members = tuple(Member(_author(a), "owner") for a in (ME, *partners))
        flow.add(CaseEvent(case_id, 1, "commit", 1, members[0].author, 0, members=members))
        seq = 1
        for n in range(per_case):
            mine = rng.random() < 0.5
            frm = ME if mine else rng.choice(partners)
            to = partners if mine else [ME]
            answerer = rng.choice(to)
            category = rng.choice(categories)
            limit = DEADLINES[category] * 1000
            start = now - rng.randrange(365 * DAY_MS)
            seq += 1
            request = _update(case_id, seq, frm, "request", subject=f"Records {n}", category=category, to=to)
            flow.add(request, start)
            assert request.update_id is not None
            of = request.update_id.hex()
            moves: list[tuple[int, str, dict[str, Any]]] = []
            ack = start + rng.randrange(limit // 4 + 1)
            roll = rng.random()
            if roll < 0.05:  # never acknowledged
                pass
            elif roll < 0.55:  # answered; about one in five late
                moves.append((ack, "ack", {"state": "received"}))
                moves.append((start + int(limit * rng.uniform(0.05, 1.25)), "reply", {"outcome": "answered"}))
            elif roll < 0.70:  # extended once, then answered by the new deadline, or still open
                new = format_time(start + limit + DEADLINES["other"] * 1000)
                moves.append((ack, "ack", {"state": "extended", "deadline": new, "note": "court order first",
                                           "extension_reason": "judicial-authorisation"}))  # fmt: skip
                if rng.random() < 0.7:
                    moves.append(
                        (start + int(limit * rng.uniform(0.9, 2.5)), "reply", {"outcome": "answered"})
                    )
            elif roll < 0.85:
                moves.append((start + limit // 3, "ack", {"state": "refused", "ground": rng.choice(GROUNDS)}))
            else:  # acknowledged, never answered: overdue unless young
                moves.append((ack, "ack", {"state": "in-progress"}))
            for at, kind, fields in moves:
                seq += 1
                if kind == "ack":
                    event = _update(case_id, seq, answerer, "ack", of=of, **fields)
                else:
                    event = _update(case_id, seq, answerer, "reply", in_reply_to=of, text="Here", **fields)
                flow.add(event, min(at, now))
        out[case_id] = flow
    return out


def _replaced_by(state: object) -> Callable[[object | None], object]:
    return lambda _old: state


async def make_profile(home: Path, cases: dict[bytes, Workflow]) -> Path:
    """A bot device's profile holding the index, written through the profile store's own API."""
    directory = home / "profiles" / "bench"
    directory.parent.mkdir(parents=True, mode=0o700)
    client = await Client.create(
        directory,
        agency_id=ME,
        user_id="bench-bot",
        server_url="http://127.0.0.1:9",  # never contacted: every command runs --offline
        key_file=home / "bench.key",
        kdf="interactive",
    )
    try:
        for case_id, flow in cases.items():  # what Client._index writes after verifying a case
            await client._views.update_workflow(case_id, _replaced_by(flow.state()))
    finally:
        await client.close()
    return directory


#: One run: (wall seconds, CPU seconds).  The CPU time is what a shared machine cannot inflate much.
Timing = tuple[float, float]


def repeat(run: Callable[[], Timing], seconds: float, minimum: int = 3) -> list[Timing]:
    """Run until ``seconds`` of wall time and at least ``minimum`` runs; each run's own times."""
    times: list[Timing] = []
    while sum(t[0] for t in times) < seconds or len(times) < minimum:
        times.append(run())
    return times


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process(home: Path, args: Sequence[str]) -> Callable[[], Timing]:
    env = {**os.environ, "CASELINE_HOME": str(home), "CASELINE_PROFILE": "bench", "NO_COLOR": "1"}

    def run() -> Timing:
        cpu = _children_cpu()
        began = time.perf_counter()
        done = subprocess.run(args, env=env, capture_output=True, check=False)  # nosec B603
        took = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
        return took, _children_cpu() - cpu

    return run


def has_command(home: Path, caseline: str, name: str) -> bool:
    env = {**os.environ, "CASELINE_HOME": str(home)}
    done = subprocess.run([caseline, name, "--help"], env=env, capture_output=True, check=False)  # nosec B603
    return done.returncode == 0


def in_process(directory: Path, what: str) -> Callable[[], Timing]:
    """The call alone, on a client opened beforehand (``Client.open`` is the cold-start bench's)."""

    async def once() -> Timing:
        async with await Client.open(directory) as client:
            began, cpu = time.perf_counter(), time.process_time()
            if what == "due":
                await client.due()
            else:
                identity = await client.identity()
                reciprocity(await client.requests(), agency=identity.agency_id, now=client.clock())
            return time.perf_counter() - began, time.process_time() - cpu

    return lambda: asyncio.run(once())


def summary(times: list[Timing]) -> dict[str, Any]:
    wall = [t[0] for t in times]
    return {
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "max_s": max(wall),
        "cpu_median_s": statistics.median(t[1] for t in times),
        "runs": len(wall),
        "total_s": sum(wall),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--per-case", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="repeat each workload this long")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    caseline = str(Path(sys.executable).with_name("caseline"))
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cases": args.cases,
        "per_case": args.per_case,
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="caseline-bench-workflow-") as temp:
        home = Path(temp)
        now = int(time.time() * 1000)
        cases = generate(args.cases, args.per_case, now)
        began = time.perf_counter()
        directory = asyncio.run(make_profile(home, cases))
        results["rows"] = sum(len(flow.rows()) for flow in cases.values())
        results["build_s"] = time.perf_counter() - began
        print(f"index of {results['rows']:,} requests written in {results['build_s']:.1f} s", flush=True)
        workloads: dict[str, Callable[[], Timing]] = {
            "python_start": process(home, [sys.executable, "-c", "pass"]),
            "cli_start": process(home, [caseline, "--version"]),
            "due_in_process": in_process(directory, "due"),
            "due_cli": process(home, [caseline, "due", "--offline", "--json"]),
            "stats_in_process": in_process(directory, "stats"),
            "stats_cli": process(home, [caseline, "stats", "--offline", "--format", "json"]),
        }
        for name, run in workloads.items():
            if name == "due_cli" and not has_command(home, caseline, "due"):
                print("caseline due: no such command in this build; not measured", flush=True)
                continue
            before = loadavg()
            times = repeat(run, args.seconds)
            results[name] = {**summary(times), "loadavg": [before, loadavg()]}
            print(
                f"{name:<18} median {results[name]['median_s']:.3f} s over {len(times)} runs"
                f" (min {results[name]['min_s']:.3f}, CPU {results[name]['cpu_median_s']:.3f} s),"
                f" load average {before} -> {loadavg()}",
                flush=True,
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_readme:
        write_readme(results)


def _verdict(value: float, target: float) -> str:
    return f"≤ {target} s: {'met' if value <= target else '**missed**'}"


def write_readme(r: dict[str, Any]) -> None:
    """README's rows between the workflow-bench markers."""

    def load(name: str) -> str:
        return " -> ".join(r[name]["loadavg"])

    def row(what: str, name: str, target: str, command: str) -> str:
        if name not in r:
            return f"| {what} | not measured (no such command in this build) | | |"
        took, cpu = r[name]["median_s"], r[name]["cpu_median_s"]
        return (
            f"| {what} | {took:.3f} s (CPU {cpu:.3f} s) | {_verdict(took, TARGETS[target])} "
            f"| {command}, load {load(name)} |"
        )

    rows = [
        f"Last updated {r['date']} on this {r['cores']}-core shared machine, "
        f"{r['rows']:,} requests in {r['cases']:,} cases (median of each workload's runs, "
        "each workload repeated for at least 10 s; load average before -> after):",
        "",
        "| what | result | target | command, load |",
        "|---|---|---|---|",
        row("`Client.due()` in-process", "due_in_process", "due", "`.venv/bin/python -m bench.workflow`"),
        row("`caseline due --offline --json`, process wall time", "due_cli", "due", "the same"),
        row("`Client.requests()` + reciprocity figures in-process", "stats_in_process", "stats", "the same"),
        row("`caseline stats --offline --format json`, process wall time", "stats_cli", "stats", "the same"),
        f"| start-up alone: `caseline --version` / `python -c pass` | {r['cli_start']['median_s']:.3f} s "
        f"(CPU {r['cli_start']['cpu_median_s']:.3f} s) / {r['python_start']['median_s']:.3f} s "
        f"| | the same, load {load('cli_start')} |",
    ]
    text = README.read_text()
    block = START + "\n\n" + "\n".join(rows) + "\n\n" + END
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        raise SystemExit(f"README.md has no {START} marker: add it where the table belongs")
    README.write_text(text)


if __name__ == "__main__":
    main()
