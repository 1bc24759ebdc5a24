"""Runs the workload shapes on several brokers, interleaved, and aggregates the runs.

The machine is shared and its background load drifts over minutes, so the
systems are not measured one after the other: each repeat runs a workload on
caseline, then on Mosquitto, then on Synapse, before the next workload.  A ratio
caseline ÷ peer then compares runs made seconds apart.  Only one system is under
load at a time; the others sit idle.

Idle memory is measured first, each system on a fresh instance of its own that
is stopped before the load runs start on another.  A system that fails is
recorded as failed, stopped, and left out of the rest; every server is stopped
(by its PID) at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final

from bench.peers.common import FANOUT_SIZES, Skipped, System, latency_summary, loadavg, settle, spread

WORKLOADS: Final = ("idle", "throughput", "fanout", "latency")
Factory = Callable[[], System]


def _line(name: str, label: str, r: dict[str, Any]) -> None:
    cpu = r.get("cpu", {})
    value = f"{r['per_s']:>10,.0f}/s" if "per_s" in r else f"{r.get('achieved_per_s', 0):>10,.0f}/s"
    if "kib_per_connection" in r:
        value = f"{r['kib_per_connection']:>8,.1f} KiB/conn"
    print(
        f"   {name:<9} {label:<15} {value}"
        + (f" [{r['path']}, {r['window_s']} s]" if "path" in r and "window_s" in r else "")
        + f"  server {cpu.get('server_cores', '-')} cores, "
        f"load generator {cpu.get('loadgen_cores', '-')}, others {cpu.get('other_cores', '-')}, "
        f"load average {cpu.get('loadavg', r.get('loadavg'))}",
        flush=True,
    )


def _summarise(run: dict[str, Any]) -> dict[str, Any]:
    """A run with its latency samples replaced by their percentiles and CDF."""
    return {k: latency_summary(v) if k in ("latency", "ack_latency") else v for k, v in run.items()}


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated saturating runs: the rate's median and spread, each run's CPU, the last run's latencies."""
    last = _summarise(runs[-1])
    out: dict[str, Any] = {"per_s": spread([r["per_s"] for r in runs]), "cpu": [r["cpu"] for r in runs]}
    out["settled_s"] = [r["settled_s"] for r in runs]
    if "window_s" in runs[-1]:
        out["window_s"] = [r.get("window_s") for r in runs]
        out["pool_exhausted"] = [r.get("pool_exhausted") for r in runs]
    out.update({k: v for k, v in last.items() if k not in ("per_s", "cpu", "settled_s")})
    return out


def measure(
    factories: Sequence[Factory], repeats: int, idle_connections: int, *, only: str | None = None
) -> dict[str, dict[str, Any]]:
    """Start each system, run every workload ``repeats`` times interleaved, stop them all."""
    wanted = {only} if only else set(WORKLOADS)
    out: dict[str, dict[str, Any]] = {}
    live: dict[str, System] = {}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )

    def attempt(
        name: str, label: str, fn: Callable[..., dict[str, Any]], *args: Any
    ) -> dict[str, Any] | None:
        try:
            settled = settle(live[name].pid)
            result = fn(*args)
            result["settled_s"] = settled
        except Exception as exc:
            traceback.print_exc()
            out[name]["failed"] = f"{label}: {type(exc).__name__}: {exc}"
            live.pop(name).stop()
            print(f"   {name} failed in {label}: stopped, left out of the rest", flush=True)
            return None
        _line(name, label, result)
        return result

    def start(factory: Factory) -> System | None:
        name = getattr(factory, "name", repr(factory))
        print(f"== starting {name} (load average {loadavg()})", flush=True)
        try:
            system = factory()
        except Skipped as exc:
            print(f"   skipped: {exc}", flush=True)
            out[name] = {"skipped": str(exc)}
            return None
        except Exception as exc:
            traceback.print_exc()
            out[name] = {"failed": f"start: {type(exc).__name__}: {exc}"}
            return None
        out.setdefault(name, {})["version"] = system.version
        live[name] = system
        return system

    try:
        if "idle" in wanted:
            # Each on an instance of its own, stopped afterwards: a fresh heap to measure, and no
            # after-effects on the load runs (Synapse sent at half speed in the runs after
            # 2,000 dropped long-polls).
            for factory in factories:
                system = start(factory)
                if system is not None:
                    result = attempt(system.name, "idle", system.idle, idle_connections)
                    if result is not None:
                        out[system.name]["idle"] = result
                        live.pop(system.name).stop()
        if wanted - {"idle"}:
            for factory in factories:
                if "skipped" not in out.get(getattr(factory, "name", ""), {}):
                    start(factory)
        for repeat in range(repeats):
            print(f"== saturating workloads, repeat {repeat + 1} of {repeats}", flush=True)
            if "throughput" in wanted:
                for name, system in list(live.items()):
                    result = attempt(name, "throughput", system.throughput)
                    if result is not None:
                        runs[name]["throughput"].append(result)
                    # caseline's product path: HTTP POST, one request in flight per sender (Client.post).
                    http = getattr(system, "throughput_http", None)
                    if http is not None and name in live:
                        result = attempt(name, "throughput_http", http)
                        if result is not None:
                            runs[name]["throughput_http"].append(result)
            if "fanout" in wanted:
                for members in FANOUT_SIZES:
                    for name, system in list(live.items()):
                        result = attempt(name, f"fanout_{members}", system.fanout, members)
                        if result is not None:
                            runs[name][f"fanout_{members}"].append(result)
        if "latency" in wanted:
            rates = sorted({rate for system in live.values() for rate in system.latency_rates})
            print(f"== fixed rates: {rates} updates/s", flush=True)
            for rate in rates:
                for name, system in list(live.items()):
                    if rate in system.latency_rates:
                        result = attempt(name, f"latency_{rate}", system.latency, rate)
                        if result is not None:
                            out[name][f"latency_{rate}"] = _summarise(result)
    finally:
        for system in live.values():
            system.stop()
    for name, by_workload in runs.items():
        for workload, results in by_workload.items():
            out[name][workload] = _aggregate(results)
    return out
