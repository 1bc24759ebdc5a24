"""The request fold (client/workflow.py, PROTOCOL.md §6.8), driven with plain verified events."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from caseline.client.core import Author, CaseEvent, Member
from caseline.client.reminders import OVERDUE, Threshold, next_wake, parse_before, plan
from caseline.client.workflow import RequestRow, Workflow, fold
from caseline.schemas.handling import format_time, parse_time
from hypothesis import given
from hypothesis import strategies as st

CASE = b"\x01" * 32
T0 = parse_time("2026-12-01T09:00:00Z")
HOUR = 3_600_000
DAY = 24 * HOUR
_seq = itertools.count(1)
_ids = itertools.count(1)

KRA = Author("ke-kra", "amina", b"k" * 16, "officer")
TRA = Author("tz-tra", "juma", b"t" * 16, "officer")
URA = Author("ug-ura", "okello", b"u" * 16, "officer")


def commit(*authors: Author) -> CaseEvent:
    members = tuple(Member(a, "owner") for a in authors)
    return CaseEvent(CASE, next(_seq), "commit", 0, authors[0], T0, members=members)


def update(author: Author, content_type: str, time: int = T0, **fields: Any) -> CaseEvent:
    content = {"markings": {"handling": "H0", "tlp": "GREEN"}, "lang": "en", **fields}
    return CaseEvent(
        CASE,
        next(_seq),
        "update",
        0,
        author,
        time,
        readable=True,
        content_type=content_type,
        content=content,
        update_id=next(_ids).to_bytes(32, "big"),
    )


def request(author: Author = KRA, **fields: Any) -> CaseEvent:
    return update(author, "request", subject="Vehicle records", category="urgent-indirect", **fields)


def ack(author: Author, of: CaseEvent, state: str, time: int = T0, **fields: Any) -> CaseEvent:
    assert of.update_id is not None
    return update(author, "ack", time, of=of.update_id.hex(), state=state, **fields)


def test_a_request_gets_its_article_5_deadline_in_calendar_days_from_the_trusted_time() -> None:
    roster = commit(KRA, TRA, URA)
    req = request()
    rows = fold(CASE, [roster, req], times={req.seq: T0 + HOUR})
    (row,) = rows
    assert row.to_agencies == ("tz-tra", "ug-ura")  # every agency of the roster but the sender's
    assert row.from_agency == "ke-kra" and row.from_user == "amina"
    assert row.category == "urgent-indirect" and row.subject == "Vehicle records"
    assert row.start == T0 + HOUR and row.deadline == T0 + HOUR + 3 * DAY
    assert row.state == "open" and row.overdue(row.deadline + 1) and not row.overdue(row.deadline)


def test_legacy_urgency_and_the_wished_deadline() -> None:
    req = update(
        KRA, "request", subject="s", urgency="urgent", deadline="2026-12-01T12:00:00Z", to=["tz-tra"]
    )
    (row,) = fold(CASE, [commit(KRA, TRA), req])
    assert row.category == "urgent-direct" and row.deadline == T0 + 8 * HOUR
    assert row.wished == parse_time("2026-12-01T12:00:00Z")


def test_acks_move_the_request_through_its_states() -> None:
    req = request(to=["tz-tra"])
    flow = Workflow(CASE)
    flow.add(commit(KRA, TRA))
    flow.add(req)
    flow.add(ack(TRA, req, "received"), T0 + HOUR)
    row = flow.add(
        ack(
            TRA,
            req,
            "extended",
            deadline=format_time(T0 + 5 * DAY),
            extension_reason="judicial-authorisation",
            note="court order pending",
        ),
        T0 + 2 * HOUR,
    )
    assert row is not None and row.state == "extended" and row.deadline == T0 + 5 * DAY
    assert row.extensions == 1 and row.extension_reason == "judicial-authorisation"
    answer = update(TRA, "reply", in_reply_to=req.update_id.hex() if req.update_id else "", text="records")
    flow.add(answer, T0 + 4 * DAY)
    assert answer.update_id is not None
    row = flow.add(ack(TRA, req, "answered", answer=answer.update_id.hex()), T0 + 4 * DAY)
    assert row is not None and row.state == "answered" and row.answer_id == answer.update_id
    assert row.first_ack_at == T0 + HOUR and row.answered_at == T0 + 4 * DAY and row.on_time
    assert row.closed_by == "tz-tra" and not row.overdue(T0 + 100 * DAY)


def test_a_refusal_carries_its_article_6_ground_and_closes() -> None:
    req = request(to=["tz-tra"])
    (row,) = fold(CASE, [commit(KRA, TRA), req, ack(TRA, req, "refused", ground="national-security")])
    assert row.state == "refused" and row.ground == "national-security" and row.refused_at == T0


def test_a_reply_with_an_outcome_closes_the_request() -> None:
    req = request(to=["tz-tra"])
    assert req.update_id is not None
    reply = update(TRA, "reply", in_reply_to=req.update_id.hex(), text="here", outcome="answered")
    (row,) = fold(CASE, [commit(KRA, TRA), req, reply])
    assert row.state == "answered" and row.answer_id == reply.update_id


def test_legacy_ack_levels_map_to_states() -> None:
    req = request(to=["tz-tra"])
    assert req.update_id is not None
    legacy = update(TRA, "ack", of=req.update_id.hex(), level="actioned")
    (row,) = fold(CASE, [commit(KRA, TRA), req, legacy])
    assert row.state == "in-progress"


LATER = {"deadline": format_time(T0 + 30 * DAY), "extension_reason": "judicial-authorisation"}


def test_acks_from_an_agency_not_asked_or_from_the_requester_change_nothing() -> None:
    """Attack: a third agency, or the requester itself, "answers" or "extends" a request."""
    req = request(to=["tz-tra"])
    forged = [
        ack(URA, req, "answered", answer=(b"\x09" * 32).hex()),
        ack(KRA, req, "answered", answer=(b"\x09" * 32).hex()),
        ack(KRA, req, "refused", ground="not-available"),
        ack(
            URA,
            req,
            "extended",
            deadline=format_time(T0 + 30 * DAY),
            extension_reason="judicial-authorisation",
        ),
    ]
    (row,) = fold(CASE, [commit(KRA, TRA, URA), req, *forged])
    assert row.state == "open" and row.deadline == T0 + 3 * DAY and row.first_ack_at is None


def test_the_requester_naming_itself_in_to_does_not_let_it_close_its_request() -> None:
    req = request(to=["ke-kra", "tz-tra"])
    (row,) = fold(CASE, [commit(KRA, TRA), req, ack(KRA, req, "answered", answer=(b"\x09" * 32).hex())])
    assert row.to_agencies == ("tz-tra",) and row.state == "open"


class _Flagged:
    """An event as the marking judge hands it over once it found a violation in it."""

    def __init__(self, event: CaseEvent) -> None:
        self._event = event
        self.violation = "downgrade"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._event, name)


def test_an_event_marked_as_a_violation_or_unreadable_is_not_folded() -> None:
    req = request(to=["tz-tra"])
    bad: Any = _Flagged(ack(TRA, req, "refused", ground="not-available"))
    unreadable = CaseEvent(CASE, next(_seq), "update", 0, TRA, T0, readable=False)
    (row,) = fold(CASE, [commit(KRA, TRA), req, unreadable, bad])
    assert row.state == "open"


def test_a_closed_request_stays_closed() -> None:
    req = request(to=["tz-tra"])
    (row,) = fold(
        CASE,
        [commit(KRA, TRA), req, ack(TRA, req, "refused", ground="not-available"), ack(TRA, req, "received")],
    )
    assert row.state == "refused"


STATES = st.sampled_from(["received", "in-progress", "extended", "answered", "refused"])


@given(st.lists(st.tuples(STATES, st.integers(-10, 40), st.sampled_from([KRA, TRA, URA])), max_size=12))
def test_no_sequence_of_acks_moves_a_deadline_earlier_and_folding_twice_counts_once(
    acks: list[tuple[str, int, Author]],
) -> None:
    req = request(to=["tz-tra"])
    events = [commit(KRA, TRA, URA), req]
    for state, days, author in acks:
        extra: dict[str, Any] = {}
        if state == "extended":
            extra = {"deadline": format_time(T0 + days * DAY), "extension_reason": "judicial-authorisation"}
        elif state == "answered":
            extra = {"answer": (b"\x07" * 32).hex()}
        elif state == "refused":
            extra = {"ground": "not-available"}
        events.append(ack(author, req, state, **extra))
    flow = Workflow(CASE)
    last = T0 + 3 * DAY
    for event in events:
        flow.add(event)
        for row in flow.rows():
            assert row.deadline >= last
            last = row.deadline
    once = flow.rows()
    for event in events:  # a replay, or a history share handing the same updates over again
        flow.add(event)
    assert flow.rows() == once
    assert Workflow.restore(CASE, flow.state()).rows() == once


# ---------------------------------------------------------------- the reminder plan (client/reminders.py)
def _open_row(deadline: int) -> RequestRow:
    req = request(to=["tz-tra"])
    (row,) = fold(CASE, [commit(KRA, TRA), req])
    return dataclasses.replace(row, deadline=deadline)


def test_a_reminder_at_each_threshold_then_once_overdue_and_never_twice() -> None:
    row = _open_row(T0 + DAY)
    marks = [parse_before("1d"), parse_before("2h")]
    done: set[str] = set()
    seen: list[str] = []
    wake: int | None = T0 - HOUR
    while wake is not None:  # the long-running bot's loop, with the clock handed in
        todo, settled = plan([row], marks, done=done, now=wake)
        done |= set(settled)
        seen += [label for _, label in todo]
        assert plan([row], marks, done=done, now=wake) == ([], [])  # a restart gives nothing again
        wake = next_wake([row], marks, done=done, now=wake)
    assert seen == ["1d", "2h", OVERDUE]


def test_a_bot_back_after_several_thresholds_gives_only_the_latest_and_an_extension_rearms() -> None:
    row = _open_row(T0 + DAY)
    marks = [parse_before("1d"), parse_before("2h")]
    todo, settled = plan([row], marks, done=set(), now=T0 + DAY - HOUR)
    assert [label for _, label in todo] == ["2h"] and len(settled) == 2
    extended = dataclasses.replace(row, deadline=T0 + 3 * DAY, extensions=1)
    todo, _ = plan([extended], marks, done=set(settled), now=T0 + 2 * DAY)
    assert [label for _, label in todo] == ["1d"]
    closed = dataclasses.replace(row, state="answered")
    assert plan([closed], marks, done=set(), now=T0 + 9 * DAY) == ([], [])
    assert next_wake([closed], marks, done=set(), now=T0) is None


def test_reminder_durations_are_checked() -> None:
    assert parse_before("90m") == Threshold(90 * 60_000, "90m")
    for bad in ("", "2", "h", "-2h", "0h", "2w"):
        with pytest.raises(ValueError, match="duration"):
            parse_before(bad)
