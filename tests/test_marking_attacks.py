"""Marking attacks: a member running a modified client is caught by everyone else's (§6.7).

The broker cannot read content, so each attack here is made by a real
``Client`` whose own sender check is switched off on that one instance, and
it is the other agencies' unmodified clients, syncing from a real broker on
loopback, that are under test: each must mark the update as a violation
(signed, so attributable) instead of presenting it as valid content.
"""

from __future__ import annotations

import pytest
from caseline.client.client import Client
from caseline.client.core import CaseEvent
from caseline.schemas.handling import (
    V_DOWNGRADE,
    V_RELEASE_FORBIDDEN,
    V_SHARED_RED,
    V_SHARED_RESTRICTED,
)

from tests.support.agencies import PARTNERS, Network
from tests.support.marks import CLEAR, H3_RED, modified


@pytest.fixture
def net_agencies() -> tuple[tuple[str, str, str], ...]:
    return (*PARTNERS, ("ug-ura", "Uganda Revenue Authority", "UG"))


async def _event(client: Client, case_id: bytes, update_id: bytes) -> CaseEvent:
    await client.sync(case_id)
    return next(e for e in await client.history(case_id) if e.update_id == update_id and e.kind == "update")


async def test_a_downgrade_in_a_reply_is_marked_by_every_other_member(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    kato = await net.device("ug-ura", "kato")
    case_id = await alice.create_case(
        title="Op", members=[("tz-tra", "juma"), ("ug-ura", "kato")], handling="H0", tlp="CLEAR"
    )
    secret = await alice.post_note(case_id, "informant: the blue lorry", markings=H3_RED)
    await juma.sync(case_id)
    reply = await modified(juma).post_reply(
        case_id, in_reply_to=secret.update_id, text="the blue lorry, says KRA", markings=CLEAR
    )
    for reader in (alice, kato):
        event = await _event(reader, case_id, reply.update_id)
        assert event.violation is not None, reader
        assert event.violation.rule == V_DOWNGRADE
        assert "H3/TLP:RED" in event.violation.message
        assert event.author is not None and event.author.name == "tz-tra:juma"
    # What it leaked is held to the markings it should have carried: a reply to it inherits them.
    book = kato._ledger().case_marks(case_id).book
    held = book.markings(reply.update_id)
    assert held is not None and held.tlp == "RED"


async def test_h2_shared_with_a_new_member_is_marked_by_the_latecomer_and_the_others(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    kato = await net.device("ug-ura", "kato")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")], handling="H0", tlp="CLEAR")
    h2 = await juma.post_note(case_id, "TRA only", markings={"handling": "H2", "tlp": "AMBER"})
    plain = await juma.post_note(case_id, "anyone", markings=CLEAR)
    await modified(alice).add_members(case_id, [("ug-ura", "kato", "member")], share_history=True)

    await kato.sync(case_id)
    history = await kato.history(case_id)
    leaked = next(e for e in history if e.update_id == h2.update_id)
    assert leaked.violation is not None and leaked.violation.rule == V_SHARED_RESTRICTED
    assert "it is H2" in leaked.violation.message
    fine = next(e for e in history if e.update_id == plain.update_id)
    assert fine.violation is None and fine.content is not None
    share = next(e for e in history if e.content_type == "history-share")
    assert share.violation is not None and share.author is not None and share.author.name == "ke-kra:alice"

    await juma.sync(case_id)  # the provider sees who passed its H2 update on
    share = next(e for e in await juma.history(case_id) if e.content_type == "history-share")
    assert share.violation is not None and share.violation.rule == V_SHARED_RESTRICTED


async def test_tlp_red_history_handed_to_a_latecomer_is_marked(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    kato = await net.device("ug-ura", "kato")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")], handling="H0", tlp="CLEAR")
    red = await alice.post_note(case_id, "red", markings={"handling": "H0", "tlp": "RED"})
    # Even a release to disseminate does not make TLP:RED shareable with a latecomer.
    await alice.release(case_id, red.update_id, purpose="disseminate")
    await modified(alice).add_members(case_id, [("ug-ura", "kato", "member")], share_history=True)

    await kato.sync(case_id)
    leaked = next(e for e in await kato.history(case_id) if e.update_id == red.update_id)
    assert leaked.violation is not None and leaked.violation.rule == V_SHARED_RED
    await juma.sync(case_id)
    share = next(e for e in await juma.history(case_id) if e.content_type == "history-share")
    assert share.violation is not None and share.violation.rule == V_SHARED_RED


async def test_a_release_forged_by_another_agency_is_marked_and_does_not_count(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    kato = await net.device("ug-ura", "kato")
    # The forger has all a release needs but the agency: a supervisor, even named like the author.
    forger = await net.device("ke-kra", "juma", role="supervisor")
    case_id = await alice.create_case(
        title="Op",
        members=[("tz-tra", "juma"), ("ug-ura", "kato"), ("ke-kra", "juma")],
        handling="H0",
        tlp="CLEAR",
    )
    h1 = await juma.post_note(case_id, "not for court", markings={"handling": "H1", "tlp": "AMBER"})
    await forger.sync(case_id)
    forged = await modified(forger).release(case_id, h1.update_id, purpose="evidence")
    for reader in (juma, kato, alice):
        event = await _event(reader, case_id, forged.update_id)
        assert event.violation is not None and event.violation.rule == V_RELEASE_FORBIDDEN
        assert "ke-kra:juma released an update of tz-tra:juma" in event.violation.message
        book = reader._ledger().case_marks(case_id).book
        assert book.releases(h1.update_id) == ()
        assert not book.may_export(h1.update_id, agency_id="ke-kra", at=forged.receipt_time).allowed


async def test_a_release_by_a_non_supervisor_of_the_right_agency_is_marked_a_supervisors_counts(
    net: Network,
) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    neema = await net.device("tz-tra", "neema")  # an officer of TRA, not juma
    chief = await net.device("tz-tra", "chief", role="supervisor")
    case_id = await alice.create_case(
        title="Op",
        members=[("tz-tra", "juma"), ("tz-tra", "neema"), ("tz-tra", "chief")],
        handling="H0",
        tlp="CLEAR",
    )
    h2 = await juma.post_note(case_id, "TRA's", markings={"handling": "H2", "tlp": "AMBER"})
    await neema.sync(case_id)
    bad = await modified(neema).release(case_id, h2.update_id, purpose="disseminate")
    event = await _event(alice, case_id, bad.update_id)
    assert event.violation is not None and event.violation.rule == V_RELEASE_FORBIDDEN
    book = alice._ledger().case_marks(case_id).book
    assert book.releases(h2.update_id) == ()

    await chief.sync(case_id)
    good = await chief.release(case_id, h2.update_id, purpose="disseminate")  # an unmodified client
    event = await _event(alice, case_id, good.update_id)
    assert event.violation is None
    assert [r.release_id for r in book.releases(h2.update_id)] == [good.update_id]
    assert book.may_share(h2.update_id, agency_ids={"ug-ura"}, at=good.receipt_time).allowed
