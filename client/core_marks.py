"""The client core's marking judgments for one case (sans-I/O; the rules are schemas/handling.py).

Every member's client must reach the same verdict on the same signed
updates, because the broker cannot read them: this feeds one case's
``HandlingBook`` every readable update in log order, shared ones where the
share made them readable, and judges history shares against what they
hand over.  It remembers each readable update's log position, since a
history share names the updates it opens by position.

Kept beside the view snapshot
-----------------------------
Rebuilding the book by opening every stored event again costs about what a
replay costs (a 100,000-entry case: seconds), on every command.  So the book
is kept with each view snapshot as one packed row per update — what the rules
read of it (author, type, markings, references, a release's terms, time), the
markings it is held to and the verdict it got — and restored without judging
again.  Rows become ``Marked`` objects only when a rule asks about them: a
command that answers one update pays for the few it names, not for the case.
No text and no file keys are kept.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import itertools
import json
from collections.abc import Collection, Iterable, Iterator, MutableMapping, Sequence
from typing import Any, Generic, TypeVar

import msgpack
from caseline.schemas.codec import pack
from caseline.schemas.errors import CaselineError, MalformedError
from caseline.schemas.handling import (
    V_SHARED_RED,
    V_SHARED_RESTRICTED,
    HandlingBook,
    Marked,
    Markings,
    Permission,
    Release,
    Violation,
)
from caseline.schemas.references import reference_fields

#: The fields of a release the rules read (``Release.of_content``).
RELEASE_TERMS: frozenset[str] = frozenset(
    {"of", "purpose", "lifts", "third_party", "to", "recipients", "expires"}
)
#: A kept row: seq, update id, agency, user, device role, content type, the content the
#: rules read (JSON), time, then the markings it is held to (handling, TLP, codes).
Row = list[Any]
V = TypeVar("V")


@functools.cache
def _kept_fields(content_type: str) -> frozenset[str]:
    keep = {name for name, _ in reference_fields(content_type)} | {"markings"}
    return frozenset(keep | RELEASE_TERMS if content_type == "release" else keep)


def _row(seq: int, item: Marked, held: Markings) -> bytes:
    keep = _kept_fields(item.content_type)
    content = json.dumps({k: v for k, v in item.content.items() if k in keep}, separators=(",", ":"))
    return pack([
        seq, item.update_id, item.agency_id, item.user_id, item.device_role, item.content_type,
        content.encode(), item.time, held.handling, held.tlp, sorted(held.codes),
    ])  # fmt: skip


def _unrow(packed: bytes) -> Row:
    row = msgpack.unpackb(packed, raw=False, use_list=True, max_map_len=0, max_ext_len=0)
    if not isinstance(row, list) or len(row) != 11:
        raise MalformedError("a kept marking row does not decode")
    return row


def _item(packed: bytes) -> Marked:
    row = _unrow(packed)
    return Marked(row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7])


def _held(packed: bytes) -> Markings:
    row = _unrow(packed)
    return Markings(row[8], row[9], frozenset(row[10]))


class _Kept:
    """Rows kept with a snapshot, left packed: ids, row ends and rows, each one byte string.

    A lookup scans the id blob (a few ms for 100,000 updates) until lookups
    become many; then one index is built.  A command that names a few updates
    never pays for the case.
    """

    INDEX_AFTER = 16

    def __init__(self, ids: bytes, ends: array.array[int], rows: bytes) -> None:
        self.ids, self.ends, self.rows = ids, ends, rows
        self._index: dict[bytes, int] | None = None
        self._finds = 0

    def __len__(self) -> int:
        return len(self.ends)

    def position(self, key: bytes) -> int | None:
        if self._index is None:
            if self._finds < self.INDEX_AFTER:
                self._finds += 1
                at = self.ids.find(key)
                while at != -1 and at % 32:
                    at = self.ids.find(key, at + 1)
                return None if at == -1 else at // 32
            self._index = {self.ids[i * 32 : i * 32 + 32]: i for i in range(len(self.ends))}
        return self._index.get(key)

    def row(self, key: bytes) -> bytes | None:
        i = self.position(key)
        if i is None:
            return None
        return self.rows[self.ends[i - 1] if i else 0 : self.ends[i]]


class _Unpacked(MutableMapping[bytes, V], Generic[V]):
    """A mapping over kept rows that makes each value the first time it is asked for."""

    def __init__(self, marks: CaseMarks, make: Any) -> None:
        self._marks = marks
        self._made: dict[bytes, V] = {}
        self._make = make

    def __getitem__(self, key: bytes) -> V:
        found = self._made.get(key)
        if found is None:
            row = self._marks.row(key)
            if row is None:
                raise KeyError(key)
            found = self._made[key] = self._make(row)
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._made or (isinstance(key, bytes) and self._marks.row(key) is not None)

    def __setitem__(self, key: bytes, value: V) -> None:
        self._made[key] = value

    def __delitem__(self, key: bytes) -> None:
        raise TypeError("a marking book forgets nothing")

    def __iter__(self) -> Iterator[bytes]:
        raise TypeError("a kept marking book is not listed")

    def __len__(self) -> int:
        return self._marks.count()


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
        #: Log positions kept with a snapshot (seqs, ids), merged into ``_ids`` when first needed.
        self._kept_ids: tuple[bytes, bytes] | None = None
        #: What the book was fed, one packed row per update, in order (for ``export``): the
        #: rows kept with a snapshot, then those added since.
        self._kept: _Kept | None = None
        self._rows: dict[bytes, bytes] = {}

    def row(self, update_id: bytes) -> bytes | None:
        found = self._rows.get(update_id)
        if found is None and self._kept is not None:
            found = self._kept.row(update_id)
        return found

    def count(self) -> int:
        return len(self._rows) + (0 if self._kept is None else len(self._kept))

    def add(self, seq: int, item: Marked) -> Violation | None:
        """Judge and remember the next readable update (a repeat is judged once: None)."""
        self._ids[seq] = item.update_id
        if item.update_id in self.book:
            return None
        violation = self.book.add(item)
        held = self.book.markings(item.update_id)
        self._rows[item.update_id] = _row(seq, item, held if held is not None else item.markings)
        return violation

    def export(self) -> bytes:
        """The rows, the releases that count, and the ids by log position, as fixed-width blobs.

        Blobs, not a list per update: reading 100,000 small lists back costs
        seconds, reading a few byte strings nothing.
        """
        counted = [[of, [r.release_id for r in found]] for of, found in self.book.counted_releases().items()]
        kept = self._kept or _Kept(b"", array.array("Q"), b"")
        new = list(self._rows.values())
        ends = array.array("Q", kept.ends)
        ends.extend(itertools.accumulate((len(r) for r in new), initial=len(kept.rows)))
        del ends[len(kept.ends)]  # ``initial`` repeats the kept rows' end
        by_seq = self._id_map()
        return pack(
            [
                kept.ids + b"".join(self._rows), ends.tobytes(), kept.rows + b"".join(new), counted,
                array.array("Q", by_seq).tobytes(), b"".join(by_seq.values()),
            ]
        )  # fmt: skip

    @classmethod
    def restore(cls, data: bytes) -> CaseMarks:
        """A book as ``export`` left it, without judging again (the held markings are in it)."""
        marks = cls()
        try:
            # Sealed under this device's own key, so authentic: read without the wire's canonical
            # re-encoding check, which would copy the whole book once more.
            ids, ends_blob, rows, counted, seqs, seq_ids = msgpack.unpackb(
                data, raw=False, use_list=True, max_map_len=0, max_ext_len=0
            )
            ends = array.array("Q")
            ends.frombytes(ends_blob)
            if (
                len(ids) != 32 * len(ends)
                or (ends and ends[-1] != len(rows))
                or len(seq_ids) != 4 * len(seqs)
            ):
                raise MalformedError("the kept marking book's parts do not fit together")
            marks._kept = _Kept(ids, ends, rows)
            marks._kept_ids = (seqs, seq_ids)
            releases = {}
            for of, found in counted:
                releases[of] = [Release.of_content(r, _item(marks.row(r) or b"").content) for r in found]
            marks.book = HandlingBook.restored(
                _Unpacked[Marked](marks, _item), _Unpacked[Markings](marks, _held), releases
            )
        except (CaselineError, ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
            raise MalformedError("the kept marking book does not decode") from exc
        return marks

    def _id_map(self) -> dict[int, bytes]:
        if self._kept_ids is not None:
            seqs_blob, ids = self._kept_ids
            seqs = array.array("Q")
            seqs.frombytes(seqs_blob)
            kept = {seq: ids[i * 32 : i * 32 + 32] for i, seq in enumerate(seqs)}
            self._ids = kept | self._ids
            self._kept_ids = None
        return self._ids

    def ids(self, seqs: Iterable[int]) -> list[bytes]:
        """The updates at ``seqs`` that this device can read."""
        found = self._id_map()
        return [found[s] for s in seqs if s in found]

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
        found = self._id_map()
        for seq in seqs:
            update_id = found.get(seq)
            if update_id is None or update_id not in self.book:
                ok.append(seq)
                continue
            answer = self.may_share(update_id, agency_ids=agency_ids, at=at)
            if answer.allowed:
                ok.append(seq)
            else:
                withheld.append(Withheld(seq, update_id, answer.reason))
        return ok, withheld
