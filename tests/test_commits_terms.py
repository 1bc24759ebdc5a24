"""Membership terms and joint approval (PROTOCOL.md §5.5), on the pure commit core."""

from __future__ import annotations

import pytest
from caseline.crypto.caselog import CaseView
from caseline.crypto.commits import EACH_AGENCY_OWNER, sign_approval, verify_commit
from caseline.crypto.evidence import export_evidence, verify_evidence
from caseline.crypto.ratchet import Chain
from caseline.schemas.errors import ExpiredError, NotAllowedError, NotPermittedError
from caseline.schemas.wire import Commit, CommitMessage

from tests.support.world import Broker, Device, World, commit_change, note, open_case, post

DAY = 24 * 3600 * 1000


@pytest.fixture
def world() -> World:
    w = World("terms")
    for agency in ("ke-kra", "tz-tra", "ug-ura", "rw-rra"):
        w.agency(agency)
    return w


def _view(world: World, broker: Broker, me: Device | None = None) -> CaseView:
    view = CaseView(trust=world.trust(), me=None if me is None else me.keys)
    broker.feed(view)
    return view


def _verify(world: World, view: CaseView, body: bytes) -> object:
    assert view.state is not None
    return verify_commit(view.state, CommitMessage.decode(body), trust=world.trust(), now=world.now)


def test_term_is_signed_into_the_commit_and_read_back(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    _, state, _ = open_case(world, alice, [(bob, "member")], terms={bob.id: world.now + DAY})
    assert state.commit.version == 3
    assert state.expires(bob.id) == world.now + DAY and state.expires(alice.id) is None
    assert not state.expired(bob.id, at=world.now) and state.expired(bob.id, at=world.now + DAY)
    assert Commit.decode(state.commit_tbs) == state.commit


def test_case_without_terms_keeps_its_older_form(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    _, state, _ = open_case(world, alice, [(bob, "member")])
    assert state.commit.version == 1 and state.admission == "none"


def test_commit_keeping_an_expired_member_without_renewal_is_invalid(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")], terms={bob.id: world.now + DAY})
    view = _view(world, broker, alice)
    world.now += DAY
    roster = [(alice, "owner"), (bob, "member")]
    with pytest.raises(ExpiredError):  # the old term carried as it was
        _verify(world, view, commit_change(world, view, alice, roster, terms={bob.id: world.now - 1}))
    with pytest.raises(ExpiredError):  # the term dropped: an unlimited stay is not a renewal
        _verify(world, view, commit_change(world, view, alice, roster))
    renewed = _verify(world, view, commit_change(world, view, alice, roster, terms={bob.id: world.now + DAY}))
    assert renewed.expires(bob.id) == world.now + DAY  # type: ignore[attr-defined]
    dropped = _verify(world, view, commit_change(world, view, alice, [(alice, "owner")]))
    assert bob.id not in dropped.members  # type: ignore[attr-defined]


def test_term_must_name_a_roster_device(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [], admission="none")
    view = _view(world, broker, alice)
    body = commit_change(world, view, alice, [(alice, "owner")], terms={bob.id: world.now + DAY})
    assert CommitMessage.decode(body)  # create_commit leaves such a term out ...
    assert _verify(world, view, body).commit.terms == ()  # type: ignore[attr-defined]


def test_expired_members_updates_are_withheld(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")], terms={bob.id: world.now + DAY})
    bobs = _view(world, broker, bob)
    post(world, bobs, broker, note("before"))
    world.now += DAY
    # A modified client dates its record before the expiry; the broker's receipt says when it came.
    sealed = bobs.seal(content_type="note", content=note("after"), now=world.now - 1, nonce=world.rng(24))
    broker.append("update", sealed.envelope)
    alices = CaseView(trust=world.trust(), me=alice.keys)
    applied = broker.feed(alices)
    assert applied[1].opened is not None and applied[1].voided_by is None
    assert applied[2].opened is None and applied[2].voided_by == bob.id


def test_honest_client_does_not_post_while_an_expired_member_can_read(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    carol = world.device("ke-kra", "carol")
    broker, _, _ = open_case(
        world, alice, [(bob, "member"), (carol, "member")], terms={bob.id: world.now + DAY}
    )
    world.now += DAY
    with pytest.raises(NotPermittedError, match="ask an owner"):
        _view(world, broker, carol).prepare(
            content_type="note", content=note(), now=world.now, nonce=bytes(24)
        )
    with pytest.raises(NotPermittedError, match="caseline case renew"):
        _view(world, broker, alice).prepare(
            content_type="note", content=note(), now=world.now, nonce=bytes(24)
        )
    with pytest.raises(NotPermittedError, match="has expired"):
        _view(world, broker, bob).prepare(content_type="note", content=note(), now=world.now, nonce=bytes(24))


def _approved_case(world: World) -> tuple[Broker, CaseView, Device, Device, Device]:
    """KRA owns a case with a TRA owner; the rule needs each agency's owner for a third agency."""
    alice, bob, uma = (
        world.device("ke-kra", "alice"),
        world.device("tz-tra", "bob"),
        world.device("ug-ura", "uma"),
    )
    broker, _, _ = open_case(world, alice, [(bob, "owner")], admission=EACH_AGENCY_OWNER)
    return broker, _view(world, broker, alice), alice, bob, uma


def test_third_agency_needs_each_other_agencys_owner(world: World) -> None:
    _, view, alice, bob, uma = _approved_case(world)
    roster = [(alice, "owner"), (bob, "owner"), (uma, "member")]
    with pytest.raises(NotAllowedError, match="missing: tz-tra"):
        _verify(world, view, commit_change(world, view, alice, roster))
    assert view.state is not None
    approval = sign_approval(bob.keys, view.state, device=world.verified(uma), role="member", expires=None)
    state = _verify(world, view, commit_change(world, view, alice, roster, approvals=[approval]))
    assert uma.id in state.members  # type: ignore[attr-defined]


def test_a_second_device_of_an_agency_already_in_needs_no_approval(world: World) -> None:
    _b, view, alice, bob, _ = _approved_case(world)
    carol = world.device("ke-kra", "carol")
    _verify(
        world, view, commit_change(world, view, alice, [(alice, "owner"), (bob, "owner"), (carol, "member")])
    )


def test_approval_for_another_entry_epoch_or_by_a_non_owner_is_refused(world: World) -> None:
    broker, view, alice, bob, uma = _approved_case(world)
    assert view.state is not None
    genesis = view.state
    roster = [(alice, "owner"), (bob, "owner"), (uma, "member")]
    eve = world.device("ug-ura", "eve")
    cases = {
        "another device": sign_approval(
            bob.keys, genesis, device=world.verified(eve), role="member", expires=None
        ),
        "a higher role": sign_approval(
            bob.keys, genesis, device=world.verified(uma), role="owner", expires=None
        ),
        "a non-owner": sign_approval(
            uma.keys, genesis, device=world.verified(uma), role="member", expires=None
        ),
    }
    for approval in cases.values():
        body = commit_change(world, view, alice, roster, approvals=[approval])
        with pytest.raises(NotAllowedError):
            _verify(world, view, body)
    # Replayed from another epoch: signed against genesis, used after a later commit.
    old = sign_approval(bob.keys, genesis, device=world.verified(uma), role="member", expires=None)
    broker.append("commit", commit_change(world, view, alice, [(alice, "owner"), (bob, "owner")]))
    view = _view(world, broker, alice)
    with pytest.raises(NotAllowedError, match="another case or epoch"):
        _verify(world, view, commit_change(world, view, alice, roster, approvals=[old]))


def test_approval_rule_cannot_be_turned_off(world: World) -> None:
    _b, view, alice, bob, _ = _approved_case(world)
    roster = [(alice, "owner"), (bob, "owner")]
    with pytest.raises(NotAllowedError, match="cannot be turned off"):
        _verify(world, view, commit_change(world, view, alice, roster, admission="none"))


def test_approval_rule_can_be_turned_on_by_a_commit(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "owner")])
    view = _view(world, broker, alice)
    body = commit_change(world, view, alice, [(alice, "owner"), (bob, "owner")], admission=EACH_AGENCY_OWNER)
    assert _verify(world, view, body).admission == EACH_AGENCY_OWNER  # type: ignore[attr-defined]


def test_evidence_disclosing_an_expired_members_update_does_not_verify(world: World) -> None:
    alice, bob = world.device("ke-kra", "alice"), world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")], terms={bob.id: world.now + DAY})
    bobs = _view(world, broker, bob)
    before = post(world, bobs, broker, note("before"))
    world.now += DAY
    bobs._check_may_post = lambda *_a, **_k: None  # type: ignore[method-assign]  # a modified client
    after = post(world, bobs, broker, note("after"))
    alices = _view(world, broker, alice)
    pins = {a: r.fingerprint for a, r in world.roots.items()}
    honest = export_evidence(
        alices, exporter=alice.keys, envelopes={1: before}, receipt=broker.receipts[-1], now=world.now
    )
    assert [r.update.record.sender for r in verify_evidence(honest, pinned=pins).records] == [bob.id]
    # Alice's modified client keeps the message key her view withheld, and discloses the update.
    secret = alices._epoch_secret
    assert secret is not None and alices.case_id is not None
    chain = Chain.start(epoch_secret=secret, case_id=alices.case_id, epoch=0, device_id=bob.id)
    alices._message_keys[2] = chain.peek(1)
    forged = export_evidence(
        alices, exporter=alice.keys, envelopes={2: after}, receipt=broker.receipts[-1], now=world.now
    )
    with pytest.raises(ExpiredError, match="membership had ended"):
        verify_evidence(forged, pinned=pins)
