"""The marking rule book (schemas/handling.py, PROTOCOL.md §6.7), driven with plain updates."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from caseline.client.core_marks import CaseMarks
from caseline.schemas.handling import (
    V_DOWNGRADE,
    V_RELEASE_FORBIDDEN,
    V_SHARED_RED,
    V_SHARED_RESTRICTED,
    HandlingBook,
    Marked,
    Markings,
    format_time,
    parse_time,
)
from hypothesis import given
from hypothesis import strategies as st

T0 = parse_time("2026-12-01T09:00:00Z")
_ids = itertools.count(1)


def update(
    agency: str,
    user: str,
    content_type: str = "note",
    *,
    handling: str = "H0",
    tlp: str = "GREEN",
    codes: list[str] | None = None,
    role: str = "officer",
    time: int = T0,
    **fields: Any,
) -> Marked:
    markings: dict[str, Any] = {"handling": handling, "tlp": tlp}
    if codes is not None:
        markings["restriction_codes"] = codes
    content = {"markings": markings, "lang": "en", **fields}
    return Marked(next(_ids).to_bytes(32, "big"), agency, user, role, content_type, content, time)


def reply_to(parent: Marked, agency: str, user: str, **kw: Any) -> Marked:
    return update(agency, user, "reply", in_reply_to=parent.update_id.hex(), text="answer", **kw)


def release(
    of: Marked, agency: str, user: str, purpose: str, *, role: str = "officer", **fields: Any
) -> Marked:
    return update(agency, user, "release", of=of.update_id.hex(), purpose=purpose, role=role, **fields)


def test_a_reply_below_what_it_answers_is_a_violation_unless_released() -> None:
    book = HandlingBook()
    secret = update(
        "tz-tra", "juma", handling="H3", tlp="RED", codes=["no-evidence"], restrictions="court only"
    )
    assert book.add(secret) is None
    low = reply_to(secret, "ke-kra", "alice", handling="H0", tlp="CLEAR")
    violation = book.add(low)
    assert violation is not None and violation.rule == V_DOWNGRADE
    # What the violator leaked is what a reply to it must carry.
    assert book.markings(low.update_id) == Markings("H3", "RED", frozenset({"no-evidence"}))
    ok = reply_to(
        secret, "ke-kra", "alice", handling="H3", tlp="RED", codes=["no-evidence", "no-third-party"]
    )
    assert book.add(ok) is None
    # Dropping one of the parent's H3 codes is a downgrade too.
    fewer = reply_to(secret, "ke-kra", "alice", handling="H3", tlp="RED", codes=["no-third-party"])
    assert book.judge(fewer) is not None
    # The originator's downgrade release makes the lower reply legitimate.
    assert (
        book.add(release(secret, "tz-tra", "juma", "downgrade", to={"handling": "H1", "tlp": "AMBER"}))
        is None
    )
    assert book.judge(reply_to(secret, "ke-kra", "alice", handling="H1", tlp="AMBER")) is None
    assert book.judge(reply_to(secret, "ke-kra", "alice", handling="H0", tlp="AMBER")) is not None


def test_only_the_author_or_a_supervisor_of_the_agency_may_release() -> None:
    book = HandlingBook()
    note = update("tz-tra", "juma", handling="H1")
    book.add(note)
    for forged in (
        release(note, "ke-kra", "alice", "evidence"),
        release(note, "tz-tra", "neema", "evidence"),
    ):
        violation = book.add(forged)
        assert violation is not None and violation.rule == V_RELEASE_FORBIDDEN
    assert not book.may_export(note.update_id, agency_id="ke-kra", at=T0).allowed
    assert book.add(release(note, "tz-tra", "neema", "evidence", role="supervisor")) is None
    assert book.may_export(note.update_id, agency_id="ke-kra", at=T0).allowed


def test_a_release_serves_its_purpose_recipients_and_time_only() -> None:
    book = HandlingBook()
    h1 = update("tz-tra", "juma", handling="H1")
    h2 = update("tz-tra", "juma", handling="H2")
    book.add(h1)
    book.add(h2)
    book.add(release(h1, "tz-tra", "juma", "disseminate"))
    assert not book.may_export(h1.update_id, agency_id="ke-kra", at=T0).allowed  # wrong purpose
    expires = format_time(T0 + 3600_000)
    book.add(release(h2, "tz-tra", "juma", "evidence", recipients=["ke-kra"], expires=expires))
    assert book.may_export(h2.update_id, agency_id="ke-kra", at=T0).allowed
    assert not book.may_export(h2.update_id, agency_id="ug-ura", at=T0).allowed
    assert not book.may_export(h2.update_id, agency_id="ke-kra", at=T0 + 3600_000).allowed
    # The provider's own agency is never bound by its own markings.
    assert book.may_export(h2.update_id, agency_id="tz-tra", at=T0).allowed


def test_red_is_never_shared_and_h2_only_when_released() -> None:
    book = HandlingBook()
    red = update("tz-tra", "juma", tlp="RED")
    h2 = update("tz-tra", "juma", handling="H2")
    book.add(red)
    book.add(h2)
    violation = book.judge_share(b"s" * 32, [red.update_id], agency_ids={"ug-ura"}, at=T0)
    assert violation is not None and violation.rule == V_SHARED_RED
    violation = book.judge_share(b"s" * 32, [h2.update_id], agency_ids={"ug-ura"}, at=T0)
    assert violation is not None and violation.rule == V_SHARED_RESTRICTED
    assert book.judge_share(b"s" * 32, [h2.update_id], agency_ids={"tz-tra"}, at=T0) is None
    book.add(release(h2, "tz-tra", "juma", "third-party", third_party="ug-ura"))
    assert book.judge_share(b"s" * 32, [h2.update_id], agency_ids={"ug-ura"}, at=T0) is None
    assert book.judge_share(b"s" * 32, [h2.update_id], agency_ids={"rw-rra"}, at=T0) is not None
    book.add(release(red, "tz-tra", "juma", "disseminate"))
    assert not book.may_share(red.update_id, agency_ids={"ug-ura"}, at=T0).allowed
    assert book.may_export(red.update_id, agency_id="ke-kra", at=T0).allowed


def test_an_h3_without_codes_counts_as_carrying_every_code() -> None:
    book = HandlingBook()
    old = update("tz-tra", "juma", handling="H3", restrictions="ask first")
    book.add(old)
    assert not book.may_export(old.update_id, agency_id="ke-kra", at=T0).allowed
    book.add(release(old, "tz-tra", "juma", "evidence"))  # lifts no-evidence, not no-dissemination
    answer = book.may_export(old.update_id, agency_id="ke-kra", at=T0)
    assert not answer.allowed and "no-dissemination" in answer.reason
    book.add(release(old, "tz-tra", "juma", "evidence", lifts=["no-dissemination"]))
    assert book.may_export(old.update_id, agency_id="ke-kra", at=T0).allowed


@given(st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2400, 1, 1)))
def test_times_read_and_written_as_the_standard_library_does(when: dt.datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_time(text) == int(when.timestamp()) * 1000
    assert format_time(parse_time(text)) == text
    assert parse_time(text[:-1] + ".25+01:30") == int(when.timestamp()) * 1000 + 250 - 90 * 60_000


VECTORS = json.loads((Path(__file__).parent / "vectors" / "handling_v4.json").read_text())


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda s: s["name"][:60])
def test_the_published_known_answers_are_reproduced(scenario: dict[str, Any]) -> None:
    """tests/vectors/handling_v4.json is what another team's rule engine is checked against."""
    book = HandlingBook()
    found = {}
    for u in scenario["updates"]:
        item = Marked(
            bytes.fromhex(u["id"]),
            u["agency"],
            u["user"],
            u["role"],
            u["content_type"],
            u["content"],
            parse_time(u["time"]),
        )
        violation = book.add(item)
        if violation is not None:
            found[u["id"]] = violation.rule
    assert found == scenario["violations"]
    for update_id, markings in scenario.get("effective", {}).items():
        assert book.markings(bytes.fromhex(update_id)) == Markings.of(markings)
    for case in scenario.get("export", []):
        answer = book.may_export(
            bytes.fromhex(case["update"]), agency_id=case["agency"], at=parse_time(case["at"])
        )
        assert answer.allowed == case["allowed"], answer.reason
        if case["allowed"]:
            assert [r.hex() for r in answer.releases] == case["releases"]
    for case in scenario.get("share", []):
        answer = book.may_share(
            bytes.fromhex(case["update"]), agency_ids=case["agencies"], at=parse_time(case["at"])
        )
        assert answer.allowed == case["allowed"], answer.reason
        if case["allowed"]:
            assert [r.hex() for r in answer.releases] == case["releases"]


def test_a_kept_book_restored_still_knows_its_violations() -> None:
    """A snapshot's book must not forget a leak: else its author could release it after a restart."""
    marks = CaseMarks()
    secret = update("tz-tra", "juma", handling="H3", tlp="RED", codes=["no-evidence"], restrictions="x")
    leak = reply_to(secret, "ke-kra", "alice", handling="H0", tlp="CLEAR")
    assert marks.add(0, secret) is None
    assert marks.add(1, leak) is not None
    restored = CaseMarks.restore(marks.export())
    violation = restored.book.violation(leak.update_id)
    assert violation is not None and violation.rule == V_DOWNGRADE
    laundering = release(leak, "ke-kra", "alice", "downgrade", to={"handling": "H0", "tlp": "CLEAR"})
    assert restored.add(2, laundering) is None  # its author may post it, but it counts for nothing
    assert restored.book.judge(reply_to(leak, "ke-kra", "alice", handling="H0", tlp="CLEAR")) is not None
    assert not restored.book.may_export(leak.update_id, agency_id="ke-kra", at=T0).allowed
