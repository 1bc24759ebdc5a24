"""The client's and the broker's pure cores against each other, under random interleavings.

``tests.support.link`` joins real ``Ledger``s (the client core) to a real
``BrokerCore`` without sockets, so Hypothesis can try thousands of orders of
posts, syncs, lost requests, lost receipts, retries of the very same bytes,
conflicting seals, members joining and leaving, retention purges and broker
restarts in a few seconds.  The invariants are the broker's promises:

* exactly once: the log holds every stored update once, at the position its
  receipt names, and a retry of stored bytes returns the very same receipt and
  appends nothing;
* nothing lost: the log is a gap-free hash chain whose head the core agrees
  with, and every current member who syncs reaches that head (a removed one
  holds a prefix of it);
* refusals are clean: a refused post leaves the log as it was, and the sender,
  once it has caught up, posts next at exactly the position the broker expects;
* a restart (reload from the stored rows, purged ones included) changes nothing.
"""

from __future__ import annotations

import pytest
from caseline.crypto.caselog import KIND_PURGED, chain_heads, entry_hash, verify_receipt
from caseline.crypto.certs import MAX_SKEW_MS
from caseline.schemas.errors import BrokerConflict, BrokerUnknownCase, NotPermittedError
from caseline.server.core import CaseRuntime
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.support.link import Endpoint, Link
from tests.support.world import World

PEOPLE = {"bob": "tz-tra", "juma": "tz-tra", "neema": "ke-kra"}
NAMES = st.sampled_from(["alice", *PEOPLE])
FATES = st.sampled_from(["delivered", "request lost", "receipt lost"])


def snapshot(runtime: CaseRuntime) -> tuple[int, bytes, int, dict[bytes, int]]:
    return runtime.count, runtime.head, runtime.state.epoch, dict(runtime.next_counter)


class CoreLink(RuleBasedStateMachine):
    """Alice owns one case (retention 0); Bob starts as a member; Juma and Neema may join."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World("core-link")
        self.world.agency("ke-kra")
        self.world.agency("tz-tra")
        self.link = Link(self.world)
        self.alice = self.link.device("ke-kra", "alice")
        self.people = {name: self.link.device(agency, name) for name, agency in PEOPLE.items()}
        self.members = {"bob"}
        self.case_id = self.link.create_case(self.alice, [self.people["bob"]], retention_days=0)
        self.link.sync(self.people["bob"], self.case_id)
        #: Every update the broker stored, by its exact bytes, with the receipt it first returned.
        self.stored: dict[bytes, bytes] = {}
        self.texts = 0

    # ---------------------------------------------------------------- helpers
    def endpoint(self, name: str) -> Endpoint:
        return self.alice if name == "alice" else self.people[name]

    def is_member(self, name: str) -> bool:
        return name == "alice" or name in self.members

    def runtime(self) -> CaseRuntime:
        return self.link.broker.core.runtime(self.case_id)

    def position(self) -> tuple[int, bytes]:
        return self.runtime().count, self.runtime().head

    def text(self) -> str:
        self.texts += 1
        return f"update {self.texts}"

    def send_head(self, ep: Endpoint) -> bytes:
        """Send the oldest outbox entry; check exactly-once against what the broker stored before."""
        _, envelope = ep.outbox[0]
        before = self.position()
        try:
            receipt = self.link.retry(ep)
        except BrokerConflict:
            assert envelope not in self.stored, "a stored update's retry was refused"
            assert self.position() == before, "a refused post changed the log"
            raise
        if envelope in self.stored:
            assert receipt == self.stored[envelope], "a retry got another receipt"
            assert self.position() == before, "a retry created a second entry"
        else:
            self.stored[envelope] = receipt
        return receipt

    def flush(self, ep: Endpoint) -> None:
        """What the client does before anything new: send the outbox, in order."""
        while ep.outbox:
            try:
                self.send_head(ep)
            except BrokerConflict:
                self.after_refusal(ep)

    def after_refusal(self, ep: Endpoint) -> None:
        """A refused sender that is a member, once caught up, posts at the broker's next position."""
        if not self.is_member(ep.name) or ep.outbox:
            return
        self.link.sync(ep, self.case_id)
        staged = self.link.seal(ep, self.case_id, "after a refusal")
        runtime = self.runtime()
        assert (staged.epoch, staged.counter) == (
            runtime.state.epoch,
            runtime.next_counter.get(ep.id, 0),
        ), "the refused sender would not continue where the broker expects"

    # ---------------------------------------------------------------- rules
    @rule(who=NAMES, fate=FATES)
    def post(self, who: str, fate: str) -> None:
        ep = self.endpoint(who)
        self.flush(ep)
        before = self.position()
        try:
            staged = self.link.seal(ep, self.case_id, self.text())
        except NotPermittedError:
            assert self.position() == before
            return  # this device's own view holds no key for the case: nothing was sent
        ep.outbox.append((self.case_id, staged.sealed.envelope))
        ep.ledger.confirm(self.case_id, staged)
        if fate == "request lost":
            return
        try:
            self.send_head(ep)
        except BrokerConflict:
            self.after_refusal(ep)
            return
        if fate == "receipt lost":  # stored, but the client never heard: it keeps the bytes to retry
            ep.outbox.insert(0, (self.case_id, staged.sealed.envelope))

    @rule(who=NAMES)
    def retry(self, who: str) -> None:
        ep = self.endpoint(who)
        if not ep.outbox:
            return
        try:
            self.send_head(ep)
        except BrokerConflict:
            self.after_refusal(ep)

    @rule(who=NAMES)
    def conflicting_seal(self, who: str) -> None:
        """A stale copy of the device seals other bytes at a position its live copy used."""
        ep = self.endpoint(who)
        if not self.is_member(who):
            return
        self.flush(ep)
        self.link.sync(ep, self.case_id)
        first = self.link.seal(ep, self.case_id, self.text())
        stale = self.link.seal(ep, self.case_id, self.text())
        assert (first.epoch, first.counter) == (stale.epoch, stale.counter)
        ep.outbox.append((self.case_id, first.sealed.envelope))
        ep.ledger.confirm(self.case_id, first)
        self.send_head(ep)
        before = self.position()
        with pytest.raises(BrokerConflict):
            self.link.broker.post_update(self.case_id, stale.sealed.envelope, device_id=ep.id)
        assert self.position() == before, "a conflicting update was stored"

    @rule(who=NAMES)
    def sync(self, who: str) -> None:
        ep = self.endpoint(who)
        if self.is_member(who):
            self.link.sync(ep, self.case_id)
        else:
            with pytest.raises(BrokerUnknownCase):  # as for a case that does not exist
                self.link.sync(ep, self.case_id)

    @rule(who=st.sampled_from(sorted(PEOPLE)))
    def join(self, who: str) -> None:
        if who not in self.members:
            self.members.add(who)
            self.link.change(self.alice, self.case_id, [self.people[m] for m in sorted(self.members)])

    @rule(who=st.sampled_from(sorted(PEOPLE)))
    def leave(self, who: str) -> None:
        if who in self.members:
            self.members.discard(who)
            self.link.change(self.alice, self.case_id, [self.people[m] for m in sorted(self.members)])

    @rule()
    def purge(self) -> None:
        """The retention task with ``retention_days`` 0: past the tolerated skew, bodies go."""
        self.world.now += MAX_SKEW_MS + 1
        self.link.broker.purge(before_time=self.world.now - MAX_SKEW_MS)

    @rule()
    def restart(self) -> None:
        before = snapshot(self.runtime())
        self.link.broker.restart()
        assert snapshot(self.runtime()) == before, "the broker came back with another case state"

    @rule()
    def everyone_syncs(self) -> None:
        self.members_agree()

    # ---------------------------------------------------------------- invariants
    @invariant()
    def log_holds_every_stored_update_exactly_once(self) -> None:
        rows = self.link.broker.rows[self.case_id]
        runtime = self.runtime()
        assert [r.seq for r in rows] == list(range(len(rows))) == list(range(runtime.count))
        slots = [r.slot for r in rows if r.slot is not None]
        assert len(slots) == len(set(slots)) == len(self.stored), "an update is missing or doubled"
        hashes = []
        for r in rows:
            receipt = verify_receipt(r.receipt, self.world.server_key.public_key)
            hashes.append(receipt.entry_hash if r.kind == KIND_PURGED else entry_hash(r.kind, r.body))
        assert chain_heads(self.case_id, hashes)[-1] == runtime.head
        for envelope, first_receipt in self.stored.items():
            seq = verify_receipt(first_receipt, self.world.server_key.public_key).seq
            assert rows[seq].receipt == first_receipt
            assert rows[seq].kind == KIND_PURGED or rows[seq].body == envelope

    def members_agree(self) -> None:
        """Every current member syncs to the broker's head; a former member holds a prefix of it."""
        runtime = self.runtime()
        for name in ["alice", *PEOPLE]:  # Alice, always a member, first: her log is the reference
            ep = self.endpoint(name)
            view = ep.ledger.view(self.case_id)
            if self.is_member(name):
                self.link.sync(ep, self.case_id)
                assert (view.count, view.head) == (runtime.count, runtime.head), f"{name} ended elsewhere"
            else:
                reference = self.alice.ledger.view(self.case_id).entry_hashes
                assert view.entry_hashes == reference[: view.count], f"{name} holds another log"

    def teardown(self) -> None:
        self.members_agree()


def test_a_sender_whose_own_update_was_purged_unseen_still_names_it_as_predecessor() -> None:
    """Found by ``CoreLink``: Bob posts, Alice reads it, a commit and a purge follow before Bob syncs.

    Bob's view then holds his own update only as a purged slot.  His next update
    must still name its real id as ``prev_own`` (his view sealed it), or Alice,
    who read the original, refuses everything Bob posts next as a gap.
    """
    world = World("purged-own")
    world.agency("ke-kra")
    world.agency("tz-tra")
    link = Link(world)
    alice, bob, juma = (
        link.device(a, u) for a, u in (("ke-kra", "alice"), ("tz-tra", "bob"), ("tz-tra", "juma"))
    )
    case_id = link.create_case(alice, [bob], retention_days=0)
    link.sync(bob, case_id)
    link.post(bob, case_id, "seen by Alice, never synced back by Bob", deliver=False)
    _, envelope = bob.outbox.pop(0)
    link.broker.post_update(case_id, envelope, device_id=bob.id)  # accepted; its receipt is lost
    link.change(alice, case_id, [bob, juma])  # Alice syncs Bob's update first
    world.now += MAX_SKEW_MS + 1
    assert link.broker.purge(before_time=world.now - MAX_SKEW_MS) == 1
    assert [e.kind for e in link.sync(bob, case_id)] == ["purged", "commit"]
    link.post(bob, case_id, "next")
    events = link.sync(alice, case_id)
    assert [e.content["text"] for e in events if e.content] == ["next"]


TestCoreLink = CoreLink.TestCase
TestCoreLink.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
