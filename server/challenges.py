"""What the broker remembers about logins: nonces already used, and each device's recent logins.

Challenges themselves cost no state (``crypto/auth.py``: the nonce carries an
HMAC tag), so the only memory login needs is for *completed* logins:

* a nonce is single use, so it is remembered from its fully verified login
  until its issued expiry, after which the broker refuses it anyway;
* a device may log in at most ``logins_per_device_per_minute`` times a
  minute, which also bounds how many nonces one device can make the broker hold.

Both grow only through logins whose Ed25519 signature verified, so a stranger
cannot fill them, and both are pruned by age as they grow (amortised: each
entry is pushed once and popped once).  Sans-I/O: the caller passes the time.
"""

from __future__ import annotations

import collections
import heapq
from typing import Final

from caseline.schemas.errors import BrokerRateLimited, UntrustedError

MINUTE_MS: Final = 60_000


class UsedNonces:
    """Nonces of completed logins, each kept until its challenge's expiry (ms)."""

    __slots__ = ("_by_expiry", "_nonces")

    def __init__(self) -> None:
        self._nonces: set[bytes] = set()
        self._by_expiry: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._nonces)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._nonces

    def use(self, nonce: bytes, *, expires_at: int, now: int) -> None:
        """Mark ``nonce`` used, or refuse it if it already was (a replayed login response)."""
        self.prune(now)
        if nonce in self._nonces:
            raise UntrustedError("challenge was already used")
        self._nonces.add(nonce)
        heapq.heappush(self._by_expiry, (expires_at, nonce))

    def prune(self, now: int) -> None:
        """Forget nonces whose challenge has expired: the expiry check refuses them from then on."""
        heap = self._by_expiry
        while heap and heap[0][0] < now:
            _, nonce = heapq.heappop(heap)
            self._nonces.discard(nonce)


class DeviceLogins:
    """At most ``per_minute`` logins per device in any sliding minute; 0 turns the cap off.

    Devices are kept in the order of their latest login (``OrderedDict``, moved
    to the end on each), so the front is the device whose logins expire first
    and is popped while all of them are older than a minute: each device is
    popped once, never found by a scan (issue 14 review, finding 7).
    """

    __slots__ = ("_times", "per_minute")

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: collections.OrderedDict[bytes, collections.deque[int]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def charge(self, device_id: bytes, *, now: int) -> None:
        """Count one login of ``device_id`` at ``now`` (ms), or raise 429 with the wait."""
        if self.per_minute <= 0:
            return
        self._prune(now)
        times = self._times.get(device_id)
        if times is None:
            times = self._times[device_id] = collections.deque()
        while times and times[0] <= now - MINUTE_MS:
            times.popleft()
        if len(times) >= self.per_minute:
            wait_ms = times[0] + MINUTE_MS - now
            raise BrokerRateLimited("too many logins for this device", retry_after=max(wait_ms, 1) / 1000)
        times.append(now)
        self._times.move_to_end(device_id)

    def _prune(self, now: int) -> None:
        """Forget devices from the front while their latest login is over a minute old."""
        times = self._times
        while times:
            latest = next(iter(times.values()))
            if latest and latest[-1] > now - MINUTE_MS:
                break
            times.popitem(last=False)
