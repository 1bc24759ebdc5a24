"""Voiding in commits (PROTOCOL.md §5.3): a revocation dated before a commit voids, never refuses.

Sans-I/O: real commits, views and an in-memory honest log (tests/support/world.py).
The times are the world's: a revocation is published *after* the commits it
concerns, dated back before them, as an agency that learns of a theft late does.
"""

from __future__ import annotations

import dataclasses

import pytest
from caseline.crypto.caselog import KIND_COMMIT, CaseView
from caseline.crypto.commits import VOID_ADDED, VOID_CARRIED, VOID_REVOKED, verify_commit
from caseline.crypto.evidence import EVIDENCE_LABEL, VOIDED_COMMIT, export_evidence, verify_evidence
from caseline.crypto.keys import fingerprint
from caseline.crypto.snapshot import Snapshot, snapshot, trust_binding
from caseline.schemas.errors import NotPermittedError, RevokedError
from caseline.schemas.wire import CommitMessage, EvidenceBundle, decode_signed, encode_signed
from caseline.server.core import BrokerCore, Limits
from caseline.server.store import EntryRow

from tests.support.world import Broker, Device, World, commit_change, note, open_case, post


@pytest.fixture
def world() -> World:
    w = World("voiding")
    w.agency("ke-kra")
    w.agency("tz-tra")
    return w


def _view(world: World, broker: Broker, me: Device | None = None) -> CaseView:
    view = CaseView(trust=world.trust(), me=None if me is None else me.keys)
    broker.feed(view)
    return view


def _texts(world: World, broker: Broker, me: Device) -> list[tuple[str, bytes | None]]:
    """What ``me`` replaying the whole case from genesis sees: each update's kind and content."""
    view = CaseView(trust=world.trust(), me=me.keys)
    out = []
    for a in broker.feed(view):
        if a.kind == "update":
            out.append(
                ("voided", None) if a.voided_by else ("update", a.opened.record.content if a.opened else None)
            )
    return out


def test_a_commit_carrying_a_device_revoked_before_it_is_valid_and_voids_that_device(world: World) -> None:
    alice, bob, carol = (
        world.device("ke-kra", "alice"),
        world.device("tz-tra", "bob"),
        world.device("ke-kra", "carol"),
    )
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    view_b = _view(world, broker, bob)
    post(world, view_b, broker, note("before the theft"))
    world.now += 1000
    theft = world.now
    post(world, view_b, broker, note("by the thief"))
    world.now += 1000
    view_a = _view(world, broker, alice)
    broker.append(
        KIND_COMMIT,
        commit_change(world, view_a, alice, [(alice, "owner"), (bob, "member"), (carol, "member")]),
    )
    world.now += 1000
    world.revoke(bob, at=theft)  # published now, dated back to the theft

    # A newcomer replays from genesis: the case reads, and bob counts in no epoch after the theft.
    view_c = _view(world, broker, carol)
    assert view_c.state is not None and dict(view_c.state.voided) == {bob.id: VOID_REVOKED}
    assert not view_c.state.tainted and view_c.state.active(carol.id)
    assert _texts(world, broker, alice) == [("update", note("before the theft")), ("voided", None)]
    post(world, view_c, broker, note("carol posts"))
    assert _texts(world, broker, alice)[-1] == ("update", note("carol posts"))
    # The voided device cannot post, and what it sends is withheld by every member.
    view_b2 = CaseView(trust=world.trust(), me=bob.keys)
    broker.feed(view_b2)
    with pytest.raises(NotPermittedError):
        view_b2.seal(content_type="note", content=note("still here"), now=world.now, nonce=world.rng(24))


def test_a_certificate_offered_for_a_device_revoked_before_the_commit_voids_it(world: World) -> None:
    alice, dave = world.device("ke-kra", "alice"), world.device("tz-tra", "dave")
    broker, _, _ = open_case(world, alice, [])
    world.now += 1000
    view = _view(world, broker, alice)
    broker.append(KIND_COMMIT, commit_change(world, view, alice, [(alice, "owner"), (dave, "member")]))
    world.revoke(dave, at=world.now - 500)  # stolen before alice added it
    state = _view(world, broker, dave).state
    assert state is not None and dict(state.voided) == {dave.id: VOID_REVOKED}


def test_a_commit_by_a_device_revoked_at_its_time_keeps_its_place_and_grants_nothing(world: World) -> None:
    alice, thief = world.device("ke-kra", "alice"), world.device("tz-tra", "juma")
    carol, dave = world.device("ke-kra", "carol"), world.device("ke-kra", "dave")
    accomplice = world.device("tz-tra", "juma")  # the thief's own second device
    broker, _, _ = open_case(world, alice, [(thief, "owner"), (carol, "member"), (dave, "member")])
    world.now += 1000
    stolen_at = world.now
    view_t = _view(world, broker, thief)
    # The thief adds its second device as owner, makes carol an owner and removes dave.
    thief_roster = [(alice, "owner"), (thief, "owner"), (carol, "owner"), (accomplice, "owner")]
    broker.append(KIND_COMMIT, commit_change(world, view_t, thief, thief_roster))
    thief_seq = len(broker.entries) - 1
    world.now += 1000
    view_x = _view(world, broker, accomplice)
    post(world, view_x, broker, note("the accomplice posts"))
    world.now += 1000
    world.revoke(thief, at=stolen_at)

    view_a = _view(world, broker, alice)  # no error: the chain goes on past the thief's commit
    state = view_a.state
    assert state is not None and state.tainted and state.voided_committer == thief.id
    assert dict(state.voided) == {thief.id: VOID_REVOKED, accomplice.id: VOID_ADDED}
    assert state.members[carol.id].role == "member"  # a raised role is not granted
    assert dave.id not in state.members  # a removal stands
    assert _texts(world, broker, alice)[-1] == ("voided", None)
    with pytest.raises(NotPermittedError, match=f"entry {thief_seq}, a commit by tz-tra:juma"):
        view_a.seal(
            content_type="note", content=note("in the thief's epoch"), now=world.now, nonce=world.rng(24)
        )

    # A commit by the accomplice is voided in turn: it adds nobody and the epoch stays tainted.
    world.now += 1000
    view_x = _view(world, broker, accomplice)
    body = commit_change(
        world, view_x, accomplice, [(alice, "owner"), (accomplice, "owner"), (dave, "member")]
    )
    replayed = verify_commit(view_a.state, CommitMessage.decode(body), trust=world.trust(), now=world.now)
    assert replayed.tainted and replayed.voided == {accomplice.id: VOID_CARRIED, dave.id: VOID_ADDED}

    # Alice re-keys without the voided devices: the taint ends, and posting works again.
    broker.append(KIND_COMMIT, commit_change(world, view_a, alice, [(alice, "owner"), (carol, "member")]))
    broker.feed(view_a)
    assert view_a.state is not None and not view_a.state.tainted and not view_a.state.voided
    post(world, view_a, broker, note("after the re-key"))
    assert _texts(world, broker, carol)[-1] == ("update", note("after the re-key"))


def test_a_commit_by_a_member_the_thief_raised_to_owner_is_voided_not_refused(world: World) -> None:
    """Carol, made owner by the thief before anyone knew, commits in good faith: the case goes on."""
    alice, thief, carol = (
        world.device("ke-kra", "alice"),
        world.device("tz-tra", "juma"),
        world.device("ke-kra", "carol"),
    )
    broker, _, _ = open_case(world, alice, [(thief, "owner"), (carol, "member")])
    world.now += 1000
    stolen_at = world.now
    raised = [(alice, "owner"), (thief, "owner"), (carol, "owner")]
    broker.append(KIND_COMMIT, commit_change(world, _view(world, broker, thief), thief, raised))
    world.now += 1000
    broker.append(
        KIND_COMMIT,
        commit_change(world, _view(world, broker, carol), carol, [(alice, "owner"), (carol, "owner")]),
    )
    world.revoke(thief, at=stolen_at)
    state = _view(world, broker, alice).state
    assert state is not None and state.epoch == 2 and state.voided_committer == carol.id
    assert state.members[carol.id].role == "member" and not state.voided


def test_the_broker_refuses_a_new_commit_by_a_revoked_device(world: World) -> None:
    alice, thief = world.device("ke-kra", "alice"), world.device("tz-tra", "juma")
    broker, _, _ = open_case(world, alice, [(thief, "owner")])
    world.now += 1000
    body = commit_change(world, _view(world, broker, thief), thief, [(alice, "owner"), (thief, "owner")])
    world.revoke(thief, at=world.now - 10)
    core = BrokerCore(server_key=world.server_key, trust=world.trust(), limits=Limits())
    core.reload(broker.case_id, _rows(broker), now=world.now)
    with pytest.raises(RevokedError):
        core.accept_commit(broker.case_id, body, device_id=thief.id, now=world.now)


def test_a_restored_snapshot_voids_what_the_view_voided(world: World) -> None:
    alice, thief, helper = (
        world.device("ke-kra", "alice"),
        world.device("tz-tra", "juma"),
        world.device("tz-tra", "x"),
    )
    broker, _, _ = open_case(world, alice, [(thief, "owner")])
    world.now += 1000
    broker.append(
        KIND_COMMIT,
        commit_change(
            world, _view(world, broker, thief), thief, [(alice, "owner"), (thief, "owner"), (helper, "owner")]
        ),
    )
    world.revoke(thief, at=world.now - 10)
    view = _view(world, broker, alice)
    trust = world.trust()
    restored = Snapshot(snapshot(view, binding=trust_binding(view, trust))).restore(
        trust=trust, me=alice.keys, held_bodies={}
    )
    assert restored.state is not None and view.state is not None
    assert (restored.state.voided, restored.state.voided_committer) == (
        view.state.voided,
        view.state.voided_committer,
    )
    assert restored.state.members == view.state.members


def test_evidence_across_a_voided_commit_verifies_and_says_what_was_voided(world: World) -> None:
    alice, bob, thief = (
        world.device("ke-kra", "alice"),
        world.device("ke-kra", "bob"),
        world.device("tz-tra", "juma"),
    )
    accomplice = world.device("tz-tra", "juma")
    broker, _, _ = open_case(world, alice, [(thief, "owner"), (bob, "member")])
    view_a = _view(world, broker, alice)
    post(world, view_a, broker, note("the lead"))
    world.now += 1000
    stolen_at = world.now
    broker.append(
        KIND_COMMIT,
        commit_change(
            world,
            _view(world, broker, thief),
            thief,
            [(alice, "owner"), (thief, "owner"), (bob, "member"), (accomplice, "owner")],
        ),
    )
    world.now += 1000
    world.revoke(thief, at=stolen_at)
    view_a = _view(world, broker, alice)  # the bundle carries the lists its view was verified under
    broker.append(KIND_COMMIT, commit_change(world, view_a, alice, [(alice, "owner"), (bob, "member")]))
    broker.feed(view_a)
    post(world, view_a, broker, note("after the re-key"))
    broker.feed(view_a)
    disclosed = {1: broker.entries[1][1], len(broker.entries) - 1: broker.entries[-1][1]}
    bundle = export_evidence(
        view_a,
        exporter=alice.keys,
        envelopes=disclosed,
        receipt=broker.receipts[-1],
        now=world.now,
        upto=view_a.count,
    )
    pins = {a: fingerprint(a, r.public_key) for a, r in world.roots.items()}
    report = verify_evidence(bundle, pinned=pins)
    assert [r.update.record.content for r in report.records] == [note("the lead"), note("after the re-key")]
    assert [(v.seq, v.device.device_id, v.reason) for v in report.voided] == [
        (2, thief.id, VOIDED_COMMIT),
        (2, thief.id, VOID_REVOKED),
        (2, accomplice.id, VOID_ADDED),
    ]


def _rows(broker: Broker) -> list[EntryRow]:
    return [
        EntryRow(broker.case_id, seq, kind, body, b"", None, 0)
        for seq, (kind, body) in enumerate(broker.entries)
    ]


def test_a_genesis_by_a_device_revoked_at_its_time_is_voided_whole_and_refused_when_new(world: World) -> None:
    thief, bob = world.device("tz-tra", "juma"), world.device("ke-kra", "bob")
    broker, _, _ = open_case(world, thief, [(bob, "member")])
    world.revoke(thief, at=world.now - 10)
    state = _view(world, broker, bob).state  # bob's client lists the case; nothing in it counts
    assert state is not None and state.voided_committer == thief.id
    assert dict(state.voided) == {thief.id: VOID_REVOKED, bob.id: VOID_ADDED}
    core = BrokerCore(server_key=world.server_key, trust=world.trust(), limits=Limits())
    with pytest.raises(RevokedError):
        core.accept_genesis(broker.entries[0][1], device_id=thief.id, now=world.now)


def test_evidence_disclosing_an_update_of_a_voided_member_fails(world: World) -> None:
    """An exporter who did not hold the list discloses the accomplice's update: with the list, refused."""
    alice, thief = world.device("ke-kra", "alice"), world.device("tz-tra", "juma")
    accomplice = world.device("tz-tra", "juma")
    broker, _, _ = open_case(world, alice, [(thief, "owner")])
    world.now += 1000
    stolen_at = world.now
    roster = [(alice, "owner"), (thief, "owner"), (accomplice, "member")]
    broker.append(KIND_COMMIT, commit_change(world, _view(world, broker, thief), thief, roster))
    post(world, _view(world, broker, accomplice), broker, note("planted by the accomplice"))
    view_a = _view(world, broker, alice)  # no list yet: the update opens
    signed = export_evidence(
        view_a,
        exporter=alice.keys,
        envelopes={2: broker.entries[2][1]},
        receipt=broker.receipts[-1],
        now=world.now,
    )
    pins = {a: fingerprint(a, r.public_key) for a, r in world.roots.items()}
    assert [r.author.device_id for r in verify_evidence(signed, pinned=pins).records] == [accomplice.id]
    crl = world.revoke(thief, at=stolen_at)
    tbs, _ = decode_signed(signed)
    with_list = dataclasses.replace(EvidenceBundle.decode(tbs), revocations=(crl,)).encode()
    with pytest.raises(RevokedError):
        verify_evidence(encode_signed(with_list, alice.keys.sign(EVIDENCE_LABEL, with_list)), pinned=pins)
