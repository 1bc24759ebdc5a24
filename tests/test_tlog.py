"""The broker log as members check it: receipts, checkpoints, witness lists and the quorum.

The broker holds its signing key, so everything below that it could forge
comes with valid broker signatures: what stops it is the witnesses' cosignatures
and a member's memory of what it was shown before.
"""

from __future__ import annotations

import dataclasses

import pytest
from caseline.crypto import merkle, note, tlog
from caseline.crypto.caselog import DAY_MS, KIND_PURGED, KIND_UPDATE, CaseView, entry_hash
from caseline.crypto.certs import TrustStore, issue_witness_list
from caseline.crypto.commits import create_commit, verify_commit
from caseline.crypto.keys import SigningKey
from caseline.schemas.codec import pack
from caseline.schemas.errors import (
    BadSignatureError,
    IntegrityError,
    MalformedError,
    NotAllowedError,
    RevokedError,
    SplitViewError,
)
from caseline.schemas.wire import (
    CommitMessage,
    EntryLeaf,
    Envelope,
    LogRef,
    Witness,
    Witnessing,
    decode_signed,
)

from tests.support.world import World, commit_change, open_case, post
from tests.support.world import note as note_content

SECOND = 1000


def leaves(n: int, seed: bytes = b"") -> list[bytes]:
    return [
        EntryLeaf(
            case_id=bytes(16), seq=i, entry_hash=bytes(32), head=seed.ljust(32, b"\0")[:32], time=i
        ).encode()
        for i in range(n)
    ]


def tree_of(data: list[bytes]) -> merkle.Tree:
    t = merkle.Tree()
    for d in data:
        t.append(merkle.leaf_hash(d))
    return t


def checkpoint(key: SigningKey, t: merkle.Tree, size: int | None = None) -> bytes:
    size = t.size if size is None else size
    return tlog.sign_checkpoint(key, size=size, root=t.root(size))


class Witnesses:
    """One witness per agency: keys, names and the root-signed lists members adopt."""

    def __init__(self, world: World, agencies: list[str]) -> None:
        self.world = world
        self.keys = {a: SigningKey(world.rng(32)) for a in agencies}
        self.listed = {
            a: Witness(name=f"witness.{a}.example", public_key=k.public_key, url=f"http://127.0.0.1/{a}")
            for a, k in self.keys.items()
        }
        self.lists = {
            a: issue_witness_list(world.roots[a], number=1, issued_at=world.now, witnesses=[w])
            for a, w in self.listed.items()
        }

    def trust(self) -> TrustStore:
        store = self.world.trust()
        for signed in self.lists.values():
            store.add_witness_list(signed)
        return store

    def cosign(self, signed_note: bytes, agency: str, at_seconds: int) -> bytes:
        parsed = note.Note.parse(signed_note)
        sig = note.cosign(
            parsed.text,
            name=self.listed[agency].name,
            secret_key=self.keys[agency]._secret,
            timestamp=at_seconds,
        )
        return note.Note(text=parsed.text, signatures=(*parsed.signatures, sig)).encode()


@pytest.fixture
def world() -> World:
    w = World("tlog")
    w.agency("ke-kra")
    w.agency("tz-tra")
    return w


# --------------------------------------------------------------------------- receipts


def test_a_log_receipt_verifies_and_binds_its_leaf(world: World) -> None:
    data = leaves(5)
    t = tree_of(data)
    cp = checkpoint(world.server_key, t)
    receipt = tlog.make_receipt(
        EntryLeaf.decode(data[3]), index=3, checkpoint=cp, proof=t.inclusion_proof(3, 5)
    )
    got = tlog.verify_log_receipt(receipt, world.server_key.public_key)
    assert (got.seq, got.index, got.checkpoint.size) == (3, 3, 5)

    other = SigningKey(world.rng(32))
    with pytest.raises(MalformedError):  # another broker's log has another origin
        tlog.verify_log_receipt(receipt, other.public_key)
    wrong_leaf = tlog.make_receipt(
        EntryLeaf.decode(data[2]), index=3, checkpoint=cp, proof=t.inclusion_proof(3, 5)
    )
    with pytest.raises(IntegrityError):
        tlog.verify_log_receipt(wrong_leaf, world.server_key.public_key)


def test_a_checkpoint_needs_the_brokers_own_signature(world: World) -> None:
    t = tree_of(leaves(3))
    cp = note.Note.parse(checkpoint(world.server_key, t))
    impostor = SigningKey(world.rng(32))
    origin = tlog.log_origin(world.server_key.public_key)
    forged = note.Note(text=cp.text, signatures=(impostor.sign_note(cp.text, name=origin),)).encode()
    with pytest.raises(BadSignatureError):
        tlog.verify_checkpoint(forged, world.server_key.public_key)


# --------------------------------------------------------------------------- the watch


def answer(
    t: merkle.Tree, key: SigningKey, since: int, size: int, *, witnessed: bytes = b"", wsize: int = 0
) -> dict:
    return {
        "latest": checkpoint(key, t, size),
        "since_proof": t.consistency_proof(since, size) if since <= size else [],
        "witnessed": witnessed,
        "witnessed_proof": t.consistency_proof(wsize, size) if witnessed else [],
    }


def test_the_watch_follows_a_growing_log(world: World) -> None:
    t = tree_of(leaves(20))
    watch = tlog.LogWatch(world.server_key.public_key)
    watch.observe(**answer(t, world.server_key, 0, 5))
    watch.observe(**answer(t, world.server_key, 5, 12))
    new, _ = watch.observe(**answer(t, world.server_key, 12, 20))
    assert new.size == 20


def test_a_restored_backup_is_a_split_view_with_both_checkpoints_as_proof(world: World) -> None:
    t = tree_of(leaves(20))
    watch = tlog.LogWatch(world.server_key.public_key)
    watch.observe(**answer(t, world.server_key, 0, 20))
    held = watch.latest
    with pytest.raises(SplitViewError) as caught:
        watch.observe(
            latest=checkpoint(world.server_key, t, 12), since_proof=[], witnessed=b"", witnessed_proof=[]
        )
    assert caught.value.proof == (held, checkpoint(world.server_key, t, 12))
    assert watch.latest == held  # nothing adopted


def test_a_fork_is_a_split_view(world: World) -> None:
    ours = tree_of(leaves(10))
    theirs = tree_of(leaves(8) + leaves(4, seed=b"other")[2:])
    watch = tlog.LogWatch(world.server_key.public_key)
    watch.observe(**answer(ours, world.server_key, 0, 9))
    with pytest.raises(SplitViewError):
        watch.observe(**answer(theirs, world.server_key, 9, 10))


def test_a_smaller_witnessed_checkpoint_after_a_larger_one_is_refused(world: World) -> None:
    t = tree_of(leaves(10))
    watch = tlog.LogWatch(world.server_key.public_key)
    watch.observe(**answer(t, world.server_key, 0, 10, witnessed=checkpoint(world.server_key, t, 8), wsize=8))
    with pytest.raises(SplitViewError):
        watch.observe(
            **answer(t, world.server_key, 10, 10, witnessed=checkpoint(world.server_key, t, 6), wsize=6)
        )


# --------------------------------------------------------------------------- witness lists and quorum


def test_witness_lists_verify_under_the_pinned_root_and_never_go_back(world: World) -> None:
    ws = Witnesses(world, ["ke-kra"])
    trust = ws.trust()
    assert trust.witnesses("ke-kra") == (ws.listed["ke-kra"],)
    older = issue_witness_list(world.roots["ke-kra"], number=0, issued_at=world.now, witnesses=[])
    with pytest.raises(RevokedError):
        trust.add_witness_list(older)
    stranger = World("stranger")
    stranger.agency("ke-kra")
    foreign = issue_witness_list(stranger.roots["ke-kra"], number=5, issued_at=world.now, witnesses=[])
    with pytest.raises(BadSignatureError):
        trust.add_witness_list(foreign)


def test_each_agency_needs_one_of_its_own_witnesses(world: World) -> None:
    ws = Witnesses(world, ["ke-kra", "tz-tra"])
    t = tree_of(leaves(4))
    cp = checkpoint(world.server_key, t)
    lists = {a: (w,) for a, w in ws.listed.items()}
    rule = Witnessing(rule="each-agency", alarm_after=60 * SECOND)
    agencies = frozenset(lists)

    def time_of(signed: bytes) -> int | None:
        parsed = note.Note.parse(signed)
        return tlog.witnessed_time(
            tlog.collect_cosignatures(parsed.text, parsed.signatures, lists), agencies, rule
        )

    one = ws.cosign(cp, "ke-kra", 100)
    assert time_of(one) is None
    both = ws.cosign(one, "tz-tra", 160)
    assert time_of(both) == 160 * SECOND  # the later agency's time: both had seen it by then
    # a line that claims a listed witness but does not verify is not "absent": it is refused
    parsed = note.Note.parse(both)
    bad = dataclasses.replace(parsed.signatures[-1], signature=bytes(72))
    with pytest.raises(BadSignatureError):
        tlog.collect_cosignatures(parsed.text, (*parsed.signatures[:-1], bad), lists)


# --------------------------------------------------------------------------- hidden updates


def test_a_fresh_update_cannot_be_hidden_as_purged_in_a_witnessed_case(world: World) -> None:
    """The attack of issue 12: blank the body, backdate the receipt; witnesses' time says no."""
    ws = Witnesses(world, ["ke-kra", "tz-tra"])
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    rule = Witnessing(rule="each-agency", alarm_after=60 * SECOND)
    broker, _, _ = open_case(
        world, alice, [(bob, "member")], policy=world.policy(retention_days=1), witnessing=rule
    )
    view = CaseView(trust=ws.trust(), me=alice.keys)
    broker.feed(view)
    envelope = post(world, view, broker, note_content("the container is in bay 4"))
    tbs, _ = decode_signed(envelope)
    env = Envelope.decode(tbs)
    seq = 1
    eh = entry_hash(KIND_UPDATE, envelope)
    head = broker.receipt_leaf(seq).head

    def purged_receipt(time: int, cosign_at: int | None) -> bytes:
        leaf = EntryLeaf(case_id=broker.case_id, seq=seq, entry_hash=eh, head=head, time=time)
        data = [leaf.encode()]
        t = tree_of(data)
        cp = checkpoint(world.server_key, t)
        if cosign_at is not None:
            cp = ws.cosign(ws.cosign(cp, "ke-kra", cosign_at), "tz-tra", cosign_at)
        return tlog.make_receipt(leaf, index=0, checkpoint=cp, proof=[])

    body = pack([env.epoch, env.sender, env.counter])
    fresh = CaseView(trust=ws.trust(), me=bob.keys)
    broker.feed(fresh, stop=1)
    year_ago = world.now - 366 * DAY_MS
    with pytest.raises(IntegrityError, match="quorum"):  # backdated by the broker alone
        fresh.apply(
            seq=seq, kind=KIND_PURGED, body=body, now=world.now, receipt=purged_receipt(year_ago, None)
        )
    with pytest.raises(IntegrityError, match="retention"):  # witnesses saw it just now
        fresh.apply(
            seq=seq,
            kind=KIND_PURGED,
            body=body,
            now=world.now,
            receipt=purged_receipt(year_ago, world.now // 1000),
        )
    old = CaseView(trust=ws.trust(), me=bob.keys)
    broker.feed(old, stop=1)
    old.apply(  # an honest purge, witnessed two days ago, is accepted
        seq=seq,
        kind=KIND_PURGED,
        body=body,
        now=world.now,
        receipt=purged_receipt(year_ago, (world.now - 2 * DAY_MS) // 1000),
    )
    assert old.count == 2


def test_a_witnessed_case_cannot_be_switched_back_to_unwitnessed(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    rule = Witnessing(rule="each-agency", alarm_after=60 * SECOND)
    broker, state, _ = open_case(world, alice, [(bob, "member")], witnessing=rule)
    assert state.witnessing == rule
    view = CaseView(trust=world.trust(), me=alice.keys)
    broker.feed(view)
    carried = verify_commit(
        state,
        CommitMessage.decode(commit_change(world, view, alice, [(alice, "owner")])),
        trust=world.trust(),
        now=world.now,
    )
    assert carried.witnessing == rule  # our own code carries the rule on
    downgraded = dataclasses.replace(state, commit=dataclasses.replace(state.commit, witnessing=None))
    body, _ = create_commit(
        prev=downgraded,
        case_id=state.case_id,
        committer=alice.keys,
        roster=[(world.verified(alice), "owner")],
        policy=state.policy,
        log=view.position(),
        info=None,
        now=world.now,
        rng=world.rng,
    )
    with pytest.raises(NotAllowedError):
        verify_commit(state, CommitMessage.decode(body), trust=world.trust(), now=world.now)


def test_updates_carry_the_senders_witnessed_checkpoint_signed_into_the_record(world: World) -> None:
    """Gossip (PROTOCOL.md §7.9): a version-2 record names the newest witnessed checkpoint."""
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    sender = CaseView(trust=world.trust(), me=alice.keys)
    broker.feed(sender)
    ref = LogRef(size=7, root=bytes(range(32)))
    staged = sender.prepare(
        content_type="note", content=note_content("gossip"), now=world.now, nonce=world.rng(24), witnessed=ref
    )
    sender.confirm(staged)
    broker.append(KIND_UPDATE, staged.sealed.envelope)
    reader = CaseView(trust=world.trust(), me=bob.keys)
    applied = broker.feed(reader)
    opened = applied[-1].opened
    assert opened is not None
    assert opened.record.witnessed == ref
    assert opened.record.version == 2


def test_a_witness_equivocation_report_counts_only_with_the_brokers_own_signatures(world: World) -> None:
    ours = tree_of(leaves(4))
    theirs = tree_of(leaves(3) + leaves(2, seed=b"other")[1:])
    a, b = checkpoint(world.server_key, ours), checkpoint(world.server_key, theirs)

    def report(*notes: bytes) -> bytes:
        return tlog.EQUIVOCATION_HEADER + b"".join(b"note %d\n" % len(n) + n for n in notes)

    assert tlog.verify_equivocation(report(a, b), world.server_key.public_key) == (a, b)
    with pytest.raises(MalformedError):  # the same checkpoint twice is no conflict
        tlog.verify_equivocation(report(a, a), world.server_key.public_key)
    forged = tlog.sign_checkpoint(SigningKey(world.rng(32)), size=4, root=theirs.root(4))
    with pytest.raises((MalformedError, BadSignatureError)):  # not the broker's signature
        tlog.verify_equivocation(report(a, forged), world.server_key.public_key)
    with pytest.raises(MalformedError):
        tlog.verify_equivocation(report(a, b) + b"x", world.server_key.public_key)


def test_a_witnessed_leaf_of_the_case_makes_its_entries_final(world: World) -> None:
    """An honest broker's leaf (head = the head *after* the entry) is final, not a split view.

    Found with the attack harness: ``finality`` compared the leaf's head with
    ``CaseView.heads[seq]``, the head *before* entry ``seq`` (``heads[0]`` is the anchor),
    so every honest witnessed case raised the alarm on its first sync.
    """
    ws = Witnesses(world, ["ke-kra", "tz-tra"])
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    rule = Witnessing(rule="each-agency", alarm_after=60 * SECOND)
    broker, _, _ = open_case(world, alice, [(bob, "member")], witnessing=rule)
    view = CaseView(trust=ws.trust(), me=alice.keys)
    broker.feed(view)
    post(world, view, broker, note_content("the container is in bay 4"))
    broker.feed(view)
    assert view.state is not None
    leaf = broker.receipt_leaf(1)
    assert leaf.head == view.head
    data = [leaf.encode()]
    cp = checkpoint(world.server_key, tree_of(data))
    at = world.now // 1000
    cp = ws.cosign(ws.cosign(cp, "ke-kra", at), "tz-tra", at)
    watch = tlog.LogWatch(world.server_key.public_key, latest=cp, witnessed=cp)
    found = watch.finality(
        state_rule=rule,
        agencies=view.state.agencies,
        witnesses={a: [ws.listed[a]] for a in view.state.agencies},
        heads=view.heads,
        entry_hashes=view.entry_hashes,
        case_id=view.state.case_id,
        leaf=data[0],
        index=0,
        inclusion=[],
    )
    assert found == tlog.Finality(final=2, witnessed_at=at * 1000)
    forged = dataclasses.replace(leaf, head=view.heads[1]).encode()  # another history at seq 1
    cp2 = checkpoint(world.server_key, tree_of([forged]))
    cp2 = ws.cosign(ws.cosign(cp2, "ke-kra", at), "tz-tra", at)
    with pytest.raises(SplitViewError):
        tlog.LogWatch(world.server_key.public_key, latest=cp2, witnessed=cp2).finality(
            state_rule=rule,
            agencies=view.state.agencies,
            witnesses={a: [ws.listed[a]] for a in view.state.agencies},
            heads=view.heads,
            entry_hashes=view.entry_hashes,
            case_id=view.state.case_id,
            leaf=forged,
            index=0,
            inclusion=[],
        )
