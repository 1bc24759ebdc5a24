"""``caseline-server audit verify`` over a store: the hash chain, then the broker log.

Shared by ``audit verify`` and ``restore`` (a backup is checked against the
broker's key before it is put in place).  ``check_chain`` is pure; ``verify``
only reads the store and hands everything to the pure checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from caseline.crypto.certs import TrustStore
from caseline.server.core_log import check_audit_log, first_kept
from caseline.server.sqlite_store import audit_hash
from caseline.server.store import AuditRow, Store


@dataclasses.dataclass(frozen=True, slots=True)
class AuditVerdict:
    """``broken`` lines fail the check; ``notes`` are for the operator's information."""

    events: int
    leaves: int
    broken: list[str]
    notes: list[str]


def check_chain(rows: Sequence[AuditRow]) -> str | None:
    """The first break in the audit rows' hash chain, in words; None if it holds.

    Rows before the first kept were deleted by audit retention, which says so in a
    sealed row (``check_audit_log`` checks that row against its leaf; an unsealed
    one excuses nothing).
    """
    start = first_kept([r for r in rows if r.leaf_index is not None])
    prev = rows[0].prev_hash if start and rows and rows[0].seq == start else bytes(32)
    for expected_seq, row in enumerate(rows, start=start):
        if row.seq != expected_seq or row.prev_hash != prev:
            return f"row {expected_seq}: a row is missing or reordered"
        if audit_hash(prev, row.seq, row.time, row.event, row.detail) != row.hash:
            return f"row {row.seq}: the row was altered"
        prev = row.hash
    return None


async def verify(store: Store, receipt_key: bytes) -> AuditVerdict:
    """The audit log's chain, each row against its leaf in the broker log, and that log against
    its newest checkpoint and the witnesses' cosignatures (``core_log.check_audit_log``)."""
    rows = await store.audit_rows()
    checkpoint = await store.latest_checkpoint()
    size = 0 if checkpoint is None else checkpoint[0]
    leaves = await store.log_leaves(0, size + 1)
    witnessed = await store.latest_witnessed()
    if witnessed is not None:
        cosigs = await store.cosignatures(witnessed[0])
        witnessed = (witnessed[0], witnessed[1] + "".join(c.line for c in cosigs).encode())
    trust = TrustStore()
    for agency in await store.list_agencies():
        trust.pin(agency.agency_id, agency.root_key)
    for signed in await store.all_witness_lists():
        trust.add_witness_list(signed)
    witnesses = {a: list(trust.witnesses(a)) for a in trust.roots}
    chain = check_chain(rows)
    if chain is not None:
        return AuditVerdict(len(rows), size, [chain], [])
    report = check_audit_log(
        rows, leaves, checkpoint, receipt_key=receipt_key, witnessed=witnessed, witnesses=witnesses
    )
    return AuditVerdict(len(rows), size, report.broken, report.notes)
