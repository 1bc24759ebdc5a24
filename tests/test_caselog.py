"""History integrity: a broker that drops, reorders, replays or forks is caught.

A malicious broker holds the receipt key, so every manipulated log below comes
with *valid* receipts: detection must come from what members signed.
"""

from __future__ import annotations

import pytest
from caseline.crypto.caselog import CaseView, sign_receipt, verify_receipt
from caseline.crypto.keys import SigningKey
from caseline.schemas.errors import (
    BadSignatureError,
    ChainError,
    ForkError,
    GapError,
    IntegrityError,
    NotAllowedError,
    NotMemberError,
    ReplayError,
)

from tests.support.world import Broker, Device, World, commit_change, note, open_case, post


def relog(world: World, case_id: bytes, entries: list[tuple[str, bytes]]) -> Broker:
    """A broker that re-signs whatever history it chooses to show."""
    b = Broker(world, case_id)
    for kind, body in entries:
        b.append(kind, body)
    return b


@pytest.fixture
def world() -> World:
    w = World("caselog")
    w.agency("ke-kra")
    w.agency("tz-tra")
    return w


class Case:
    """Alice (owner, KRA), Bob (TRA) and Carol (KRA) in one case, each with a view."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.alice = world.device("ke-kra", "alice")
        self.bob = world.device("tz-tra", "bob")
        self.carol = world.device("ke-kra", "carol")
        self.broker, _, _ = open_case(world, self.alice, [(self.bob, "member"), (self.carol, "member")])
        self.views = {d.user: self.view(d) for d in (self.alice, self.bob, self.carol)}

    def view(self, device: Device) -> CaseView:
        v = CaseView(trust=self.world.trust(), me=device.keys)
        self.broker.feed(v)
        return v

    def post(self, user: str, text: str = "x") -> bytes:
        env = post(self.world, self.views[user], self.broker, note(text))
        self.sync()
        return env

    def sync(self) -> None:
        for v in self.views.values():
            self.broker.feed(v)

    def fresh(self, device: Device, broker: Broker) -> CaseView:
        v = CaseView(trust=self.world.trust(), me=device.keys)
        broker.feed(v)
        return v


@pytest.fixture
def case(world: World) -> Case:
    return Case(world)


def test_honest_history_verifies_for_everyone(case: Case) -> None:
    case.post("alice", "seizure at Namanga")
    case.post("bob", "ack")
    case.post("carol", "more")
    heads = {v.head for v in case.views.values()}
    assert len(heads) == 1
    texts = [
        a.opened.record.content
        for a in case.broker.feed(CaseView(trust=case.world.trust(), me=case.bob.keys))
        if a.opened
    ]
    assert len(texts) == 3


def test_dropped_update_is_detected_at_the_senders_next_update(case: Case) -> None:
    case.post("alice", "one")
    case.post("alice", "two")
    entries = list(case.broker.entries)
    del entries[1]  # the broker hides Alice's first update from a newcomer's view
    with pytest.raises(GapError):
        case.fresh(case.bob, relog(case.world, case.broker.case_id, entries))


def test_dropped_update_is_detected_by_another_members_gossip(case: Case) -> None:
    """Bob saw Alice's update; Carol is never shown it, then gets Bob's update."""
    case.post("alice", "hidden from carol")
    case.post("bob", "reply")
    entries = list(case.broker.entries)
    del entries[1]
    with pytest.raises(GapError):
        case.fresh(case.carol, relog(case.world, case.broker.case_id, entries))


def test_reordered_updates_of_one_sender_are_detected(case: Case) -> None:
    case.post("alice", "one")
    case.post("alice", "two")
    entries = list(case.broker.entries)
    entries[1], entries[2] = entries[2], entries[1]
    with pytest.raises(IntegrityError):
        case.fresh(case.bob, relog(case.world, case.broker.case_id, entries))


def test_duplicated_update_is_detected(case: Case) -> None:
    case.post("alice", "one")
    entries = list(case.broker.entries)
    entries.append(entries[1])
    with pytest.raises(ReplayError):
        case.fresh(case.bob, relog(case.world, case.broker.case_id, entries))


def test_old_update_replayed_at_a_new_position_is_detected(case: Case) -> None:
    case.post("alice", "one")
    case.post("bob", "two")
    entries = list(case.broker.entries)
    entries.append(entries[1])
    with pytest.raises(ReplayError):
        case.fresh(case.carol, relog(case.world, case.broker.case_id, entries))


def test_replayed_position_in_a_live_view_is_refused(case: Case) -> None:
    case.post("alice", "one")
    kind, body = case.broker.entries[1]
    with pytest.raises(ReplayError):
        case.views["bob"].apply(seq=1, kind=kind, body=body, now=case.world.now)
    with pytest.raises(GapError):
        case.views["bob"].apply(seq=5, kind=kind, body=body, now=case.world.now)


def test_fork_is_detected_when_an_update_carrying_the_other_head_arrives(case: Case) -> None:
    """The broker shows Alice and Carol one history and Bob another.

    Carol's update signs the head of the history she saw; when the broker
    relays it into Bob's branch, Bob's view computes another head at that
    count and reports the fork.
    """
    world = case.world
    genesis = case.broker.entries[:1]
    a_log = relog(world, case.broker.case_id, genesis)
    b_log = relog(world, case.broker.case_id, genesis)
    va, vb, vc = (
        case.fresh(d, log) for d, log in ((case.alice, a_log), (case.bob, b_log), (case.carol, a_log))
    )
    post(world, va, a_log, note("alice's version"))
    post(world, vb, b_log, note("bob's version"))
    a_log.feed(va)
    a_log.feed(vc)
    b_log.feed(vb)
    post(world, vc, a_log, note("carol saw alice's version"))
    b_log.append(*a_log.entries[2])
    with pytest.raises(ForkError):
        b_log.feed(vb)


def test_fork_is_detected_by_comparing_heads(case: Case) -> None:
    world = case.world
    genesis = case.broker.entries[:1]
    a_log = relog(world, case.broker.case_id, genesis)
    b_log = relog(world, case.broker.case_id, genesis)
    va, vb = case.fresh(case.alice, a_log), case.fresh(case.bob, b_log)
    post(world, va, a_log, note("a"))
    post(world, vb, b_log, note("b"))
    a_log.feed(va)
    b_log.feed(vb)
    with pytest.raises(ForkError):
        vb.check_position(va.position())


def test_receipt_for_another_history_is_a_fork(case: Case) -> None:
    case.post("alice", "one")
    kind, body = case.broker.entries[1]
    bad = sign_receipt(
        case.world.server_key,
        case_id=case.broker.case_id,
        seq=1,
        entry_hash=verify_receipt(case.broker.receipts[1], case.world.server_key.public_key).entry_hash,
        head=bytes(32),
        time=case.world.now,
    )
    fresh = CaseView(trust=case.world.trust(), me=case.bob.keys)
    fresh.apply(seq=0, kind="commit", body=case.broker.entries[0][1], now=case.world.now)
    with pytest.raises(ForkError):
        fresh.apply(seq=1, kind=kind, body=body, now=case.world.now, receipt=bad)


def test_receipt_from_another_server_key_is_rejected(case: Case) -> None:
    case.post("alice", "one")
    original = verify_receipt(case.broker.receipts[1], case.world.server_key.public_key)
    other = SigningKey(case.world.rng(32))
    forged = sign_receipt(
        other,
        case_id=original.case_id,
        seq=original.seq,
        entry_hash=original.entry_hash,
        head=original.head,
        time=original.time,
    )
    fresh = CaseView(trust=case.world.trust(), me=case.bob.keys)
    fresh.apply(seq=0, kind="commit", body=case.broker.entries[0][1], now=case.world.now)
    with pytest.raises(BadSignatureError):
        fresh.apply(seq=1, kind="update", body=case.broker.entries[1][1], now=case.world.now, receipt=forged)


def test_update_replayed_into_another_case_is_rejected(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker_a, _, _ = open_case(world, alice, [(bob, "member")])
    broker_b, _, _ = open_case(world, alice, [(bob, "member")])
    va = CaseView(trust=world.trust(), me=alice.keys)
    broker_a.feed(va)
    post(world, va, broker_a)
    vb = CaseView(trust=world.trust(), me=bob.keys)
    broker_b.feed(vb)
    with pytest.raises(ChainError):
        vb.apply(seq=1, kind="update", body=broker_a.entries[1][1], now=world.now)


def test_hidden_commit_is_detected(case: Case) -> None:
    """The broker hides the commit of epoch 1 but delivers updates sealed in it."""
    va = case.views["alice"]
    dave = case.world.device("tz-tra", "dave")
    case.broker.append(
        "commit",
        commit_change(
            case.world,
            va,
            case.alice,
            [(case.alice, "owner"), (case.bob, "member"), (dave, "member")],
        ),
    )
    case.sync()
    case.post("alice", "in epoch 1")
    entries = [e for i, e in enumerate(case.broker.entries) if i != 1]
    with pytest.raises(ChainError):
        case.fresh(case.carol, relog(case.world, case.broker.case_id, entries))


def test_removed_member_cannot_read_later_updates(case: Case) -> None:
    va = case.views["alice"]
    case.broker.append(
        "commit",
        commit_change(case.world, va, case.alice, [(case.alice, "owner"), (case.bob, "member")]),
    )
    case.sync()
    case.post("alice", "after carol left")
    applied = case.broker.feed(case.fresh(case.carol, case.broker), start=None)
    assert applied == []
    carol_view = case.views["carol"]
    assert carol_view.state is not None and case.carol.id not in carol_view.state.members
    assert all(
        a.opened is None
        for a in case.broker.feed(
            case.fresh(
                case.carol,
                relog(
                    case.world,
                    case.broker.case_id,
                    case.broker.entries[:0] or case.broker.entries[:1],
                ),
            )
        )
    )
    with pytest.raises(NotMemberError):
        carol_view.message_key(carol_view.count - 1)


def test_updates_from_a_revoked_device_are_voided_and_the_case_goes_on(case: Case) -> None:
    case.post("bob", "while trusted")
    case.world.now += 60_000  # the phone is stolen a minute later
    case.world.revoke(case.bob, at=case.world.now - 1)
    trust = case.world.trust()
    case.views["bob"].trust.add_revocation_list(case.world.crls[-1])
    post(case.world, case.views["bob"], case.broker, note("stolen phone"))  # a broker that accepts it anyway
    post(case.world, case.views["bob"], case.broker, note("and again"))
    fresh = CaseView(trust=trust, me=case.alice.keys)
    applied = case.broker.feed(fresh)
    # Authentic, so it stays in the chain and its sender's sequence; never shown or disclosable.
    assert [a.voided_by for a in applied[-2:]] == [case.bob.id, case.bob.id]
    assert [a.opened for a in applied[-2:]] == [None, None]
    assert applied[-3].opened is not None and applied[-3].voided_by is None
    with pytest.raises(NotMemberError):
        fresh.message_key(len(applied) - 1)
    # Alice's next update, which saw the voided ones, verifies for every member.
    case.views["alice"] = fresh
    case.post("alice", "after the theft")
    assert case.views["carol"].head == fresh.head


def test_a_revoked_device_cannot_have_altered_or_replayed_updates_voided(case: Case) -> None:
    """Voiding comes after every other check: it never excuses a forgery or a replay."""
    case.world.now += 60_000
    case.world.revoke(case.bob, at=case.world.now - 1)
    trust = case.world.trust()
    case.views["bob"].trust.add_revocation_list(case.world.crls[-1])
    env = post(case.world, case.views["bob"], case.broker, note("stolen phone"))
    forged = bytearray(env)
    forged[-1] ^= 1
    for entries, error in (
        ([*case.broker.entries[:-1], ("update", bytes(forged))], BadSignatureError),
        ([*case.broker.entries, ("update", env)], ReplayError),
    ):
        with pytest.raises(error):
            relog(case.world, case.broker.case_id, entries).feed(CaseView(trust=trust, me=case.alice.keys))


def test_new_member_reads_history_through_a_share(case: Case) -> None:
    case.post("alice", "before dave")
    case.post("bob", "also before")
    va = case.views["alice"]
    dave = case.world.device("tz-tra", "dave")
    case.broker.append(
        "commit",
        commit_change(
            case.world,
            va,
            case.alice,
            [(case.alice, "owner"), (case.bob, "member"), (case.carol, "member"), (dave, "member")],
        ),
    )
    case.sync()
    share = va.history_share(recipients=[dave.id], seqs=[1, 2])
    post(case.world, va, case.broker, share, content_type="history-share")
    applied = case.broker.feed(CaseView(trust=case.world.trust(), me=dave.keys))
    unlocked = [u for a in applied for u in a.unlocked]
    assert [u.record.sender for u in unlocked] == [case.alice.id, case.bob.id]


def test_history_share_refused_when_policy_forbids_it(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")], policy=world.policy(history="none"))
    va = CaseView(trust=world.trust(), me=alice.keys)
    broker.feed(va)
    post(world, va, broker)
    broker.feed(va)
    share = va.history_share(recipients=[bob.id], seqs=[1])
    post(world, va, broker, share, content_type="history-share")
    with pytest.raises(NotAllowedError):
        broker.feed(CaseView(trust=world.trust(), me=bob.keys))


def test_rejected_entry_leaves_the_view_unchanged(case: Case) -> None:
    case.post("alice", "one")
    view = case.views["bob"]
    before = (view.count, view.head)
    kind, body = case.broker.entries[1]
    tampered = bytearray(body)
    tampered[-70] ^= 1
    with pytest.raises(Exception):  # noqa: B017, PT011 - any rejection will do; the point is no change
        view.apply(seq=view.count, kind=kind, body=bytes(tampered), now=case.world.now)
    assert (view.count, view.head) == before
    case.post("alice", "two")  # and the view still accepts the honest continuation
    assert view.count == before[0] + 1


def test_broker_cannot_hide_a_recent_update_as_purged(case: Case) -> None:
    from caseline.crypto.caselog import verify_receipt
    from caseline.schemas.codec import pack
    from caseline.schemas.errors import IntegrityError as Integrity

    case.post("alice", "recent")
    r = verify_receipt(case.broker.receipts[1], case.world.server_key.public_key)
    fresh = CaseView(trust=case.world.trust(), me=case.bob.keys)
    fresh.apply(seq=0, kind="commit", body=case.broker.entries[0][1], now=case.world.now)
    with pytest.raises(Integrity):
        fresh.apply(
            seq=1,
            kind="purged",
            body=pack([0, case.alice.id, 0]),
            now=case.world.now,
            receipt=case.broker.receipts[1],
        )
    assert r.seq == 1
    assert fresh.count == 1
