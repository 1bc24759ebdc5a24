"""Following cases live: verified events as they arrive, through broker restarts.

The stream is only a faster way to receive what ``sync`` would fetch: every
frame goes through the same checks, and after any cut the client resubscribes
from the last entry it verified in each case, so nothing is missed and nothing
is shown twice.  A broker that is away (restarting, unreachable) is waited for
with jittered backoff; a revoked or logged-out device ends the stream with the
error that says so.  An entry that fails verification is reported (logged as
an error naming its case) and its case is no longer followed: the others go
on, and the stream ends with that error only when no case asked for is left.
A split view concerns the whole broker log and always ends it.  A stream closed
because its session expired (4002) is resumed after logging in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Final

import aiohttp
from caseline.client.store import LocalStore, StoredEntry
from caseline.schemas.api import Delivery, Notice
from caseline.schemas.codec import unpack
from caseline.schemas.errors import (
    BrokerRefusal,
    BrokerUnauthorized,
    MalformedError,
    RevokedError,
    SplitViewError,
    VerificationError,
)

if TYPE_CHECKING:
    from caseline.client.core import CaseEvent
    from caseline.client.transport import BrokerConnection
    from caseline.client.watch import WitnessStatus
    from caseline.crypto.caselog import CaseView

log = logging.getLogger("caseline.client")
WS: Final = aiohttp.WSMsgType
CLOSE_REVOKED: Final = 4003
CLOSE_LOGOUT: Final = 4001
#: The broker closed the stream because its session expired: log in again and resume.
CLOSE_SESSION_EXPIRED: Final = 4002
#: The broker cut a stream that fell too far behind: catch up over HTTP, then reconnect.
CLOSE_SLOW: Final = 4008
#: How often a ``follow`` checks the witnesses when no case asks for sooner (ms).
WATCH_EVERY_MS: Final = 5000


def backoff_delay(failures: int, cap: float) -> float:
    """Full-jitter exponential backoff: many followers cut off at once do not return at once."""
    return random.uniform(0, min(cap, 0.1 * 2**failures))  # noqa: S311 - jitter, not a secret  # nosec B311


class Following:
    """``Client.follow`` (a mixin: ``Client`` supplies the store, the broker and verification)."""

    if TYPE_CHECKING:
        store: LocalStore

        @property
        def broker(self) -> BrokerConnection: ...
        async def refresh_revocations(self, *, force: bool = False) -> None: ...
        async def view(self, case_id: bytes) -> CaseView: ...
        async def sync(self, case_id: bytes) -> list[CaseEvent]: ...
        async def check_log(self, case_id: bytes | None = None) -> WitnessStatus | None: ...
        async def _accept(self, case_id: bytes, entries: Sequence[StoredEntry]) -> list[CaseEvent]: ...

    async def follow(
        self, case_ids: Iterable[bytes] | None = None, *, reconnect: bool = True, max_backoff: float = 10.0
    ) -> AsyncIterator[CaseEvent]:
        """Yield verified events as they arrive; reconnect and resume by cursor when cut off.

        Ends with ``RevokedError`` if this device is revoked, ``BrokerRefusal`` if
        it is logged out, and a split view's error.  A case whose entry fails to
        verify is reported and dropped (``_case_failed``): one broken case must
        not silence the others, and it ends ``follow`` only once no case asked
        for is left.
        A stream the broker cut for falling behind (4008) catches up over HTTP
        before it reconnects, as the broker asks.
        """
        wanted = None if case_ids is None else set(case_ids)
        broken: set[bytes] = set()  # cases whose entries failed: reported, and left out
        failures = 0
        while True:
            close_code = None
            cause = "the stream ended"
            try:
                # Inside the ``try``: a broker that is restarting refuses these too.
                await self.refresh_revocations(force=True)
                cursors = {}
                for c in await self.store.case_ids():
                    if c in broken:
                        continue
                    try:
                        cursors[c] = (await self.view(c)).count
                    except VerificationError as exc:
                        self._case_failed(c, exc, broken, wanted)
                async with self.broker.stream(cursors) as ws:
                    log.info("following %d case(s) from the last verified entry of each", len(cursors))
                    failures = 0
                    alarms: list[SplitViewError] = []
                    watcher = asyncio.create_task(self._watch_witnesses(wanted or set(cursors), ws, alarms))
                    try:
                        while True:
                            msg = await ws.receive()
                            if msg.type == WS.CLOSE:
                                # The broker's code, from its close frame: aiohttp reports 1006
                                # instead when the broker hung up before our reply got through.
                                close_code = msg.data
                                break
                            if msg.type in (WS.CLOSING, WS.CLOSED, WS.ERROR):
                                break
                            if msg.type != WS.BINARY:
                                continue
                            for event in await self._on_frame(msg.data, broken, wanted):
                                if wanted is None or event.case_id in wanted:
                                    yield event
                    finally:
                        watcher.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await watcher
                    if alarms:  # the watcher may be cancelled while it closes the stream: not lost
                        raise alarms[0]
                    if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
                        raise watcher.exception()  # type: ignore[misc]
                    close_code = close_code or ws.close_code
            except BrokerRefusal as exc:
                if not exc.transient and exc.status != 401:
                    raise
                cause = str(exc)
            if close_code == CLOSE_REVOKED:
                raise RevokedError("the broker closed the stream: this device was revoked")
            if close_code == CLOSE_LOGOUT:
                raise BrokerUnauthorized("this device's session was logged out", problem="logged-out")
            if close_code == CLOSE_SESSION_EXPIRED:
                self.broker.forget_session()  # the next stream logs in first
                cause = "the session expired"
            if close_code == CLOSE_SLOW:
                # Too far behind for the broker to buffer: fetch the backlog by pages, whose size
                # the broker bounds, and stream only what comes after it.
                log.info("the stream fell behind; catching up over HTTP")
                try:
                    for case_id in sorted(wanted if wanted is not None else await self.store.case_ids()):
                        for event in await self.sync(case_id):
                            yield event
                except BrokerRefusal as exc:
                    if not exc.transient:
                        raise
                    cause = str(exc)
                else:
                    cause = "the stream fell behind; caught up over HTTP"  # then back, with jitter
            if not reconnect:
                return
            delay = backoff_delay(failures, max_backoff)
            failures += 1
            log.warning("lost the broker (%s); reconnecting in %.1f s", cause, delay)
            await asyncio.sleep(delay)

    async def _watch_witnesses(
        self, case_ids: set[bytes], ws: aiohttp.ClientWebSocketResponse, alarms: list[SplitViewError]
    ) -> None:
        """Check the witnesses on a clock while following: an alarm must not wait for a post.

        A split view shows as entries that stay pending, or as a report from
        our own agency's witness; neither arrives on the stream, so the check
        runs every half of the shortest bound of the cases followed (at most
        every 5 s).  An alarm closes the stream and ends ``follow`` with it.
        """
        while True:
            bounds = []
            for case_id in case_ids:
                view = await self.view(case_id)
                if view.state is not None and view.state.witnessing.rule != "none":
                    bounds.append(view.state.witnessing.alarm_after)
            await asyncio.sleep(min([*bounds, WATCH_EVERY_MS * 2]) / 2000)
            for case_id in case_ids:
                try:
                    await self.check_log(case_id)
                except SplitViewError as exc:
                    alarms.append(exc)  # first: closing the stream wakes ``follow``, which cancels us
                    await ws.close()
                    raise
                except (BrokerRefusal, aiohttp.ClientError) as exc:
                    log.warning("could not check the witnesses just now: %s", exc)

    @staticmethod
    def _case_failed(
        case_id: bytes, exc: VerificationError, broken: set[bytes], wanted: set[bytes] | None
    ) -> None:
        """One case's entries failed: say so and follow the others; end only when none is left.

        A split view concerns the broker's whole log, so it always ends ``follow``.
        """
        if isinstance(exc, SplitViewError) or (wanted is not None and wanted <= broken | {case_id}):
            raise exc
        broken.add(case_id)
        log.error("case %s is no longer followed: %s", case_id.hex(), exc)

    async def _on_frame(self, data: bytes, broken: set[bytes], wanted: set[bytes] | None) -> list[CaseEvent]:
        obj = unpack(data)
        tag = obj[1] if isinstance(obj, list) and len(obj) > 1 else None
        if tag == Delivery.TAG:
            d = Delivery.from_message(obj)
            e = d.entry
            if d.case_id in broken:
                return []
            try:
                return await self._accept(d.case_id, [StoredEntry(e.seq, e.kind, e.body, e.receipt)])
            except VerificationError as exc:
                self._case_failed(d.case_id, exc, broken, wanted)
                return []
        if tag == Notice.TAG:
            Notice.from_message(obj)
            return []
        raise MalformedError("the broker sent a frame this client does not understand")
