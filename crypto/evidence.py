"""Evidence bundles: disclosed case updates that verify offline, years later.

A bundle carries everything but trust: the agency roots (which the verifier
accepts only if their fingerprints match the ones it is given), certificates,
revocation lists, the case's commit chain (wraps stripped), the hash of every
log entry, the broker's receipt on the last one, and for each disclosed update
its signed envelope and message key.  Because message keys come from a one-way
ratchet, disclosing them opens those updates and no others.

A version-2 bundle carries a log receipt instead: a checkpoint of the broker
log and the inclusion proof of the bundle's last entry.  In a witnessed case
the bundle ends at the last *final* entry, and that checkpoint carries the
witnesses' cosignatures, with the agencies' signed witness lists to check them
by.  So it is not the broker alone that vouches for the order and time of what
the bundle shows, and two bundles cut from two branches of a forked history
name two different checkpoints.

Verification replays the commit chain from genesis, recomputes the log chain
and checks the receipt (and, in a witnessed case, the witness quorum), then
opens each disclosed update under the state in force at its position.  A
hidden commit cannot make an update look valid: the commit epochs must be
contiguous from genesis, and every update must belong to the epoch in force
where it sits.  The exporter must be a member of the case at the last entry,
and its agency allowed by the markings to disclose each update as evidence:
by its originator's release where the handling code or TLP asks for one
(crypto/evidence_releases.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Final

from caseline.crypto import note, tlog
from caseline.crypto import primitives as P
from caseline.crypto.caselog import (
    KIND_COMMIT,
    KIND_UPDATE,
    AnyReceipt,
    CaseView,
    chain_heads,
    signed_entry_hash,
    verify_receipt,
)
from caseline.crypto.certs import TrustStore, VerifiedCert
from caseline.crypto.commits import CaseState, verify_commit
from caseline.crypto.evidence_files import ExhibitStatus, disclosed_attachments
from caseline.crypto.evidence_releases import ReleaseUsed, check_releases
from caseline.crypto.keys import DeviceKeys, fingerprint, normalize_fingerprint
from caseline.crypto.updates import OpenedUpdate, open_update, verify_envelope
from caseline.schemas.errors import (
    ChainError,
    ExpiredError,
    ForkError,
    GapError,
    IntegrityError,
    MalformedError,
    NotMemberError,
    NotPermittedError,
    RevokedError,
    UntrustedError,
)
from caseline.schemas.wire import (
    MAX_NOTE_BYTES,
    CommitMessage,
    DeviceCert,
    Disclosed,
    EvidenceBundle,
    LoggedCommit,
    RootKey,
    WitnessList,
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
class Vouch:
    """A witness that cosigned the bundle's checkpoint, and when (ms, by its own clock)."""

    name: str
    agency_id: str
    time: int


#: A ``Voided`` reason for a whole commit: its committer was revoked at its time (§5.3).
VOIDED_COMMIT: Final = "voided-commit"


@dataclasses.dataclass(frozen=True, slots=True)
class Voided:
    """A commit of the bundle that voided a roster device, or was itself voided, and why.

    A reader of evidence must see that someone listed in the case did not
    count there (``VOID_*`` of ``crypto.commits``), or that a commit's
    additions were not granted (``VOIDED_COMMIT``, ``device`` its committer).
    """

    seq: int
    epoch: int
    device: DeviceCert
    reason: str


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
    #: Whether witnesses, not the broker alone, vouch for the history's order and time.
    witnessed: bool = False
    #: The broker-log checkpoint the last entry is proved into (None: a version-1 receipt).
    checkpoint: note.Checkpoint | None = None
    #: The listed witnesses whose cosignatures on that checkpoint verified.
    witnesses: tuple[Vouch, ...] = ()
    #: The witnessed time of the checkpoint (ms): when the quorum had seen it.
    witnessed_at: int | None = None
    #: Voided commits and roster devices, in log order.
    voided: tuple[Voided, ...] = ()
    #: Every attachment of the disclosed updates; a bundle alone includes none of their
    #: files, an export directory those its verifier checked (crypto/evidence_files.py).
    attachments: tuple[ExhibitStatus, ...] = ()
    #: The disclosed releases that let the exporter's agency disclose disclosed updates (§6.7).
    releases: tuple[ReleaseUsed, ...] = ()


def export_evidence(
    view: CaseView,
    *,
    exporter: DeviceKeys,
    envelopes: Mapping[int, bytes],
    receipt: bytes,
    now: int,
    upto: int | None = None,
) -> bytes:
    """Build and sign a bundle of the log's first ``upto`` entries (default: all the view holds).

    ``envelopes`` maps each disclosed position to the signed envelope stored
    there; ``receipt`` is the broker's receipt for entry ``upto - 1``.  With a
    log receipt the bundle is version 2 and carries the agencies' witness
    lists; in a witnessed case it must be (the caller passes the receipt into
    the witnessed checkpoint, and ``upto`` the count of final entries).  A
    version-1 receipt makes a version-1 bundle, for unwitnessed cases only.
    """
    if view.state is None or view.case_id is None:
        raise ChainError("nothing to export: the view holds no case")
    count = view.count if upto is None else upto
    if not 0 < count <= view.count:
        raise ChainError("a bundle covers the log from its genesis to an entry this view holds")
    beyond = sorted(seq for seq in envelopes if seq >= count)
    if beyond:
        raise NotPermittedError(
            f"entry {beyond[0]} lies beyond the end of the bundle's log ({count} entries)"
        )
    epochs = sorted(epoch for epoch, seq in view.commit_seqs.items() if seq < count)
    last_state = view.states[epochs[-1]]
    if exporter.device_id not in last_state.members:
        raise NotMemberError("only a member of the case at the bundle's last entry can export it")
    v2 = tlog.is_log_receipt(receipt)
    if v2:
        got = tlog.verify_log_receipt(receipt, last_state.policy.receipt_key)
        if (got.case_id, got.seq, got.entry_hash, got.head) != (
            view.case_id,
            count - 1,
            view.entry_hashes[count - 1],
            view.heads[count],
        ):
            raise ChainError("the receipt given is not for the bundle's last entry")
    elif last_state.witnessing.rule != "none":
        raise ChainError("a witnessed case's bundle needs the log receipt into a witnessed checkpoint")
    certs: dict[bytes, VerifiedCert] = {}
    for epoch in epochs:
        certs.update(view.states[epoch].certs)
    agencies = sorted({vc.cert.agency_id for vc in certs.values()})
    roots = tuple(RootKey(agency_id=a, public_key=view.trust.root(a)) for a in agencies)
    witness_lists = tuple(
        signed
        for signed in (view.trust.witness_list(a) for a in agencies if view.trust.witnesses(a))
        if signed is not None
    )
    bundle = EvidenceBundle(
        case_id=view.case_id,
        exporter=exporter.device_id,
        time=now,
        roots=roots,
        certs=tuple(sorted({vc.signed for vc in certs.values()})),
        revocations=tuple(view.trust.revocation_lists()),
        commits=tuple(
            LoggedCommit(seq=view.commit_seqs[epoch], signed=view.states[epoch].signed_commit)
            for epoch in epochs
        ),
        entry_hashes=tuple(view.entry_hashes[:count]),
        receipt=b"" if v2 else receipt,
        disclosed=tuple(
            Disclosed(seq=seq, envelope=envelopes[seq], message_key=view.message_key(seq))
            for seq in sorted(envelopes)
        ),
        witness_lists=witness_lists if v2 else None,
        log_receipt=receipt if v2 else None,
    )
    tbs = bundle.encode()
    return encode_signed(tbs, exporter.sign(EVIDENCE_LABEL, tbs))


def bundle_agencies(signed: bytes) -> list[str]:
    """The agencies whose roots a bundle carries: the fingerprints its verifier must be given.

    Nothing here is verified; it tells a verifier which pin is missing before
    the check fails on a member of an agency it did not pin.
    """
    tbs, _ = decode_signed(signed, max_size=MAX_BUNDLE_BYTES)
    return sorted({root.agency_id for root in EvidenceBundle.decode(tbs, max_size=MAX_BUNDLE_BYTES).roots})


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
    last_state = _state_at(states, last)
    receipt, proof = _verify_receipt(bundle, trust, last_state, heads)

    # The exporter must have been in the case where the bundle ends; its certificate is
    # the one that roster pinned, not merely one some pinned agency issued.
    member = last_state.certs.get(bundle.exporter)
    if bundle.exporter not in last_state.members or member is None:
        raise NotMemberError("the bundle's exporter is not a member of the case at its last entry")
    exporter = trust.verify_cert(member.signed, at=bundle.time).cert
    P.verify_labeled(exporter.sign_key, EVIDENCE_LABEL, tbs, sig)

    # Nothing in the bundle may be dated after the time that vouches for its end.
    bound = proof.witnessed_at if proof.witnessed_at is not None else receipt.time
    records = []
    for item in bundle.disclosed:
        records.append(
            _verify_disclosed(
                bundle,
                item=item,
                states=states,
                heads=heads,
                trust=trust,
                receipt_time=bound,
            )
        )
    # Last: whether the exporter's agency may put each disclosed update before a court at all.
    releases = check_releases(
        ((r.seq, r.update, r.author) for r in records), agency_id=exporter.agency_id, at=bundle.time
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
        witnessed=proof.witnessed_at is not None,
        checkpoint=proof.checkpoint,
        witnesses=proof.witnesses,
        witnessed_at=proof.witnessed_at,
        voided=_voided(states),
        attachments=disclosed_attachments(
            (r.seq, r.update.update_id, r.update.record.attachments, r.author) for r in records
        ),
        releases=releases,
    )


def _voided(states: list[tuple[int, CaseState]]) -> tuple[Voided, ...]:
    out: list[Voided] = []
    prev: CaseState | None = None
    for seq, state in states:
        if state.voided_committer is not None:
            certs = state.certs if prev is None else prev.certs
            out.append(Voided(seq, state.epoch, certs[state.voided_committer].cert, VOIDED_COMMIT))
        out += [Voided(seq, state.epoch, state.certs[d].cert, why) for d, why in state.voided.items()]
        prev = state
    return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class _Vouched:
    checkpoint: note.Checkpoint | None
    witnesses: tuple[Vouch, ...]
    witnessed_at: int | None


def _verify_receipt(
    bundle: EvidenceBundle, trust: TrustStore, state: CaseState, heads: list[bytes]
) -> tuple[AnyReceipt, _Vouched]:
    """The receipt on the last entry, and in a witnessed case the quorum on its checkpoint."""
    last = len(bundle.entry_hashes) - 1
    receipt_key = state.policy.receipt_key
    witnessed_case = state.witnessing.rule != "none"
    if bundle.log_receipt is None:  # version 1: the broker's word alone
        if witnessed_case:
            raise IntegrityError("a witnessed case's bundle must carry its witnessed checkpoint (version 2)")
        receipt: AnyReceipt = verify_receipt(bundle.receipt, receipt_key)
        vouched = _Vouched(
            checkpoint=receipt.checkpoint if isinstance(receipt, tlog.VerifiedReceipt) else None,
            witnesses=(),
            witnessed_at=None,
        )
    else:
        if bundle.receipt:
            raise MalformedError("a version-2 bundle carries its receipt in log_receipt only")
        listed: set[str] = set()
        for signed in bundle.witness_lists or ():
            agency_id = WitnessList.decode(decode_signed(signed)[0]).agency_id
            if agency_id in listed:
                raise MalformedError("a bundle carries one witness list per agency")
            listed.add(agency_id)
            try:
                trust.add_witness_list(signed)
            except UntrustedError:
                continue  # an agency the verifier did not pin vouches for nothing
        receipt = tlog.verify_log_receipt(bundle.log_receipt, receipt_key)
        vouched = _Vouched(checkpoint=receipt.checkpoint, witnesses=(), witnessed_at=None)
    if (receipt.case_id, receipt.seq, receipt.entry_hash) != (
        bundle.case_id,
        last,
        bundle.entry_hashes[last],
    ):
        raise ForkError("receipt does not cover the bundle's last entry")
    if not P.constant_time_equal(receipt.head, heads[-1]):
        raise ForkError("receipt signs another history than the bundle's")
    if witnessed_case and isinstance(receipt, tlog.VerifiedReceipt):
        vouched = _quorum(receipt, trust, state)
    return receipt, vouched


def _quorum(receipt: tlog.VerifiedReceipt, trust: TrustStore, state: CaseState) -> _Vouched:
    """The cosignatures on the receipt's checkpoint must meet the case's rule for its roster."""
    parsed = note.Note.parse(receipt.note, max_size=MAX_NOTE_BYTES)
    listed = {a: trust.witnesses(a) for a in trust.roots}
    cosigned = tlog.collect_cosignatures(parsed.text, parsed.signatures, listed)
    at = tlog.witnessed_time(cosigned, state.agencies, state.witnessing)
    if at is None:
        missing = sorted(state.agencies - {c.agency_id for c in cosigned})
        raise IntegrityError(
            "the bundle's checkpoint lacks the case's witness quorum"
            + (f" (no cosignature by a witness of {', '.join(missing)})" if missing else "")
        )
    return _Vouched(
        checkpoint=receipt.checkpoint,
        witnesses=tuple(
            Vouch(name=c.witness.name, agency_id=c.agency_id, time=c.timestamp * 1000)
            for c in sorted(cosigned, key=lambda c: (c.agency_id, c.witness.name))
        ),
        witnessed_at=at,
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
    if envelope.sender in state.voided:  # voided in its epoch: never disclosed (§6.4)
        raise RevokedError("a disclosed update was sent by a device voided in its epoch")
    if state.expired(envelope.sender, at=record.time):  # counted as removed by then (§5.5)
        raise ExpiredError("a disclosed update was sent after its sender's membership had ended")
    if record.time > receipt_time + 5 * 60 * 1000:
        raise MalformedError("update is dated after the receipt (or witnessed time) that covers it")
    return VerifiedRecord(seq=item.seq, update=opened, author=state.certs[envelope.sender].cert)
