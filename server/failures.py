"""Failed authentication, per source: counted, limited, and summed up for the audit log.

A failure is a 401 (no, unknown or expired session token), a failed login, or a
403 because the device is not a member of the case it named.  Each counts
against the request's source (``sources.py``).

``FailureLimiter``: past ``limit`` failures in a ``window`` from one source,
that source's requests that would need authentication are refused with 429
before any database work, until the window ends.  Other sources are not
affected, and neither is a request that carries a session the broker has in
memory (checked without the database): a valid session is never locked out.

``RejectionTally``: an audit row per failure let one client write ~900 fsync'd
rows a second.  Failures are summed per source instead, and written as one
``rejected`` row per source per flush interval, with the count and the reasons,
so the log still shows who tried what and how often, but cannot fill the disk.

Both are sans-I/O (the caller passes the time) and bounded in memory.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Final

#: Sources tracked at once; past this, expired entries go, then the oldest (a flood of fresh sources
#: can only make the broker forget some, never grow without bound).
MAX_SOURCES: Final = 100_000
#: Sources that get a tally row of their own per interval; failures from any further source in the
#: same interval are summed in one ``source=other`` row.  Bounds the rows a flush writes (257).
TALLY_SOURCES: Final = 256
#: The longest ``detail`` a tally row gets: an audit row's size is bounded whatever the input.
MAX_DETAIL: Final = 400
#: Routes named per row; a source that hits more is summarised as ``+N``.
MAX_ROUTES: Final = 4


class FailureLimiter:
    """Fixed windows of ``window`` seconds per source; ``limit`` 0 turns the limit off."""

    __slots__ = ("_windows", "limit", "window")

    def __init__(self, *, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._windows: dict[str, tuple[float, int]] = {}  # source -> (window start, failures)

    def __len__(self) -> int:
        return len(self._windows)

    def blocked(self, source: str, *, now: float) -> float:
        """0, or the seconds ``source`` must wait before its authentication is tried again."""
        if self.limit <= 0:
            return 0.0
        entry = self._windows.get(source)
        if entry is None:
            return 0.0
        start, count = entry
        if now >= start + self.window:
            return 0.0
        return start + self.window - now if count >= self.limit else 0.0

    def record(self, source: str, *, now: float) -> None:
        """Count one failure from ``source``."""
        if self.limit <= 0:
            return
        entry = self._windows.get(source)
        if entry is None or now >= entry[0] + self.window:
            if entry is None and len(self._windows) >= MAX_SOURCES:
                self._evict(now)
            self._windows[source] = (now, 1)
        else:
            self._windows[source] = (entry[0], entry[1] + 1)

    def _evict(self, now: float) -> None:
        for source in [s for s, (start, _) in self._windows.items() if now >= start + self.window]:
            del self._windows[source]
        while len(self._windows) >= MAX_SOURCES:
            del self._windows[next(iter(self._windows))]


@dataclasses.dataclass(slots=True)
class _Count:
    total: int = 0
    reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    routes: dict[str, None] = dataclasses.field(default_factory=dict)
    more_routes: bool = False


class RejectionTally:
    """Failures per source since the last ``drain``; ``drain`` turns them into audit details."""

    __slots__ = ("_counts", "overflow")

    def __init__(self) -> None:
        self._counts: dict[str, _Count] = {}
        #: Failures from sources past ``TALLY_SOURCES`` in one interval, counted as ``source=other``.
        self.overflow = _Count()

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, source: str, reason: str, route: str) -> None:
        count = self._counts.get(source)
        if count is None:
            count = (
                self.overflow
                if len(self._counts) >= TALLY_SOURCES
                else self._counts.setdefault(source, _Count())
            )
        count.total += 1
        count.reasons[reason[:40]] += 1
        if len(count.routes) < MAX_ROUTES or route in count.routes:
            count.routes[route] = None
        else:
            count.more_routes = True

    def drain(self) -> list[str]:
        """One ``detail`` per source (``source=… count=N reasons=a:x,b:y routes=…``); the tally empties."""
        details = [_detail(source, count) for source, count in self._counts.items()]
        if self.overflow.total:
            details.append(_detail("other", self.overflow))
        self._counts, self.overflow = {}, _Count()
        return details


def _detail(source: str, count: _Count) -> str:
    reasons = ",".join(f"{r}:{n}" for r, n in sorted(count.reasons.items()))
    routes = ",".join(count.routes) + (",+more" if count.more_routes else "")
    return f"source={source} count={count.total} reasons={reasons} routes={routes}"[:MAX_DETAIL]
