"""The reciprocity figures on known data: percentiles, timeliness, refusals, filters, both directions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from caseline.client.reciprocity import ALL, RECEIVED, SENT, Figures, percentile, reciprocity
from hypothesis import given, settings
from hypothesis import strategies as st

H = 3600 * 1000
DAY = 24 * H
T0 = 1_790_000_000_000
NOW = T0 + 100 * DAY


@dataclasses.dataclass(frozen=True)
class Req:
    from_agency: str
    to_agencies: Sequence[str]
    category: str = "urgent-indirect"
    start: int = T0
    deadline: int = T0 + 3 * DAY
    answered_at: int | None = None
    refused_at: int | None = None
    ground: str | None = None
    closed_by: str | None = None


def answered(
    after: int,
    *,
    to: str = "tz-tra",
    frm: str = "ke-kra",
    category: str = "urgent-indirect",
    start: int = T0,
    deadline: int | None = None,
) -> Req:
    """A request from ``frm`` to ``to`` answered ``after`` ms from its start (deadline: 3 days)."""
    due = start + 3 * DAY if deadline is None else deadline
    return Req(frm, (to,), category=category, start=start, deadline=due, answered_at=start + after)


def one(figures: list[Figures], partner: str, category: str, direction: str) -> Figures:
    (found,) = [f for f in figures if (f.partner, f.category, f.direction) == (partner, category, direction)]
    return found


def test_nearest_rank_percentiles_on_known_data() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2  # the lower middle: always an observed value
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile(list(range(1, 11)), 90) == 9
    assert percentile(list(range(1, 12)), 90) == 10
    assert percentile([7], 90) == 7
    rows = [answered(h * H) for h in (10, 1, 5, 2, 40, 3, 4, 6, 7, 8)]
    f = one(reciprocity(rows, agency="ke-kra", now=NOW), "tz-tra", "urgent-indirect", SENT)
    assert (f.requests, f.answered) == (10, 10)
    assert f.median_seconds == 5 * 3600
    assert f.p90_seconds == 10 * 3600


def test_on_time_counts_extensions_and_article5_does_not() -> None:
    rows = [
        answered(1 * DAY),  # in time either way
        answered(5 * DAY, deadline=T0 + 6 * DAY),  # extended to 6 days: on time, but past Article 5
        answered(4 * DAY),  # late either way
        Req("ke-kra", ("tz-tra",), refused_at=T0 + DAY, ground="not-available"),  # not due: refused
    ]
    f = one(reciprocity(rows, agency="ke-kra", now=NOW), "tz-tra", "urgent-indirect", SENT)
    assert f.on_time == 2 / 3
    assert f.within_article5 == 1 / 3
    assert (f.answered, f.refused, f.open, f.overdue) == (3, 1, 0, 0)


def test_open_requests_count_as_due_only_once_overdue() -> None:
    rows = [
        answered(1 * DAY),
        Req("ke-kra", ("tz-tra",)),  # open, deadline T0+3d: overdue at NOW
        Req("ke-kra", ("tz-tra",), start=NOW - H, deadline=NOW + 2 * DAY),  # open, not yet due
        Req("ke-kra", ("tz-tra",), start=NOW - 4 * DAY, deadline=NOW + DAY),  # extended: past Article 5 only
    ]
    f = one(reciprocity(rows, agency="ke-kra", now=NOW), "tz-tra", "urgent-indirect", SENT)
    assert (f.open, f.overdue) == (3, 1)
    assert f.on_time == 1 / 2
    assert f.within_article5 == 1 / 3
    assert f.median_seconds == f.p90_seconds == DAY / 1000


def test_nothing_due_is_none_not_zero() -> None:
    rows = [Req("ke-kra", ("tz-tra",), start=NOW, deadline=NOW + DAY)]
    f = one(reciprocity(rows, agency="ke-kra", now=NOW), "tz-tra", "urgent-indirect", SENT)
    assert f.on_time is None and f.within_article5 is None and f.median_seconds is None


def test_refusals_by_ground() -> None:
    rows = [
        Req("tz-tra", ("ke-kra",), refused_at=T0 + H, ground="not-available"),
        Req("tz-tra", ("ke-kra",), refused_at=T0 + H, ground="national-security"),
        Req("tz-tra", ("ke-kra",), refused_at=T0 + H, ground="not-available"),
        Req("tz-tra", ("ke-kra",), category="other", refused_at=T0 + H, ground="minor-offence"),
    ]
    figures = reciprocity(rows, agency="ke-kra", now=NOW)
    f = one(figures, "tz-tra", "urgent-indirect", RECEIVED)
    assert f.refusals == {"national-security": 1, "not-available": 2}
    assert f.refused == 3
    total = one(figures, "tz-tra", ALL, RECEIVED)
    assert total.refusals == {"minor-offence": 1, "national-security": 1, "not-available": 2}
    assert total.requests == 4


def test_both_directions_and_a_total_per_partner() -> None:
    rows = [
        answered(2 * H),  # I asked TRA; they answered in 2 h
        answered(30 * H, frm="tz-tra", to="ke-kra", category="other"),  # TRA asked me; I took 30 h
        answered(6 * H, frm="tz-tra", to="ke-kra"),
        answered(H, frm="ug-ura", to="tz-tra"),  # between two others: not mine
    ]
    figures = reciprocity(rows, agency="ke-kra", now=NOW)
    assert {f.partner for f in figures} == {"tz-tra"}
    assert one(figures, "tz-tra", "urgent-indirect", SENT).median_seconds == 2 * 3600
    assert one(figures, "tz-tra", "other", RECEIVED).median_seconds == 30 * 3600
    total = one(figures, "tz-tra", ALL, RECEIVED)
    assert (total.requests, total.median_seconds, total.p90_seconds) == (2, 6 * 3600, 30 * 3600)
    assert [(f.direction, f.category) for f in figures] == [
        (SENT, "urgent-indirect"),
        (SENT, ALL),
        (RECEIVED, "urgent-indirect"),
        (RECEIVED, "other"),
        (RECEIVED, ALL),
    ]


def test_a_request_to_two_partners_counts_for_each_until_one_closes_it() -> None:
    asked = ("tz-tra", "ug-ura")
    rows = [
        Req("ke-kra", asked),  # open: both owe it
        Req("ke-kra", asked, answered_at=T0 + H, closed_by="ug-ura"),  # URA answered: theirs only
        Req("tz-tra", ("ke-kra", "ug-ura"), answered_at=T0 + H, closed_by="ug-ura"),  # not mine to answer
    ]
    figures = reciprocity(rows, agency="ke-kra", now=T0 + H)
    assert one(figures, "tz-tra", ALL, SENT).requests == 1
    assert one(figures, "tz-tra", ALL, SENT).answered == 0
    assert (one(figures, "ug-ura", ALL, SENT).requests, one(figures, "ug-ura", ALL, SENT).answered) == (2, 1)
    assert not [f for f in figures if f.direction == RECEIVED]


def test_partner_and_date_filters() -> None:
    rows = [
        answered(H, start=T0 - DAY),  # before since
        answered(2 * H, start=T0),  # the first kept (since is inclusive)
        answered(3 * H, start=T0 + DAY),
        answered(4 * H, start=T0 + 2 * DAY),  # at until: left out
        answered(5 * H, to="ug-ura", start=T0),
    ]
    figures = reciprocity(rows, agency="ke-kra", now=NOW, partners=["tz-tra"], since=T0, until=T0 + 2 * DAY)
    assert {f.partner for f in figures} == {"tz-tra"}
    f = one(figures, "tz-tra", ALL, SENT)
    assert f.requests == 2
    assert (f.median_seconds, f.p90_seconds) == (2 * 3600, 3 * 3600)
    both = reciprocity(rows, agency="ke-kra", now=NOW, partners=["tz-tra", "ug-ura"])
    assert {f.partner for f in both} == {"tz-tra", "ug-ura"}


def test_the_readme_example() -> None:
    rows: list[Req] = [answered(h * H) for h in (2, 30, 80)]
    rows.append(Req("ke-kra", ("tz-tra",), refused_at=T0 + H, ground="not-available"))
    total = one(reciprocity(rows, agency="ke-kra", now=NOW), "tz-tra", ALL, SENT)
    assert (total.median_seconds, total.p90_seconds) == (30 * 3600, 80 * 3600)  # 1d 6h, 3d 8h
    assert total.on_time == 2 / 3 and total.refusals == {"not-available": 1}


CATEGORIES = st.sampled_from(["urgent-direct", "urgent-indirect", "other"])


@st.composite
def requests(draw: st.DrawFn) -> Req:
    mine = draw(st.booleans())
    partner = draw(st.sampled_from(["tz-tra", "ug-ura"]))
    start = T0 + draw(st.integers(0, 200 * DAY))
    deadline = start + draw(st.integers(0, 20 * DAY))
    outcome = draw(st.sampled_from(["answered", "refused", "open"]))
    after = draw(st.integers(0, 30 * DAY))
    return Req(
        "ke-kra" if mine else partner,
        (partner,) if mine else ("ke-kra",),
        category=draw(CATEGORIES),
        start=start,
        deadline=deadline,
        answered_at=start + after if outcome == "answered" else None,
        refused_at=start + after if outcome == "refused" else None,
        ground="not-available" if outcome == "refused" else None,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(requests(), max_size=40), st.integers(0, 300 * DAY))
def test_shares_lie_in_0_1_and_p90_is_at_least_the_median(rows: list[Req], offset: int) -> None:
    figures = reciprocity(rows, agency="ke-kra", now=T0 + offset)
    for f in figures:
        for share in (f.on_time, f.within_article5):
            assert share is None or 0 <= share <= 1
        assert (f.median_seconds is None) == (f.p90_seconds is None) == (f.answered == 0)
        if f.median_seconds is not None:
            assert f.p90_seconds is not None and f.p90_seconds >= f.median_seconds
        assert f.answered + f.refused + f.open == f.requests
        assert sum(f.refusals.values()) == f.refused
        assert f.overdue <= f.open
    totals = [f for f in figures if f.category == ALL]
    for total in totals:
        parts = [f for f in figures if (f.partner, f.direction) == (total.partner, total.direction)]
        assert sum(f.requests for f in parts if f.category != ALL) == total.requests
    assert sum(f.requests for f in totals) == len(rows)
