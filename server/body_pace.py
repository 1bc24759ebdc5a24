"""How long a request body may take: a first-byte deadline, a minimum rate, a cap (sans-I/O).

A client that sends headers and then a byte now and then (or a chunk size it
never fills) holds a connection and a request slot for as long as the broker
waits.  ``BodyPace`` gives the time by which the next bytes must have arrived:

* within ``grace`` seconds of the start nothing is asked (this is also the
  deadline for the first byte: a body with none by then is cut);
* after it, the body must have averaged ``min_rate`` bytes a second since
  ``grace``, i.e. ``received >= min_rate * (elapsed - grace)``;
* and the whole body must be in by ``max_seconds``.

A rate of 0 (or a cap of 0) turns that rule off; both off, nothing is cut.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class BodyPace:
    grace: float
    min_rate: float
    max_seconds: float
    started: float
    received: int = 0

    def add(self, size: int) -> None:
        self.received += size

    def deadline(self) -> float | None:
        """The (monotonic) time by which more must arrive, or None if the body may take forever."""
        limits = []
        if self.min_rate > 0:
            limits.append(self.started + self.grace + self.received / self.min_rate)
        if self.max_seconds > 0:
            limits.append(self.started + self.max_seconds)
        return min(limits) if limits else None
