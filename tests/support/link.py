"""The client's pure core and the broker's pure core, joined by a fake link: no sockets.

Like h11's tests, which run a client and a server state machine against each
other over an in-memory pipe: every device here is a real
``caseline.client.core.Ledger`` (one ``CaseView`` per case), the broker is a
real ``caseline.server.core.BrokerCore``, and this module does only what the
async edges do between them, the way they do it:

* ``FakeBroker`` keeps the log rows the store would keep (``EntryRow``),
  answers a retry from the stored row with ``core.same_update`` (as
  ``server/service.py`` does), serves pages through ``core.entry_of`` (as the
  routes do), purges as ``SqliteStore.purge`` does, and restarts by reloading
  a fresh core from its rows (as ``Broker.start`` does);
* ``Link.post`` follows ``Client.post``: prepare, keep the sealed bytes in the
  outbox, confirm, send; on a definitive refusal drop them, ``abandon_unsent``
  and sync.

Clock and randomness come from a ``World``: a run is reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses

from caseline.client.core import CaseEvent, Ledger
from caseline.crypto.caselog import KIND_PURGED, KIND_UPDATE, Staged
from caseline.crypto.commits import CaseState
from caseline.schemas.api import Entry
from caseline.schemas.errors import BrokerConflict, BrokerUnknownCase, CaselineError
from caseline.schemas.wire import CaseInfo
from caseline.server.core import Accepted, BrokerCore, Limits, Retry, entry_of, same_update
from caseline.server.core_log import BrokerLog
from caseline.server.store import EntryRow

from tests.support.world import Device, World, note


class FakeBroker:
    """``BrokerCore`` plus the bookkeeping of the service and the store, synchronously."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.core = self._fresh_core()
        self.rows: dict[bytes, list[EntryRow]] = {}
        self.log = BrokerLog(world.server_key)

    def _fresh_core(self) -> BrokerCore:
        return BrokerCore(server_key=self.world.server_key, trust=self.world.trust(), limits=Limits())

    def _store(self, accepted: Accepted) -> bytes:
        """Seal the entry into the broker log as a batch of one (the service's group commit),
        make it durable (the store's ``append``), then acknowledge it."""
        rows = self.rows.setdefault(accepted.case_id, [])
        assert accepted.seq == len(rows), "the core ordered an entry off the end of the log"
        sealed = self.log.seal([accepted], [], time=self.world.now)
        self.log.commit(sealed)
        rows.append(
            EntryRow(
                case_id=accepted.case_id,
                seq=accepted.seq,
                kind=accepted.kind,
                body=accepted.body,
                receipt=sealed.receipts[0],
                slot=accepted.slot,
                created_at=self.world.now,
            )
        )
        return sealed.receipts[0]

    def post_genesis(self, body: bytes, *, device_id: bytes) -> bytes:
        return self._store(self.core.accept_genesis(body, device_id=device_id, now=self.world.now))

    def post_commit(self, case_id: bytes, body: bytes, *, device_id: bytes) -> bytes:
        return self._store(self.core.accept_commit(case_id, body, device_id=device_id, now=self.world.now))

    def post_update(self, case_id: bytes, body: bytes, *, device_id: bytes) -> bytes:
        """Accept an update, or answer a retry of a stored one with its stored receipt."""
        result = self.core.accept_update(case_id, body, device_id=device_id, now=self.world.now)
        if isinstance(result, Retry):
            row = self.at_slot(case_id, result.slot)
            if row is None:
                raise BrokerConflict("update is for an earlier epoch; re-seal it in the current one")
            if not same_update(row, body):
                raise BrokerConflict("another update already holds this sender position")
            return row.receipt
        return self._store(result)

    def at_slot(self, case_id: bytes, slot: tuple[bytes, int, int]) -> EntryRow | None:
        return next((r for r in self.rows.get(case_id, []) if r.slot == slot), None)

    def entries(self, case_id: bytes, *, device_id: bytes, after: int) -> tuple[list[Entry], int]:
        """One page for a reader (the core refuses anyone else), as ``GET …/entries`` serves it."""
        runtime = self.core.require_reader(case_id, device_id)
        return [entry_of(r) for r in self.rows[case_id][after:]], runtime.count

    def purge(self, *, before_time: int) -> int:
        """What ``SqliteStore.purge`` does: old updates become ``purged`` (body gone, the rest kept)."""
        purged = 0
        for rows in self.rows.values():
            for i, row in enumerate(rows):
                if row.kind == KIND_UPDATE and row.created_at < before_time:
                    rows[i] = dataclasses.replace(row, kind=KIND_PURGED, body=b"")
                    purged += 1
        return purged

    def restart(self) -> None:
        """Forget everything in memory and rebuild from the rows, as start-up does."""
        self.core = self._fresh_core()
        for case_id, rows in self.rows.items():
            self.core.reload(case_id, rows, now=self.world.now)


@dataclasses.dataclass
class Endpoint:
    """One device: its credentials, its pure client core, and its outbox."""

    device: Device
    ledger: Ledger
    #: Updates sealed and confirmed but not yet acknowledged, oldest first: (case id, envelope).
    outbox: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)

    @property
    def id(self) -> bytes:
        return self.device.id

    @property
    def name(self) -> str:
        return self.device.user


class Link:
    """Devices and one broker in a shared ``World``; every exchange is a function call."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.broker = FakeBroker(world)

    def device(self, agency: str, user: str) -> Endpoint:
        device = self.world.device(agency, user)
        ledger = Ledger(
            keys=device.keys,
            cert=device.cert,
            trust=self.world.trust(),
            server_key=self.world.server_key.public_key,
        )
        return Endpoint(device, ledger)

    # ---------------------------------------------------------------- membership
    def create_case(self, owner: Endpoint, members: list[Endpoint], **policy: object) -> bytes:
        case_id = self.world.rng(16)
        body = owner.ledger.genesis(
            case_id=case_id,
            members=[(self.world.verified(m.device), "member") for m in members],
            policy=self.world.policy(**policy),
            info=CaseInfo(title="Operation Kilimanjaro", reference="KE-2026-0042"),
            now=self.world.now,
            rng=self.world.rng,
        )
        self.broker.post_genesis(body, device_id=owner.id)
        self.sync(owner, case_id)
        return case_id

    def change(self, owner: Endpoint, case_id: bytes, members: list[Endpoint]) -> None:
        """The owner commits a new roster (itself as owner, the others as members)."""
        self.sync(owner, case_id)
        roster = [(self.world.verified(owner.device), "owner")]
        roster += [(self.world.verified(m.device), "member") for m in members]
        body = owner.ledger.change(case_id, roster, now=self.world.now, rng=self.world.rng)
        self.broker.post_commit(case_id, body, device_id=owner.id)
        self.sync(owner, case_id)

    # ---------------------------------------------------------------- reading
    def sync(self, endpoint: Endpoint, case_id: bytes) -> list[CaseEvent]:
        """Fetch and verify everything new with the device's own core, as ``Client.sync`` decides."""
        ledger = endpoint.ledger
        after: int | None = ledger.view(case_id).count
        events: list[CaseEvent] = []
        while after is not None:
            entries, served = self.broker.entries(case_id, device_id=endpoint.id, after=after)
            taken = ledger.take(case_id, entries, now=self.world.now)
            events += taken.events
            if taken.error is not None:
                raise taken.error
            after = ledger.next_page(case_id, served=served, got=len(entries))
        return events

    # ---------------------------------------------------------------- sending
    def seal(self, endpoint: Endpoint, case_id: bytes, text: str) -> Staged:
        """Prepare the device's next update; nothing moves until it is confirmed."""
        return endpoint.ledger.prepare(
            case_id, content_type="note", content=note(text), now=self.world.now, nonce=self.world.rng(24)
        )

    def post(self, endpoint: Endpoint, case_id: bytes, text: str, *, deliver: bool = True) -> bytes | None:
        """Seal, keep in the outbox, confirm, send; the receipt, or None if not delivered.

        ``deliver=False`` is a request lost on the way: the update stays in the
        outbox for ``retry``.  A refusal propagates after ``refused`` cleaned up.
        """
        staged = self.seal(endpoint, case_id, text)
        endpoint.outbox.append((case_id, staged.sealed.envelope))
        endpoint.ledger.confirm(case_id, staged)
        if not deliver:
            return None
        return self.retry(endpoint)

    def retry(self, endpoint: Endpoint) -> bytes:
        """Send the oldest outbox entry again, the very same bytes."""
        case_id, envelope = endpoint.outbox[0]
        try:
            receipt = self.broker.post_update(case_id, envelope, device_id=endpoint.id)
        except CaselineError:
            self.refused(endpoint)
            raise
        endpoint.outbox.pop(0)
        r = endpoint.ledger.check_receipt(case_id, envelope, receipt)  # as Client._deliver does
        self.sync(endpoint, case_id)
        endpoint.ledger.check_acknowledged(case_id, r)
        return receipt

    def refused(self, endpoint: Endpoint) -> None:
        """A definitive no: drop the update, free its position, and catch up (``Client._refused``)."""
        case_id, _ = endpoint.outbox.pop(0)
        endpoint.ledger.view(case_id).abandon_unsent()
        with contextlib.suppress(BrokerUnknownCase):  # removed: nothing more to read
            self.sync(endpoint, case_id)

    def state(self, case_id: bytes) -> CaseState:
        return self.broker.core.runtime(case_id).state
