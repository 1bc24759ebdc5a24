"""Case membership as a hash chain of signed commits (an MLS-lite).

Theory of operation
-------------------
A case is the chain ``genesis → commit 1 → commit 2 …``.  Every commit names the
*complete* next state — roster (device, exact certificate hash, role), policy —
so a verifier never has to reconstruct membership from deltas.  Commit ``e+1``
names the hash of commit ``e`` and is signed by a device that held the ``owner``
role in epoch ``e`` (genesis: by an owner it creates).  Replaying the chain from
genesis therefore proves who is in the case and who put them there; the broker
can order commits but cannot write one.

Each commit carries a fresh random epoch secret HPKE-sealed (X-Wing) to every
roster device; ``info`` binds case, epoch, predecessor, committer, recipient
device and the hash of the recipient's KEM key, and the signed body carries the
hash of the wraps.  A removed device gets no wrap and the secret is fresh, so it
cannot derive the new epoch.

A revocation an agency publishes later, dated back (PROTOCOL.md §4.5), does not
make an accepted commit invalid: that would stop the case for everyone who
replays it.  It *voids* instead (``voiding``): a roster device revoked at the
commit's time stays listed but counts as no member, and a commit whose
committer was revoked keeps its place but adds nobody, raises no role and
opens a *tainted* epoch, whose secret a thief may know.

Membership terms (PROTOCOL.md §5.5): a version-3 commit may give roster
devices an expiry.  After it the device counts as removed although it is still
listed (its later updates are withheld like a voided member's) until the next
commit, which must drop it or renew it: a commit carrying an expired term is
invalid.  The case's admission rule may require that a device of a *third*
agency (none of its devices active in the previous epoch) comes in only with an
``Approval`` signed by an active owner of every other agency that has one,
each naming the commit being continued, so it cannot be replayed elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final

from caseline.crypto import primitives as P
from caseline.crypto.certs import MAX_SKEW_MS, TrustStore, VerifiedCert
from caseline.crypto.keys import DeviceKeys, Rng
from caseline.crypto.ratchet import epoch_key
from caseline.schemas.codec import pack
from caseline.schemas.errors import (
    ChainError,
    DecryptionError,
    ExpiredError,
    MalformedError,
    NotAllowedError,
    NotMemberError,
)
from caseline.schemas.wire import (
    ID_SIZE,
    UNWITNESSED,
    Approval,
    CaseInfo,
    Commit,
    CommitMessage,
    DeviceCert,
    LogPosition,
    Member,
    Policy,
    Term,
    Witnessing,
    Wrap,
    decode_signed,
    encode_signed,
)

COMMIT_LABEL: Final = "commit"
APPROVAL_LABEL: Final = "membership-approval"
#: The admission rule of a case whose commits carry none (versions 1 and 2).
NO_ADMISSION_RULE: Final = "none"
EACH_AGENCY_OWNER: Final = "each-agency-owner"
EPOCH_SECRET_SIZE: Final = 32

#: Why a roster device is voided in an epoch (PROTOCOL.md §5.3).
VOID_REVOKED: Final = "revoked"  # its agency revoked it at or before the commit's time
VOID_ADDED: Final = "added-by-voided-commit"  # a voided commit put it in the roster
VOID_CARRIED: Final = "voided-before"  # voided in the previous epoch and carried over
#: Case roles in rising order of power: a voided commit may lower a role, never raise one.
ROLE_RANK: Final = {"observer": 0, "member": 1, "owner": 2}


def commit_hash(tbs: bytes) -> bytes:
    return P.hash_labeled("commit", tbs)


def log_anchor(case_id: bytes) -> bytes:
    """The head of an empty case log (what genesis says it has seen)."""
    return P.hash_labeled("log-anchor", case_id)


def wraps_hash(wraps: Sequence[Wrap]) -> bytes:
    return P.hash_labeled("wraps", pack([w.to_fields() for w in wraps]))


def wrap_info(*, commit: Commit, recipient: bytes, recipient_kem: bytes) -> bytes:
    return (
        P.label("hpke epoch-wrap")
        + P.lp(commit.case_id)
        + P.u64(commit.epoch)
        + P.lp(commit.prev_commit)
        + P.lp(commit.committer)
        + P.lp(recipient)
        + P.lp(P.hash_labeled("kem-key", recipient_kem))
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CaseState:
    """Who is in a case in one epoch and under which rules: the result of a verified commit."""

    case_id: bytes
    epoch: int
    commit: Commit
    commit_tbs: bytes
    commit_signature: bytes
    commit_hash: bytes
    #: The roster as it stands: a voided commit's raised roles are back at their previous role.
    members: Mapping[bytes, Member]
    certs: Mapping[bytes, VerifiedCert]
    #: Roster devices voided in this epoch, and why (``VOID_*``): listed, but not members for
    #: posting, committing, wraps or history shares.
    voided: Mapping[bytes, str] = dataclasses.field(default_factory=dict)
    #: Set when the commit itself is voided: its committer, revoked at the commit's time (or
    #: voided in the previous epoch).  The epoch is *tainted*: its secret may be the thief's.
    voided_committer: bytes | None = None

    @property
    def tainted(self) -> bool:
        """Whether this epoch's secret was chosen by a device that may be a thief's."""
        return self.voided_committer is not None

    def active(self, device_id: bytes) -> bool:
        """A member that counts: in the roster and not voided in this epoch."""
        return device_id in self.members and device_id not in self.voided

    def expires(self, device_id: bytes) -> int | None:
        """When a roster device's membership ends (ms), or None: it lasts until removed."""
        for term in self.commit.terms or ():
            if term.device_id == device_id:
                return term.expires
        return None

    def expired(self, device_id: bytes, *, at: int) -> bool:
        """Whether a roster device's membership had ended at ``at``: then it counts as removed."""
        end = self.expires(device_id)
        return end is not None and end <= at

    def active_at(self, device_id: bytes, at: int) -> bool:
        """A member that counts at ``at``: active, and its membership not expired."""
        return self.active(device_id) and not self.expired(device_id, at=at)

    @property
    def admission(self) -> str:
        """Who must approve a third agency's admission; ``none`` for a case made before the rule."""
        return self.commit.admission or NO_ADMISSION_RULE

    @property
    def policy(self) -> Policy:
        return self.commit.policy

    @property
    def witnessing(self) -> Witnessing:
        """The case's witness rule; a version-1 commit leaves the case unwitnessed."""
        return self.commit.witnessing or UNWITNESSED

    @property
    def agencies(self) -> frozenset[str]:
        """The agencies with a device in the roster: whose witnesses the default rule needs."""
        return frozenset(vc.cert.agency_id for vc in self.certs.values())

    def member(self, device_id: bytes) -> tuple[Member, VerifiedCert]:
        """The roster entry and certificate of ``device_id``, or ``NotMemberError``."""
        member = self.members.get(device_id)
        if member is None:
            raise NotMemberError("device is not a member of the case in this epoch")
        return member, self.certs[device_id]

    @property
    def signed_commit(self) -> bytes:
        """The commit as a bare signed object (wraps stripped), as evidence carries it."""
        return encode_signed(self.commit_tbs, self.commit_signature)


def create_commit(
    *,
    prev: CaseState | None,
    case_id: bytes,
    committer: DeviceKeys,
    roster: Sequence[tuple[VerifiedCert, str]],
    policy: Policy,
    log: LogPosition,
    info: CaseInfo | None,
    now: int,
    rng: Rng,
    witnessing: Witnessing | None = None,
    terms: Mapping[bytes, int] | None = None,
    admission: str | None = None,
    approvals: Sequence[bytes] = (),
) -> tuple[bytes, bytes]:
    """Build and sign the next commit; return ``(CommitMessage bytes, epoch secret)``.

    ``witnessing`` is set only in a genesis (or to turn witnessing on in a case
    made before it existed); a later commit carries its predecessor's rule.
    ``terms`` (device id to expiry) are the complete terms of the new roster,
    ``admission`` the rule (default: the predecessor's), ``approvals`` signed
    ``Approval`` objects for the devices added.  A commit uses the version-3
    form only if it needs it, or its predecessor did, so older cases keep
    their form until an owner uses the new rules.

    The caller has verified every certificate against its trust store; the
    result is re-verified by the caller with ``verify_commit`` before use.
    """
    epoch = 0 if prev is None else prev.epoch + 1
    known = {} if prev is None else prev.certs
    epoch_secret = rng(EPOCH_SECRET_SIZE)
    members = tuple(Member(device_id=vc.device_id, cert_hash=vc.hash, role=role) for vc, role in roster)
    new_certs = tuple(
        vc.signed for vc, _ in roster if vc.device_id not in known or known[vc.device_id].hash != vc.hash
    )
    sealed_info = b""
    if info is not None:
        key = epoch_key("case-info", epoch_secret=epoch_secret, case_id=case_id, epoch=epoch)
        sealed_info = P.xchacha_seal(key, bytes(P.AEAD_NONCE_SIZE), info.encode(), b"")
    draft = Commit(
        case_id=case_id,
        epoch=epoch,
        prev_commit=b"" if prev is None else prev.commit_hash,
        committer=committer.device_id,
        time=now,
        policy=policy,
        roster=members,
        certs=new_certs,
        log=log,
        wraps_hash=bytes(32),
        sealed_info=sealed_info,
        witnessing=witnessing if prev is None or prev.commit.witnessing is None else prev.commit.witnessing,
    )
    rule = admission or (None if prev is None else prev.commit.admission)
    if rule is not None or terms or approvals:
        listed = {vc.device_id for vc, _ in roster}
        draft = dataclasses.replace(
            draft,
            terms=tuple(
                Term(device_id=d, expires=t) for d, t in sorted((terms or {}).items()) if d in listed
            ),
            admission=rule or NO_ADMISSION_RULE,
            approvals=tuple(approvals),
        )
    wraps = tuple(
        Wrap(
            device_id=vc.device_id,
            ciphertext=P.hpke_seal(
                vc.cert.kem_key,
                epoch_secret,
                wrap_info(commit=draft, recipient=vc.device_id, recipient_kem=vc.cert.kem_key),
            ),
        )
        for vc, _ in roster
    )
    commit = dataclasses.replace(draft, wraps_hash=wraps_hash(wraps))
    tbs = commit.encode()
    message = CommitMessage(tbs=tbs, signature=committer.sign(COMMIT_LABEL, tbs), wraps=wraps)
    return message.encode(), epoch_secret


def verify_commit(
    prev: CaseState | None,
    message: CommitMessage,
    *,
    trust: TrustStore,
    now: int,
    check_wraps: bool = True,
) -> CaseState:
    """Check that ``message`` validly continues ``prev`` (or is a valid genesis).

    Raises the specific error for the first rule broken; returns the new state.
    Revocation is never a reason to refuse: a device revoked at the commit's
    time is voided in the state returned (``voiding``), which is what lets a
    case go on past a backdated revocation.  The broker refuses such commits
    when they are new (``BrokerCore.accept_commit``).
    ``check_wraps`` is False only for evidence bundles, which strip the wraps.
    """
    commit = Commit.decode(message.tbs)
    if len(commit.case_id) != ID_SIZE:
        raise MalformedError("case id has the wrong size")
    if prev is None:
        if commit.epoch != 0 or commit.prev_commit:
            raise ChainError("genesis must be epoch 0 with no predecessor")
        if commit.log.count != 0 or commit.log.head != log_anchor(commit.case_id):
            raise ChainError("genesis must come before any log entry")
        known: Mapping[bytes, VerifiedCert] = {}
        previous_members: Mapping[bytes, Member] = {}
    else:
        if commit.case_id != prev.case_id:
            raise ChainError("commit belongs to another case")
        if commit.epoch != prev.epoch + 1:
            raise ChainError(f"commit is for epoch {commit.epoch}, expected {prev.epoch + 1}")
        if not P.constant_time_equal(commit.prev_commit, prev.commit_hash):
            raise ChainError("commit does not continue the current commit")
        if commit.time < prev.commit.time:
            raise ChainError("commit is older than its predecessor")
        if commit.log.count <= prev.commit.log.count:
            raise ChainError("commit does not follow its predecessor in the case log")
        if prev.commit.witnessing is not None and commit.witnessing != prev.commit.witnessing:
            # Otherwise one owner, or a broker replaying an old-format commit, could
            # quietly switch a witnessed case to unwitnessed.
            raise NotAllowedError("a case's witness rule cannot change once set")
        if prev.commit.admission is not None and commit.admission is None:
            # Dropping the version-3 fields would renew every term and lift the rule at once.
            raise NotAllowedError("a case's membership terms cannot be dropped once set")
        if prev.admission == EACH_AGENCY_OWNER and commit.admission != EACH_AGENCY_OWNER:
            raise NotAllowedError("a case's approval rule cannot be turned off once set")
        known = prev.certs
        previous_members = prev.members
    if commit.time > now + MAX_SKEW_MS:
        raise ExpiredError("commit is dated in the future")

    # Authenticate before believing anything else: the committer must have held
    # the owner role in the previous epoch (for genesis: in the roster it creates).
    # A committer revoked at the commit's time does not make it invalid: it is voided below.
    if prev is None:
        committer_cert = _genesis_committer_cert(commit, trust)
    else:
        if commit.committer not in previous_members:
            raise NotMemberError("committer is not a member of the case")
        if _signed_role(prev, commit.committer) != "owner":
            # Owner only by a voided commit's grant (its standing role is lower): the commit
            # is voided, not refused, as it may have been accepted before the list was known.
            raise NotAllowedError("committer may not change membership")
        committer_cert = known[commit.committer]
    P.verify_labeled(committer_cert.cert.sign_key, COMMIT_LABEL, message.tbs, message.signature)

    # Resolve every roster entry to exactly one verified certificate.
    offered: dict[bytes, VerifiedCert] = {}
    for signed in commit.certs:
        vc = trust.verify_cert(signed, at=commit.time, revocation=False)
        if vc.device_id in offered:
            raise MalformedError("commit carries two certificates for one device")
        offered[vc.device_id] = vc
    members: dict[bytes, Member] = {}
    certs: dict[bytes, VerifiedCert] = {}
    for member in commit.roster:
        if member.device_id in members:
            raise MalformedError("roster names a device twice")
        found = offered.pop(member.device_id, None) or known.get(member.device_id)
        if found is None or not P.constant_time_equal(found.hash, member.cert_hash):
            raise MalformedError("roster entry does not match a certificate")
        vc = found
        # Carried over, it still has to be alive at the commit's time (revoked only voids it).
        carried = known.get(vc.device_id) is vc
        if carried and not vc.cert.not_before - MAX_SKEW_MS <= commit.time <= vc.cert.not_after:
            raise ExpiredError("a member's certificate has expired")
        if vc.cert.role == "bot" and member.role == "owner":
            raise NotAllowedError("a bot cannot own a case")
        members[member.device_id] = member
        certs[member.device_id] = vc
    if offered:
        raise MalformedError("commit carries a certificate that no roster entry uses")
    if not members:
        raise MalformedError("a case needs at least one member")
    if not any(m.role == "owner" for m in members.values()):
        raise MalformedError("a case needs at least one owner")
    if prev is None and members.get(commit.committer) is None:
        raise NotMemberError("the genesis committer must be in the roster")
    if prev is None and members[commit.committer].role != "owner":
        raise NotAllowedError("the genesis committer must own the case")

    _check_terms(prev, commit)
    if prev is not None and prev.admission == EACH_AGENCY_OWNER:
        _check_admission(prev, commit, certs)

    if check_wraps:
        if tuple(w.device_id for w in message.wraps) != tuple(m.device_id for m in commit.roster):
            raise MalformedError("wraps do not match the roster")
        if not P.constant_time_equal(wraps_hash(message.wraps), commit.wraps_hash):
            raise MalformedError("wraps were altered")

    effective, voided, voided_committer = voiding(prev, commit, certs, trust=trust)
    return CaseState(
        case_id=commit.case_id,
        epoch=commit.epoch,
        commit=commit,
        commit_tbs=message.tbs,
        commit_signature=message.signature,
        commit_hash=commit_hash(message.tbs),
        members=effective,
        certs=certs,
        voided=voided,
        voided_committer=voided_committer,
    )


def voiding(
    prev: CaseState | None,
    commit: Commit,
    certs: Mapping[bytes, VerifiedCert],
    *,
    trust: TrustStore,
) -> tuple[dict[bytes, Member], dict[bytes, str], bytes | None]:
    """Who of an authentic commit's roster counts, under the revocations ``trust`` holds (§5.3).

    Returns the roster as it stands, the voided devices with why, and the
    committer if the commit itself is voided: revoked at its time, voided in
    the previous epoch, or an owner there only by a voided commit's grant.  A voided commit keeps its place
    (its removals and lowered roles stand) but grants nothing: a device it
    added is voided and a role it raised stays at the previous one.  A device
    voided in the previous epoch stays voided while it is carried over, so a
    commit cannot launder a thief's device by keeping it; an owner who wants it
    back removes it first and adds it in a later commit.  Pure, so a restored
    snapshot (bound to the same revocations) derives the same answer.
    """
    previous: Mapping[bytes, Member] = {} if prev is None else prev.members
    was_voided: Mapping[bytes, str] = {} if prev is None else prev.voided
    committer_cert = (certs if prev is None else prev.certs)[commit.committer].cert
    committer_voided = (
        commit.committer in was_voided
        or trust.is_revoked(committer_cert, at=commit.time)
        or (prev is not None and previous[commit.committer].role != "owner")
    )
    members: dict[bytes, Member] = {}
    voided: dict[bytes, str] = {}
    for signed_member in commit.roster:
        device_id, member = signed_member.device_id, signed_member
        before = previous.get(device_id)
        if trust.is_revoked(certs[device_id].cert, at=commit.time):
            voided[device_id] = VOID_REVOKED
        elif device_id in was_voided:
            voided[device_id] = VOID_CARRIED
        elif committer_voided and before is None:
            voided[device_id] = VOID_ADDED
        if committer_voided and before is not None and ROLE_RANK[member.role] > ROLE_RANK[before.role]:
            member = dataclasses.replace(member, role=before.role)
        members[device_id] = member
    return members, voided, commit.committer if committer_voided else None


def _check_terms(prev: CaseState | None, commit: Commit) -> None:
    """Each term names a roster device once and ends after the commit (§5.5).

    A term at or before the commit's time would carry a member who counts as
    removed: the committer must drop it, or renew it with a later expiry.
    """
    roster = {m.device_id for m in commit.roster}
    named: set[bytes] = set()
    for term in commit.terms or ():
        if term.device_id not in roster or term.device_id in named:
            raise MalformedError("a membership term names no roster device, or one twice")
        named.add(term.device_id)
    for device_id in roster:
        expired = prev is not None and device_id in prev.members and prev.expired(device_id, at=commit.time)
        renewed = any(t.device_id == device_id and t.expires > commit.time for t in commit.terms or ())
        if expired and not renewed:
            raise ExpiredError("the commit keeps a member whose membership has expired without renewing it")
    for term in commit.terms or ():
        if term.expires <= commit.time:
            raise ExpiredError("the commit gives a member a membership that has already ended")


def _check_admission(prev: CaseState, commit: Commit, certs: Mapping[bytes, VerifiedCert]) -> None:
    """Under ``each-agency-owner``, a third agency's device needs every other agency's owner (§5.5).

    Counted at the commit's time on the previous epoch: a device *joins* if it
    was not active there (absent, voided or expired); its agency is *third* if
    none of its devices was active there.  Every approval carried must be valid
    and for a device the commit adds; each third-agency device needs one from
    an active owner of every agency with one, except the committer's agency.
    """
    at = commit.time
    active = [d for d in prev.members if prev.active_at(d, at)]
    present = {prev.certs[d].cert.agency_id for d in active}
    owners = {prev.certs[d].cert.agency_id: d for d in active if prev.members[d].role == "owner"}
    committer_agency = prev.certs[commit.committer].cert.agency_id
    terms = {t.device_id: t.expires for t in commit.terms or ()}
    entries = {m.device_id: m for m in commit.roster}
    approved: set[tuple[bytes, str]] = set()
    for signed in commit.approvals or ():
        approval = verify_approval(signed, prev)
        if not prev.active_at(approval.approver, at):
            raise NotAllowedError("an approval is by an owner whose membership has expired")
        entry = entries.get(approval.device_id)
        if (
            entry is None
            or not P.constant_time_equal(entry.cert_hash, approval.cert_hash)
            or entry.role != approval.role
            or terms.get(entry.device_id, 0) != approval.expires
        ):
            raise NotAllowedError("an approval is for another roster entry than the commit makes")
        approved.add((approval.device_id, prev.certs[approval.approver].cert.agency_id))
    missing: set[str] = set()
    for device_id in entries:
        if prev.active_at(device_id, at) or certs[device_id].cert.agency_id in present:
            continue
        missing |= {a for a in owners if a != committer_agency and (device_id, a) not in approved}
    if missing:
        raise NotAllowedError(
            "adding a member of a third agency needs the approval of an owner of each agency in the"
            f" case; missing: {', '.join(sorted(missing))}"
        )


def sign_approval(
    approver: DeviceKeys, prev: CaseState, *, device: VerifiedCert, role: str, expires: int | None
) -> bytes:
    """An owner's signed consent to ``device`` joining with ``role`` in the commit after ``prev``."""
    approval = Approval(
        case_id=prev.case_id,
        prev_commit=prev.commit_hash,
        device_id=device.device_id,
        cert_hash=device.hash,
        role=role,
        expires=expires or 0,
        approver=approver.device_id,
    )
    tbs = approval.encode()
    return encode_signed(tbs, approver.sign(APPROVAL_LABEL, tbs))


def verify_approval(signed: bytes, prev: CaseState) -> Approval:
    """An approval for the commit continuing ``prev``, signed by an owner active there.

    Active at the time the next commit is checked is ``_check_admission``'s to
    say (it knows that commit's time); here, an approver voided in ``prev`` or
    not an owner there is refused, as is an approval naming another epoch or case.
    """
    tbs, signature = decode_signed(signed)
    approval = Approval.decode(tbs)
    if approval.case_id != prev.case_id or not P.constant_time_equal(approval.prev_commit, prev.commit_hash):
        raise NotAllowedError("an approval is for another case or epoch than this commit continues")
    member = prev.members.get(approval.approver)
    if member is None or not prev.active(approval.approver) or member.role != "owner":
        raise NotAllowedError("an approval is not by an owner of the case")
    P.verify_labeled(prev.certs[approval.approver].cert.sign_key, APPROVAL_LABEL, tbs, signature)
    return approval


def _signed_role(state: CaseState, device_id: bytes) -> str:
    """The role ``state``'s commit signed for a device, before a voided commit's raise is undone."""
    for member in state.commit.roster:
        if member.device_id == device_id:
            return member.role
    raise NotMemberError("committer is not a member of the case")


def _genesis_committer_cert(commit: Commit, trust: TrustStore) -> VerifiedCert:
    """Find and verify the genesis committer's certificate without verifying the others yet."""
    for signed in commit.certs:
        tbs, _ = decode_signed(signed)
        if DeviceCert.decode(tbs).device_id == commit.committer:
            return trust.verify_cert(signed, at=commit.time, revocation=False)
    raise NotMemberError("the genesis committer's certificate is missing")


def open_epoch_secret(state: CaseState, message: CommitMessage, keys: DeviceKeys) -> bytes:
    """Unwrap this device's copy of the epoch secret from a verified commit."""
    for wrap in message.wraps:
        if wrap.device_id == keys.device_id:
            secret = P.hpke_open(
                keys.kem_seed,
                wrap.ciphertext,
                wrap_info(commit=state.commit, recipient=keys.device_id, recipient_kem=keys.kem_public),
            )
            if len(secret) != EPOCH_SECRET_SIZE:
                raise DecryptionError("epoch secret has the wrong size")
            return secret
    raise NotMemberError("this device has no wrap in the commit")


def open_case_info(state: CaseState, epoch_secret: bytes) -> CaseInfo | None:
    """Decrypt the case title and reference sealed in a commit, if it carries them."""
    if not state.commit.sealed_info:
        return None
    key = epoch_key("case-info", epoch_secret=epoch_secret, case_id=state.case_id, epoch=state.epoch)
    plain = P.xchacha_open(key, bytes(P.AEAD_NONCE_SIZE), state.commit.sealed_info, b"")
    return CaseInfo.decode(plain)
