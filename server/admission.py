"""Counting what is open, per source and in all, against two limits (sans-I/O).

One class serves both edge limits of issue 14: open TCP connections (counted
by the connection handler, ``edge.py``) and requests in flight (counted by a
middleware, ``app.py``).  A limit of 0 turns that half of the check off.  A
count that reaches zero is dropped, so the table holds only sources that have
something open and cannot grow past the global count.
"""

from __future__ import annotations

import dataclasses
import enum


class Refusal(enum.Enum):
    """Which limit refused: the caller's own share, or the broker's total."""

    SOURCE = "source"
    TOTAL = "total"


@dataclasses.dataclass(slots=True)
class Admission:
    """Open things by source; ``admit`` before opening one, ``release`` once it is closed."""

    per_source: int
    total: int
    open: int = 0
    by_source: dict[str, int] = dataclasses.field(default_factory=dict)

    def admit(self, source: str, *, shared: bool = False) -> Refusal | None:
        """Count one more for ``source``, or say which limit it would break (counting nothing).

        ``shared``: the source speaks for many clients (a trusted reverse proxy),
        so only the total applies to it; its count is still kept, for release.
        """
        held = self.by_source.get(source, 0)
        if not shared and self.per_source > 0 and held >= self.per_source:
            return Refusal.SOURCE
        if self.total > 0 and self.open >= self.total:
            return Refusal.TOTAL
        self.by_source[source] = held + 1
        self.open += 1
        return None

    def release(self, source: str) -> None:
        held = self.by_source.get(source, 0)
        if held <= 0:
            return  # never admitted: releasing twice must not free someone else's share
        if held == 1:
            del self.by_source[source]
        else:
            self.by_source[source] = held - 1
        self.open -= 1


def derived_total(configured: int, descriptor_limit: int, reserve: int) -> int:
    """The global connection limit: as configured, or (-1) what the descriptor limit leaves.

    Every connection holds a descriptor; the broker also needs some for its
    database, witnesses, logs and the listening sockets, which ``reserve``
    keeps.  With a tiny descriptor limit half of it goes to connections.
    """
    if configured >= 0:
        return configured
    return max(descriptor_limit - reserve, descriptor_limit // 2, 1)


@dataclasses.dataclass(slots=True)
class Ticket:
    """One admitted thing; ``release`` may be called any number of times, it counts once."""

    admission: Admission
    source: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission.release(self.source)
