"""Where the broker's time goes: py-spy samples of the running server, summarised.

``make bench`` measures; when a target is missed the question is why, and the
answer has to come from the real broker under the real load, not from a
micro-benchmark.  py-spy samples the server process from outside (no code
change, ``--nonblocking`` so the broker is not paused) while a workload runs.
It is not a project dependency: ``python -m bench.compare --profile`` installs
it into the venv ad hoc, and without it the profile is reported as skipped.

A summary gives, per thread, the share of samples; then the functions with the
most samples of their own ("self") and the functions most often on the stack
("total"), each as a percentage of the samples of the thread that runs the
event loop, where the broker's Python work happens.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

RATE: Final = 250  # samples per second
TOP: Final = 15
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy next to this interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def install() -> str | None:
    """pip-install py-spy into the running venv (ad hoc: not a dependency of caseline)."""
    if py_spy() is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False)
    return py_spy()


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (py-spy's collapsed "raw" format)."""
    tool = py_spy()
    if tool is None:
        return None
    args = [tool, "record", "--pid", str(pid), "--rate", str(RATE), "--duration", str(max(1, round(seconds)))]
    args += ["--nonblocking", "--threads", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    """``func (file:line)`` → ``func (folder/file.py)``: lines merged, paths short."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    parts = path.split("/")
    return f"{m['func']} ({'/'.join(parts[-2:])})"


def summarise(path: Path, top: int = TOP) -> dict[str, Any]:
    """Self and total shares of the event-loop thread's samples, and each thread's share."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    main_samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        threads[thread] += count
        if "MainThread" not in thread:
            continue
        main_samples += count
        names = [_short(f) for f in frames[1:]]
        if names:
            own[names[-1]] += count
        for name in set(names):
            total[name] += count
    all_samples = sum(threads.values())

    def pct(n: int, of: int) -> float:
        return round(100 * n / of, 1) if of else 0.0

    return {
        "samples": all_samples,
        "rate_hz": RATE,
        "threads_pct_of_all": {t: pct(n, all_samples) for t, n in threads.most_common(6)},
        "main_thread_samples": main_samples,
        "self_pct_of_main": {f: pct(n, main_samples) for f, n in own.most_common(top)},
        "total_pct_of_main": {f: pct(n, main_samples) for f, n in total.most_common(top * 3)},
    }
