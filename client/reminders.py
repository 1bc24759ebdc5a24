"""When a reminder bot speaks: the pure plan behind ``caseline remind``.

A reminder is due for an open request at each threshold before its deadline
(``deadline - before``) and once when it is overdue.  Each is identified by the
request, the deadline it concerns and its label, so an extension (a new
deadline) arms the thresholds again, and a bot restarted later never repeats
one it already gave.  A bot that was away past several thresholds gives only
the latest one that has passed: three stale "24 h left" / "2 h left" notices
in a row help nobody.  No clock here: ``now`` is handed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Final

from caseline.client.workflow import RequestRow

OVERDUE: Final = "overdue"


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Threshold:
    """``before`` ms ahead of a deadline (0: the deadline has passed), and its label (``2h``)."""

    before: int
    label: str


def parse_before(text: str) -> Threshold:
    """``2h``, ``30m``, ``1d``, ``90s``: how long before a deadline to remind."""
    units = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{text!r}: give a duration such as 30m, 2h or 1d")
    return Threshold(int(number) * units[unit], f"{int(number)}{unit}")


def key(row: RequestRow, label: str) -> str:
    """What identifies one reminder (also its idempotency key, so a crash cannot post it twice)."""
    return f"remind:{row.case_id.hex()}:{row.request_id.hex()}:{row.deadline}:{label}"


def _moments(row: RequestRow, thresholds: Sequence[Threshold]) -> list[tuple[int, str]]:
    """(when, label) of each reminder of ``row``, earliest first; overdue is just past the deadline."""
    out = [(row.deadline - t.before, t.label) for t in sorted(set(thresholds), reverse=True)]
    return [*out, (row.deadline + 1, OVERDUE)]


def plan(
    rows: Iterable[RequestRow], thresholds: Sequence[Threshold], *, done: set[str], now: int
) -> tuple[list[tuple[RequestRow, str]], list[str]]:
    """The reminders to give now, and every key they settle (skipped earlier ones included)."""
    give: list[tuple[RequestRow, str]] = []
    settled: list[str] = []
    for row in rows:
        if row.closed:
            continue
        passed = [(at, label) for at, label in _moments(row, thresholds) if at <= now]
        fresh = [label for _, label in passed if key(row, label) not in done]
        if not fresh:
            continue
        settled += [key(row, label) for label in fresh]
        latest = passed[-1][1]
        if key(row, latest) not in done:
            give.append((row, latest))
    return give, settled


def next_wake(
    rows: Iterable[RequestRow], thresholds: Sequence[Threshold], *, done: set[str], now: int
) -> int | None:
    """When the next reminder falls due (ms), or None if none is left to give."""
    times = [
        at
        for row in rows
        if not row.closed
        for at, label in _moments(row, thresholds)
        if at > now and key(row, label) not in done
    ]
    return min(times, default=None)


def text_of(row: RequestRow, label: str) -> str:
    """The reminder's words: no subject (a bot's reminder need not repeat what the request says)."""
    if label == OVERDUE:
        return f"Request #{row.seq} is overdue: its answer was due by the deadline."
    return f"Request #{row.seq}: answer due in {label}."
