"""Which updates an exporter may disclose as evidence, and which it must withhold.

The offline verifier fails a bundle that discloses an update the exporter's
agency may not put before a court (crypto/evidence_releases.py), so the
exporting client asks the same rule book first: by default it discloses every
readable update it may and names the ones it withholds, with what would let it
disclose them; an update chosen by hand that it may not disclose is refused,
before anything is built.  The releases a disclosed update relies on go into
the bundle with it, as do the downgrades of the updates it answers: the
verifier sees only what is disclosed, and must judge it as this client did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from caseline.client.core import CaseEvent
from caseline.client.marking import book_of
from caseline.crypto.evidence_releases import may_disclose
from caseline.schemas.errors import NotPermittedError, UnknownError
from caseline.schemas.handling import DOWNGRADE, HandlingBook, Permission


@dataclasses.dataclass(frozen=True, slots=True)
class Withheld:
    """A readable update left out of a bundle because its markings forbid disclosing it."""

    case_id: bytes
    seq: int
    update_id: bytes
    #: Its markings as the rules hold them, e.g. ``H1/TLP:AMBER``.
    markings: str
    #: Who may release it: ``agency:user`` of its author.
    provider: str
    reason: str

    @property
    def ask(self) -> str:
        """The command that asks its originator, inside the case, to release it for evidence."""
        case, update = self.case_id.hex()[:8], self.update_id.hex()[:8]
        return f'caseline release-request {case} {update} --for evidence --reason "..."'

    @property
    def text(self) -> str:
        """One line for a person: what was withheld, and how to ask for it (``reason`` says why in full)."""
        what = f"#{self.seq} withheld: {self.markings} by {self.provider}"
        if self.reason.startswith("it is a marking violation"):
            return f"{what}, {self.reason.removeprefix('it is ')}"
        return f"{what}, no release for evidence; ask: {self.ask}"


@dataclasses.dataclass(frozen=True, slots=True)
class EvidencePlan:
    """What a bundle discloses (log positions, releases included) and what it withholds."""

    disclose: tuple[int, ...]
    withheld: tuple[Withheld, ...]
    #: Releases disclosed though not chosen, because a chosen update relies on them.
    releases: tuple[int, ...] = ()


def plan_evidence(
    events: Iterable[CaseEvent],
    *,
    agency_id: str,
    at: int,
    upto: int,
    chosen: Collection[int] | None = None,
) -> EvidencePlan:
    """The plan for ``agency_id`` exporting at ``at`` a bundle of the log's first ``upto`` entries.

    ``events`` are the case's verified events in log order; ``chosen`` the log
    positions asked for (None: every readable update the markings allow).  A
    chosen update that may not be disclosed raises ``NotPermittedError``.
    """
    readable: dict[int, CaseEvent] = {e.seq: e for e in events if e.kind == "update" and e.readable}
    for seq in sorted(set(chosen or ())):
        if seq not in readable:
            raise UnknownError(f"entry {seq} is not an update this device can disclose")
        if seq >= upto:
            raise NotPermittedError(
                f"entry {seq} is still pending witness; try again once the witnesses have cosigned"
            )
    readable = {seq: e for seq, e in readable.items() if seq < upto}
    book = book_of(readable.values())
    ids = {seq: e.update_id for seq, e in readable.items() if e.update_id in book and e.update_id is not None}
    seq_of = {update_id: seq for seq, update_id in ids.items()}
    wanted = sorted(readable) if chosen is None else sorted(set(chosen))
    disclose: set[int] = set()
    withheld: list[Withheld] = []

    def decide(seqs: Iterable[int]) -> None:
        for seq in seqs:
            update_id = ids.get(seq)
            if update_id is None:  # a history share: it carries keys, no markings of its own
                disclose.add(seq)
                continue
            disclosed = {ids[s] for s in disclose if s in ids}
            flagged = readable[seq].violation
            answer = (
                Permission(False, f"it is a marking violation ({flagged.rule}), which is never evidence")
                if flagged is not None
                else may_disclose(book, update_id, agency_id=agency_id, at=at, disclosed=disclosed)
            )
            if answer.allowed:
                disclose.add(seq)
                continue
            held = _withheld(book, readable[seq], update_id, answer)
            if chosen is not None:
                how = "" if flagged is not None else f"; ask its originator for a release: {held.ask}"
                refused = NotPermittedError(
                    f"entry {seq} may not be disclosed as evidence: it is {held.markings} by {held.provider}"
                    f" and {held.reason}{how}"
                )
                refused.hint = "the updates' markings do not allow this; nothing was written"
                raise refused
            withheld.append(held)

    # Releases last: one that counts goes with the update it releases, whatever its own markings.
    is_release = {seq for seq in wanted if _is_release(book, ids.get(seq))}
    decide(seq for seq in wanted if seq not in is_release)
    added = _releases_relied_on(book, ids, seq_of, disclose, agency_id=agency_id, at=at)
    disclose |= added
    decide(seq for seq in wanted if seq in is_release and seq not in disclose)
    return EvidencePlan(
        disclose=tuple(sorted(disclose)),
        withheld=tuple(sorted(withheld, key=lambda w: w.seq)),
        releases=tuple(sorted(added - set(wanted))) if chosen is not None else (),
    )


def _is_release(book: HandlingBook, update_id: bytes | None) -> bool:
    item = None if update_id is None else book.item(update_id)
    return item is not None and item.content_type == "release"


def _withheld(book: HandlingBook, event: CaseEvent, update_id: bytes, answer: Permission) -> Withheld:
    """Only an update the book holds is ever refused, so its item and markings are there."""
    item, markings = book.item(update_id), book.markings(update_id)
    return Withheld(
        case_id=event.case_id,
        seq=event.seq,
        update_id=update_id,
        markings=markings.label if markings is not None else "",
        provider=f"{item.agency_id}:{item.user_id}" if item is not None else "",
        reason=_short(answer.reason),
    )


def _short(reason: str) -> str:
    """The rule book's reason without its leading "it is ...", which ``Withheld`` says itself."""
    head, sep, tail = reason.partition(", and ")
    return tail if sep and head.startswith("it is ") else reason


def _releases_relied_on(
    book: HandlingBook,
    ids: Mapping[int, bytes],
    seq_of: Mapping[bytes, int],
    disclose: set[int],
    *,
    agency_id: str,
    at: int,
) -> set[int]:
    """The releases of disclosed updates the verifier needs to judge them as this client does.

    Those the export relies on, and every downgrade of a disclosed update (a
    reply to it may be marked lower only by that release).
    """
    out: set[int] = set()
    for seq in disclose:
        update_id = ids.get(seq)
        if update_id is None:
            continue
        found = list(book.may_export(update_id, agency_id=agency_id, at=at).releases)
        found += [r.release_id for r in book.releases(update_id) if r.purpose == DOWNGRADE]
        out.update(seq_of[release_id] for release_id in found)
    return out
