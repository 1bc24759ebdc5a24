"""The ``Caseline-Revocations`` hint every broker answer carries (PROTOCOL.md §9)."""

from __future__ import annotations

from caseline.schemas.api import revocations_digest
from caseline.schemas.wire import RevocationList, decode_signed
from caseline.server.store import Store


class RevocationsDigest:
    """The ``Caseline-Revocations`` header value, cached until a new list is stored.

    Every response carries it (PROTOCOL.md §9), so a client learns from the
    one request it makes anyway whether any agency published a list since it
    last fetched them.  ``put_revocations`` calls ``invalidate`` after the new
    list is stored; a computation that overlapped with it is not cached, so
    the header never lags a stored list.  Like the session cache, several
    broker instances over one database would have to share invalidations.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._value: str | None = None
        self._generation = 0

    async def value(self) -> str:
        if self._value is not None:
            return self._value
        generation = self._generation
        pairs = []
        for data in await self._store.all_revocation_lists():
            pairs.append((RevocationList.decode(decode_signed(data)[0]).agency_id, data))
        value = revocations_digest(pairs)
        if generation == self._generation:
            self._value = value
        return value

    def invalidate(self) -> None:
        self._generation += 1
        self._value = None
