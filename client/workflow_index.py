"""Where every case's requests stand, kept beside its events so ``due`` reads no event.

``caseline due`` over a thousand cases cannot open a hundred thousand sealed
events.  So each time verified events are stored (``Client._kept`` and
``_replay``), the ones that move a request (requests, acks, replies, commits for
the roster) are folded into the case's ``Workflow`` (client/workflow.py), which
is kept sealed under the local key (``ViewStore.update_workflow``).  A case whose
entries are re-verified from genesis (new trust) is folded afresh, so an update
voided meanwhile stops counting.  A profile from before the index, or an index
that does not open, is rebuilt once from the stored events.

Trusted times: each folded update's time is its log receipt's time (verified
again here under the case's receipt key); ``requests`` caps a request's start
at the witnessed time once a quorum checkpoint covers it (PROTOCOL.md §6.8).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

from caseline.client.workflow import Due, RequestRow, Workflow, due_of, rows_of, witnessed_start
from caseline.crypto.caselog import verify_receipt
from caseline.schemas.errors import CaselineError

if TYPE_CHECKING:
    from caseline.client.core import CaseEvent
    from caseline.client.store import LocalStore
    from caseline.client.transport import BrokerConnection
    from caseline.client.viewstore import ViewStore
    from caseline.client.watch import WitnessStatus
    from caseline.crypto.caselog import CaseView

log = logging.getLogger("caseline.client")
#: The sealed meta value a reminder bot keeps what it already gave in (client/reminders.py ``key``).
REMINDED: Final = "reminded"
#: The content types that move a request; other updates are not looked at.
MOVES_REQUESTS: Final = frozenset({"request", "ack", "reply"})


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the whole index is read.

    A hundred thousand rows are a few million short-lived, acyclic objects; the
    collector, triggered by their allocation, walks them again and again and
    took half of ``requests`` (bench/workflow.py: 2.5 s of CPU down to 1.3 s).
    Reference counting still frees them; the collector runs again after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _restored(case_id: bytes, state: object) -> Workflow | None:
    try:
        return Workflow.restore(case_id, state)
    except ValueError as exc:
        log.warning("case %s: rebuilding its request index (%s)", case_id.hex(), exc)
        return None


def _matters(event: CaseEvent) -> bool:
    if event.kind == "commit":
        return event.voided_by is None
    return event.kind == "update" and event.readable and event.content_type in MOVES_REQUESTS


class RequestIndex:
    """``Client.requests`` and ``Client.due`` (a mixin: ``Client`` supplies the stores and views)."""

    if TYPE_CHECKING:
        store: LocalStore
        _views: ViewStore

        clock: Callable[[], int]

        async def view(self, case_id: bytes) -> CaseView: ...
        async def sync(self, case_id: bytes) -> list[CaseEvent]: ...
        async def check_log(self, case_id: bytes | None = None) -> WitnessStatus | None: ...

        @property
        def broker(self) -> BrokerConnection: ...

    async def _index(
        self, case_id: bytes, view: CaseView, events: Sequence[CaseEvent], *, fresh: bool = False
    ) -> None:
        """Fold newly stored events into the case's index; ``fresh``: they are the whole case.

        The events are verified and stored already: an index that cannot be
        kept up (a busy or failing database) must not fail the sync.  It is
        dropped instead, and the next read rebuilds it from the stored events.
        """
        try:
            await self._fold(case_id, view, events, fresh=fresh)
        except (sqlite3.Error, CaselineError, ValueError, TypeError) as exc:
            log.warning("case %s: its request index is rebuilt on next use (%s)", case_id.hex(), exc)
            with contextlib.suppress(sqlite3.Error):
                await self.store.drop_workflow(case_id)

    async def _fold(
        self, case_id: bytes, view: CaseView, events: Sequence[CaseEvent], *, fresh: bool
    ) -> None:
        moving = [e for e in events if _matters(e)]
        if not moving and not fresh:
            return
        whole: list[CaseEvent] | None = moving if fresh else None
        if whole is None and await self._views.workflow(case_id) is None:
            # No usable index yet (a profile from before it): every stored event, these included.
            whole = [e for e in await self._views.events(case_id) if _matters(e)]
        times = await self._trusted_times(case_id, view, whole if whole is not None else moving)

        def change(state: object | None) -> object:
            flow = None if fresh or state is None else _restored(case_id, state)
            todo = moving
            if flow is None:
                flow, todo = Workflow(case_id), (whole if whole is not None else moving)
            for event in todo:  # folding an event twice counts it once
                flow.add(event, times.get(event.seq))
            return flow.state()

        await self._views.update_workflow(case_id, change)

    async def _stored_flow(self, case_id: bytes) -> Workflow | None:
        state = await self._views.workflow(case_id)
        return None if state is None else _restored(case_id, state)

    async def _trusted_times(
        self, case_id: bytes, view: CaseView, events: Sequence[CaseEvent]
    ) -> dict[int, int]:
        """seq -> the broker's receipt time of each update, verified again under the case's key."""
        if view.state is None:
            return {}
        key = view.state.policy.receipt_key
        out: dict[int, int] = {}
        seqs = sorted({e.seq for e in events if e.kind == "update"})
        for seq, receipt in (await self.store.receipts(case_id, seqs)).items():
            try:
                out[seq] = verify_receipt(receipt, key).time
            except (CaselineError, ValueError) as exc:
                # Verified when it was stored; if it no longer does, the sender's time is all there is.
                log.warning("case %s entry %d: its receipt does not verify now (%s)", case_id.hex(), seq, exc)
        return out

    async def sync_changed(self) -> int:
        """Sync only the cases whose log grew since this profile last stored them; how many did.

        One request for the list of cases, then a sync of each that moved: no
        snapshot is loaded and no event opened for the others, so ``due`` over
        a thousand quiet cases costs one round trip.  (``Client.cases`` also
        counts what is unread, opening every unread event.)
        """
        await self.check_log()
        held = await self.store.entry_counts()
        moved = [s.case_id for s in (await self.broker.cases()).cases if held.get(s.case_id, 0) < s.count]
        for case_id in moved:
            await self.sync(case_id)
        return len(moved)

    async def requests(self, case_id: bytes | None = None, *, open_only: bool = False) -> list[RequestRow]:
        """Every request of this profile's cases (or of one), as last synced: no network.

        ``open_only``: only those still owed (what ``due`` reads; closed rows are never built).
        """
        with _collector_paused():
            return await self._requests(case_id, open_only=open_only)

    async def _requests(self, case_id: bytes | None, *, open_only: bool) -> list[RequestRow]:
        states: dict[bytes, list[object] | None]
        if case_id is None:
            states = await self._views.workflows(full=not open_only)
            for known in await self.store.case_ids():  # a profile from before the index
                states.setdefault(known, None)
        else:
            states = {case_id: await self._views.workflow(case_id)}
        finality = await self.store.finalities()
        rows: list[RequestRow] = []
        for cid, state in states.items():
            try:
                case_rows = None if state is None else rows_of(cid, state, open_only=open_only)
            except ValueError:
                case_rows = None
            if case_rows is None:
                case_rows = [r for r in await self._rebuilt(cid) if not (open_only and r.closed)]
            final, witnessed_at = finality.get(cid, (0, None))
            rows += [witnessed_start(r, final, witnessed_at) for r in case_rows]
        return rows

    async def _rebuilt(self, case_id: bytes) -> list[RequestRow]:
        if case_id not in await self.store.case_ids():
            return []
        view = await self.view(case_id)
        await self._index(case_id, view, await self._views.events(case_id), fresh=True)
        flow = await self._stored_flow(case_id)
        return [] if flow is None else flow.rows()

    async def due(self, now: int | None = None) -> Due:
        """Open requests asking this device's agency, and those it sent, soonest deadline first."""
        agency = (await self.store.get("agency") or b"").decode()
        return due_of(
            await self.requests(open_only=True), agency_id=agency, now=self.clock() if now is None else now
        )

    async def reminded(self) -> set[str]:
        """The reminders this profile already gave (``caseline remind``), kept sealed in the profile."""
        return {str(k) for k in await self._views.get_secret(REMINDED) or []}

    async def keep_reminded(self, keys: set[str]) -> None:
        await self._views.put_secret(REMINDED, list[object](sorted(keys)))
