"""Reciprocity figures: how fast each partner agency answers us, and we them.

Agencies under EU Directive 2023/977 are asked to show that exchanges are
balanced: a partner that takes weeks to answer while expecting answers in
hours is a conversation for the liaison meeting, and the figures have to be
the same whoever computes them.  So this module is pure: it takes request
rows (the client's request index, already built from verified updates), the
reader's agency and a clock, and returns figures per partner agency, per
category and per direction; the CLI only prints them.

Definitions (README, "Reciprocity figures", says the same):

* *sent* rows are my agency's requests to the partner: their figures say how
  fast THEY answer ME.  *received* rows are the partner's requests to my
  agency: how fast I answer THEM.  A request to several agencies counts for
  each partner asked while it is open; once one of them answers or refuses it
  (``closed_by``), it counts for that one only: the others owe nothing more.
* *answer time* is ``answered_at - start``; ``start`` is when the deadline
  began to run (the witnessed time once witnessed, else receipt).
* *median* and *p90* use the nearest-rank percentile: the value at 1-based
  rank ``ceil(p/100 * n)`` of the sorted answer times, so both are always an
  observed answer time (the median of an even count is the lower middle).
* *on time* is the share of *due* requests answered by the deadline in force
  (extensions counted); a request is due once answered, or once its deadline
  has passed unanswered.  Refused requests and open requests not yet past
  their deadline are left out: a refusal is counted by its ground, and an open
  request's timeliness is not known yet.  *within Article 5* is the same share
  against the Article 5 deadline of the category, ignoring extensions.
* *open* counts requests neither answered nor refused; *overdue* those of them
  whose deadline in force has passed at ``now``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from caseline.schemas.content import DEADLINES

SENT: Final = "sent"
RECEIVED: Final = "received"
#: The category of a partner's total row.
ALL: Final = "all"
#: Categories in the order a table lists them, the total last.
CATEGORY_ORDER: Final = (*DEADLINES, ALL)


class Row(Protocol):
    """What the figures read of one request (``client.workflow.RequestRow`` has it)."""

    @property
    def from_agency(self) -> str: ...
    @property
    def to_agencies(self) -> Sequence[str]: ...
    @property
    def category(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def deadline(self) -> int: ...
    @property
    def answered_at(self) -> int | None: ...
    @property
    def refused_at(self) -> int | None: ...
    @property
    def ground(self) -> str | None: ...
    @property
    def closed_by(self) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class Figures:
    """One partner x category x direction; times in seconds, shares in [0, 1] (None: nothing due)."""

    partner: str
    category: str
    direction: str
    requests: int
    answered: int
    refused: int
    open: int
    overdue: int
    median_seconds: float | None
    p90_seconds: float | None
    on_time: float | None
    within_article5: float | None
    refusals: dict[str, int]


def percentile(ordered: Sequence[int], p: float) -> int:
    """The nearest-rank ``p``-th percentile of a non-empty, ascending sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


class _Tally:
    """The running counts of one group; answer times are kept for the percentiles."""

    __slots__ = (
        "due",
        "due5",
        "in_time",
        "in_time5",
        "open",
        "overdue",
        "refusals",
        "refused",
        "requests",
        "times",
    )

    def __init__(self) -> None:
        self.requests = self.refused = self.open = self.overdue = 0
        self.due = self.in_time = self.due5 = self.in_time5 = 0
        self.times: list[int] = []
        self.refusals: dict[str, int] = {}

    def add(self, row: Row, now: int) -> None:
        self.requests += 1
        article5 = row.start + DEADLINES.get(row.category, DEADLINES["other"]) * 1000
        answered = row.answered_at
        if answered is not None:
            self.times.append(answered - row.start)
            self.due += 1
            self.due5 += 1
            self.in_time += answered <= row.deadline
            self.in_time5 += answered <= article5
        elif row.refused_at is not None:
            self.refused += 1
            ground = row.ground or "unstated"
            self.refusals[ground] = self.refusals.get(ground, 0) + 1
        else:
            self.open += 1
            if now > row.deadline:
                self.overdue += 1
                self.due += 1
            if now > article5:
                self.due5 += 1

    def merge(self, other: _Tally) -> None:
        for name in ("requests", "refused", "open", "overdue", "due", "in_time", "due5", "in_time5"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.times.extend(other.times)
        for ground, count in other.refusals.items():
            self.refusals[ground] = self.refusals.get(ground, 0) + count

    def figures(self, partner: str, category: str, direction: str) -> Figures:
        times = sorted(self.times)
        return Figures(
            partner=partner,
            category=category,
            direction=direction,
            requests=self.requests,
            answered=len(times),
            refused=self.refused,
            open=self.open,
            overdue=self.overdue,
            median_seconds=percentile(times, 50) / 1000 if times else None,
            p90_seconds=percentile(times, 90) / 1000 if times else None,
            on_time=self.in_time / self.due if self.due else None,
            within_article5=self.in_time5 / self.due5 if self.due5 else None,
            refusals=dict(sorted(self.refusals.items())),
        )


def reciprocity(
    rows: Iterable[Row],
    *,
    agency: str,
    now: int,
    partners: Iterable[str] = (),
    since: int | None = None,
    until: int | None = None,
) -> list[Figures]:
    """Figures per partner, category and direction, with an ``all`` row per partner and direction.

    ``since`` (inclusive) and ``until`` (exclusive) bound the request's start,
    in ms; ``partners`` keeps only those agencies (all when empty).  Requests
    between two other agencies of a shared case are nobody's business here.
    Sorted by partner, direction (sent first), then category.
    """
    wanted = frozenset(partners)
    groups: dict[tuple[str, str, str], _Tally] = {}
    for row in rows:
        if (since is not None and row.start < since) or (until is not None and row.start >= until):
            continue
        closer = row.closed_by
        if row.from_agency == agency:
            pairs = [
                (partner, SENT)
                for partner in row.to_agencies
                if partner != agency and (closer is None or closer == partner)
            ]
        elif agency in row.to_agencies and (closer is None or closer == agency):
            pairs = [(row.from_agency, RECEIVED)]
        else:
            continue
        for partner, direction in pairs:
            if wanted and partner not in wanted:
                continue
            key = (partner, row.category, direction)
            tally = groups.get(key)
            if tally is None:
                tally = groups[key] = _Tally()
            tally.add(row, now)
    totals: dict[tuple[str, str, str], _Tally] = {}
    for (partner, _category, direction), tally in groups.items():
        total = totals.setdefault((partner, ALL, direction), _Tally())
        total.merge(tally)
    order = {category: i for i, category in enumerate(CATEGORY_ORDER)}
    everything = {**groups, **totals}
    keys = sorted(everything, key=lambda k: (k[0], k[2] != SENT, order.get(k[1], len(order)), k[1]))
    return [everything[key].figures(*key) for key in keys]
