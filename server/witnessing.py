"""The witness pusher: sends each new checkpoint to the agencies' witnesses, stores their cosignatures.

Theory of operation
-------------------
Posting never waits for a witness.  After every durable checkpoint the writer
calls ``wake``; one task runs *rounds*.  A round takes the newest checkpoint
and sends it to every witness of every registered agency's current
``WitnessList`` at once (C2SP tlog-witness ``add-checkpoint``: an ``old N``
line, the consistency proof from N, a blank line, the note).  While a round is
in flight further wakes only set the event again, so the next round takes the
newest checkpoint then: at most one round runs, and a burst of commits costs
one round, not one per commit.

For each witness the pusher remembers the size it last cosigned (at start,
from the stored cosignatures; a witness never seen starts at 0).  A 409 tells
the size the witness holds (``text/x.tlog.size``): the pusher adopts it and
retries once with a proof from there.  If the witness is *ahead* of this
broker, the broker was restored from a backup or forked, and no proof can
exist: that is logged as an error and counted, and the witness is tried again
only with a later checkpoint (no hot loop).  404 (it does not know this log),
403 (it does not trust this key) and 422 (it found the proof bad) are logged
and counted too.  Returned cosignatures are verified under the witness's
listed key (``tlog.collect_cosignatures``) before they are stored; members
verify them again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp
from caseline.crypto import note, tlog
from caseline.schemas.errors import CaselineError
from caseline.schemas.wire import Witness
from caseline.server.core import BrokerCore
from caseline.server.metrics import Metrics
from caseline.server.service import Broker
from caseline.server.store import CosignatureRow, Store

log = logging.getLogger("caseline.server.witnessing")

SIZE_TYPE: Final = "text/x.tlog.size"
#: The most bytes a witness's answer may hold (a few signature lines).
MAX_ANSWER: Final = 16384


def witness_key(w: Witness) -> str:
    """How the pusher and the store name a witness: its note key name (unique within a list)."""
    return w.name


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    witness: str
    #: "ok", "conflict", "ahead", "unknown-log", "forbidden", "bad-proof", "error", "timeout"
    result: str
    size: int = 0


class WitnessPusher:
    """One background task; ``wake`` after a checkpoint, ``round`` to push now (tests)."""

    def __init__(
        self,
        *,
        broker: Broker,
        store: Store,
        metrics: Metrics,
        timeout: float,
        clock: Callable[[], int],
    ) -> None:
        self.broker = broker
        self.core: BrokerCore = broker.core
        self.store = store
        self.metrics = metrics
        self.timeout = timeout
        self.clock = clock
        self.known: dict[str, int] = {}
        self._event = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        #: Completed rounds; ``wait_round`` waits on the condition instead of sleeping.
        self.rounds = 0
        self._done = asyncio.Condition()
        self.last_witnessed_at: float | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.known = await self.store.last_cosigned_sizes()
        if await self.store.latest_witnessed() is not None:
            self.last_witnessed_at = time.monotonic()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit_per_host=4, keepalive_timeout=30),
            raise_for_status=False,
        )
        self._task = asyncio.create_task(self._run(), name="caseline-witness-pusher")
        self.wake()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self, _size: int = 0) -> None:
        """A new checkpoint (or witness list): run a round as soon as the current one ends."""
        self._event.set()

    async def _run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            self._running = True
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("witness round failed")
            finally:
                self._running = False
            async with self._done:
                self.rounds += 1
                self._done.notify_all()

    async def wait_round(self) -> None:
        """Start a round and wait until one that began after this call has completed."""
        async with self._done:
            # A round in flight now may have read an older checkpoint: wait for the next one.
            target = self.rounds + (2 if self._event.is_set() or self._running else 1)
            self.wake()
            await self._done.wait_for(lambda: self.rounds >= target)

    # ---------------------------------------------------------------- one round
    def witnesses(self) -> dict[str, list[Witness]]:
        """Every registered agency's current witnesses (agency id → list), each witness once."""
        trust = self.core.trust
        seen: set[tuple[str, bytes]] = set()
        out: dict[str, list[Witness]] = {}
        for agency_id in sorted(trust.roots):
            for w in trust.witnesses(agency_id):
                if (w.name, w.public_key) in seen:
                    continue
                seen.add((w.name, w.public_key))
                out.setdefault(agency_id, []).append(w)
        return out

    async def round(self) -> list[Outcome]:
        """Push the newest checkpoint to every witness at once; store what they cosign."""
        blog = self.broker.log
        checkpoint, size = blog.checkpoint, blog.size
        self.metrics.log_size.set(size)
        lists = self.witnesses()
        if checkpoint is None or not lists:
            return []
        pairs = [(agency_id, w) for agency_id, ws in lists.items() for w in ws]
        outcomes = await asyncio.gather(
            *(self._push(agency_id, w, checkpoint, size) for agency_id, w in pairs)
        )
        rows = [row for _, row in outcomes if row is not None]
        if rows:
            await self.store.add_cosignatures(rows)
            self.last_witnessed_at = time.monotonic()
        return [o for o, _ in outcomes]

    async def _push(
        self, agency_id: str, w: Witness, checkpoint: bytes, size: int
    ) -> tuple[Outcome, CosignatureRow | None]:
        name = witness_key(w)
        old = min(self.known.get(name, 0), size)
        outcome, row = await self._add_checkpoint(agency_id, w, checkpoint, size, old)
        if outcome.result == "conflict":
            if outcome.size > size:
                outcome = Outcome(name, "ahead", outcome.size)
            else:
                self.known[name] = outcome.size
                outcome, row = await self._add_checkpoint(agency_id, w, checkpoint, size, outcome.size)
                if outcome.result == "conflict" and outcome.size > size:
                    outcome = Outcome(name, "ahead", outcome.size)
        if outcome.result == "ok":
            self.known[name] = size
            self.metrics.cosignatures.labels(name).inc()
        else:
            self.metrics.witness_failures.labels(name, outcome.result).inc()
            if outcome.result == "ahead":
                log.error(
                    "witness %s holds a checkpoint of size %d, larger than this broker's log (%d): this"
                    " broker was restored from a backup or forked; it will never cosign this history",
                    name,
                    outcome.size,
                    size,
                )
            else:
                log.warning("witness %s did not cosign checkpoint %d: %s", name, size, outcome.result)
        return outcome, row

    async def _add_checkpoint(
        self, agency_id: str, w: Witness, checkpoint: bytes, size: int, old: int
    ) -> tuple[Outcome, CosignatureRow | None]:
        name = witness_key(w)
        proof = self.broker.log.consistency_proof(old, size) if old else []
        body = f"old {old}\n".encode()
        body += b"".join(base64.b64encode(h) + b"\n" for h in proof)
        body += b"\n" + checkpoint
        url = w.url.rstrip("/") + "/add-checkpoint"
        session = self._session
        if session is None:
            return Outcome(name, "error"), None
        try:
            async with session.post(url, data=body, headers={"Content-Type": "text/plain"}) as r:
                data = await r.content.read(MAX_ANSWER + 1)
                status, content_type = r.status, r.content_type
        except TimeoutError:
            return Outcome(name, "timeout"), None
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("witness %s unreachable: %s", name, type(exc).__name__)
            return Outcome(name, "error"), None
        if status == 409 and content_type == SIZE_TYPE:
            answer = data.decode("ascii", "replace")
            if answer.endswith("\n") and answer[:-1].isdigit() and len(answer) < 21:
                return Outcome(name, "conflict", int(answer[:-1])), None
            return Outcome(name, "error"), None
        if status != 200:
            result = {404: "unknown-log", 403: "forbidden", 422: "bad-proof"}.get(status, "error")
            return Outcome(name, result), None
        if len(data) > MAX_ANSWER:
            return Outcome(name, "error"), None
        try:
            checkpoint_text = note.Note.parse(checkpoint).text
            cosigned = tlog.collect_cosignatures(
                checkpoint_text, note.parse_signature_lines(data), {agency_id: [w]}
            )
        except CaselineError as exc:
            log.warning("witness %s answered with a bad cosignature: %s", name, exc)
            return Outcome(name, "bad-cosignature"), None
        mine = [c for c in cosigned if c.witness == w]
        if not mine:
            return Outcome(name, "bad-cosignature"), None
        sig = next(
            s
            for s in note.parse_signature_lines(data)
            if s.name == w.name and s.key_id == note.key_id(w.name, note.ALG_COSIGNATURE_V1, w.public_key)
        )
        return Outcome(name, "ok", size), CosignatureRow(
            size=size, witness=name, line=sig.line().decode(), time=mine[0].timestamp
        )


def seconds_since_witnessed(pusher: WitnessPusher | None) -> float:
    """For the gauge: how long since a checkpoint last gained a cosignature (-1: never)."""
    if pusher is None or pusher.last_witnessed_at is None:
        return -1.0
    return time.monotonic() - pusher.last_witnessed_at
