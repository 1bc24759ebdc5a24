"""Request and response bodies of the broker's HTTP and WebSocket API.

They use the same strict codec as the protocol objects (tags 20–41), so a
hostile request is refused by exactly the code that refuses a hostile
envelope.  Signed protocol objects (certificates, revocation lists, commits,
envelopes, auth responses, receipts) travel as their own exact bytes and are
not wrapped.  Errors are ``application/problem+json`` (RFC 9457); see
``schemas/openapi.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Final

from caseline.schemas.codec import Bin, Nested, Seq, Struct, Text, UInt, wire
from caseline.schemas.wire import (
    AGENCY_ID,
    HASH,
    ID,
    MAX_CERT_BYTES,
    MAX_NOTE_BYTES,
    MAX_PROOF,
    MAX_ROSTER,
    OPT_HASH,
    TIME,
    USER_ID,
)

MAX_PAGE: Final = 512
#: A log receipt: its leaf, a checkpoint note with cosignatures, and up to 63 proof hashes.
MAX_RECEIPT: Final = 20480
MAX_SUBSCRIPTIONS: Final = 4096


#: Response header: a digest of every revocation list the broker holds (PROTOCOL.md §9).
REVOCATIONS_HEADER: Final = "Caseline-Revocations"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine: the only place plain HTTP is allowed (§9)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def revocations_digest(lists: Iterable[tuple[str, bytes]]) -> str:
    """The ``Caseline-Revocations`` value: lowercase hex SHA-256 over every (agency, list) pair.

    ``lists`` holds each agency's current revocation list as its exact signed
    bytes.  The digest changes whenever any agency publishes a new list, so a
    client that stored the digest it saw when it last fetched its pinned
    agencies' lists knows from any one response whether it must fetch again.
    It is a hint, not a proof: the lists themselves stay signed and
    rollback-checked, and a broker that lies in it could as well serve an old
    list (SECURITY.md).
    """
    h = hashlib.sha256(b"caseline/v1 revocations-digest")
    for agency_id, data in sorted(lists):
        name = agency_id.encode()
        h.update(len(name).to_bytes(2, "big") + name + hashlib.sha256(data).digest())
    return h.hexdigest()


def revocation_etag(signed_list: bytes) -> str:
    """The HTTP entity tag of a revocation list: a strong ETag over its exact signed bytes.

    Both sides compute it from bytes they hold, so a client needs to store
    nothing beyond the list itself to ask ``If-None-Match``.  It is a cache
    validator only: the client still verifies every list it adopts.
    """
    return '"' + hashlib.sha256(signed_list).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 §13.1.2, weak comparison)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChallengeRequest(Struct):
    """Ask the broker for a login challenge for one registered device."""

    TAG = 20
    device_id: bytes = wire(ID)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Session(Struct):
    """A session token (shown once; the broker keeps only its hash) and its expiry."""

    TAG = 21
    token: str = wire(Text(max=64, pattern=r"[A-Za-z0-9_-]{43}"))
    expires_at: int = wire(TIME)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry(Struct):
    """One case-log entry with the broker's receipt for it."""

    seq: int = wire(UInt())
    kind: str = wire(Text(max=8, choices=frozenset({"commit", "update", "purged"})))
    body: bytes = wire(Bin(max=2 * 1024 * 1024))
    receipt: bytes = wire(Bin(max=MAX_RECEIPT))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EntryPage(Struct):
    """A page of a case log after a cursor; ``count`` is the log length when read."""

    TAG = 22
    case_id: bytes = wire(ID)
    entries: tuple[Entry, ...] = wire(Seq(Nested(Entry), max=MAX_PAGE))
    count: int = wire(UInt())


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseSummary(Struct):
    """A case the caller is a member of, as the broker sees it (no content)."""

    case_id: bytes = wire(ID)
    epoch: int = wire(UInt())
    count: int = wire(UInt())
    head: bytes = wire(HASH)
    role: str = wire(Text(max=8))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseList(Struct):
    TAG = 23
    cases: tuple[CaseSummary, ...] = wire(Seq(Nested(CaseSummary), max=65536))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Directory(Struct):
    """A user's device certificates and their agency's revocation list, as claims to verify."""

    TAG = 24
    agency_id: str = wire(AGENCY_ID)
    user_id: str = wire(USER_ID)
    certs: tuple[bytes, ...] = wire(Seq(Bin(max=MAX_CERT_BYTES), max=MAX_ROSTER))
    revocations: bytes = wire(Bin(max=4 * 1024 * 1024))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgencyInfo(Struct):
    TAG = 25
    agency_id: str = wire(AGENCY_ID)
    name: str = wire(Text(max=200))
    country: str = wire(Text(max=2, pattern=r"[A-Z]{2}"))
    root_key: bytes = wire(Bin(size=32))
    fingerprint: str = wire(Text(max=40))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerInfo(Struct):
    """The broker's receipt key (which case policies name) and display name."""

    TAG = 26
    server_key: bytes = wire(Bin(size=32))
    name: str = wire(Text(max=200))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgencyList(Struct):
    TAG = 27
    agencies: tuple[AgencyInfo, ...] = wire(Seq(Nested(AgencyInfo), max=4096))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cursor(Struct):
    """Resume a case's stream after ``after`` entries (0 = from the genesis)."""

    case_id: bytes = wire(ID)
    after: int = wire(UInt())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subscribe(Struct):
    """WebSocket, client → broker: where to resume each case (others start at 0)."""

    TAG = 30
    cursors: tuple[Cursor, ...] = wire(Seq(Nested(Cursor), max=MAX_SUBSCRIPTIONS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Delivery(Struct):
    """WebSocket, broker → client: the next entry of one case, in log order."""

    TAG = 31
    case_id: bytes = wire(ID)
    entry: Entry = wire(Nested(Entry))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Notice(Struct):
    """WebSocket, broker → client: a stream-level event (``joined`` a case, ``closing``)."""

    TAG = 32
    kind: str = wire(Text(max=32))
    case_id: bytes = wire(Bin(sizes=(0, 16)))
    detail: str = wire(Text(max=200))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PostUpdate(Struct):
    """WebSocket, client → broker: post a sealed update on the stream, without HTTP per update.

    Posts on one connection are admitted in the order they arrive, so a sender
    may pipeline its updates (counters in order) and match results by id.
    """

    TAG = 33
    request_id: int = wire(UInt())
    case_id: bytes = wire(ID)
    envelope: bytes = wire(Bin(max=256 * 1024))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PostResult(Struct):
    """WebSocket, broker → client: the receipt for a post, or the problem with it."""

    TAG = 34
    request_id: int = wire(UInt())
    status: int = wire(UInt(max=599))
    receipt: bytes = wire(Bin(max=MAX_RECEIPT))
    problem: str = wire(Text(max=64))
    detail: str = wire(Text(max=300))


@dataclasses.dataclass(frozen=True, kw_only=True)
class WitnessedAnswer(Struct):
    """``GET /v1/log/witnessed``: where the broker log stands, with the proofs a member checks.

    ``latest`` is the newest checkpoint the broker signed, with ``since_proof``
    the consistency proof from the size the member asked about (``since``) to
    it.  ``witnessed`` is the newest checkpoint that carries cosignatures (with
    them; empty if none yet), with ``witnessed_proof`` from it to ``latest``.
    When a case was named, ``leaf`` is that case's last entry within
    ``witnessed`` and ``inclusion`` its proof at ``index`` (empty otherwise).
    """

    TAG = 39
    latest: bytes = wire(Bin(max=MAX_NOTE_BYTES))
    since_proof: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_PROOF))
    witnessed: bytes = wire(Bin(max=MAX_NOTE_BYTES))
    witnessed_proof: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_PROOF))
    leaf: bytes = wire(Bin(max=256))
    index: int = wire(UInt())
    inclusion: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_PROOF))


#: The most leaves one ``GET /v1/log/leaves`` returns.
MAX_LEAVES: Final = 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class InclusionProof(Struct):
    """``GET /v1/log/proof/inclusion``: leaf ``index``'s audit path in the tree of ``size`` leaves."""

    TAG = 35
    index: int = wire(UInt())
    size: int = wire(UInt())
    proof: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_PROOF))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsistencyProof(Struct):
    """``GET /v1/log/proof/consistency``: the tree of ``old`` leaves is a prefix of the tree of ``new``."""

    TAG = 36
    old: int = wire(UInt())
    new: int = wire(UInt())
    proof: tuple[bytes, ...] = wire(Seq(HASH, max=MAX_PROOF))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeafPage(Struct):
    """``GET /v1/log/leaves``: the exact bytes of leaves ``start`` to ``start + len(leaves) - 1``
    (each an ``EntryLeaf`` or an ``AuditLeaf``)."""

    TAG = 37
    start: int = wire(UInt())
    leaves: tuple[bytes, ...] = wire(Seq(Bin(max=256), max=MAX_LEAVES))


#: The media type of a PATCH body: raw bytes of an upload from ``Upload-Offset`` on (PROTOCOL.md §9).
UPLOAD_PART_TYPE: Final = "application/offset+octet-stream"
#: Request header of a PATCH, and response header of a 409: where the upload's stored bytes end.
UPLOAD_OFFSET_HEADER: Final = "Upload-Offset"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadRequest(Struct):
    """``POST /v1/cases/{case}/uploads``: start an upload of a blob of exactly ``length`` bytes."""

    TAG = 40
    length: int = wire(UInt())


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadState(Struct):
    """An upload as the broker holds it: ``offset`` bytes are durably stored; once ``offset`` is
    ``length`` the blob is complete and ``address`` (empty until then) names it."""

    TAG = 41
    upload_id: bytes = wire(ID)
    length: int = wire(UInt())
    offset: int = wire(UInt())
    expires_at: int = wire(TIME)
    address: bytes = wire(OPT_HASH)
