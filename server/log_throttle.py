"""One log line per interval for a message that can repeat thousands of times a second.

When the process runs out of descriptors, asyncio logs "socket.accept() out
of system resource" on the ``asyncio`` logger at every failed accept; a flood
of connections turned that into hundreds of megabytes of log in a minute
(issue 14, finding 3).  ``IntervalFilter`` lets the first such record of each
interval through and folds the rest into a count, reported on the next record
it lets through: "... (N more in the last 10 s)".  The same goes for the line
aiohttp logs for each request its parser refuses ("Error handling request
from ..."): a stream of junk requests must not become a stream of log lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

ACCEPT_ERROR: Final = "socket.accept() out of system resource"
#: What aiohttp's request handler logs (on ``caseline.server.http``) for a request it refused.
PARSE_ERROR: Final = "Error handling request"
#: The repeated messages, by the logger that carries them.
REPEATED: Final = (("asyncio", ACCEPT_ERROR), ("caseline.server.http", PARSE_ERROR))
#: The access log's logger (``server.logs.ACCESS_LOG``), named here to keep this module import-light.
ACCESS_LOGGER: Final = "caseline.server.access"


class IntervalFilter(logging.Filter):
    """Pass one record starting with ``prefix`` per ``interval`` seconds; count the others.

    Records with other messages pass untouched.  An interval of 0 passes all.
    A record let through is cut to its first line (asyncio appends the
    socket's repr) and carries the count of the ones held back before it.
    """

    def __init__(self, prefix: str, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefix, self.interval, self.clock = prefix, interval, clock
        self.last: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval <= 0 or not record.getMessage().startswith(self.prefix):
            return True
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            self.suppressed += 1
            return False
        message = record.getMessage().split("\n", 1)[0]
        if self.suppressed:
            message += f" ({self.suppressed} more in the last {self.interval:g} s)"
        record.msg, record.args = message, None
        self.last, self.suppressed = now, 0
        return True


class RefusalFilter(logging.Filter):
    """Fold the access lines of refused requests: one line per source, route and status per interval.

    An access line per request (issue 13) is what an operator expects, but a
    flood of junk from one address would otherwise write a line for every
    refusal it earns — hundreds of bytes per request, the disk-filling that
    issue 14 closed for accept errors.  Answers below 400 are never folded:
    they are the members' own traffic, already bounded by their rate limits.
    A line let through after a folded run carries ``folded`` (how many were
    held back) so the volume of the flood stays visible.
    """

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval, self.clock = interval, clock
        #: (source, route, status) -> (when a line last passed, how many were held back since).
        self.seen: dict[tuple[object, object, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status", None)
        if self.interval <= 0 or not isinstance(status, int) or status < 400:
            return True
        key = (getattr(record, "source", None), getattr(record, "route", None), status)
        now = self.clock()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self.seen[key] = (last[0], last[1] + 1)
            return False
        if len(self.seen) >= MAX_FOLDED_KEYS:  # many sources: forget the stalest half, stay bounded
            for stale in sorted(self.seen, key=lambda k: self.seen[k][0])[: MAX_FOLDED_KEYS // 2]:
                del self.seen[stale]
        if last is not None and last[1]:
            record.folded = last[1]
        self.seen[key] = (now, 0)
        return True


#: How many (source, route, status) runs ``RefusalFilter`` remembers at once.
MAX_FOLDED_KEYS: Final = 4096


def throttle_refused_access(interval: float) -> RefusalFilter | None:
    """Install (replacing an earlier one) the folding of refused requests' access lines; none at 0."""
    target = logging.getLogger(ACCESS_LOGGER)
    for existing in list(target.filters):
        if isinstance(existing, RefusalFilter):
            target.removeFilter(existing)
    if interval <= 0:
        return None
    folder = RefusalFilter(interval)
    target.addFilter(folder)
    return folder


def throttle_repeated_errors(interval: float) -> list[IntervalFilter]:
    """Install (replacing earlier ones) a filter per ``REPEATED`` message; none when ``interval`` is 0."""
    installed = []
    for name, prefix in REPEATED:
        target = logging.getLogger(name)
        for existing in list(target.filters):
            if isinstance(existing, IntervalFilter) and existing.prefix == prefix:
                target.removeFilter(existing)
        if interval > 0:
            installed.append(IntervalFilter(prefix, interval))
            target.addFilter(installed[-1])
    return installed
