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
