"""Local state sealed under the device's local key: view snapshots, events, session (pure).

Why events are stored, not rebuilt
----------------------------------
A restored view knows which updates it opened (their message keys) but not
what they said; ``history()`` and the unread counts of ``cases()`` need the
decoded events.  Rebuilding them for what is displayed would re-open each
update (a signature check and a decryption, most of what verification costs)
and would have to replay history shares and voiding to get authorship right.
Storing each entry's ``CaseEvent``s once, when the entry is verified, makes
``cases()`` read only the unread tail and ``history()`` one AEAD open per
entry — about a hundredth of re-verifying — and keeps exactly what the
verifier decided.  They are sealed like the outbox, since they hold content.

Every seal here is XChaCha20-Poly1305 under ``DeviceSecrets.local_key`` with a
random nonce the caller passes in, and associated data that names what the
blob is and where it belongs (label, case, position, format version): a blob
moved to another row, case or version fails to open instead of being misread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from caseline.client.core import Author, CaseEvent, Member
from caseline.crypto import primitives as P
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import MalformedError
from caseline.schemas.handling import Violation
from caseline.schemas.wire import AttachmentRef

EVENTS_VERSION: Final = 1
#: The format of a sealed request index (client/workflow.py ``Workflow.state``).
WORKFLOW_VERSION: Final = 1


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return nonce + P.xchacha_seal(key, nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a ``seal``ed blob; any failure is a ``DecryptionError``."""
    return P.xchacha_open(key, blob[: P.AEAD_NONCE_SIZE], blob[P.AEAD_NONCE_SIZE :], aad)


def snapshot_aad(case_id: bytes, count: int, version: int) -> bytes:
    return P.label("local view-snapshot") + P.lp(case_id) + P.u64(count) + P.u64(version)


def events_aad(case_id: bytes, seq: int) -> bytes:
    return P.label("local case-events") + P.lp(case_id) + P.u64(seq) + P.u64(EVENTS_VERSION)


def workflow_aad(case_id: bytes, part: str) -> bytes:
    return P.label("local case-workflow") + P.lp(case_id) + P.lp(part.encode()) + P.u64(WORKFLOW_VERSION)


def marks_aad(case_id: bytes, count: int, snapshot: bytes) -> bytes:
    """Binds a kept rule book to the very sealed snapshot it was kept with (``snapshot``: that blob)."""
    digest = P.hash_labeled("local case-marks snapshot", snapshot)
    return P.label("local case-marks") + P.lp(case_id) + P.u64(count) + P.u64(EVENTS_VERSION) + digest


def meta_aad(name: str, device_id: bytes) -> bytes:
    return P.label("local meta") + P.lp(name.encode()) + P.lp(device_id)


# --------------------------------------------------------------------------- events


def _author(a: Author | None) -> list[Any] | None:
    return None if a is None else [a.agency_id, a.user_id, a.device_id, a.device_role]


def _author_from(obj: Any) -> Author | None:
    return None if obj is None else Author(obj[0], obj[1], obj[2], obj[3])


def encode_events(events: Sequence[CaseEvent]) -> bytes:
    """The events one log entry produced (a history share's unlocked ones included)."""
    return pack(
        [
            [
                e.seq,
                e.kind,
                e.epoch,
                _author(e.author),
                e.time,
                e.readable,
                e.content_type,
                None if e.content is None else json.dumps(e.content, ensure_ascii=False).encode(),
                e.update_id,
                [[_author(m.author), m.role, m.voided] for m in e.members],
                e.shared,
                _author(e.voided_by),
                *_tail(e),
            ]
            for e in events
        ]
    )


def _tail(e: CaseEvent) -> list[Any]:
    """The optional fields: attachments (13th), then [marking verdict, receipt time] (14th).

    Each is written only when it or a later one is set, so events stored
    before they existed read as they always did.
    """
    files = [a.to_fields() for a in e.attachments]
    if e.violation is not None or e.received is not None:
        v = e.violation
        return [files, [None if v is None else [v.rule, v.update_id, v.message], e.received]]
    return [files] if files else []


def _extra(row: list[Any]) -> tuple[Violation | None, int | None]:
    if len(row) < 14:
        return None, None
    found, received = row[13][:2]
    violation = None if found is None else Violation(str(found[0]), bytes(found[1]), str(found[2]))
    return violation, None if received is None else int(received)


def decode_events(case_id: bytes, data: bytes) -> list[CaseEvent]:
    out = []
    try:
        for row in unpack(data, max_size=len(data)):
            # Rows stored before voided commits existed have no ``voided_by``, members no flag.
            seq, kind, epoch, author, time, readable, content_type, content, update_id, members, shared = row[
                :11
            ]
            voided_by = row[11] if len(row) > 11 else None
            # A thirteenth field, the update's attachments, is written only when it has some,
            # so events stored before attachments existed read as they always did.
            files = (
                tuple(AttachmentRef.from_fields(f, where="attachment") for f in row[12]) if row[12:] else ()
            )
            violation, received = _extra(row)
            out.append(
                CaseEvent(
                    case_id=case_id,
                    seq=seq,
                    kind=kind,
                    epoch=epoch,
                    author=_author_from(author),
                    time=time,
                    readable=readable,
                    content_type=content_type,
                    content=None if content is None else json.loads(content),
                    update_id=update_id,
                    members=tuple(
                        Member(_member_author(m[0]), m[1], voided=m[2:] == [True]) for m in members
                    ),
                    shared=shared,
                    voided_by=_author_from(voided_by),
                    attachments=files,
                    violation=violation,
                    received=received,
                )
            )
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise MalformedError("stored events do not decode") from exc
    return out


def _member_author(obj: Any) -> Author:
    author = _author_from(obj)
    if author is None:
        raise MalformedError("a stored roster member has no author")
    return author
