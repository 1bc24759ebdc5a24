"""Retention in a witnessed case: which update bodies may go, and the receipt each keeps.

Members accept a purged entry of a witnessed case only with a receipt into a
checkpoint that carries the case's witness quorum and whose *witnessed* time is
past the retention period (PROTOCOL.md §7.4): the broker's own clock proves
nothing.  So the broker purges an update only once the earliest witnessed
checkpoint that includes it is old enough, and rewrites its receipt into that
checkpoint, cosignatures and all.  An update no such checkpoint covers yet
keeps its body until one does.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence

from caseline.crypto import note, tlog
from caseline.crypto.commits import CaseState
from caseline.schemas.wire import EntryLeaf, LogReceipt, Witness
from caseline.server.core_log import BrokerLog
from caseline.server.store import EntryRow


@dataclasses.dataclass(frozen=True, slots=True)
class Witnessed:
    """A checkpoint with its cosignatures, and the time from which the case's quorum vouches for it."""

    size: int
    note: bytes
    at: int


def quorum_checkpoints(
    candidates: Sequence[tuple[int, bytes]],
    state: CaseState,
    witnesses: Mapping[str, Sequence[Witness]],
    *,
    before: int,
) -> list[Witnessed]:
    """The checkpoints (ascending size) whose case quorum was met at or before ``before`` (ms)."""
    found = []
    for size, note_bytes in candidates:
        parsed = note.Note.parse(note_bytes)
        cosigned = tlog.collect_cosignatures(parsed.text, parsed.signatures, witnesses)
        at = tlog.witnessed_time(cosigned, state.agencies, state.witnessing)
        if at is not None and at <= before:
            found.append(Witnessed(size, note_bytes, at))
    return sorted(found, key=lambda w: w.size)


def purge_plan(
    rows: Sequence[EntryRow], witnessed: Sequence[Witnessed], log: BrokerLog
) -> list[tuple[int, bytes]]:
    """``(seq, receipt)`` for each update whose earliest covering witnessed checkpoint qualifies."""
    sizes = [w.size for w in witnessed]
    plan = []
    for row in rows:
        receipt = LogReceipt.decode(row.receipt)
        at = bisect.bisect_right(sizes, receipt.index)  # first checkpoint with size > index
        if at == len(witnessed):
            continue
        w = witnessed[at]
        plan.append(
            (
                row.seq,
                tlog.make_receipt(
                    EntryLeaf.decode(receipt.leaf),
                    index=receipt.index,
                    checkpoint=w.note,
                    proof=log.inclusion_proof(receipt.index, w.size),
                ),
            )
        )
    return plan
