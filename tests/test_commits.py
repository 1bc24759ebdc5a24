"""Case commits: who may change a case, and what a broker cannot do to membership."""

from __future__ import annotations

import dataclasses

import pytest
from caseline.crypto.caselog import CaseView
from caseline.crypto.commits import (
    create_commit,
    log_anchor,
    open_case_info,
    open_epoch_secret,
    verify_commit,
)
from caseline.schemas.errors import (
    BadSignatureError,
    ChainError,
    DecryptionError,
    ExpiredError,
    MalformedError,
    NotAllowedError,
    NotMemberError,
    NotPermittedError,
    RevokedError,
)
from caseline.schemas.wire import CommitMessage, LogPosition, Wrap

from tests.support.world import Broker, Device, World, commit_change, open_case


@pytest.fixture
def world() -> World:
    w = World("commits")
    w.agency("ke-kra")
    w.agency("tz-tra")
    return w


def test_genesis_every_member_unwraps_the_same_secret(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, state, secret = open_case(world, alice, [(bob, "member")])
    message = CommitMessage.decode(broker.entries[0][1])
    assert open_epoch_secret(state, message, alice.keys) == secret
    assert open_epoch_secret(state, message, bob.keys) == secret
    info = open_case_info(state, secret)
    assert info is not None and info.title == "Operation Kilimanjaro"
    assert set(state.members) == {alice.id, bob.id}


def test_outsider_has_no_wrap(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    eve = world.device("ke-kra", "eve")
    broker, state, _ = open_case(world, alice, [])
    with pytest.raises(NotMemberError):
        open_epoch_secret(state, CommitMessage.decode(broker.entries[0][1]), eve.keys)


def _view(world: World, broker: object, me: object = None) -> CaseView:
    assert isinstance(broker, Broker)
    view = CaseView(trust=world.trust(), me=me.keys if isinstance(me, Device) else None)
    broker.feed(view)
    return view


def test_member_without_owner_role_cannot_commit(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    mallory = world.device("tz-tra", "mallory")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    view = _view(world, broker, bob)
    body = commit_change(world, view, bob, [(alice, "owner"), (bob, "member"), (mallory, "member")])
    with pytest.raises(NotAllowedError):
        verify_commit(view.state, CommitMessage.decode(body), trust=world.trust(), now=world.now)


def test_non_member_cannot_commit(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    eve = world.device("ke-kra", "eve")
    broker, _, _ = open_case(world, alice, [])
    view = _view(world, broker, alice)
    body = commit_change(world, view, eve, [(alice, "owner"), (eve, "owner")])
    with pytest.raises(NotMemberError):
        verify_commit(view.state, CommitMessage.decode(body), trust=world.trust(), now=world.now)


def test_broker_cannot_write_a_commit(world: World) -> None:
    """The broker re-signs a commit adding its own device: the signature names the owner."""
    alice = world.device("ke-kra", "alice")
    spy = world.device("ke-kra", "spy")
    broker, _, _ = open_case(world, alice, [])
    view = _view(world, broker, alice)
    body = commit_change(world, view, spy, [(alice, "owner"), (spy, "member")])
    message = CommitMessage.decode(body)
    forged = dataclasses.replace(message, tbs=message.tbs.replace(spy.id, alice.id, 1))
    with pytest.raises((BadSignatureError, MalformedError)):
        verify_commit(view.state, forged, trust=world.trust(), now=world.now)


def test_commit_skipping_an_epoch_is_rejected(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [])
    view = _view(world, broker, alice)
    first = commit_change(world, view, alice, [(alice, "owner"), (bob, "member")])
    broker.append("commit", first)
    broker.feed(view)
    second = commit_change(world, view, alice, [(alice, "owner")])
    fresh = _view_at_genesis(world, broker)
    with pytest.raises(ChainError):
        verify_commit(fresh.state, CommitMessage.decode(second), trust=world.trust(), now=world.now)


def _view_at_genesis(world: World, broker: object) -> CaseView:
    assert isinstance(broker, Broker)
    view = CaseView(trust=world.trust())
    kind, body = broker.entries[0]
    view.apply(seq=0, kind=kind, body=body, now=world.now)
    return view


def test_forked_commit_chain_is_rejected(world: World) -> None:
    """Two commits for the same epoch: the second does not continue the first."""
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    carol = world.device("tz-tra", "carol")
    broker, _, _ = open_case(world, alice, [])
    view = _view(world, broker, alice)
    left = commit_change(world, view, alice, [(alice, "owner"), (bob, "member")])
    right = commit_change(world, view, alice, [(alice, "owner"), (carol, "member")])
    broker.append("commit", left)
    broker.feed(view)
    with pytest.raises(ChainError):
        verify_commit(view.state, CommitMessage.decode(right), trust=world.trust(), now=world.now)
    with pytest.raises(ChainError):  # replaying the applied commit is no better
        verify_commit(view.state, CommitMessage.decode(left), trust=world.trust(), now=world.now)


def test_commit_for_another_case_is_rejected(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    broker_a, _, _ = open_case(world, alice, [])
    broker_b, _, _ = open_case(world, alice, [])
    view_a = _view(world, broker_a, alice)
    view_b = _view(world, broker_b, alice)
    body = commit_change(world, view_b, alice, [(alice, "owner")])
    with pytest.raises(ChainError):
        verify_commit(view_a.state, CommitMessage.decode(body), trust=world.trust(), now=world.now)


def test_bot_cannot_own_a_case(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bot = world.device("ke-kra", "scanner", role="bot", scopes=("alert",))
    with pytest.raises(NotAllowedError):
        open_case(world, alice, [(bot, "owner")])


def test_adding_a_revoked_device_is_rejected(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    lost = world.device("tz-tra", "bob")
    world.revoke(lost)
    with pytest.raises(RevokedError):
        open_case(world, alice, [(lost, "member")])


def test_carried_member_whose_certificate_expired_blocks_the_commit(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    view = _view(world, broker, alice)
    assert view.state is not None
    world.now += 400 * 24 * 3600 * 1000
    body, _ = create_commit(
        prev=view.state,
        case_id=view.state.case_id,
        committer=alice.keys,
        roster=[(view.state.certs[alice.id], "owner"), (view.state.certs[bob.id], "member")],
        policy=view.state.policy,
        log=view.position(),
        info=None,
        now=world.now,
        rng=world.rng,
    )
    with pytest.raises(ExpiredError):
        verify_commit(view.state, CommitMessage.decode(body), trust=world.trust(), now=world.now)


def test_altered_or_swapped_wraps_are_rejected(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    message = CommitMessage.decode(broker.entries[0][1])
    trust = world.trust()
    swapped = dataclasses.replace(message, wraps=(message.wraps[1], message.wraps[0]))
    with pytest.raises(MalformedError):
        verify_commit(None, swapped, trust=trust, now=world.now)
    flipped = bytearray(message.wraps[1].ciphertext)
    flipped[-1] ^= 1
    altered = dataclasses.replace(
        message, wraps=(message.wraps[0], Wrap(device_id=bob.id, ciphertext=bytes(flipped)))
    )
    with pytest.raises(MalformedError):
        verify_commit(None, altered, trust=trust, now=world.now)


def test_wrap_retargeted_to_another_device_does_not_open(world: World) -> None:
    """HPKE info binds the recipient: Alice's wrap relabelled for Bob fails for Bob."""
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, state, _ = open_case(world, alice, [(bob, "member")])
    message = CommitMessage.decode(broker.entries[0][1])
    stolen = Wrap(device_id=bob.id, ciphertext=message.wraps[0].ciphertext)
    relabelled = dataclasses.replace(message, wraps=(message.wraps[0], stolen))
    with pytest.raises(DecryptionError):
        open_epoch_secret(state, relabelled, bob.keys)


def test_removed_member_cannot_derive_the_next_epoch(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    view_a = _view(world, broker, alice)
    view_b = _view(world, broker, bob)
    broker.append("commit", commit_change(world, view_a, alice, [(alice, "owner")]))
    broker.feed(view_a)
    broker.feed(view_b)
    message = CommitMessage.decode(broker.entries[-1][1])
    assert view_b.state is not None and view_b.state.epoch == 1
    with pytest.raises(NotMemberError):
        open_epoch_secret(view_b.state, message, bob.keys)
    with pytest.raises(NotPermittedError):
        view_b.seal(content_type="note", content=b"{}", now=world.now, nonce=bytes(24))


def test_commit_signature_is_not_valid_under_another_label(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    broker, _, _ = open_case(world, alice, [])
    message = CommitMessage.decode(broker.entries[0][1])
    resigned = dataclasses.replace(message, signature=alice.keys.sign("update", message.tbs))
    with pytest.raises(BadSignatureError):
        verify_commit(None, resigned, trust=world.trust(), now=world.now)


def test_genesis_must_be_epoch_zero_at_the_log_anchor(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    case_id = world.rng(16)
    trust = world.trust()
    body, _ = create_commit(
        prev=None,
        case_id=case_id,
        committer=alice.keys,
        roster=[(trust.verify_cert(alice.cert, at=world.now), "owner")],
        policy=world.policy(),
        log=LogPosition(count=3, head=log_anchor(case_id)),
        info=None,
        now=world.now,
        rng=world.rng,
    )
    with pytest.raises(ChainError):
        verify_commit(None, CommitMessage.decode(body), trust=trust, now=world.now)


def test_roster_needs_an_owner_and_unique_devices(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    view = _view(world, broker, alice)
    with pytest.raises(MalformedError):
        verify_commit(
            view.state,
            CommitMessage.decode(commit_change(world, view, alice, [(bob, "member")])),
            trust=world.trust(),
            now=world.now,
        )
    with pytest.raises(MalformedError):
        verify_commit(
            view.state,
            CommitMessage.decode(commit_change(world, view, alice, [(alice, "owner"), (alice, "member")])),
            trust=world.trust(),
            now=world.now,
        )


def test_commit_does_not_leak_the_case_title_to_the_broker(world: World) -> None:
    alice = world.device("ke-kra", "alice")
    broker, _, _ = open_case(world, alice, [])
    assert b"Kilimanjaro" not in broker.entries[0][1]
    assert b"Kilimanjaro" not in broker.receipts[0]
