"""caseline side by side with Mosquitto and Synapse: ``make bench`` (``python -m bench.compare``).

One run measures the three systems on the same machine, one after the other
(never at the same time: they would share the two cores), on the workload
shapes of ``bench/peers/common.py``, and writes

  bench/results/compare.json   every figure, with the machine, versions and load averages
  bench/results/summary.md     the comparison table, ratios caseline/peer, targets
  bench/results/*.png          throughput bars per system, latency CDFs

and refreshes the summary block in README.md.  ``bench/results/core.json``
(``python -m bench.core``, run first by ``make bench``) supplies the client-side
and core micro-benchmark rows.

A peer that cannot be installed is reported as skipped with its reason; every
peer process is stopped by its PID when its part ends, also on error.  With
``--profile``, each missed target is followed by a py-spy profile of the broker
under the workload that missed it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench import load, report
from bench.measure import Factory, measure
from bench.peers.common import IDLE_CONNECTIONS, loadavg
from bench.peers.mosquitto import Mosquitto
from bench.peers.synapse import Synapse

RESULTS = Path(__file__).with_name("results")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            mem_kib = next((int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:")), 0)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` that stops a server by PID runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each saturating workload")
    parser.add_argument("--idle", type=int, default=IDLE_CONNECTIONS, help="idle connections per system")
    parser.add_argument("--skip", action="append", default=[], choices=["mosquitto", "synapse"])
    parser.add_argument("--profile", action="store_true", help="py-spy the broker for each missed target")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)

    started = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "bench.compare",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.compare", *sys.argv[1:]]),
        "machine": machine(),
        "loadavg_start": loadavg(),
        "repeats": args.repeats,
    }
    systems: list[Factory] = [load.Caseline]
    for name, factory in (("mosquitto", Mosquitto), ("synapse", Synapse)):
        if name not in args.skip:
            systems.append(factory)
    out.update(measure(systems, args.repeats, args.idle))
    for name in args.skip:
        out[name] = {"skipped": "--skip on the command line"}
    out["loadavg_end"] = loadavg()
    out["targets"] = report.targets(out)
    if args.profile:
        out["profiles"] = profiles(out["targets"])
    out["wall_seconds"] = round(time.perf_counter() - started, 1)

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "compare.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written = report.write(out, RESULTS, readme=None if args.no_readme else Path("README.md"))
    print()
    print((RESULTS / "summary.md").read_text(encoding="utf-8"))
    print("Wrote", ", ".join(str(p) for p in [path, *written]), f"in {out['wall_seconds']} s")


def profiles(targets: list[dict[str, Any]]) -> dict[str, Any]:
    """A py-spy profile of the broker under each workload behind a missed target."""
    from bench import profile

    missed = {t["workload"] for t in targets if t.get("met") is False}
    if not missed:
        return {}
    if profile.install() is None:
        return {"skipped": "py-spy could not be installed"}
    found: dict[str, Any] = {}
    for workload in sorted(missed):
        print(f"\n== profile of the broker under {workload} (load average {loadavg()})", flush=True)
        try:
            found[workload] = load.profiled(workload)
        except Exception as exc:
            traceback.print_exc()
            found[workload] = {"failed": f"{type(exc).__name__}: {exc}"}
    return found


if __name__ == "__main__":
    main()
