"""A snapshot restores a view equal to the one verified from genesis, which then goes on identically."""

from __future__ import annotations

from typing import Any

import pytest
from caseline.crypto.caselog import CaseView
from caseline.crypto.snapshot import SNAPSHOT_VERSION, Snapshot, snapshot, trust_binding
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import MalformedError

from tests.support.world import Broker, Device, World, commit_change, note, open_case, post


def fields(view: CaseView) -> dict[str, Any]:
    """Everything a view holds, held envelopes compared by what they are."""
    return {
        "case_id": view.case_id,
        "state": view.state,
        "heads": view.heads,
        "entry_hashes": view.entry_hashes,
        "commit_seqs": view.commit_seqs,
        "states": view.states,
        "epoch_secret": view._epoch_secret,
        "chains": view._chains,
        "last": view._last,
        "slots": view._slots,
        "held": {s: (h.envelope, h.state, h.entry_hash, h.receipt_time) for s, h in view._held.items()},
        "message_keys": view._message_keys,
        "since_own": view._since_own,
        "send_chain": view._send_chain,
        "own_last": view._own_last,
        "own_counter": view._own_counter,
    }


def thaw(world: World, broker: Broker, view: CaseView, device: Device) -> CaseView:
    trust = world.trust()
    frozen = Snapshot(snapshot(view, binding=trust_binding(view, trust)))
    bodies = {seq: broker.entries[seq][1] for seq in frozen.held_seqs}
    return frozen.restore(trust=trust, me=device.keys, held_bodies=bodies)


class Story:
    """Alice (owner) and Bob post; Dave joins in epoch 1 and holds their earlier updates unread."""

    def __init__(self) -> None:
        w = self.world = World("snapshot")
        w.agency("ke-kra")
        w.agency("tz-tra")
        self.alice, self.bob = w.device("ke-kra", "alice"), w.device("tz-tra", "bob")
        self.dave = w.device("tz-tra", "dave")
        self.broker, _, _ = open_case(w, self.alice, [(self.bob, "member")])
        self.va = CaseView(trust=w.trust(), me=self.alice.keys)
        self.vb = CaseView(trust=w.trust(), me=self.bob.keys)
        for i in range(3):
            self.feed()
            post(w, self.va, self.broker, note(f"alice {i}"))
            self.feed()
            post(w, self.vb, self.broker, note(f"bob {i}"))
        self.feed()
        roster = [(self.alice, "owner"), (self.bob, "member"), (self.dave, "member")]
        self.broker.append("commit", commit_change(w, self.va, self.alice, roster))
        self.feed()
        post(w, self.vb, self.broker, note("bob after dave joined"))
        self.feed()
        post(w, self.va, self.broker, note("alice after dave joined"))  # alice's send chain is live
        self.feed()

    def feed(self) -> None:
        self.broker.feed(self.va)
        self.broker.feed(self.vb)


@pytest.fixture
def story() -> Story:
    return Story()


def test_a_restored_view_equals_the_view_verified_from_genesis(story: Story) -> None:
    for device, view in ((story.alice, story.va), (story.bob, story.vb)):
        restored = thaw(story.world, story.broker, view, device)
        assert fields(restored) == fields(view)
        assert restored.position() == view.position()


def test_posting_and_receiving_continue_identically_after_a_restore(story: Story) -> None:
    w, broker = story.world, story.broker
    dave = CaseView(trust=w.trust(), me=story.dave.keys)
    broker.feed(dave)
    assert dave._held, "dave holds the epoch-0 updates he cannot read yet"
    restored_dave = thaw(w, broker, dave, story.dave)
    restored_alice = thaw(w, broker, story.va, story.alice)
    assert fields(restored_dave) == fields(dave)

    # Sending: the same nonce and time give the very same envelope from both.
    nonce = w.rng(24)
    share = story.va.history_share(recipients=[story.dave.id], seqs=[1, 2, 3])
    a = story.va.seal(content_type="history-share", content=share, now=w.now, nonce=nonce)
    b = restored_alice.seal(content_type="history-share", content=share, now=w.now, nonce=nonce)
    assert a.envelope == b.envelope
    broker.append("update", a.envelope)

    # Receiving: the share unlocks the same held updates in both of Dave's views.
    seq = dave.count
    got = [v.apply(seq=seq, kind="update", body=a.envelope, now=w.now) for v in (dave, restored_dave)]
    assert got[0].unlocked == got[1].unlocked and len(got[0].unlocked) == 3
    assert fields(restored_dave) == fields(dave)
    broker.feed(story.vb)
    text = post(w, story.vb, broker, note("after the share"))
    for v in (dave, restored_dave):
        broker.feed(v)
    assert fields(restored_dave) == fields(dave)
    assert text == broker.entries[-1][1]


def test_an_unknown_version_is_refused(story: Story) -> None:
    data = unpack(snapshot(story.va, binding=b""), max_size=1 << 30)
    data[0] = SNAPSHOT_VERSION + 1
    with pytest.raises(MalformedError, match="version"):
        Snapshot(pack(data))


def test_a_held_body_that_is_not_the_snapshotted_entry_is_refused(story: Story) -> None:
    w, broker = story.world, story.broker
    dave = CaseView(trust=w.trust(), me=story.dave.keys)
    broker.feed(dave)
    frozen = Snapshot(snapshot(dave, binding=b""))
    wrong = {seq: broker.entries[seq + 1][1] for seq in frozen.held_seqs}
    with pytest.raises(MalformedError):
        frozen.restore(trust=w.trust(), me=story.dave.keys, held_bodies=wrong)


def test_a_revocation_of_a_member_changes_the_binding(story: Story) -> None:
    before = trust_binding(story.va, story.world.trust())
    outsider = story.world.device("ke-kra", "outsider")
    story.world.revoke(outsider)
    assert trust_binding(story.va, story.world.trust()) == before  # not in the case: still fresh
    story.world.revoke(story.bob)
    assert trust_binding(story.va, story.world.trust()) != before
