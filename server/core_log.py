"""The broker log, sans-I/O: one Merkle tree over every accepted entry and audit row.

Theory of operation
-------------------
Every entry the core accepts, in every case, becomes one ``EntryLeaf`` of one
RFC 9162 tree, in acceptance order; every row of the broker's audit log becomes
one ``AuditLeaf``.  The group-commit writer (``service.py``) hands each batch to
``BrokerLog.seal``, which appends the batch's leaves, signs **one** checkpoint
of the tree after them (a C2SP signed note, origin fixed by the server key) and
gives each entry a ``LogReceipt``: that checkpoint plus the entry's inclusion
proof.  The batch's entries, its leaves and its checkpoint are then written in
one transaction; if that fails, ``abort`` truncates the tree back, so the tree
never runs ahead of the disk for longer than one write.

Readers only ever see *durable* sizes: ``size`` is the size of the newest
stored checkpoint, not the tree's, which may already hold the batch being
written.  Because the writer takes its queue in order, leaves of one case are
in seq order, which members rely on (a case's last leaf within a checkpoint
vouches for the whole case up to it).

Upgrading a version-2 data directory (schema 3) turns each stored v1 receipt,
which already names case, seq, entry hash, head and time, into that entry's
leaf (``legacy_leaf``), then seals them all under one checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from caseline.crypto import merkle, tlog
from caseline.crypto import primitives as P
from caseline.crypto.caselog import DAY_MS, RECEIPT_LABEL
from caseline.crypto.keys import SigningKey
from caseline.schemas.errors import CaselineError, IntegrityError
from caseline.schemas.wire import AuditLeaf, EntryLeaf, LogReceipt, Receipt, Witness, decode_signed
from caseline.server.store import AuditRow

#: The most leaves ``GET /v1/log/leaves`` returns at once.
MAX_LEAVES = 1024


class LogDamaged(RuntimeError):
    """The stored log does not match its newest checkpoint: the broker must not serve."""


class EntryRef(Protocol):
    """What the log needs of an accepted entry (``core.Accepted`` has it)."""

    @property
    def case_id(self) -> bytes: ...
    @property
    def seq(self) -> int: ...
    @property
    def entry_hash(self) -> bytes: ...
    @property
    def head(self) -> bytes: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Sealed:
    """One group commit's part of the log, not yet durable."""

    start: int
    leaves: list[tuple[int, bytes]]
    size: int
    checkpoint: bytes
    #: One ``LogReceipt`` per entry, in the order the entries were given.
    receipts: list[bytes]
    #: ``(audit seq, leaf index)`` for every audit row sealed.
    audit: list[tuple[int, int]]


def entry_leaf(ref: EntryRef, time: int) -> bytes:
    return EntryLeaf(
        case_id=ref.case_id, seq=ref.seq, entry_hash=ref.entry_hash, head=ref.head, time=time
    ).encode()


def audit_leaf(row: AuditRow) -> bytes:
    return AuditLeaf(audit_seq=row.seq, audit_hash=row.hash, time=row.time).encode()


def legacy_leaf(receipt: bytes, receipt_key: bytes, *, case_id: bytes, seq: int) -> bytes:
    """The leaf of an entry stored with a version-1 receipt: its fields, its time as the leaf time.

    The receipt is verified: the upgrade must not turn a row some other hand
    wrote into a leaf the broker then vouches for with a checkpoint.
    """
    tbs, sig = decode_signed(receipt, max_size=1024)
    r = Receipt.decode(tbs)
    P.verify_labeled(receipt_key, RECEIPT_LABEL, tbs, sig)
    if r.case_id != case_id or r.seq != seq:
        raise IntegrityError(f"stored receipt of case {case_id.hex()} entry {seq} is for another entry")
    return EntryLeaf(case_id=r.case_id, seq=r.seq, entry_hash=r.entry_hash, head=r.head, time=r.time).encode()


def _receipt(leaf: bytes, index: int, checkpoint: bytes, proof: list[bytes]) -> bytes:
    return LogReceipt(leaf=leaf, index=index, checkpoint=checkpoint, proof=tuple(proof)).encode()


class BrokerLog:
    """The broker's Merkle tree, its newest durable checkpoint, and the sealing of batches."""

    def __init__(self, server_key: SigningKey) -> None:
        self.server_key = server_key
        self.origin = tlog.log_origin(server_key.public_key)
        self.tree = merkle.Tree()
        #: The newest durable checkpoint note (broker signature only) and its size.
        self.checkpoint: bytes | None = None
        self.size = 0

    # ---------------------------------------------------------------- start-up
    def load(self, leaves: Iterable[bytes], checkpoint: tuple[int, bytes] | None) -> None:
        """Rebuild the tree from stored leaves; it must match the newest stored checkpoint."""
        tree = merkle.Tree()
        for leaf in leaves:
            tree.append(merkle.leaf_hash(leaf))
        if checkpoint is None:
            if tree.size:
                raise LogDamaged(f"the log holds {tree.size} leaves but no checkpoint")
            self.tree, self.checkpoint, self.size = tree, None, 0
            return
        size, note_bytes = checkpoint
        try:
            parsed, _ = tlog.verify_checkpoint(note_bytes, self.server_key.public_key)
        except CaselineError as exc:
            raise LogDamaged(f"the newest stored checkpoint does not verify under this key: {exc}") from exc
        if parsed.size != size or tree.size != size:
            raise LogDamaged(f"the log holds {tree.size} leaves but its newest checkpoint has {parsed.size}")
        if tree.root() != parsed.root:
            raise LogDamaged(f"the stored leaves' root differs from the newest checkpoint's (size {size})")
        self.tree, self.checkpoint, self.size = tree, note_bytes, size

    # ---------------------------------------------------------------- group commit
    def seal(self, entries: Sequence[EntryRef], audit: Sequence[AuditRow], *, time: int) -> Sealed:
        """Append a batch's leaves, sign one checkpoint over them, and make every entry's receipt.

        The caller must write the result in one transaction and then call
        ``commit``, or ``abort`` if the write failed.
        """
        return self.seal_leaves([entry_leaf(ref, time) for ref in entries], audit)

    def seal_leaves(self, entry_leaves: Sequence[bytes], audit: Sequence[AuditRow]) -> Sealed:
        """``seal`` with the entry leaves made already (the upgrade makes them from v1 receipts)."""
        tree = self.tree
        if tree.size != self.size:
            raise RuntimeError("a batch is already being sealed")
        start = tree.size
        leaves: list[tuple[int, bytes]] = []
        for leaf in entry_leaves:
            leaves.append((tree.append(merkle.leaf_hash(leaf)), leaf))
        marks: list[tuple[int, int]] = []
        for row in audit:
            leaf = audit_leaf(row)
            index = tree.append(merkle.leaf_hash(leaf))
            leaves.append((index, leaf))
            marks.append((row.seq, index))
        size = tree.size
        checkpoint = tlog.sign_checkpoint(self.server_key, size=size, root=tree.root())
        mine = leaves[: len(entry_leaves)]
        proofs = tree.inclusion_proofs([index for index, _ in mine], size)
        receipts = [
            _receipt(leaf, index, checkpoint, proof)
            for (index, leaf), proof in zip(mine, proofs, strict=True)
        ]
        return Sealed(start, leaves, size, checkpoint, receipts, marks)

    def commit(self, sealed: Sealed) -> None:
        """The batch is durable: its checkpoint is now the newest one readers see."""
        self.checkpoint, self.size = sealed.checkpoint, sealed.size

    def abort(self, sealed: Sealed) -> None:
        """The batch's write failed: forget its leaves."""
        self.tree.truncate(sealed.start)

    # ---------------------------------------------------------------- proofs for readers
    def check_size(self, size: int, what: str = "size") -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"{what} must be at most the log's size ({self.size})")

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self.check_size(size)
        if not 0 <= index < size:
            raise ValueError("index must be below size")
        return self.tree.inclusion_proof(index, size)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        self.check_size(new, "new")
        if not 0 <= old <= new:
            raise ValueError("old must be at most new")
        return self.tree.consistency_proof(old, new)

    def root(self, size: int) -> bytes:
        self.check_size(size)
        return self.tree.root(size)


# --------------------------------------------------------------------------- audit verification


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``caseline-server audit verify`` found: ``broken`` lines fail it, ``notes`` do not."""

    broken: list[str]
    notes: list[str]


#: The event retention writes after deleting old audit rows; its detail starts ``first_kept=N`` and
#: names the cut-off, ``before=T`` (ms): only rows whose *sealed leaf* is older than T were deleted.
AUDIT_PRUNED = "audit-pruned"
_FIRST_KEPT = re.compile(r"first_kept=(\d+)(?: |$)")
_BEFORE = re.compile(r"(?:^| )before=(\d+)(?: |$)")
_DAYS = re.compile(r"(?:^| )days=(\d+)(?: |$)")


@dataclasses.dataclass(frozen=True, slots=True)
class PrunePlan:
    """Which audit rows retention may delete, decided from the broker log, not the ``time`` column."""

    #: The rows to delete: a prefix, in seq order (empty: nothing to do).
    rows: list[AuditRow]
    #: The seq of the first row kept.
    first_kept: int
    #: Rows whose stored fields differ from their sealed leaf: an integrity problem, never pruned.
    mismatched: list[int]


def plan_audit_prune(
    rows: Sequence[AuditRow], leaf_hash: Callable[[int], bytes], size: int, *, before_time: int
) -> PrunePlan:
    """The oldest rows whose *sealed leaf* is older than ``before_time``, up to the first that is not.

    The ``time`` column is only a copy: whoever can write the database can set
    it to 0 and have retention delete recent rows under a genuine
    ``audit-pruned`` record.  So each candidate row is rebuilt into its
    ``AuditLeaf`` and compared with the leaf hash the broker's own tree holds
    at ``leaf_index`` (``leaf_hash``, below the durable ``size``; that tree was
    checked against the signed checkpoint when loaded).  The cut stops at the
    first row that is unsealed, differs from its leaf, or is recent; the
    newest row always stays, since the chain continues from it.
    """
    chosen: list[AuditRow] = []
    mismatched: list[int] = []
    for row in rows[:-1]:
        index = row.leaf_index
        if index is None or not 0 <= index < size:
            break
        if leaf_hash(index) != merkle.leaf_hash(audit_leaf(row)):
            mismatched.append(row.seq)
            break
        if row.time >= before_time:
            break
        chosen.append(row)
    first = chosen[-1].seq + 1 if chosen else (rows[0].seq if rows else 0)
    return PrunePlan(chosen, first, mismatched)


def prune_detail(plan: PrunePlan, *, before_time: int, days: int) -> str:
    """The ``audit-pruned`` row's detail: what went, and the cut-off ``audit verify`` holds it to."""
    return f"first_kept={plan.first_kept} rows={len(plan.rows)} days={days} before={before_time}"


def prune_cutoff(row: AuditRow) -> int | None:
    """The cut-off an ``audit-pruned`` row vouches for, in ms: its ``before=``, else (rows written
    before the cut-off was recorded) its own time less its ``days=``, which is no earlier."""
    match = _BEFORE.search(row.detail)
    if match is not None:
        return int(match.group(1))
    days = _DAYS.search(row.detail)
    return None if days is None else row.time - int(days.group(1)) * DAY_MS


def first_kept(rows: Sequence[AuditRow]) -> int:
    """The first audit seq retention kept: what the newest ``audit-pruned`` row names (0: never pruned).

    Retention deletes only a prefix of sealed rows and then records it, so the
    rows before this seq are gone by design; any other missing row is damage.
    Pass only rows known to be sealed into the broker log: the hash chain has
    no key, so an unsealed ``audit-pruned`` row could have been written by
    whoever deleted the rows it names.
    """
    for row in reversed(rows):
        if row.event == AUDIT_PRUNED:
            match = _FIRST_KEPT.match(row.detail)
            if match is not None:
                return int(match.group(1))
    return 0


def check_audit_log(
    rows: Sequence[AuditRow],
    leaves: Sequence[bytes],
    checkpoint: tuple[int, bytes] | None,
    *,
    receipt_key: bytes,
    witnessed: tuple[int, bytes] | None = None,
    witnesses: Mapping[str, Sequence[Witness]] | None = None,
) -> AuditReport:
    """Check the audit rows against their leaves, and the leaves against the signed checkpoints.

    The hash chain alone proves nothing against whoever holds the database: a
    row can be rewritten and the chain recomputed, or the last row dropped.
    So every row sealed into the broker log must equal its ``AuditLeaf``,
    every ``AuditLeaf`` must still have its row, the tree over the stored
    leaves must give the newest checkpoint's root, and, when agencies have
    listed witnesses, the newest witnessed checkpoint must carry a valid
    cosignature and agree with the stored leaves.  Rows that audit retention
    deleted (before ``first_kept``, and with a leaf older than the cut-off a sealed
    ``audit-pruned`` row names) keep their leaves and are not missed.  Rows after the newest
    witnessed checkpoint rest on the broker's own signature only; the report
    says so.  Rows appended after the last group commit have no leaf yet.
    """
    broken: list[str] = []
    notes: list[str] = []
    by_seq = {r.seq: r for r in rows}
    tree = merkle.Tree()
    audit_leaves: dict[int, int] = {}
    missing: list[tuple[int, int, int]] = []  # (audit seq, leaf index, the leaf's time)
    sealed: list[AuditRow] = []  # rows equal to their leaf: only these may record a prune
    for index, leaf in enumerate(leaves):
        tree.append(merkle.leaf_hash(leaf))
        if _is_audit_leaf(leaf):
            parsed = AuditLeaf.decode(leaf)
            audit_leaves[parsed.audit_seq] = index
            row = by_seq.get(parsed.audit_seq)
            if row is None:
                missing.append((parsed.audit_seq, index, parsed.time))
            elif row.hash != parsed.audit_hash or row.time != parsed.time or row.leaf_index != index:
                broken.append(f"audit row {parsed.audit_seq} differs from its leaf {index} in the broker log")
            else:
                sealed.append(row)
    pruned_before = first_kept(sealed)
    prunes = _prunes(sealed)
    pruned = 0
    for seq, index, at in missing:
        if any(seq < kept and at < cutoff for kept, cutoff in prunes):
            pruned += 1  # deleted by audit retention, as a sealed audit-pruned row records
        elif seq < pruned_before:
            broken.append(
                f"audit row {seq} was deleted although its leaf {index} (time {at}) is not older than"
                " the cut-off the audit-pruned record names: retention did not delete it"
            )
        else:
            broken.append(f"audit row {seq} is in the broker log (leaf {index}) but was deleted")
    if pruned:
        notes.append(f"{pruned} audit rows before row {pruned_before} were deleted by audit retention")
    unsealed = [r.seq for r in rows if r.seq not in audit_leaves]
    if unsealed:
        sealed_after = [s for s in audit_leaves if s > unsealed[0]]
        if sealed_after:
            broken.append(f"audit row {unsealed[0]} has no leaf although later rows do")
        else:
            notes.append(f"{len(unsealed)} audit rows from {unsealed[0]} on are not in the broker log yet")
    if checkpoint is None:
        if leaves:
            broken.append("the broker log has leaves but no checkpoint")
        return AuditReport(broken, notes)
    size, note_bytes = checkpoint
    try:
        parsed_cp, _ = tlog.verify_checkpoint(note_bytes, receipt_key)
    except CaselineError as exc:
        broken.append(f"the newest checkpoint does not verify under the server key: {exc}")
        return AuditReport(broken, notes)
    if parsed_cp.size != tree.size or size != tree.size:
        broken.append(f"the broker log holds {tree.size} leaves, its newest checkpoint {parsed_cp.size}")
    elif tree.root() != parsed_cp.root:
        broken.append("the stored leaves do not give the newest checkpoint's root")
    if not witnesses or not any(witnesses.values()):
        notes.append("no agency lists witnesses: only the broker's own signature vouches for this log")
        return AuditReport(broken, notes)
    if witnessed is None:
        broken.append("witnesses are listed but no checkpoint of this log carries a cosignature")
        return AuditReport(broken, notes)
    w_size, w_note = witnessed
    try:
        w_cp, w_parsed = tlog.verify_checkpoint(w_note, receipt_key)
        cosigned = tlog.collect_cosignatures(w_parsed.text, w_parsed.signatures, witnesses)
    except CaselineError as exc:
        broken.append(f"the newest witnessed checkpoint does not verify: {exc}")
        return AuditReport(broken, notes)
    if not cosigned:
        broken.append(f"the checkpoint of size {w_size} carries no valid cosignature of a listed witness")
    elif w_cp.size > tree.size or tree.root(w_cp.size) != w_cp.root:
        broken.append(
            f"the stored leaves disagree with the checkpoint of size {w_cp.size} the witnesses cosigned"
        )
    names = ", ".join(sorted({c.witness.name for c in cosigned}))
    if cosigned and w_cp.size == tree.size:
        notes.append(f"the newest checkpoint (size {w_cp.size}) is witnessed by {names}")
    elif cosigned:
        late = [s for s, i in audit_leaves.items() if i >= w_cp.size]
        notes.append(
            f"UNWITNESSED: leaves {w_cp.size}..{tree.size - 1} (audit rows {min(late) if late else '-'} on)"
            f" are after the newest witnessed checkpoint (size {w_cp.size}, by {names});"
            " only the broker's own signature vouches for them"
        )
    return AuditReport(broken, notes)


def _prunes(sealed: Sequence[AuditRow]) -> list[tuple[int, int]]:
    """``(first kept, cut-off)`` of every sealed ``audit-pruned`` row that names both.

    A missing row is excused only by a record that both covers its seq and
    names a cut-off its sealed leaf's time is below: the leaf's time is vouched
    for by the signed checkpoint, unlike the row's ``time`` column.
    """
    out: list[tuple[int, int]] = []
    for row in sealed:
        if row.event != AUDIT_PRUNED:
            continue
        match, cutoff = _FIRST_KEPT.match(row.detail), prune_cutoff(row)
        if match is not None and cutoff is not None:
            out.append((int(match.group(1)), cutoff))
    return out


def _is_audit_leaf(leaf: bytes) -> bool:
    try:
        AuditLeaf.decode(leaf)
    except CaselineError:
        return False  # an EntryLeaf
    return True
