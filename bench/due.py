"""``caseline due`` over 1,000 cases x 100 requests (issue 16): ``python -m bench.due``.

Method
------
A real profile (``Client.create`` with a key file, so no passphrase KDF sits in
the figure).  Its request index is filled the way ``Client._index`` keeps it —
``Workflow.state()`` sealed by ``ViewStore.update_workflow`` — for ``CASES`` cases of
``REQUESTS`` requests each, half from this agency and half asking it; first
with one request in ten still open (a backlog of 10,000: typical is far less),
then with every one open (100,000 owed: the worst case).  Building 100,000 real requests through a
broker would take hours and measure posting, not ``due``: what ``due`` reads is
exactly this index, whichever way it was filled (tests/test_due_client.py shows
the real path fills it).

Measured, each the median of ``REPEATS`` runs after one warm-up:
(a) ``Client.due()`` in process (opens the index rows, builds the rows, sorts);
(b) ``caseline --json due --offline`` as a fresh process, wall clock, and its
    CPU (user + system of the child, ``os.wait4``) minus that of ``python -c pass``
    (the interpreter's own start, which no command can avoid).
``--offline``: the default also asks the broker which cases moved (one request)
and syncs those, which is network, not ``due``.  Each figure is printed with
the command and the 1-minute load average.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess  # nosec B404 - runs this interpreter and the project's own CLI
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from caseline.client.client import Client
from caseline.client.core import Author, CaseEvent, Member
from caseline.client.workflow import Workflow

CASES: Final = 1000
REQUESTS: Final = 100
REPEATS: Final = 5
T0: Final = 1_796_000_000_000
ME: Final = Author("ke-kra", "amina", b"k" * 16, "officer")
PARTNER: Final = Author("tz-tra", "juma", b"t" * 16, "officer")


def _event(
    case_id: bytes, seq: int, author: Author, content_type: str, content: Mapping[str, object]
) -> CaseEvent:
    return CaseEvent(
        case_id, seq, "update", 0, author, T0 + seq * 60_000, readable=True, content_type=content_type,
        content={"markings": {"handling": "H0", "tlp": "GREEN"}, "lang": "en", **content},
        update_id=case_id[:16] + seq.to_bytes(16, "big"),
    )  # fmt: skip


def case_flow(number: int, open_per_10: int) -> Workflow:
    case_id = number.to_bytes(16, "big")
    flow = Workflow(case_id)
    flow.add(
        CaseEvent(case_id, 0, "commit", 0, ME, T0, members=(Member(ME, "owner"), Member(PARTNER, "owner")))
    )
    seq = 1
    for n in range(REQUESTS):
        sender = PARTNER if (n + number) % 2 == 0 else ME
        req = _event(case_id, seq, sender, "request", {"subject": f"request {n}", "category": "other"})
        flow.add(req)
        seq += 1
        if n % 10 >= open_per_10:
            answerer = ME if sender is PARTNER else PARTNER
            ack = {"of": (req.update_id or b"").hex(), "state": "answered", "answer": (b"\x01" * 32).hex()}
            flow.add(_event(case_id, seq, answerer, "ack", ack))
            seq += 1
    return flow


def _replaced_by(state: object) -> Callable[[object | None], object]:
    return lambda _: state


async def fill(directory: Path, open_per_10: int) -> None:
    client = await Client.create(
        directory, agency_id="ke-kra", user_id="amina", server_url="http://127.0.0.1:9",
        key_file=directory.parent / f"{directory.name}.key",
    )  # fmt: skip
    try:
        for number in range(CASES):
            flow = case_flow(number, open_per_10)
            await client._views.update_workflow(flow.case_id, _replaced_by(flow.state()))
    finally:
        await client.close()


async def in_process(directory: Path) -> tuple[float, int, int]:
    client = await Client.open(directory)
    try:
        times = []
        for _ in range(REPEATS + 1):
            start = time.perf_counter()
            due = await client.due(T0)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:]), len(due.owe), len(due.owed)
    finally:
        await client.close()


def child(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, user + system CPU s) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # nosec B603
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def median_child(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    runs = [child(argv, env) for _ in range(REPEATS + 1)][1:]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def measure(home: Path, name: str, open_per_10: int) -> dict[str, object]:
    directory = home / "profiles" / name
    asyncio.run(fill(directory, open_per_10))
    seconds, owe, owed = asyncio.run(in_process(directory))
    # As installed: with byte-code caches (this machine's environment sets PYTHONDONTWRITEBYTECODE,
    # which would have every run compile the whole client first).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"CASELINE_HOME": str(home), "NO_COLOR": "1", "PYTHONPYCACHEPREFIX": str(home / "pycache")}
    command = [sys.executable, "-m", "caseline.client.cli", "--profile", name, "--json", "due", "--offline"]
    wall, cpu = median_child(command, env)
    _, base_cpu = median_child([sys.executable, "-c", "pass"], env)
    return {
        "cases": CASES,
        "requests": CASES * REQUESTS,
        "open_share": open_per_10 / 10,
        "open_owe": owe,
        "open_owed": owed,
        "client_due_s": round(seconds, 3),
        "cli_wall_s": round(wall, 3),
        "cli_cpu_minus_python_s": round(cpu - base_cpu, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "command": "caseline --json due --offline",
    }


def main() -> None:
    """A backlog where one request in ten is still open (typical), then every one open (worst)."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        (home / "profiles").mkdir(parents=True, mode=0o700)
        results = [measure(home, "typical", 1), measure(home, "all-open", 10)]
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results" / "due.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
