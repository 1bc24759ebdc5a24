"""What the three systems' benchmarks share: the workload shapes, processes, statistics.

The shapes live here, once, so that caseline, Mosquitto and Synapse are measured
on the same thing: 50 senders in groups of 10 (five cases, topics or rooms),
1 KiB payloads, 32 unacknowledged posts per sender, fixed rates of 1,000 and
5,000 updates/s with one follower per group, and 10,000 idle connections.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final, Protocol

BENCH: Final = Path(__file__).resolve().parent.parent
PEERS: Final = BENCH / ".peers"  # everything the bench installs or writes for the peers

SENDERS: Final = 50
GROUP: Final = 10  # members of a case / subscribers of a topic / members of a room
FANOUT_SIZES: Final = (10, 50)
WINDOW: Final = 32  # unacknowledged posts per sender
PAYLOAD: Final = 1024  # bytes of plaintext per update
RATES: Final = (1000, 5000)  # offered updates/s for the latency runs
LATENCY_SECONDS: Final = 4.0  # of load at each fixed rate
#: Seconds of load in every saturating run (throughput, fan-out): posters stop starting new posts
#: after this long, so a run's window is this plus the time the last posts take to be answered.
SATURATE_SECONDS: Final = 10.0
IDLE_CONNECTIONS: Final = 10_000
CDF_POINTS: Final = 200


class Skipped(Exception):
    """A peer that cannot run on this machine; the reason goes into the results."""


class System(Protocol):
    """One broker under test, started and ready; every method is one measured run.

    ``throughput`` and ``fanout`` return ``per_s`` (acknowledged posts/s and
    deliveries/s) and ``cpu`` (a ``Window``); ``latency`` returns latency
    summaries at one offered rate of ``latency_rates``.
    """

    name: str
    version: str
    latency_rates: tuple[int, ...]

    @property
    def pid(self) -> int:
        """The server process's, to wait for it to go quiet between runs."""
        ...

    def idle(self, connections: int) -> dict[str, Any]: ...
    def throughput(self) -> dict[str, Any]: ...
    def fanout(self, members: int) -> dict[str, Any]: ...
    def latency(self, rate: int) -> dict[str, Any]: ...
    def stop(self) -> None: ...


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages: the machine is shared, so every figure carries them."""
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until something accepts TCP connections on 127.0.0.1:``port`` (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live (or not yet reaped) process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (the C load generator's, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy, all cores together (/proc/stat, not idle or iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Window:
    """CPU use over one measured run: the server's, the load generator's, and the rest of the machine's.

    The machine is shared, so beside the load average each run records how many
    cores were busy with other people's work while it ran (``other_cores``, the
    machine's busy time less ours): a run that shared its two cores is visible.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.loadavg = loadavg()
        self.t0 = time.perf_counter()
        self.server0 = cpu_seconds(server_pid)
        self.busy0 = machine_busy_seconds()

    def close(self, loadgen_cpu_seconds: float) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        server = cpu_seconds(self.server_pid) - self.server0
        busy = machine_busy_seconds() - self.busy0
        return {
            "wall_s": round(wall, 2),
            "server_cores": round(server / wall, 2),
            "loadgen_cores": round(loadgen_cpu_seconds / wall, 2),
            "other_cores": round(max(0.0, busy - server - loadgen_cpu_seconds) / wall, 2),
            "loadavg": self.loadavg,
        }


def settle(pid: int, *, below: float = 0.05, quiet_for: float = 1.0, limit: float = 60.0) -> float:
    """Wait until a server has used less than ``below`` cores for ``quiet_for`` seconds; seconds waited.

    A server may keep working after a run (Synapse does, for tens of seconds after a
    fan-out), and a run that started then would be charged for it.
    """
    started = time.monotonic()
    quiet_since, cpu = started, cpu_seconds(pid)
    while time.monotonic() - quiet_since < quiet_for and time.monotonic() - started < limit:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - cpu > below * 0.25:
            quiet_since = time.monotonic()
        cpu = now
    return round(time.monotonic() - started, 1)


class Process:
    """A server we started: its PID, memory and CPU time from /proc, and a stop by PID."""

    def __init__(self, args: Sequence[str | Path], log: Path, **kw: Any) -> None:
        self.log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen([str(a) for a in args], stdout=self.log, stderr=subprocess.STDOUT, **kw)
        self.pid = self.proc.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not gone in 10 s; always by our own PID."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


# ------------------------------------------------------------------ statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of values already sorted (the same rule for every system)."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency_summary(samples_ms: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/max and a CDF of ``CDF_POINTS`` quantiles (for the charts), in ms."""
    values = sorted(samples_ms)
    if not values:
        return {"samples": 0}
    n = len(values)
    return {
        "samples": n,
        "p50_ms": round(percentile(values, 0.50), 3),
        "p95_ms": round(percentile(values, 0.95), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
        "max_ms": round(values[-1], 3),
        "cdf_ms": [round(values[min(n - 1, n * i // CDF_POINTS)], 3) for i in range(CDF_POINTS)]
        + [round(values[-1], 3)],
    }


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated runs, and every run."""
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "runs": [round(v, 1) for v in values],
    }


def read_us_samples(path: Path) -> list[float]:
    """Little-endian uint32 microseconds (what bench/mqtt_load.c writes), as ms."""
    a = array("I")
    a.frombytes(path.read_bytes())
    return [x / 1000 for x in a]
