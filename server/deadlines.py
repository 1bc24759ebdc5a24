"""Wall-clock deadlines on the event loop: one pending action per key, run when the clock says so.

A revocation takes effect at its ``revoked_at`` and a session ends at its
``expires_at``: times on the broker's wall clock (``app[CLOCK]``, ms), which
the agency may have set in the future.  The event loop's timers run on its own
monotonic clock, so a timer armed for ``at - now`` can come due early (the
wall clock was set back, or a test owns it) or late (the loop was busy, the
machine slept).  A timer that comes due therefore asks the wall clock again
and re-arms for what is left; it never acts before ``at``.  No timer waits
longer than ``MAX_WAIT`` before asking again, so a wall clock set forward is
noticed within that time.  Being late is what the stream's own check on every
delivery covers (``stream.session_guard``): timers are one defence, not the
only one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

log = logging.getLogger("caseline.server.deadlines")

#: Longest single wait (seconds) before a pending deadline re-reads the wall clock.
MAX_WAIT: Final = 600.0

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """At most one pending deadline per key; ``fire(key)`` runs once the clock reaches it.

    Setting a key again replaces its deadline (a newer revocation list moves
    it), ``cancel`` drops it, and ``close`` drops them all and cancels actions
    still running, for shutdown.  Actions run as tasks: a failing one is logged
    and does not stop the others.
    """

    def __init__(self, clock: Callable[[], int], fire: Callable[[K], Awaitable[None]]) -> None:
        self._clock = clock
        self._fire = fire
        self._timers: dict[K, tuple[int, asyncio.TimerHandle]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, key: object) -> bool:
        return key in self._timers

    def at(self, key: K) -> int | None:
        """The pending deadline of ``key`` (ms), if any."""
        held = self._timers.get(key)
        return None if held is None else held[0]

    def set(self, key: K, at: int) -> None:
        """Run ``fire(key)`` once the clock reaches ``at`` (ms); at once if it already has."""
        self.cancel(key)
        self._arm(key, at)

    def cancel(self, key: K) -> None:
        held = self._timers.pop(key, None)
        if held is not None:
            held[1].cancel()

    def close(self) -> None:
        """Drop every pending deadline and cancel the actions still running."""
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._running):
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait for cancelled actions to finish unwinding (after ``close``)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _arm(self, key: K, at: int) -> None:
        loop = asyncio.get_running_loop()
        delay = min(max(0.0, (at - self._clock()) / 1000), MAX_WAIT)
        self._timers[key] = (at, loop.call_later(delay, self._due, key, at))

    def _due(self, key: K, at: int) -> None:
        held = self._timers.get(key)
        if held is None or held[0] != at:
            return  # replaced or cancelled after this callback was scheduled
        if self._clock() < at:
            self._arm(key, at)  # early by the wall clock: wait for the rest
            return
        del self._timers[key]
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, key: K) -> None:
        try:
            await self._fire(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a deadline's action failed")
