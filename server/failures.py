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

#: Sources tracked at once by default (``FailureLimiter``); see its docstring for what happens when
#: the table is full.  A flood of fresh sources can never grow it past this.
MAX_SOURCES: Final = 100_000
#: The key failures from untracked sources are counted under when the table is full of blocked ones.
OVERFLOW: Final = "other"
#: Sources that get a tally row of their own per interval; failures from any further source in the
#: same interval are summed in one ``source=other`` row.  Bounds the rows a flush writes (257).
TALLY_SOURCES: Final = 256
#: The longest ``detail`` a tally row gets: an audit row's size is bounded whatever the input.
MAX_DETAIL: Final = 400
#: Routes named per row; a source that hits more is summarised as ``+N``.
MAX_ROUTES: Final = 4


class FailureLimiter:
    """Fixed windows of ``window`` seconds per source; ``limit`` 0 turns the limit off.

    Two bounded tables, each an ``OrderedDict`` whose front is popped, never
    scanned (issue 14 review, finding 7: a full scan per new source cost ~5 ms a
    request once 100 000 sources were held, and evicting the oldest entry let an
    attacker push its own blocked entry out with fresh sources):

    * ``_counting``: sources below the limit, in the order their window began
      (a window that restarts moves to the end), so the front expires first;
    * ``_blocked``: sources that reached the limit, in the order they did.

    Room for a new source is made by popping expired entries off both fronts
    (each entry is popped once: amortised O(1)), then the oldest *counting*
    entry: forgetting it hands a source that has not reached the limit a fresh
    count, at most ``limit`` more failures.  A blocked source is never forgotten
    before its window ends.  If the table is full of blocked sources, failures
    from any untracked source are counted together under ``OVERFLOW`` with the
    same limit, and past it every untracked source is refused until that window
    ends: conservative, because forgetting a blocked source would unblock the
    attacker, while an honest newcomer is only refused while an attacker holds
    ``capacity`` distinct blocked sources, and a valid session is never refused.
    """

    __slots__ = ("_blocked", "_counting", "_overflow", "capacity", "examined", "limit", "popped", "window")

    def __init__(self, *, limit: int, window: float, capacity: int = MAX_SOURCES) -> None:
        self.limit, self.window, self.capacity = limit, window, max(1, capacity)
        # source -> (window start, failures)
        self._counting: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()
        self._blocked: collections.OrderedDict[str, float] = collections.OrderedDict()  # -> start
        self._overflow: tuple[float, int] = (float("-inf"), 0)
        #: Entries dropped to make room, in all: each entry is dropped at most once.
        self.popped = 0
        #: Entries looked at to make room, in all: at most three more than were dropped, per new source.
        self.examined = 0

    def __len__(self) -> int:
        return len(self._counting) + len(self._blocked)

    def __contains__(self, source: object) -> bool:
        return source in self._counting or source in self._blocked

    def blocked(self, source: str, *, now: float) -> float:
        """0, or the seconds ``source`` must wait before its authentication is tried again."""
        if self.limit <= 0:
            return 0.0
        start = self._blocked.get(source)
        if start is None and source not in self._counting:
            start, count = self._overflow
            if count < self.limit:
                return 0.0
        return max(0.0, start + self.window - now) if start is not None else 0.0

    def record(self, source: str, *, now: float) -> None:
        """Count one failure from ``source``."""
        if self.limit <= 0:
            return
        start = self._blocked.get(source)
        if start is not None:
            if now < start + self.window:
                return  # already refused until its window ends
            del self._blocked[source]
        entry = self._counting.get(source)
        if entry is not None and now < entry[0] + self.window:
            start, count = entry[0], entry[1] + 1
        else:
            if entry is None and not self._make_room(now):
                self._overflow = self._counted(self._overflow, now)
                return
            self._counting.pop(source, None)
            start, count = now, 1
        if count >= self.limit:
            self._counting.pop(source, None)
            self._blocked[source] = start
        else:
            self._counting[source] = (start, count)  # a new or restarted window goes to the end

    def _counted(self, entry: tuple[float, int], now: float) -> tuple[float, int]:
        start, count = entry
        return (start, count + 1) if now < start + self.window else (now, 1)

    def _make_room(self, now: float) -> bool:
        """Room for one more source: expired fronts go, then the oldest unblocked; False if none."""
        counting, blocked = self._counting, self._blocked
        while counting:
            self.examined += 1
            if now < next(iter(counting.values()))[0] + self.window:
                break
            counting.popitem(last=False)
            self.popped += 1
        while blocked:
            self.examined += 1
            if now < next(iter(blocked.values())) + self.window:
                break
            blocked.popitem(last=False)
            self.popped += 1
        if len(counting) + len(blocked) < self.capacity:
            return True
        if counting:
            self.examined += 1
            counting.popitem(last=False)
            self.popped += 1
            return True
        return False


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
