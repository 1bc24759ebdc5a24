"""The witness's decision on one add-checkpoint request (c2sp.org/tlog-witness), pure.

No I/O, clock or RNG: the shell parses the body with ``parse_request``, loads what it
knows of the log into a ``LogView``, and calls ``decide`` with the time; the
``Outcome`` says exactly what to answer and what to persist.  Persisting and answering
are the shell's, in that order, and the load-decide-persist must be one transaction so
that two requests cannot roll the log back (the race the spec describes).

Beyond the spec's "latest checkpoint", the witness remembers every (size, root) it has
cosigned.  A validly log-signed checkpoint with a size it cosigned but another root is
an **equivocation**: two notes the log signed that cannot both be true.  It is refused
like any inconsistent checkpoint, and both notes are kept as proof, for anyone to check
against the log's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from caseline.crypto.merkle import EMPTY_ROOT, MAX_PROOF, verify_consistency
from caseline.crypto.note import (
    ALG_ED25519,
    Checkpoint,
    Note,
    b64decode_strict,
    cosign,
    key_id,
    parse_decimal,
    verify_note,
)
from caseline.schemas.errors import IntegrityError, MalformedError, VerificationError

MAX_BODY: Final = 64 * 1024
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint body: old size, consistency proof, signed checkpoint."""

    old_size: int
    proof: tuple[bytes, ...]
    note: Note
    checkpoint: Checkpoint


@dataclass(frozen=True)
class LogView:
    """What the witness holds about one known log, as loaded for one request."""

    public_key: bytes  # the log's Ed25519 note key; its key name is the origin
    size: int  # of the latest cosigned checkpoint, 0 if none
    root: bytes  # of the latest cosigned checkpoint, the empty tree's if none
    earlier: tuple[bytes, bytes] | None  # (root, note) cosigned earlier at the request's size, if any


@dataclass(frozen=True)
class Outcome:
    """The answer to send, and what to persist before sending it."""

    status: int
    body: bytes
    content_type: str = TEXT_CONTENT_TYPE
    cosigned: Note | None = None  # on 200: the new latest checkpoint, log and witness signatures
    equivocation: tuple[bytes, bytes] | None = None  # (earlier cosigned note, this note)


def parse_request(body: bytes) -> AddCheckpoint:
    """Parse ``old N``, up to 63 base64 hashes, a blank line and a signed checkpoint."""
    if len(body) > MAX_BODY:
        raise MalformedError("request body too large")
    split = body.find(b"\n\n")
    if split < 0:
        raise MalformedError("no blank line before the checkpoint")
    try:
        head = body[: split + 1].decode("ascii").split("\n")[:-1]
    except UnicodeDecodeError as exc:
        raise MalformedError("the old size and proof lines are ASCII") from exc
    if not head[0].startswith("old "):
        raise MalformedError("the first line is 'old' and a size")
    old = parse_decimal(head[0][4:], "old size")
    if len(head) - 1 > MAX_PROOF:
        raise MalformedError(f"more than {MAX_PROOF} proof lines")
    proof = tuple(b64decode_strict(line, "proof hash") for line in head[1:])
    if any(len(h) != 32 for h in proof):
        raise MalformedError("a proof hash is 32 bytes")
    note = Note.parse(body[split + 2 :])
    return AddCheckpoint(old, proof, note, Checkpoint.parse(note.text))


def _text(status: int, reason: str, equivocation: tuple[bytes, bytes] | None = None) -> Outcome:
    return Outcome(status, reason.encode() + b"\n", equivocation=equivocation)


def decide(
    request: AddCheckpoint, view: LogView | None, *, name: str, secret_key: bytes, now: int
) -> Outcome:
    """Apply tlog-witness's checks in its order; cosign at ``now`` (POSIX seconds) if all pass."""
    cp, origin = request.checkpoint, request.checkpoint.origin
    if view is None:
        return _text(404, "unknown log origin")
    try:
        verify_note(request.note, name=origin, public_key=view.public_key)
    except VerificationError:
        return _text(403, "no valid signature by the log's key")
    equivocation = None
    if view.earlier is not None and view.earlier[0] != cp.root:
        equivocation = (view.earlier[1], request.note.encode())
    if request.old_size > cp.size:
        return _text(400, "old size is larger than the checkpoint size", equivocation)
    if request.old_size != view.size:
        return Outcome(409, b"%d\n" % view.size, SIZE_CONTENT_TYPE, equivocation=equivocation)
    if cp.size == 0 and cp.root != EMPTY_ROOT:
        return _text(422, "a checkpoint of size 0 must have the empty tree's root", equivocation)
    if request.old_size == 0 and request.proof:
        return _text(422, "the proof from size 0 must be empty", equivocation)
    if request.old_size > 0:
        try:
            verify_consistency(request.old_size, cp.size, view.root, cp.root, request.proof)
        except IntegrityError:
            return _text(422, "the consistency proof does not verify", equivocation)
    if equivocation is not None:  # unreachable while latest >= every cosigned size; never cosign it
        return _text(422, "the log signed another root at this size", equivocation)
    cosignature = cosign(request.note.text, name=name, secret_key=secret_key, timestamp=now)
    log_kid = key_id(origin, ALG_ED25519, view.public_key)
    log_sigs = tuple(s for s in request.note.signatures if s.name == origin and s.key_id == log_kid)
    cosigned = Note(request.note.text, (*log_sigs, cosignature))
    return Outcome(200, cosignature.line(), cosigned=cosigned)
