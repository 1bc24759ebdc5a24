"""The broker service: the pure core, storage, group commit and live fan-out, wired.

Group commit: handlers hand accepted entries to one writer task, which drains
everything waiting into a single transaction, so one fsync acknowledges many
posts.  A handler answers only after its entry's transaction committed.  If a
transaction fails, the writer — before anything else can run — fails every entry
in it and every entry still queued behind it, and rolls the core back to the
last durable state, so no later entry can be written on top of a hole.

The broker log (``core_log.py``): each batch is also one step of the Merkle
log.  The writer seals the batch (its entries' leaves, plus a leaf for every
audit row appended since the last batch), signs one checkpoint, hands every
entry its log receipt, and writes entries, leaves and checkpoint in the same
transaction.  A failed write truncates the tree back with the core.  Audit rows
wake the writer through the queue itself (a ``None`` marker), so a broker with
audit rows but no posts still seals them promptly, without a timer.
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
from caseline.server.core_log import BrokerLog, LogDamaged, Sealed, legacy_leaf
from caseline.server.store import AuditRow, CaseRow, EntryRow, LogWrite, Store

log = logging.getLogger("caseline.server")

MAX_BATCH: Final = 512
#: Seconds ``stop`` waits for a group commit in progress before cancelling it anyway.
STOP_GRACE: Final = 5.0
#: How long the test-only fault holds each commit back (see ``Broker.ack_before_commit``).
FAULT_COMMIT_DELAY: Final = 0.05


@dataclasses.dataclass(slots=True)
class _Pending:
    accepted: Accepted
    new_case: CaseRow | None
    future: asyncio.Future[None]


Listener = Callable[[Accepted], None]
#: Called with the new log size after every durable checkpoint.
CheckpointListener = Callable[[int], None]


class Broker:
    """Admission through the core, durability through the store, then fan-out."""

    def __init__(self, *, core: BrokerCore, store: Store, clock: Callable[[], int]) -> None:
        self.core = core
        self.store = store
        self.clock = clock
        self.listeners: list[Listener] = []
        self.log = BrokerLog(core.server_key)
        self.checkpoint_listeners: list[CheckpointListener] = []
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        #: Audit rows from this seq on have no leaf yet; ``_audit_dirty`` says some may be waiting.
        self._audit_next = 0
        self._audit_dirty = False
        self._writer: asyncio.Task[None] | None = None
        #: Set while the writer waits for work: cancelling it then cannot cut a transaction in half.
        self._idle = asyncio.Event()
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
        for signed in await self.store.all_witness_lists():
            with contextlib.suppress(Exception):
                self.core.trust.add_witness_list(signed)
        await self._load_log()
        for case_id in await self.store.case_ids():
            rows = await self.all_entries(case_id)
            try:
                self.core.reload(case_id, rows, now=now)
            except CaselineError as exc:
                # One damaged case must not take every other case down with it.
                log.error(
                    "case %s failed verification at start-up and is unavailable: %s", case_id.hex(), exc.code
                )
        self._writer = asyncio.create_task(self._write_loop(), name="caseline-group-commit")
        self.audit_appended()  # rows the CLI wrote while the broker was down

    async def stop(self) -> None:
        if self._writer is not None:
            # A writer cancelled inside a transaction leaves it open on the connection, and the
            # final seal below then fails; so let a group commit in progress finish first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=STOP_GRACE)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
            self._fail_queued(RuntimeError("broker is shutting down"))
            # Seal the audit rows of the last moments (logouts, rejections), so that
            # ``audit verify`` on a stopped broker covers every row it wrote.
            with contextlib.suppress(Exception):
                await self._seal_and_write([], await self._take_audit())
        else:
            self._fail_queued(RuntimeError("broker is shutting down"))

    # ---------------------------------------------------------------- the log at start-up
    async def _load_log(self) -> None:
        """Rebuild the tree from stored leaves (refusing to serve if it does not match the
        newest checkpoint), then give entries stored before schema 3 their leaves."""
        store = self.store
        checkpoint = await store.latest_checkpoint()
        size = 0 if checkpoint is None else checkpoint[0]
        leaves: list[bytes] = []
        while len(leaves) < size:
            page = await store.log_leaves(len(leaves), min(size, len(leaves) + 65536))
            if not page:
                break
            leaves += page
        if checkpoint is not None:
            leaves += await store.log_leaves(size, size + 1)  # a leaf past the checkpoint is damage too
        try:
            self.log.load(leaves, checkpoint)
        except LogDamaged as exc:
            log.error("REFUSING TO SERVE: the broker log in the database is damaged: %s", exc)
            raise
        rows = await store.audit_rows()
        sealed = [r.seq for r in rows if r.leaf_index is not None]
        self._audit_next = sealed[-1] + 1 if sealed else 0
        await self._upgrade_log()

    async def _upgrade_log(self) -> None:
        """In-place upgrade: entries stored before schema 3 become leaves under one checkpoint.

        Order: by ``created_at``, then case id, then seq (``Store.legacy_entries``),
        then every audit row without a leaf.  Each v1 receipt (verified) gives its
        entry's leaf, its time the leaf's time; every stored receipt is then
        rewritten as a log receipt into the one checkpoint, in one transaction.
        """
        legacy = await self.store.legacy_entries()
        if not legacy:
            return
        key = self.core.server_key.public_key
        leaves = [legacy_leaf(e.receipt, key, case_id=e.case_id, seq=e.seq) for e in legacy]
        audit = await self._take_audit()
        sealed = self.log.seal_leaves(leaves, audit)
        receipts = [
            (e.case_id, e.seq, receipt, sealed.start + i)
            for i, (e, receipt) in enumerate(zip(legacy, sealed.receipts, strict=True))
        ]
        try:
            await self.store.write_upgrade(self._log_write(sealed, self.clock()), receipts)
        except BaseException:
            self.log.abort(sealed)
            raise
        self._sealed(sealed)
        log.info(
            "broker log built for %d existing entries and %d audit rows: checkpoint of size %d",
            len(legacy),
            len(audit),
            sealed.size,
        )

    # ---------------------------------------------------------------- audit rows
    def audit_appended(self) -> None:
        """An audit row was stored: make sure the writer seals it in its next batch."""
        if not self._audit_dirty:
            self._audit_dirty = True
            self._queue.put_nowait(None)

    async def _take_audit(self) -> list[AuditRow]:
        self._audit_dirty = False
        return [r for r in await self.store.audit_rows(after=self._audit_next) if r.leaf_index is None]

    def _log_write(self, sealed: Sealed, created_at: int) -> LogWrite:
        return LogWrite(
            leaves=sealed.leaves,
            size=sealed.size,
            checkpoint=sealed.checkpoint,
            created_at=created_at,
            audit=sealed.audit,
        )

    def _sealed(self, sealed: Sealed) -> None:
        self.log.commit(sealed)
        if sealed.audit:
            self._audit_next = sealed.audit[-1][0] + 1
        for listener in self.checkpoint_listeners:
            listener(sealed.size)

    async def all_entries(self, case_id: bytes) -> list[EntryRow]:
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
        # Shielded: a client that hangs up must not cancel a write that others share.
        await asyncio.shield(future)

    async def _write_loop(self) -> None:
        while True:
            self._idle.set()
            first = await self._queue.get()
            self._idle.clear()
            batch = [] if first is None else [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            audit: list[AuditRow] = []
            if self._audit_dirty:
                try:
                    audit = await self._take_audit()
                except Exception as exc:
                    log.error("reading audit rows failed: %s", type(exc).__name__)
                    self._audit_dirty = False
            if not batch and not audit:
                continue
            try:
                await self._seal_and_write(batch, audit)
            except Exception as exc:
                log.error("append failed; %d entries rolled back: %s", len(batch), type(exc).__name__)
                if audit:
                    self.audit_appended()  # the rows are still there: try them again
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

    async def _seal_and_write(self, batch: list[_Pending], audit: list[AuditRow]) -> None:
        """One group commit: seal the batch into the log, write it all in one transaction."""
        if not batch and not audit:
            return
        created_at = self.clock()  # one transaction, one time
        sealed = self.log.seal([p.accepted for p in batch], audit, time=created_at)
        rows = []
        for i, (p, receipt) in enumerate(zip(batch, sealed.receipts, strict=True)):
            a = p.accepted
            a.receipt = receipt
            rows.append(
                EntryRow(
                    case_id=a.case_id,
                    seq=a.seq,
                    kind=a.kind,
                    body=a.body,
                    receipt=receipt,
                    slot=a.slot,
                    created_at=created_at,
                    leaf_index=sealed.start + i,
                    blobs=a.blobs,
                )
            )
        cases = [p.new_case for p in batch if p.new_case is not None]
        if self.ack_before_commit:  # the test-only fault: answer with receipts not yet on disk
            for p in batch:
                if not p.future.done():
                    p.future.set_result(None)
            await asyncio.sleep(FAULT_COMMIT_DELAY)
        try:
            await self.store.append(rows, cases, self._log_write(sealed, created_at))
        except BaseException:
            self.log.abort(sealed)
            raise
        self._sealed(sealed)

    def _drain(self) -> list[_Pending]:
        items = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                items.append(item)
        if self._audit_dirty:
            self._queue.put_nowait(None)  # the audit marker drained with them still has work to do
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
