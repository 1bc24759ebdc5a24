"""Every protocol object that crosses a trust boundary, as a strict wire struct.

Each top-level type has a fixed ``TAG``; PROTOCOL.md lists the field order of
each.  Signed objects travel as ``[tbs, signature]`` where ``tbs`` is the exact
encoding of one of these structs: receivers verify those bytes and then act only
on what they decode from them.

Identifiers are raw bytes: case ids are 16 random bytes, device ids are the
first 16 bytes of a labelled hash of the device's signing key, so a device id
can never name a key other than its own (the CVE-2022-39250 class of confusion).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from caseline.schemas.codec import (
    MAX_MESSAGE_BYTES,
    Bin,
    Nested,
    Seq,
    Struct,
    Text,
    UInt,
    pack,
    unpack,
    wire,
)
from caseline.schemas.errors import MalformedError

ID_SIZE: Final = 16
HASH_SIZE: Final = 32
KEY_SIZE: Final = 32
SIG_SIZE: Final = 64
KEM_PUBLIC_SIZE: Final = 1216
MAX_ROSTER: Final = 256
MAX_CONTENT: Final = 65536
MAX_CERT_BYTES: Final = 2048
MAX_SEEN: Final = 16
MAX_REVOCATIONS: Final = 65536
MAX_LOG_ENTRIES_IN_BUNDLE: Final = 65536

AGENCY_ID = Text(max=64, pattern=r"[a-z0-9][a-z0-9.-]{0,63}")
USER_ID = Text(max=128, pattern=r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
CONTENT_TYPE = Text(max=32, pattern=r"[a-z][a-z0-9-]{0,31}")
#: A supervisor is an officer who may also release any update of its own agency (PROTOCOL.md §6.7).
DEVICE_ROLES: Final = frozenset({"officer", "supervisor", "bot", "admin"})
CASE_ROLES: Final = frozenset({"owner", "member", "observer"})
HANDLING_CODES: Final = frozenset({"H0", "H1", "H2", "H3"})
TLP_LEVELS: Final = frozenset({"CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"})
HISTORY_POLICIES: Final = frozenset({"shared", "none"})
REVOCATION_REASONS: Final = frozenset(
    {"unspecified", "key-compromise", "device-lost", "superseded", "left-agency"}
)
#: A bot scope that lets a bot read history; every other scope names a content type.
READ_SCOPE: Final = "read"

ID = Bin(size=ID_SIZE)
HASH = Bin(size=HASH_SIZE)
OPT_HASH = Bin(sizes=(0, HASH_SIZE))  # empty for "none" (the genesis commit's predecessor)
TIME = UInt()  # milliseconds since the Unix epoch, UTC


# --------------------------------------------------------------------------- signed container


def encode_signed(tbs: bytes, signature: bytes) -> bytes:
    """The wire form of a signed object: ``[tbs, signature]``."""
    return pack([tbs, signature])


def decode_signed(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> tuple[bytes, bytes]:
    """Split a signed object into its exact ``tbs`` bytes and signature."""
    obj = unpack(data, max_size=max_size)
    if (
        not isinstance(obj, list)
        or len(obj) != 2
        or type(obj[0]) is not bytes
        or type(obj[1]) is not bytes
        or len(obj[1]) != SIG_SIZE
    ):
        raise MalformedError("expected a [tbs, signature] pair")
    return obj[0], obj[1]


# --------------------------------------------------------------------------- certificates


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeviceCert(Struct):
    """An agency root's statement that a device's keys belong to one of its users."""

    TAG = 1
    agency_id: str = wire(AGENCY_ID)
    user_id: str = wire(USER_ID)
    device_id: bytes = wire(ID)
    role: str = wire(Text(max=16, choices=DEVICE_ROLES))
    scopes: tuple[str, ...] = wire(Seq(CONTENT_TYPE, max=16))
    sign_key: bytes = wire(Bin(size=KEY_SIZE))
    kem_key: bytes = wire(Bin(size=KEM_PUBLIC_SIZE))
    not_before: int = wire(TIME)
    not_after: int = wire(TIME)
    serial: int = wire(UInt())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Revocation(Struct):
    """One revoked device: every certificate for ``device_id`` dies at ``revoked_at``."""

    device_id: bytes = wire(ID)
    serial: int = wire(UInt())
    revoked_at: int = wire(TIME)
    reason: str = wire(Text(max=32, choices=REVOCATION_REASONS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RevocationList(Struct):
    """An agency's complete list of revoked devices; ``number`` only ever grows."""

    TAG = 2
    agency_id: str = wire(AGENCY_ID)
    number: int = wire(UInt())
    issued_at: int = wire(TIME)
    entries: tuple[Revocation, ...] = wire(Seq(Nested(Revocation), max=MAX_REVOCATIONS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnrolmentRequest(Struct):
    """A device asking its agency for a certificate, signed with the key it asks about.

    The signature proves the requester holds the signing key, so an administrator
    cannot be tricked into certifying someone else's key under an officer's name.
    """

    TAG = 12
    agency_id: str = wire(AGENCY_ID)
    user_id: str = wire(USER_ID)
    sign_key: bytes = wire(Bin(size=KEY_SIZE))
    kem_key: bytes = wire(Bin(size=KEM_PUBLIC_SIZE))
    time: int = wire(TIME)


# --------------------------------------------------------------------------- case commits


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy(Struct):
    """The case rules every member agreed to by accepting the commit that set them."""

    retention_days: int = wire(UInt(max=36500))
    handling: str = wire(Text(max=2, choices=HANDLING_CODES))
    tlp: str = wire(Text(max=12, choices=TLP_LEVELS))
    history: str = wire(Text(max=8, choices=HISTORY_POLICIES))
    receipt_key: bytes = wire(Bin(size=KEY_SIZE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Member(Struct):
    """One device in a case roster, pinned to the exact certificate it joined with."""

    device_id: bytes = wire(ID)
    cert_hash: bytes = wire(HASH)
    role: str = wire(Text(max=8, choices=CASE_ROLES))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogPosition(Struct):
    """How much of the case log the author had seen: ``count`` entries ending in ``head``."""

    count: int = wire(UInt())
    head: bytes = wire(HASH)


WITNESS_RULES: Final = frozenset({"each-agency", "none"})
#: A case's bound on how long its log may stay unwitnessed (ms): from a second to an hour.
MIN_ALARM_AFTER: Final = 1_000
MAX_ALARM_AFTER: Final = 3_600_000
DEFAULT_ALARM_AFTER: Final = 60_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Witnessing(Struct):
    """Which witnesses must cosign a checkpoint before members treat entries as final.

    ``each-agency``: at least one witness listed by every agency with a device in
    the roster in force.  ``none``: the case is unwitnessed, and says so.  A log
    position left unwitnessed for ``alarm_after`` ms raises the split-view alarm.
    """

    rule: str = wire(Text(max=16, choices=WITNESS_RULES))
    alarm_after: int = wire(UInt(min=MIN_ALARM_AFTER, max=MAX_ALARM_AFTER))


#: What a version-1 commit means: the case is not witnessed.
UNWITNESSED: Final = Witnessing(rule="none", alarm_after=DEFAULT_ALARM_AFTER)


#: ``each-agency-owner``: a device of an agency with no active member in the case is
#: admitted only with the approval of an owner of every other agency that has one.
ADMISSION_RULES: Final = frozenset({"none", "each-agency-owner"})
MAX_APPROVAL_BYTES: Final = 512


@dataclasses.dataclass(frozen=True, kw_only=True)
class Term(Struct):
    """When one roster device's membership ends unless a later commit renews it."""

    device_id: bytes = wire(ID)
    expires: int = wire(TIME)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Approval(Struct):
    """An owner's consent to one device joining a case, valid for one commit only.

    Binding the predecessor's hash (not just the case) means an approval cannot
    be replayed into a later epoch, where the agencies in the case may differ;
    binding the exact certificate, role and expiry means it approves exactly
    the roster entry the commit makes, not a higher role or a longer stay.
    """

    TAG = 17
    case_id: bytes = wire(ID)
    prev_commit: bytes = wire(HASH)
    device_id: bytes = wire(ID)
    cert_hash: bytes = wire(HASH)
    role: str = wire(Text(max=8, choices=CASE_ROLES))
    #: 0: no expiry.
    expires: int = wire(TIME)
    approver: bytes = wire(ID)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Commit(Struct):
    """The signed body of a membership commit: the complete next state of a case."""

    TAG = 3
    case_id: bytes = wire(ID)
    epoch: int = wire(UInt())
    prev_commit: bytes = wire(OPT_HASH)
    committer: bytes = wire(ID)
    time: int = wire(TIME)
    policy: Policy = wire(Nested(Policy))
    roster: tuple[Member, ...] = wire(Seq(Nested(Member), max=MAX_ROSTER))
    certs: tuple[bytes, ...] = wire(Seq(Bin(max=MAX_CERT_BYTES), max=MAX_ROSTER))
    log: LogPosition = wire(Nested(LogPosition))
    wraps_hash: bytes = wire(HASH)
    sealed_info: bytes = wire(Bin(max=4096))
    #: Version 2 only; a version-1 commit leaves its case unwitnessed.
    witnessing: Witnessing | None = wire(Nested(Witnessing), since=2)
    #: Version 3: when memberships end (roster devices without a term do not expire) ...
    terms: tuple[Term, ...] | None = wire(Seq(Nested(Term), max=MAX_ROSTER), since=3)
    #: ... who must approve a third agency's admission (``ADMISSION_RULES``) ...
    admission: str | None = wire(Text(max=24, choices=ADMISSION_RULES), since=3)
    #: ... and the signed ``Approval`` objects this commit relies on (PROTOCOL.md §5.5).
    approvals: tuple[bytes, ...] | None = wire(Seq(Bin(max=MAX_APPROVAL_BYTES), max=MAX_ROSTER), since=3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Wrap(Struct):
    """The epoch secret HPKE-sealed to one roster device."""

    device_id: bytes = wire(ID)
    ciphertext: bytes = wire(Bin(max=2048))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommitMessage(Struct):
    """A commit as it is posted and stored: signed body plus the wraps it hashes."""

    TAG = 4
    tbs: bytes = wire(Bin(max=1 << 20))
    signature: bytes = wire(Bin(size=SIG_SIZE))
    wraps: tuple[Wrap, ...] = wire(Seq(Nested(Wrap), max=MAX_ROSTER))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseInfo(Struct):
    """Case details the broker must not read, sealed under the epoch secret."""

    TAG = 5
    title: str = wire(Text(max=200))
    reference: str = wire(Text(max=100))


# --------------------------------------------------------------------------- updates


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seen(Struct):
    """Another sender's latest update as the author saw it (gossip for drop/fork detection)."""

    device_id: bytes = wire(ID)
    epoch: int = wire(UInt())
    counter: int = wire(UInt())
    update_id: bytes = wire(HASH)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogRef(Struct):
    """A checkpoint of the broker log as a member saw it: its tree size and root (gossip)."""

    size: int = wire(UInt())
    root: bytes = wire(HASH)


#: At most this many files ride on one update (PROTOCOL.md §6.6).
MAX_ATTACHMENTS: Final = 16
#: The largest file the protocol can describe; a broker sets its own, lower, maximum.
MAX_ATTACHMENT_SIZE: Final = 2**40
MEDIA_TYPE = Text(max=127, pattern=r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttachmentRef(Struct):
    """One file riding on an update: what it is, and how to fetch, open and check it.

    The key travels only inside the signed, encrypted record, so the broker
    that stores the ciphertext never holds it.  The name is the sender's word
    for the file, not a path: a reader sanitises it before saving anything.
    """

    name: str = wire(Text(max=255, pattern=r"[^\x00-\x1f\x7f]{1,255}"))
    media_type: str = wire(MEDIA_TYPE)
    size: int = wire(UInt(max=MAX_ATTACHMENT_SIZE))
    #: SHA-256 of the file's bytes, as forensic tools print it.
    sha256: bytes = wire(HASH)
    #: The blob's address: the labelled hash of its ciphertext (PROTOCOL.md §6.6).
    address: bytes = wire(HASH)
    key: bytes = wire(Bin(size=KEY_SIZE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpdateRecord(Struct):
    """The signed plaintext of a case update: what officers rely on and courts see."""

    TAG = 6
    case_id: bytes = wire(ID)
    epoch: int = wire(UInt())
    sender: bytes = wire(ID)
    counter: int = wire(UInt())
    prev_own: bytes = wire(OPT_HASH)
    seen: tuple[Seen, ...] = wire(Seq(Nested(Seen), max=MAX_SEEN))
    log: LogPosition = wire(Nested(LogPosition))
    commit_hash: bytes = wire(HASH)
    content_type: str = wire(CONTENT_TYPE)
    content: bytes = wire(Bin(max=MAX_CONTENT))
    time: int = wire(TIME)
    #: Version 2: the newest witnessed checkpoint the sender held (gossip, PROTOCOL.md §7.9).
    witnessed: LogRef | None = wire(Nested(LogRef), since=2)
    #: Version 3: the files riding on the update; set only when there is at least one.
    attachments: tuple[AttachmentRef, ...] | None = wire(
        Seq(Nested(AttachmentRef), max=MAX_ATTACHMENTS, min=1), since=3
    )


#: What the attachments can add to a sealed record beyond its content (16 references
#: with 255-character names of up to four UTF-8 bytes each, plus framing).
ATTACHMENTS_OVERHEAD: Final = MAX_ATTACHMENTS * 1280


@dataclasses.dataclass(frozen=True, kw_only=True)
class Envelope(Struct):
    """The sealed update the broker stores and relays; signed by the sender device."""

    TAG = 7
    case_id: bytes = wire(ID)
    epoch: int = wire(UInt())
    sender: bytes = wire(ID)
    counter: int = wire(UInt())
    nonce: bytes = wire(Bin(size=24))
    ciphertext: bytes = wire(Bin(max=MAX_CONTENT + 8192 + ATTACHMENTS_OVERHEAD))
    #: Version 2: the addresses of the blobs the record's attachments name, in their
    #: order, so that the broker can check they are stored and keep them while referenced.
    blobs: tuple[bytes, ...] | None = wire(Seq(HASH, max=MAX_ATTACHMENTS, min=1), since=2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Receipt(Struct):
    """The broker's signed statement that an entry sits at ``seq`` under ``head``."""

    TAG = 8
    case_id: bytes = wire(ID)
    seq: int = wire(UInt())
    entry_hash: bytes = wire(HASH)
    head: bytes = wire(HASH)
    time: int = wire(TIME)


# --------------------------------------------------------------------------- the witnessed log

MAX_PROOF: Final = 63
MAX_NOTE_BYTES: Final = 16384


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntryLeaf(Struct):
    """The broker log's leaf for one case-log entry: where it sits and what the case head became."""

    TAG = 14
    case_id: bytes = wire(ID)
    seq: int = wire(UInt())
    entry_hash: bytes = wire(HASH)
    head: bytes = wire(HASH)
    time: int = wire(TIME)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditLeaf(Struct):
    """The broker log's leaf for one row of the broker's own audit log."""

    TAG = 15
    audit_seq: int = wire(UInt())
    audit_hash: bytes = wire(HASH)
    time: int = wire(TIME)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogReceipt(Struct):
    """A checkpoint of the broker log and the proof that an entry's leaf is in it.

    Its authority is the checkpoint's signature (a C2SP signed note), so one
    signature serves every entry of a group commit.
    """

    TAG = 16
    leaf: bytes = wire(Bin(max=256))
    index: int = wire(UInt())
    checkpoint: bytes = wire(Bin(max=MAX_NOTE_BYTES))
    proof: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_PROOF))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Witness(Struct):
    """One witness an agency runs: its note key name, Ed25519 key and submission URL."""

    name: str = wire(Text(max=128, pattern=r"[!-*,-~]{1,128}"))
    public_key: bytes = wire(Bin(size=KEY_SIZE))
    url: str = wire(Text(max=512, pattern=r"https?://[!-~]{1,500}"))


MAX_WITNESSES: Final = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class WitnessList(Struct):
    """An agency root's list of its witnesses; ``number`` only ever grows."""

    TAG = 13
    agency_id: str = wire(AGENCY_ID)
    number: int = wire(UInt())
    issued_at: int = wire(TIME)
    witnesses: tuple[Witness, ...] = wire(Seq(Nested(Witness), max=MAX_WITNESSES))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharedKey(Struct):
    """One disclosed message key: opens exactly one envelope and nothing else."""

    seq: int = wire(UInt())
    entry_hash: bytes = wire(HASH)
    message_key: bytes = wire(Bin(size=KEY_SIZE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class HistoryShare(Struct):
    """Content of a ``history-share`` update: message keys for earlier envelopes."""

    TAG = 9
    recipients: tuple[bytes, ...] = wire(Seq(ID, max=MAX_ROSTER))
    keys: tuple[SharedKey, ...] = wire(Seq(Nested(SharedKey), max=1024))


# --------------------------------------------------------------------------- evidence


@dataclasses.dataclass(frozen=True, kw_only=True)
class RootKey(Struct):
    """An agency root public key as carried in a bundle (checked against pins)."""

    agency_id: str = wire(AGENCY_ID)
    public_key: bytes = wire(Bin(size=KEY_SIZE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoggedCommit(Struct):
    """A commit (signed body, wraps stripped) at its log position."""

    seq: int = wire(UInt())
    signed: bytes = wire(Bin(max=1 << 20))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Disclosed(Struct):
    """A disclosed update: its signed envelope, log position and message key."""

    seq: int = wire(UInt())
    envelope: bytes = wire(Bin(max=MAX_CONTENT + 16384))
    message_key: bytes = wire(Bin(size=KEY_SIZE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvidenceBundle(Struct):
    """Everything needed to verify disclosed updates offline, signed by the exporter."""

    TAG = 10
    case_id: bytes = wire(ID)
    exporter: bytes = wire(ID)
    time: int = wire(TIME)
    roots: tuple[RootKey, ...] = wire(Seq(Nested(RootKey), max=64))
    certs: tuple[bytes, ...] = wire(Seq(Bin(max=MAX_CERT_BYTES), max=4096))
    revocations: tuple[bytes, ...] = wire(Seq(Bin(max=MAX_MESSAGE_BYTES), max=64))
    commits: tuple[LoggedCommit, ...] = wire(Seq(Nested(LoggedCommit), max=4096))
    entry_hashes: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_LOG_ENTRIES_IN_BUNDLE))
    #: Version 1 only: the broker's receipt on the last entry.  Empty in version 2.
    receipt: bytes = wire(Bin(max=1024))
    disclosed: tuple[Disclosed, ...] = wire(Seq(Nested(Disclosed), max=4096))
    #: Version 2: the signed witness lists of the agencies in the rosters that list witnesses.
    witness_lists: tuple[bytes, ...] | None = wire(Seq(Bin(max=4096), max=64), since=2)
    #: Version 2: the log receipt of the last entry; in a witnessed case its
    #: checkpoint note carries the witnesses' cosignatures.
    log_receipt: bytes | None = wire(Bin(max=20480), since=2)


# --------------------------------------------------------------------------- broker authentication


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthChallenge(Struct):
    """A broker's one-time challenge; the device signs its exact bytes to log in."""

    TAG = 11
    server_key: bytes = wire(Bin(size=KEY_SIZE))
    device_id: bytes = wire(ID)
    nonce: bytes = wire(Bin(size=32))
    issued_at: int = wire(TIME)
    expires_at: int = wire(TIME)
