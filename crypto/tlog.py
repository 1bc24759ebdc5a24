"""The broker log: checkpoints, receipts, witness lists and the witness quorum.

Theory of operation
-------------------
Every entry of every case, and every row of the broker's audit log, is a leaf
of one append-only RFC 9162 Merkle tree (``merkle.py``).  What the broker says
about that tree it says in *checkpoints*: C2SP signed notes naming the tree's
origin, size and root, signed by the broker's receipt key.  A receipt is one
such checkpoint plus the proof that an entry's leaf is in it, so a group
commit costs one signature however many entries it holds.

A checkpoint signed only by the broker proves nothing against the broker: it
can sign two of them for two audiences.  Witnesses, which the agencies run on
their own machines, each cosign a checkpoint only if it is consistent with
the last one they cosigned (C2SP tlog-witness).  A member treats an entry as
*final* once a checkpoint that includes it carries the quorum its case's
policy names (``Witnessing``): by default one witness of every agency with a
device in the roster.  The witnesses' timestamps are the *witnessed time*,
which retention and evidence rely on instead of the broker's clock.

Witness keys reach members the way device keys do: each agency's root signs
the list of its witnesses (``WitnessList``), so a member trusts a witness
because it pinned that agency's root.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from caseline.crypto import merkle, note
from caseline.crypto import primitives as P
from caseline.crypto.keys import SigningKey
from caseline.schemas.errors import (
    BadSignatureError,
    ForkError,
    MalformedError,
    SplitViewError,
)
from caseline.schemas.wire import (
    MAX_NOTE_BYTES,
    EntryLeaf,
    LogReceipt,
    Witness,
    Witnessing,
)


def log_origin(receipt_key: bytes) -> str:
    """The broker log's origin line: fixed by its key, so no configuration can disagree."""
    return note.log_origin(receipt_key)


# --------------------------------------------------------------------------- checkpoints


def sign_checkpoint(key: SigningKey, *, size: int, root: bytes, extensions: Sequence[str] = ()) -> bytes:
    """A checkpoint note signed by the broker: its text and one signature line."""
    origin = log_origin(key.public_key)
    text = note.Checkpoint(origin=origin, size=size, root=root, extensions=tuple(extensions)).body()
    signature = key.sign_note(text, name=origin)
    return note.Note(text=text, signatures=(signature,)).encode()


def verify_checkpoint(data: bytes, receipt_key: bytes) -> tuple[note.Checkpoint, note.Note]:
    """Parse a checkpoint note and check the broker's signature on it (others are ignored here)."""
    parsed = note.Note.parse(data, max_size=MAX_NOTE_BYTES)
    origin = log_origin(receipt_key)
    checkpoint = note.Checkpoint.parse(parsed.text)
    if checkpoint.origin != origin:
        raise MalformedError("checkpoint is for another log than the case's broker")
    want = note.key_id(origin, note.ALG_ED25519, receipt_key)
    mine = [s for s in parsed.signatures if s.name == origin and s.key_id == want]
    if not mine:
        raise BadSignatureError("checkpoint is not signed by the case's broker")
    for signature in mine:
        note.verify_note_signature(parsed.text, signature, name=origin, public_key=receipt_key)
    return checkpoint, parsed


def check_consistent(
    old: note.Checkpoint, new: note.Checkpoint, proof: Sequence[bytes], *, what: str = "checkpoint"
) -> None:
    """Two checkpoints signed by one broker must be one history; if not, that is a fork.

    ``old`` must not be larger: a smaller tree after a larger one is a rollback,
    and the caller has both signed notes as proof.
    """
    if new.size < old.size:
        raise ForkError(
            f"the broker's {what} ({new.size} entries) is older than one already seen ({old.size})"
        )
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except Exception as exc:
        raise ForkError(f"the broker's {what} is not consistent with one already seen: {exc}") from exc


# --------------------------------------------------------------------------- receipts


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose checkpoint signature and inclusion proof both verified."""

    leaf: EntryLeaf
    index: int
    checkpoint: note.Checkpoint
    note: bytes

    # The fields a v1 receipt had, so that callers read either alike.
    @property
    def case_id(self) -> bytes:
        return self.leaf.case_id

    @property
    def seq(self) -> int:
        return self.leaf.seq

    @property
    def entry_hash(self) -> bytes:
        return self.leaf.entry_hash

    @property
    def head(self) -> bytes:
        return self.leaf.head

    @property
    def time(self) -> int:
        return self.leaf.time


def make_receipt(leaf: EntryLeaf, *, index: int, checkpoint: bytes, proof: Sequence[bytes]) -> bytes:
    return LogReceipt(leaf=leaf.encode(), index=index, checkpoint=checkpoint, proof=tuple(proof)).encode()


def receipt_leaf(data: bytes) -> EntryLeaf:
    """The leaf a receipt names, unverified: for the broker reading back its own rows."""
    return EntryLeaf.decode(LogReceipt.decode(data).leaf)


def verify_log_receipt(data: bytes, receipt_key: bytes) -> VerifiedReceipt:
    """A receipt counts only if the broker signed its checkpoint and the leaf is in that tree."""
    receipt = LogReceipt.decode(data)
    leaf = EntryLeaf.decode(receipt.leaf)
    checkpoint, _ = verify_checkpoint(receipt.checkpoint, receipt_key)
    merkle.verify_inclusion(
        merkle.leaf_hash(receipt.leaf), receipt.index, checkpoint.size, receipt.proof, checkpoint.root
    )
    return VerifiedReceipt(leaf=leaf, index=receipt.index, checkpoint=checkpoint, note=receipt.checkpoint)


def is_log_receipt(data: bytes) -> bool:
    """Whether stored receipt bytes are a version-2 log receipt (not a v1 signed one)."""
    return data[:1] != b"\x92"  # a v1 receipt is the 2-array [tbs, signature]


# --------------------------------------------------------------------------- equivocation proofs

EQUIVOCATION_HEADER: Final = b"caseline-witness/equivocation\n"


def verify_equivocation(body: bytes, receipt_key: bytes) -> tuple[bytes, bytes]:
    """Check a witness's equivocation proof: two notes the broker signed, one size, two roots.

    A witness's word alone is not proof: the member raises the alarm only if
    the broker's own signatures show it, so a faulty witness (or a tampered
    answer) cannot make every member cry fork.
    """
    if not body.startswith(EQUIVOCATION_HEADER):
        raise MalformedError("not an equivocation proof")
    rest, notes = body[len(EQUIVOCATION_HEADER) :], []
    for _ in range(2):
        line, sep, rest = rest.partition(b"\n")
        if not sep or not line.startswith(b"note ") or not line[5:].isdigit():
            raise MalformedError("an equivocation proof holds two notes, each with its length")
        size = int(line[5:])
        if size > MAX_NOTE_BYTES or size > len(rest):
            raise MalformedError("an equivocation proof's note is cut short")
        notes.append(rest[:size])
        rest = rest[size:]
    if rest:
        raise MalformedError("trailing bytes after an equivocation proof")
    a, _ = verify_checkpoint(notes[0], receipt_key)
    b, _ = verify_checkpoint(notes[1], receipt_key)
    if a.size != b.size or a.root == b.root:
        raise MalformedError("the two checkpoints do not conflict")
    return notes[0], notes[1]


# --------------------------------------------------------------------------- cosignatures and quorum


@dataclasses.dataclass(frozen=True, slots=True)
class Cosigned:
    """A valid cosignature by a known witness: who, and at what time (seconds)."""

    agency_id: str
    witness: Witness
    timestamp: int


def collect_cosignatures(
    checkpoint_text: bytes,
    signatures: Iterable[note.NoteSignature],
    witnesses: Mapping[str, Sequence[Witness]],
) -> list[Cosigned]:
    """Keep the cosignatures that verify under a listed witness key; ignore every other line.

    ``witnesses`` maps agency id to that agency's verified witness list.  A line
    that claims a known witness's name and key id but fails to verify is an
    error (C2SP signed-note calls such a note malformed): a broker that alters a
    cosignature must not be able to pass it off as merely absent.
    """
    known: dict[tuple[str, bytes], tuple[str, Witness]] = {}
    for agency_id, listed in witnesses.items():
        for w in listed:
            known[(w.name, note.key_id(w.name, note.ALG_COSIGNATURE_V1, w.public_key))] = (agency_id, w)
    found: list[Cosigned] = []
    for signature in signatures:
        hit = known.get((signature.name, signature.key_id))
        if hit is None:
            continue
        agency_id, w = hit
        timestamp = note.verify_cosignature(checkpoint_text, signature, name=w.name, public_key=w.public_key)
        found.append(Cosigned(agency_id=agency_id, witness=w, timestamp=timestamp))
    return found


def witnessed_time(cosigned: Sequence[Cosigned], agencies: Iterable[str], rule: Witnessing) -> int | None:
    """The time (ms) from which the quorum vouches for a checkpoint, or None if it does not.

    ``each-agency``: every agency in ``agencies`` needs one cosignature.  Each
    agency's earliest cosignature counts, and the latest of those is the
    checkpoint's witnessed time: every required witness had seen the tree by
    then, so no single witness's clock can make an entry look older.
    """
    if rule.rule == "none":
        return None
    earliest: dict[str, int] = {}
    for c in cosigned:
        earliest[c.agency_id] = min(earliest.get(c.agency_id, c.timestamp), c.timestamp)
    needed = set(agencies)
    if not needed or not needed <= earliest.keys():
        return None
    return max(earliest[a] for a in needed) * 1000


# --------------------------------------------------------------------------- a member's watch


@dataclasses.dataclass(frozen=True, slots=True)
class Finality:
    """How far the witnesses vouch for one case in this device's view."""

    #: Entries ``0 .. final - 1`` are in a checkpoint carrying the case's quorum.
    final: int
    #: The witnessed time of that checkpoint (ms), or None.
    witnessed_at: int | None


class LogWatch:
    """What this device holds of the broker log, and the rules that keep the broker to it.

    It keeps the newest checkpoint the broker signed for this device and the
    newest one that carried cosignatures.  Every later answer must extend both:
    a smaller tree is a rollback (a restored backup), one that does not extend
    them is a fork, and either raises ``SplitViewError`` with both signed notes
    as proof.  A device that has seen nothing yet believes the first answer;
    after that the broker cannot take back what it showed.
    """

    def __init__(
        self, receipt_key: bytes, *, latest: bytes | None = None, witnessed: bytes | None = None
    ) -> None:
        self.receipt_key = receipt_key
        self.latest = latest
        self.witnessed = witnessed

    def held_size(self) -> int:
        """The size of the newest checkpoint held: what the next answer must prove it extends."""
        held = self._held(self.latest)
        return 0 if held is None else held.size

    def _held(self, note_bytes: bytes | None) -> note.Checkpoint | None:
        return None if note_bytes is None else verify_checkpoint(note_bytes, self.receipt_key)[0]

    def observe(
        self,
        *,
        latest: bytes,
        since_proof: Sequence[bytes],
        witnessed: bytes,
        witnessed_proof: Sequence[bytes],
    ) -> tuple[note.Checkpoint, note.Checkpoint | None]:
        """Check a broker's answer against what this device holds; adopt it if it extends it."""
        new, _ = verify_checkpoint(latest, self.receipt_key)
        held = self._held(self.latest)
        if held is not None:
            try:
                check_consistent(held, new, since_proof)
            except ForkError as exc:
                raise SplitViewError(str(exc), proof=(self.latest or b"", latest)) from None
        seen: note.Checkpoint | None = None
        if witnessed:
            seen, _ = verify_checkpoint(witnessed, self.receipt_key)
            try:
                check_consistent(seen, new, witnessed_proof, what="latest checkpoint")
            except ForkError as exc:
                raise SplitViewError(str(exc), proof=(witnessed, latest)) from None
            before = self._held(self.witnessed)
            if before is not None and (
                seen.size < before.size or (seen.size == before.size and seen.root != before.root)
            ):
                raise SplitViewError(
                    "the broker's newest witnessed checkpoint is older than one already seen",
                    proof=(self.witnessed or b"", witnessed),
                )
        if held is None or new.size >= held.size:
            self.latest = latest
        if seen is not None:
            self.witnessed = witnessed
        return new, seen

    def finality(
        self,
        *,
        state_rule: Witnessing,
        agencies: frozenset[str],
        witnesses: Mapping[str, Sequence[Witness]],
        heads: Sequence[bytes],
        entry_hashes: Sequence[bytes],
        case_id: bytes,
        leaf: bytes,
        index: int,
        inclusion: Sequence[bytes],
    ) -> Finality | None:
        """How much of a case the held witnessed checkpoint vouches for, or None if it does not.

        ``leaf`` must be the case's entry at a position this view holds, with
        the entry hash and head this view computed there (else the broker
        showed the witnesses another history: ``SplitViewError``), included in
        the witnessed checkpoint; and that checkpoint must carry the case's quorum.
        """
        if not leaf or self.witnessed is None:
            return None
        checkpoint, parsed = verify_checkpoint(self.witnessed, self.receipt_key)
        entry = EntryLeaf.decode(leaf)
        merkle.verify_inclusion(merkle.leaf_hash(leaf), index, checkpoint.size, inclusion, checkpoint.root)
        if entry.case_id != case_id:
            raise MalformedError("the broker proved another case's entry")
        if entry.seq >= len(entry_hashes):
            return None  # the witnesses saw entries this device has not fetched yet
        if not (
            P.constant_time_equal(entry.entry_hash, entry_hashes[entry.seq])
            and P.constant_time_equal(entry.head, heads[entry.seq + 1])  # the head after the entry
        ):
            raise SplitViewError(
                f"the witnesses were shown another entry {entry.seq} of this case than this device holds",
                proof=(self.witnessed,),
            )
        at = witnessed_time(
            collect_cosignatures(parsed.text, parsed.signatures, witnesses), agencies, state_rule
        )
        if at is None:
            return None
        return Finality(final=entry.seq + 1, witnessed_at=at)
