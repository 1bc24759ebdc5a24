"""Sealed case updates: sign, then encrypt, then sign the envelope.

Theory of operation
-------------------
1. The sender builds an ``UpdateRecord`` (case, epoch, sender, counter, hash of
   its previous update, what it has seen of the others and of the log, content
   type, content, time) and signs its exact bytes under the label ``update``.
   That signed record is the evidence: it verifies outside the thread, forever.
2. ``[record, signature]`` is encrypted with XChaCha20-Poly1305 under the message
   key of the sender's chain at position ``counter``; the associated data is the
   labelled header ``(case, epoch, sender, counter)``.
3. The resulting ``Envelope`` is signed again under the label ``envelope`` so
   that the broker, which cannot decrypt, can still check who posted it and that
   the poster is a member — and so that nobody can re-post a captured record
   under their own name.

A receiver accepts an update only if the envelope signature verifies, the AEAD
opens, the inner signature verifies under the same device's certificate, and
every header field equals the corresponding signed field.  The update's id is
the labelled hash of the record bytes; replies and gossip refer to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from caseline.crypto import primitives as P
from caseline.crypto.certs import check_may_post
from caseline.crypto.commits import CaseState
from caseline.crypto.keys import DeviceKeys
from caseline.schemas import content as content_schemas
from caseline.schemas.codec import pack
from caseline.schemas.errors import (
    ChainError,
    ContentError,
    InvalidContentError,
    MalformedError,
    NotAllowedError,
    NotPermittedError,
)
from caseline.schemas.wire import (
    AttachmentRef,
    Envelope,
    LogPosition,
    LogRef,
    Seen,
    UpdateRecord,
    decode_signed,
    encode_signed,
)

UPDATE_LABEL: Final = "update"
ENVELOPE_LABEL: Final = "envelope"
HISTORY_SHARE: Final = "history-share"
#: Content types whose content is a msgpack protocol object, not JSON.
SYSTEM_CONTENT_TYPES: Final = frozenset({HISTORY_SHARE})


def update_id(record_tbs: bytes) -> bytes:
    return P.hash_labeled("update", record_tbs)


def envelope_aad(case_id: bytes, epoch: int, sender: bytes, counter: int) -> bytes:
    return P.label("aad envelope") + pack([case_id, epoch, sender, counter])


@dataclasses.dataclass(frozen=True, slots=True)
class SealedUpdate:
    """What ``seal_update`` hands back: the bytes to post and what the sender keeps."""

    envelope: bytes
    update_id: bytes
    record: UpdateRecord
    message_key: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class OpenedUpdate:
    """A verified update: the record, its exact signed bytes and its id."""

    record: UpdateRecord
    signed_record: bytes
    update_id: bytes
    envelope: Envelope


def check_content(content_type: str, content: bytes, *, sending: bool = False) -> None:
    """Content must validate against its schema before sealing and after opening (and the sender's rules)."""
    if content_type in SYSTEM_CONTENT_TYPES:
        return
    content_schemas.validate_content(content_type, content, sending=sending)


def seal_update(
    *,
    keys: DeviceKeys,
    state: CaseState,
    counter: int,
    message_key: bytes,
    prev_own: bytes,
    seen: Sequence[Seen],
    log: LogPosition,
    content_type: str,
    content: bytes,
    now: int,
    nonce: bytes,
    witnessed: LogRef | None = None,
    attachments: Sequence[AttachmentRef] = (),
) -> SealedUpdate:
    """Seal one update for ``state``'s epoch with the sender chain's key at ``counter``.

    ``witnessed`` is the newest witnessed checkpoint the sender holds: signed
    into the record, it lets every reader check that the broker shows them the
    same log (gossip).  ``attachments`` name blobs already uploaded to the
    case; their addresses go on the envelope too, where the broker can see them.
    """
    member, cert = state.member(keys.device_id)
    # The sender's own checks: a refusal here is the caller's mistake, not a
    # verification failure, and nothing has been used up yet.
    if state.tainted:
        raise NotPermittedError("this epoch was opened by a revoked device: an owner must re-key the case")
    if keys.device_id in state.voided:
        raise NotPermittedError("this device does not count as a member of the case in this epoch")
    if member.role == "observer":
        raise NotPermittedError("observers of a case do not post to it")
    try:
        check_may_post(cert.cert, content_type)
    except NotAllowedError as exc:
        raise NotPermittedError(str(exc)) from None
    try:
        check_content(content_type, content, sending=True)
    except ContentError as exc:
        raise InvalidContentError(str(exc), fix=exc.fix) from None
    record = UpdateRecord(
        case_id=state.case_id,
        epoch=state.epoch,
        sender=keys.device_id,
        counter=counter,
        prev_own=prev_own,
        seen=tuple(seen),
        log=log,
        commit_hash=state.commit_hash,
        content_type=content_type,
        content=content,
        time=now,
        witnessed=witnessed,
        attachments=tuple(attachments) or None,
    )
    tbs = record.encode()
    plaintext = encode_signed(tbs, keys.sign(UPDATE_LABEL, tbs))
    aad = envelope_aad(state.case_id, state.epoch, keys.device_id, counter)
    envelope = Envelope(
        case_id=state.case_id,
        epoch=state.epoch,
        sender=keys.device_id,
        counter=counter,
        nonce=nonce,
        ciphertext=P.xchacha_seal(message_key, nonce, plaintext, aad),
        blobs=tuple(a.address for a in attachments) or None,
    )
    env_tbs = envelope.encode()
    signed_envelope = encode_signed(env_tbs, keys.sign(ENVELOPE_LABEL, env_tbs))
    return SealedUpdate(
        envelope=signed_envelope, update_id=update_id(tbs), record=record, message_key=message_key
    )


def verify_envelope(signed_envelope: bytes, state: CaseState) -> tuple[Envelope, bytes]:
    """The broker's and every receiver's first check: a member of this epoch signed it.

    Returns the envelope and its exact ``tbs`` bytes.  Needs no keys, so the
    broker runs it on every post.
    """
    tbs, sig = decode_signed(signed_envelope)
    envelope = Envelope.decode(tbs)
    check_envelope(envelope, tbs, sig, state)
    return envelope, tbs


def check_envelope(envelope: Envelope, tbs: bytes, signature: bytes, state: CaseState) -> None:
    """``verify_envelope`` for a caller that already decoded the signed pair."""
    if envelope.case_id != state.case_id or envelope.epoch != state.epoch:
        raise ChainError("envelope is for another case or epoch than the one in force")
    member, cert = state.member(envelope.sender)
    P.verify_labeled(cert.cert.sign_key, ENVELOPE_LABEL, tbs, signature)
    if member.role == "observer":
        raise NotAllowedError("observers do not post")


def open_update(envelope: Envelope, *, state: CaseState, message_key: bytes) -> OpenedUpdate:
    """Decrypt a verified envelope and verify the signed record inside it."""
    aad = envelope_aad(envelope.case_id, envelope.epoch, envelope.sender, envelope.counter)
    plaintext = P.xchacha_open(message_key, envelope.nonce, envelope.ciphertext, aad)
    tbs, sig = decode_signed(plaintext)
    record = UpdateRecord.decode(tbs)
    _, cert = state.member(envelope.sender)
    P.verify_labeled(cert.cert.sign_key, UPDATE_LABEL, tbs, sig)
    if (record.case_id, record.epoch, record.sender, record.counter) != (
        envelope.case_id,
        envelope.epoch,
        envelope.sender,
        envelope.counter,
    ):
        raise MalformedError("envelope header does not match the signed record")
    if envelope.blobs != (tuple(a.address for a in record.attachments) if record.attachments else None):
        raise MalformedError("the envelope's blobs are not the ones its signed record's attachments name")
    if not P.constant_time_equal(record.commit_hash, state.commit_hash):
        raise MalformedError("update names another commit than its epoch's")
    check_may_post(cert.cert, record.content_type)
    check_content(record.content_type, record.content)
    return OpenedUpdate(record=record, signed_record=plaintext, update_id=update_id(tbs), envelope=envelope)
