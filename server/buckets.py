"""Token buckets by key (a device, a source) in a bounded table whose upkeep is O(1) per request.

A table of per-key buckets must be bounded, or a flood of fresh keys grows it
without end; and its upkeep must not scan it, or once it is full every request
from a fresh key costs a walk over all of it (issue 14 review, finding 7: the
old tables rescanned or cleared 100 000 entries per insert).

``BucketTable`` keeps its buckets in an ``OrderedDict`` by last use (each take
moves its key to the end).  A bucket untouched for ``burst / rate`` seconds is
full again, so forgetting it loses nothing: the front is popped while that holds,
each entry once (amortised O(1) per take).  When the table is still full, the
least recently used bucket is forgotten: its key gets a fresh burst back, which
is exactly what a fresh key gets, so an attacker gains nothing by pushing a
bucket out that it would not gain from the fresh key it spent doing so; only
an attacker with more keys than ``capacity`` sees per-key limits weaken, and
then per-key limits were not its bound anyway.

Sans-I/O: the caller passes the time (seconds, monotonic).
"""

from __future__ import annotations

import collections
from typing import Final

#: Buckets a table holds by default: bounded memory (~200 bytes each) whatever the flood.
CAPACITY: Final = 100_000


class TokenBucket:
    """A token bucket on an injected clock (seconds)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, amount: float, *, now: float) -> float:
        """Take ``amount`` tokens; return 0, or the seconds to wait before retrying."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if amount <= self.tokens:
            self.tokens -= amount
            return 0.0
        return (min(amount, self.burst) - self.tokens) / self.rate


class BucketTable:
    """One ``TokenBucket`` per key, at most ``capacity`` of them, least recently used first."""

    __slots__ = ("_buckets", "_idle", "burst", "capacity", "evicted", "expired", "rate")

    def __init__(self, *, rate: float, burst: float, capacity: int = CAPACITY) -> None:
        self.rate, self.burst, self.capacity = rate, burst, max(1, capacity)
        #: After this long untouched a bucket is full again: forgetting it changes nothing.
        self._idle = burst / rate
        self._buckets: collections.OrderedDict[object, TokenBucket] = collections.OrderedDict()
        #: Counters of upkeep work (entries dropped), for tests and metrics: each entry is dropped once.
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take(self, key: object, amount: float, *, now: float) -> float:
        """Take ``amount`` from ``key``'s bucket (a fresh one if it has none); 0 or the wait."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = buckets[key] = TokenBucket(rate=self.rate, burst=self.burst, now=now)
        else:
            buckets.move_to_end(key)
        return bucket.take(amount, now=now)

    def _make_room(self, now: float) -> None:
        """Drop refilled buckets from the front; if still full, the least recently used one."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest.stamp < self._idle:
                break
            buckets.popitem(last=False)
            self.expired += 1
        while len(buckets) >= self.capacity:
            buckets.popitem(last=False)
            self.evicted += 1
