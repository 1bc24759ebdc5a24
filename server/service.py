"""The broker service: the pure core, storage, group commit and live fan-out, wired.

Group commit: handlers hand accepted entries to one writer task, which drains
everything waiting into a single transaction, so one fsync acknowledges many
posts.  A handler answers only after its entry's transaction committed.  If a
transaction fails, the writer — before anything else can run — fails every entry
in it and every entry still queued behind it, and rolls the core back to the
last durable state, so no later entry can be written on top of a hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Final

from caseline.schemas.errors import BrokerConflict, CaselineError
from caseline.server.core import Accepted, BrokerCore, Retry, same_update
from caseline.server.store import CaseRow, EntryRow, Store

log = logging.getLogger("caseline.server")

MAX_BATCH: Final = 512
#: How long the test-only fault holds each commit back (see ``Broker.ack_before_commit``).
FAULT_COMMIT_DELAY: Final = 0.05


@dataclasses.dataclass(slots=True)
class _Pending:
    accepted: Accepted
    new_case: CaseRow | None
    future: asyncio.Future[None]


Listener = Callable[[Accepted], None]


class Broker:
    """Admission through the core, durability through the store, then fan-out."""

    def __init__(self, *, core: BrokerCore, store: Store, clock: Callable[[], int]) -> None:
        self.core = core
        self.store = store
        self.clock = clock
        self.listeners: list[Listener] = []
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._inflight: dict[tuple[bytes, tuple[bytes, int, int]], _Pending] = {}
        #: Test-only fault switch: acknowledge before the commit, and hold each commit back a
        #: little so that a kill finds acknowledged updates not yet on disk.  It exists to
        #: prove that the chaos checker (bench/chaos.py) can fail; ``serve`` turns it on only
        #: under CASELINE_TEST_ACK_BEFORE_COMMIT=1, with a warning.
        self.ack_before_commit = False
        self.batches = 0
        self.batched_entries = 0

    async def start(self) -> None:
        now = self.clock()
        for crl in await self.store.all_revocation_lists():
            with contextlib.suppress(Exception):
                self.core.trust.add_revocation_list(crl)
        for case_id in await self.store.case_ids():
            rows = await self._all_entries(case_id)
            try:
                self.core.reload(case_id, rows, now=now)
            except CaselineError as exc:
                # One damaged case must not take every other case down with it.
                log.error(
                    "case %s failed verification at start-up and is unavailable: %s", case_id.hex(), exc.code
                )
        self._writer = asyncio.create_task(self._write_loop(), name="caseline-group-commit")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        self._fail_queued(RuntimeError("broker is shutting down"))

    async def _all_entries(self, case_id: bytes) -> list[EntryRow]:
        rows: list[EntryRow] = []
        while True:
            page = await self.store.entries(case_id, after=len(rows), limit=4096)
            rows += page
            if len(page) < 4096:
                return rows

    # ---------------------------------------------------------------- posting
    async def post_genesis(self, body: bytes, *, device_id: bytes) -> Accepted:
        now = self.clock()
        accepted = self.core.accept_genesis(body, device_id=device_id, now=now)
        case = CaseRow(accepted.case_id, accepted.state.policy.retention_days, now)
        await self._commit(accepted, case)
        return accepted

    async def post_commit(self, case_id: bytes, body: bytes, *, device_id: bytes) -> Accepted:
        accepted = self.core.accept_commit(case_id, body, device_id=device_id, now=self.clock())
        await self._commit(accepted, None)
        return accepted

    async def post_update(self, case_id: bytes, body: bytes, *, device_id: bytes) -> bytes:
        """Post a sealed update; return the receipt (the same one for a retry)."""
        result = self.core.accept_update(case_id, body, device_id=device_id, now=self.clock())
        if isinstance(result, Retry):
            return await self._retry(result)
        await self._commit(result, None)
        return result.receipt

    async def _retry(self, retry: Retry) -> bytes:
        pending = self._inflight.get((retry.case_id, retry.slot))
        if pending is not None:
            await asyncio.shield(pending.future)
            same, receipt = pending.accepted.body == retry.body, pending.accepted.receipt
        else:
            row = await self.store.entry_at_slot(retry.case_id, retry.slot)
            if row is None:
                raise BrokerConflict("update is for an earlier epoch; re-seal it in the current one")
            same, receipt = same_update(row, retry.body), row.receipt
        if not same:
            raise BrokerConflict("another update already holds this sender position")
        return receipt

    async def _commit(self, accepted: Accepted, case: CaseRow | None) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = _Pending(accepted, case, future)
        if accepted.slot is not None:
            self._inflight[(accepted.case_id, accepted.slot)] = pending
        self._queue.put_nowait(pending)
        if self.ack_before_commit:
            return
        # Shielded: a client that hangs up must not cancel a write that others share.
        await asyncio.shield(future)

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self.ack_before_commit:
                await asyncio.sleep(FAULT_COMMIT_DELAY)
            created_at = self.clock()  # one transaction, one time
            rows = [
                EntryRow(
                    case_id=p.accepted.case_id,
                    seq=p.accepted.seq,
                    kind=p.accepted.kind,
                    body=p.accepted.body,
                    receipt=p.accepted.receipt,
                    slot=p.accepted.slot,
                    created_at=created_at,
                )
                for p in batch
            ]
            cases = [p.new_case for p in batch if p.new_case is not None]
            try:
                await self.store.append(rows, cases)
            except Exception as exc:
                log.error("append failed; %d entries rolled back: %s", len(batch), type(exc).__name__)
                self._fail(batch + self._drain(), exc)
                continue
            self.batches += 1
            self.batched_entries += len(batch)
            for p in batch:
                self._finish(p)
                if not p.future.done():
                    p.future.set_result(None)
                for listener in self.listeners:
                    listener(p.accepted)

    def _drain(self) -> list[_Pending]:
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def _fail(self, items: list[_Pending], exc: BaseException) -> None:
        for p in reversed(items):
            self.core.rollback(p.accepted)
        for p in items:
            self._finish(p)
            if not p.future.done():
                p.future.set_exception(exc)
                p.future.exception()  # retrieved: a caller that left must not warn

    def _fail_queued(self, exc: BaseException) -> None:
        self._fail(self._drain(), exc)

    def _finish(self, pending: _Pending) -> None:
        if pending.accepted.slot is not None:
            self._inflight.pop((pending.accepted.case_id, pending.accepted.slot), None)
