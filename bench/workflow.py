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
import json
import os
import random
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
from caseline.client.reciprocity import reciprocity
from caseline.client.workflow import ANSWERED, EXTENDED, OPEN, REFUSED, CaseId, RequestId, RequestRow
from caseline.schemas.content import DEADLINES

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


def generate(cases: int, per_case: int, now: int, seed: int = 16) -> dict[bytes, list[RequestRow]]:
    """Request rows per case with a year's mix of states, from a seed."""
    rng = random.Random(seed)
    categories = list(DEADLINES)
    out: dict[bytes, list[RequestRow]] = {}
    for _ in range(cases):
        case_id = CaseId(rng.randbytes(32))
        partners = rng.sample(AGENCIES[1:], 2)
        rows = []
        for seq in range(1, per_case + 1):
            mine = rng.random() < 0.5
            frm = ME if mine else rng.choice(partners)
            to = tuple(sorted(partners)) if mine else (ME,)
            category = rng.choice(categories)
            limit = DEADLINES[category] * 1000
            start = now - rng.randrange(365 * DAY_MS)
            deadline = start + limit
            fields: dict[str, Any] = {"first_ack_at": start + rng.randrange(limit // 4 + 1)}
            roll = rng.random()
            if roll < 0.05 and now - start < limit:  # still young: open, not yet due
                fields = {}
            elif roll < 0.55:  # answered; one in five late
                fields |= {"state": ANSWERED, "answered_at": start + int(limit * rng.uniform(0.05, 1.25))}
            elif roll < 0.70:  # extended once, then answered by the new deadline or still open
                deadline += DEADLINES["other"] * 1000
                fields |= {"state": EXTENDED, "extensions": 1, "extension_reason": "judicial-authorisation"}
                if rng.random() < 0.7:
                    fields |= {"state": ANSWERED, "answered_at": start + int(limit * rng.uniform(0.9, 2.5))}
            elif roll < 0.85:
                fields |= {"state": REFUSED, "refused_at": start + limit // 3, "ground": rng.choice(GROUNDS)}
            else:  # never answered: open, overdue unless young
                fields |= {"state": OPEN}
            if fields.get("state") in (ANSWERED, REFUSED):
                fields["closed_by"] = to[0]
            rows.append(
                RequestRow(
                    case_id=case_id,
                    request_id=RequestId(rng.randbytes(32)),
                    seq=seq * 3,
                    from_agency=frm,
                    from_user="amina" if mine else "juma",
                    to_agencies=to,
                    category=category,
                    subject=f"Records for consignment {seq}",
                    start=start,
                    deadline=deadline,
                    **fields,
                )
            )
        out[case_id] = rows
    return out


async def make_profile(home: Path, cases: dict[bytes, list[RequestRow]]) -> Path:
    """A bot device's profile holding the index: written through the profile store's own API."""
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
        await write_index(client, cases)
    finally:
        await client.close()
    return directory


async def write_index(client: Client, cases: dict[bytes, list[RequestRow]]) -> None:
    raise NotImplementedError("adapted to the index API of wf-due")


def repeat(run: Callable[[], float], seconds: float, minimum: int = 3) -> list[float]:
    """Run until ``seconds`` of runs and at least ``minimum`` runs; each run's own time."""
    times: list[float] = []
    while sum(times) < seconds or len(times) < minimum:
        times.append(run())
    return times


def process(home: Path, args: Sequence[str]) -> Callable[[], float]:
    env = {**os.environ, "CASELINE_HOME": str(home), "CASELINE_PROFILE": "bench", "NO_COLOR": "1"}

    def run() -> float:
        began = time.perf_counter()
        done = subprocess.run(args, env=env, capture_output=True, check=False)  # nosec B603
        took = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
        return took

    return run


def in_process(directory: Path, what: str) -> Callable[[], float]:
    async def once() -> float:
        async with await Client.open(directory) as client:
            began = time.perf_counter()
            if what == "due":
                await client.due()
            else:
                identity = await client.identity()
                reciprocity(await client.requests(), agency=identity.agency_id, now=client.clock())
            return time.perf_counter() - began

    return lambda: asyncio.run(once())


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
        "total_s": sum(times),
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
        results["rows"] = sum(len(rows) for rows in cases.values())
        results["build_s"] = time.perf_counter() - began
        print(f"index of {results['rows']:,} requests written in {results['build_s']:.1f} s", flush=True)
        workloads: dict[str, Callable[[], float]] = {
            "python_start": process(home, [sys.executable, "-c", "pass"]),
            "cli_start": process(home, [caseline, "--version"]),
            "due_in_process": in_process(directory, "due"),
            "due_cli": process(home, [caseline, "due", "--offline", "--json"]),
            "stats_in_process": in_process(directory, "stats"),
            "stats_cli": process(home, [caseline, "stats", "--offline", "--format", "json"]),
        }
        for name, run in workloads.items():
            before = loadavg()
            times = repeat(run, args.seconds)
            results[name] = {**summary(times), "loadavg": [before, loadavg()]}
            print(
                f"{name:<18} median {results[name]['median_s']:.3f} s over {len(times)} runs"
                f" (min {results[name]['min_s']:.3f}), load average {before} -> {loadavg()}",
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

    rows = [
        f"Last updated {r['date']} on this {r['cores']}-core shared machine, "
        f"{r['rows']:,} requests in {r['cases']:,} cases (median of each workload's runs, "
        "each workload repeated for at least 10 s; load average before -> after):",
        "",
        "| what | result | target | command, load |",
        "|---|---|---|---|",
        f"| `Client.due()` in-process | {r['due_in_process']['median_s']:.3f} s "
        f"| {_verdict(r['due_in_process']['median_s'], TARGETS['due'])} "
        f"| `.venv/bin/python -m bench.workflow`, load {load('due_in_process')} |",
        f"| `caseline due --offline --json`, process wall time | {r['due_cli']['median_s']:.3f} s "
        f"| {_verdict(r['due_cli']['median_s'], TARGETS['due'])} | the same, load {load('due_cli')} |",
        f"| `Client.requests()` + reciprocity figures in-process | {r['stats_in_process']['median_s']:.3f} s "
        f"| {_verdict(r['stats_in_process']['median_s'], TARGETS['stats'])} "
        f"| the same, load {load('stats_in_process')} |",
        f"| `caseline stats --offline --format json`, process wall time | {r['stats_cli']['median_s']:.3f} s "
        f"| {_verdict(r['stats_cli']['median_s'], TARGETS['stats'])} | the same, load {load('stats_cli')} |",
        f"| start-up alone: `caseline --version` / `python -c pass` | {r['cli_start']['median_s']:.3f} s "
        f"/ {r['python_start']['median_s']:.3f} s | | the same, load {load('cli_start')} |",
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
