"""The client core's marking judgments for one case (sans-I/O; the rules are schemas/handling.py).

Every member's client must reach the same verdict on the same signed
updates, because the broker cannot read them: this feeds one case's
``HandlingBook`` every readable update in log order, shared ones where the
share made them readable, and judges history shares against what they
hand over.  It remembers each readable update's log position, since a
history share names the updates it opens by position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence

from caseline.schemas.handling import (
    V_SHARED_RED,
    V_SHARED_RESTRICTED,
    HandlingBook,
    Marked,
    Permission,
    Violation,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Withheld:
    """An update a history share left out, and why (its markings forbid it for the new agencies)."""

    seq: int
    update_id: bytes
    reason: str


class Added(list[bytes]):
    """The devices ``Client.add_members`` added (a list, as it always was) and what it withheld."""

    def __init__(self, devices: Iterable[bytes] = (), withheld: Sequence[Withheld] = ()) -> None:
        super().__init__(devices)
        self.withheld = list(withheld)


class CaseMarks:
    """One case's rule book, and the log positions of the updates it holds."""

    def __init__(self) -> None:
        self.book = HandlingBook()
        self._ids: dict[int, bytes] = {}

    def add(self, seq: int, item: Marked) -> Violation | None:
        """Judge and remember the next readable update (a repeat is judged once: None)."""
        self._ids[seq] = item.update_id
        if item.update_id in self.book:
            return None
        return self.book.add(item)

    def ids(self, seqs: Iterable[int]) -> list[bytes]:
        """The updates at ``seqs`` that this device can read."""
        return [self._ids[s] for s in seqs if s in self._ids]

    def judge_share(
        self, share_id: bytes, seqs: Iterable[int], *, agency_ids: Collection[str], at: int
    ) -> Violation | None:
        """A history share's violation: it handed a latecomer what may not go to its agency."""
        return self.book.judge_share(share_id, self.ids(seqs), agency_ids=agency_ids, at=at)

    def unshareable(self, update_id: bytes, *, agency_ids: Collection[str], at: int) -> Violation | None:
        """Why one update a share unlocked should not have reached ``agency_ids``, or None."""
        if update_id not in self.book:
            return None
        answer = self.may_share(update_id, agency_ids=agency_ids, at=at)
        if answer.allowed:
            return None
        markings = self.book.markings(update_id)
        rule = V_SHARED_RED if markings is not None and markings.tlp == "RED" else V_SHARED_RESTRICTED
        return Violation(rule, update_id, f"handed to this member by a history share: {answer.reason}")

    def may_share(self, update_id: bytes, *, agency_ids: Collection[str], at: int) -> Permission:
        return self.book.may_share(update_id, agency_ids=agency_ids, at=at)

    def shareable(
        self, seqs: Iterable[int], *, agency_ids: Collection[str], at: int
    ) -> tuple[list[int], list[Withheld]]:
        """Which of the readable updates at ``seqs`` a history share may hand to ``agency_ids``.

        What carries no markings of its own (an earlier history share) goes as before.
        """
        ok: list[int] = []
        withheld: list[Withheld] = []
        for seq in seqs:
            update_id = self._ids.get(seq)
            if update_id is None or update_id not in self.book:
                ok.append(seq)
                continue
            answer = self.may_share(update_id, agency_ids=agency_ids, at=at)
            if answer.allowed:
                ok.append(seq)
            else:
                withheld.append(Withheld(seq, update_id, answer.reason))
        return ok, withheld
