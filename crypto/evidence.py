"""Evidence bundles: disclosed case updates that verify offline, years later.

A bundle carries everything but trust: the agency roots (which the verifier
accepts only if their fingerprints match the ones it is given), certificates,
revocation lists, the case's commit chain (wraps stripped), the hash of every
log entry, the broker's receipt on the last one, and for each disclosed update
its signed envelope and message key.  Because message keys come from a one-way
ratchet, disclosing them opens those updates and no others.

Verification replays the commit chain from genesis, recomputes the log chain
and checks the receipt, then opens each disclosed update under the state in
force at its position.  A hidden commit cannot make an update look valid: the
commit epochs must be contiguous from genesis, and every update must belong to
the epoch in force where it sits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Final

from caseline.crypto import primitives as P
from caseline.crypto.caselog import (
    KIND_COMMIT,
    KIND_UPDATE,
    CaseView,
    chain_heads,
    signed_entry_hash,
    verify_receipt,
)
from caseline.crypto.certs import TrustStore, VerifiedCert
from caseline.crypto.commits import CaseState, verify_commit
from caseline.crypto.keys import DeviceKeys, fingerprint, normalize_fingerprint
from caseline.crypto.updates import OpenedUpdate, open_update, verify_envelope
from caseline.schemas.errors import (
    ChainError,
    ForkError,
    GapError,
    MalformedError,
    NotMemberError,
    UntrustedError,
)
from caseline.schemas.wire import (
    CommitMessage,
    DeviceCert,
    Disclosed,
    EvidenceBundle,
    LoggedCommit,
    RootKey,
    decode_signed,
    encode_signed,
)

EVIDENCE_LABEL: Final = "evidence"
MAX_BUNDLE_BYTES: Final = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedRecord:
    """One disclosed update, verified, with the certificate of its author."""

    seq: int
    update: OpenedUpdate
    author: DeviceCert


@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceReport:
    """What a verified bundle proves."""

    case_id: bytes
    exporter: DeviceCert
    exported_at: int
    log_length: int
    head: bytes
    receipt_time: int
    states: tuple[CaseState, ...]
    records: tuple[VerifiedRecord, ...]


def export_evidence(
    view: CaseView,
    *,
    exporter: DeviceKeys,
    envelopes: Mapping[int, bytes],
    receipt: bytes,
    now: int,
) -> bytes:
    """Build and sign a bundle disclosing the updates at the given log positions.

    ``envelopes`` maps each disclosed position to the signed envelope stored
    there; ``receipt`` is the broker's receipt for the view's last entry.
    """
    if view.state is None or view.case_id is None:
        raise ChainError("nothing to export: the view holds no case")
    certs: dict[bytes, VerifiedCert] = {}
    for state in view.states.values():
        certs.update(state.certs)
    agencies = sorted({vc.cert.agency_id for vc in certs.values()})
    roots = tuple(RootKey(agency_id=a, public_key=view.trust.root(a)) for a in agencies)
    bundle = EvidenceBundle(
        case_id=view.case_id,
        exporter=exporter.device_id,
        time=now,
        roots=roots,
        certs=tuple(sorted({vc.signed for vc in certs.values()})),
        revocations=tuple(view.trust.revocation_lists()),
        commits=tuple(
            LoggedCommit(seq=view.commit_seqs[epoch], signed=view.states[epoch].signed_commit)
            for epoch in sorted(view.states)
        ),
        entry_hashes=tuple(view.entry_hashes),
        receipt=receipt,
        disclosed=tuple(
            Disclosed(seq=seq, envelope=envelopes[seq], message_key=view.message_key(seq))
            for seq in sorted(envelopes)
        ),
    )
    tbs = bundle.encode()
    return encode_signed(tbs, exporter.sign(EVIDENCE_LABEL, tbs))


def verify_evidence(signed: bytes, *, pinned: Mapping[str, str]) -> EvidenceReport:
    """Verify a bundle with nothing but pinned root fingerprints (agency id → 30 digits)."""
    tbs, sig = decode_signed(signed, max_size=MAX_BUNDLE_BYTES)
    bundle = EvidenceBundle.decode(tbs, max_size=MAX_BUNDLE_BYTES)
    trust = _trust_from_pins(bundle.roots, pinned)
    for crl in bundle.revocations:
        trust.add_revocation_list(crl)

    heads = chain_heads(bundle.case_id, bundle.entry_hashes)
    if not bundle.entry_hashes:
        raise GapError("bundle holds an empty log")

    # Replay the commit chain; epochs must run 0, 1, 2 … at increasing positions.
    states: list[tuple[int, CaseState]] = []
    prev: CaseState | None = None
    for logged in bundle.commits:
        ctbs, csig = decode_signed(logged.signed)
        _check_entry(bundle, logged.seq, signed_entry_hash(KIND_COMMIT, ctbs, csig))
        if states and logged.seq <= states[-1][0]:
            raise ChainError("commits are out of log order")
        state = verify_commit(
            prev,
            CommitMessage(tbs=ctbs, signature=csig, wraps=()),
            trust=trust,
            now=bundle.time,  # commits may not be dated after the export
            check_wraps=False,
        )
        if state.commit.log.count > logged.seq or heads[state.commit.log.count] != state.commit.log.head:
            raise ForkError("a commit saw a different history than the bundle's log")
        states.append((logged.seq, state))
        prev = state
    if not states or states[0][0] != 0:
        raise ChainError("bundle does not start with the genesis commit")

    last = len(bundle.entry_hashes) - 1
    receipt_key = _state_at(states, last).policy.receipt_key
    receipt = verify_receipt(bundle.receipt, receipt_key)
    if (receipt.case_id, receipt.seq, receipt.entry_hash) != (
        bundle.case_id,
        last,
        bundle.entry_hashes[last],
    ):
        raise ForkError("receipt does not cover the bundle's last entry")
    if not P.constant_time_equal(receipt.head, heads[-1]):
        raise ForkError("receipt signs another history than the bundle's")

    exporter = _find_cert(bundle.certs, bundle.exporter, trust, at=bundle.time)
    P.verify_labeled(exporter.sign_key, EVIDENCE_LABEL, tbs, sig)

    records = []
    for item in bundle.disclosed:
        records.append(
            _verify_disclosed(
                bundle,
                item=item,
                states=states,
                heads=heads,
                trust=trust,
                receipt_time=receipt.time,
            )
        )
    return EvidenceReport(
        case_id=bundle.case_id,
        exporter=exporter,
        exported_at=bundle.time,
        log_length=len(bundle.entry_hashes),
        head=heads[-1],
        receipt_time=receipt.time,
        states=tuple(s for _, s in states),
        records=tuple(records),
    )


def _trust_from_pins(roots: Iterable[RootKey], pinned: Mapping[str, str]) -> TrustStore:
    trust = TrustStore()
    wanted = {agency: normalize_fingerprint(fp) for agency, fp in pinned.items()}
    for root in roots:
        expected = wanted.get(root.agency_id)
        if expected is None:
            continue  # an agency the verifier does not trust stays unpinned
        if not P.constant_time_equal(
            fingerprint(root.agency_id, root.public_key).encode(), expected.encode()
        ):
            raise UntrustedError(f"root of {root.agency_id!r} does not match the pinned fingerprint")
        trust.pin(root.agency_id, root.public_key)
    if not trust.roots:
        raise UntrustedError("no root in the bundle matches a pinned fingerprint")
    return trust


def _check_entry(bundle: EvidenceBundle, seq: int, eh: bytes) -> None:
    if seq >= len(bundle.entry_hashes):
        raise GapError("bundle refers to a position beyond its log")
    if not P.constant_time_equal(bundle.entry_hashes[seq], eh):
        raise ForkError("an object does not match the log entry at its position")


def _state_at(states: list[tuple[int, CaseState]], seq: int) -> CaseState:
    current = None
    for commit_seq, state in states:
        if commit_seq <= seq:
            current = state
    if current is None:
        raise ChainError("position precedes the genesis commit")
    return current


def _find_cert(certs: Iterable[bytes], device_id: bytes, trust: TrustStore, *, at: int) -> DeviceCert:
    for signed in certs:
        ctbs, _ = decode_signed(signed)
        if DeviceCert.decode(ctbs).device_id == device_id:
            return trust.verify_cert(signed, at=at).cert
    raise NotMemberError("bundle lacks the certificate of the device it names")


def _verify_disclosed(
    bundle: EvidenceBundle,
    *,
    item: Disclosed,
    states: list[tuple[int, CaseState]],
    heads: list[bytes],
    trust: TrustStore,
    receipt_time: int,
) -> VerifiedRecord:
    etbs, esig = decode_signed(item.envelope)
    _check_entry(bundle, item.seq, signed_entry_hash(KIND_UPDATE, etbs, esig))
    state = _state_at(states, item.seq)
    envelope, _ = verify_envelope(item.envelope, state)
    opened = open_update(envelope, state=state, message_key=item.message_key)
    record = opened.record
    if record.log.count > item.seq or not P.constant_time_equal(heads[record.log.count], record.log.head):
        raise ForkError("update saw a different history than the bundle's log")
    trust.check_not_revoked(state.certs[envelope.sender].cert, at=record.time)
    if record.time > receipt_time + 5 * 60 * 1000:
        raise MalformedError("update is dated after the receipt that covers it")
    return VerifiedRecord(seq=item.seq, update=opened, author=state.certs[envelope.sender].cert)
