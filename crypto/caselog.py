"""The broker's per-case log, its signed receipts, and a client's checking view.

Theory of operation
-------------------
The broker orders every case as an append-only hash chain of entries (commits
and envelopes): ``head(0) = H("log-anchor", case)``, and entry ``n`` moves the
head to ``head(n+1) = H("log-head", head(n), n, entry_hash(n))``.  A receipt is
the broker's signature over ``(case, seq, entry_hash, head)`` with the receipt
key the case's signed policy names.  We chose a hash chain over an RFC 9162
Merkle tree because every member downloads every entry anyway: consistency is
checked by recomputation, and the chain costs one hash per entry (PROTOCOL.md
argues this further).

``CaseView`` is a member's incremental verifier.  It accepts entries only in
log order and checks, for each one, everything the history lets it check:

* position: entry ``seq`` must be the next one (a hole is a ``GapError``, a
  repeat a ``ReplayError``) and any receipt must sign the head it computed
  (otherwise the broker signed another history: ``ForkError``);
* commits: ``verify_commit`` against the current state, and the log position
  the committer saw must be a prefix of this view;
* updates: a member of the current epoch signed the envelope; the sender's
  counter continues its chain (drops and replays show as gaps and repeats);
  after decryption, ``prev_own`` names the sender's previous update, every
  ``seen`` entry matches what this view holds at that slot, and the log head
  the sender saw equals this view's head at that count.  A mismatch in what
  was signed against what this view holds is a fork; a reference to something
  this view never received is a gap.

Every check happens before any state changes, so a rejected entry leaves the
view exactly as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Final

from caseline.crypto import note, tlog
from caseline.crypto import primitives as P
from caseline.crypto.certs import TrustStore
from caseline.crypto.commits import (
    CaseState,
    log_anchor,
    open_case_info,
    open_epoch_secret,
    verify_commit,
)
from caseline.crypto.keys import DeviceKeys, SigningKey
from caseline.crypto.ratchet import Chain
from caseline.crypto.updates import (
    HISTORY_SHARE,
    SYSTEM_CONTENT_TYPES,
    OpenedUpdate,
    SealedUpdate,
    check_envelope,
    open_update,
    seal_update,
)
from caseline.schemas.codec import unpack
from caseline.schemas.content import decode_json
from caseline.schemas.errors import (
    ChainError,
    ForkError,
    GapError,
    IntegrityError,
    MalformedError,
    NotAllowedError,
    NotMemberError,
    NotPermittedError,
    ReplayError,
    UnknownError,
)
from caseline.schemas.references import referenced_updates
from caseline.schemas.wire import (
    MAX_SEEN,
    AttachmentRef,
    CaseInfo,
    CommitMessage,
    Envelope,
    HistoryShare,
    LogPosition,
    LogRef,
    Receipt,
    Seen,
    SharedKey,
    decode_signed,
    encode_signed,
)

RECEIPT_LABEL: Final = "receipt"
KIND_COMMIT: Final = "commit"
KIND_UPDATE: Final = "update"
#: An update whose body the broker dropped under the case's retention policy.
KIND_PURGED: Final = "purged"
DAY_MS: Final = 86_400_000


def entry_hash(kind: str, body: bytes) -> bytes:
    """Hash of a log entry: over the signed bytes only (a commit's wraps are bound by its body)."""
    if kind == KIND_COMMIT:
        message = CommitMessage.decode(body)
        tbs, sig = message.tbs, message.signature
    elif kind == KIND_UPDATE:
        tbs, sig = decode_signed(body)
    else:
        raise MalformedError("unknown log entry kind")
    return signed_entry_hash(kind, tbs, sig)


def signed_entry_hash(kind: str, tbs: bytes, signature: bytes) -> bytes:
    return P.hash_labeled("log-entry", kind.encode(), tbs, signature)


def next_head(head: bytes, seq: int, entry: bytes) -> bytes:
    return P.hash_labeled("log-head", head, P.u64(seq), entry)


def chain_heads(case_id: bytes, entry_hashes: Iterable[bytes]) -> list[bytes]:
    """All heads of a log: ``heads[n]`` is the head after ``n`` entries."""
    heads = [log_anchor(case_id)]
    for seq, eh in enumerate(entry_hashes):
        heads.append(next_head(heads[-1], seq, eh))
    return heads


def _purged_header(body: bytes) -> tuple[int, bytes, int]:
    obj = unpack(body, max_size=64)
    if (
        not isinstance(obj, list)
        or len(obj) != 3
        or type(obj[0]) is not int
        or type(obj[1]) is not bytes
        or len(obj[1]) != 16
        or type(obj[2]) is not int
        or obj[0] < 0
        or obj[2] < 0
    ):
        raise MalformedError("a purged entry is [epoch, sender, counter]")
    return obj[0], obj[1], obj[2]


def sign_receipt(
    server_key: SigningKey, *, case_id: bytes, seq: int, entry_hash: bytes, head: bytes, time: int
) -> bytes:
    receipt = Receipt(case_id=case_id, seq=seq, entry_hash=entry_hash, head=head, time=time)
    tbs = receipt.encode()
    return encode_signed(tbs, server_key.sign(RECEIPT_LABEL, tbs))


#: A verified receipt of either protocol version: both say case, seq, entry hash, head, time.
AnyReceipt = Receipt | tlog.VerifiedReceipt


def verify_receipt(data: bytes, receipt_key: bytes) -> AnyReceipt:
    """Verify a receipt under the case's pinned receipt key (from its signed policy).

    Brokers speaking protocol 2 issue log receipts (a checkpoint and an
    inclusion proof).  Version-1 receipts, signed per entry, still verify so
    that histories recorded before an upgrade stay checkable; what they cannot
    do is vouch for time in a witnessed case (``_apply_purged``).
    """
    if tlog.is_log_receipt(data):
        return tlog.verify_log_receipt(data, receipt_key)
    tbs, sig = decode_signed(data, max_size=1024)
    receipt = Receipt.decode(tbs)
    P.verify_labeled(receipt_key, RECEIPT_LABEL, tbs, sig)
    return receipt


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """What one accepted log entry meant."""

    seq: int
    kind: str
    entry_hash: bytes
    head: bytes
    state: CaseState
    #: For an update this device could decrypt: the verified record.
    opened: OpenedUpdate | None = None
    #: Earlier updates a history share just made readable, and their log positions.
    unlocked: tuple[OpenedUpdate, ...] = ()
    unlocked_seqs: tuple[int, ...] = ()
    #: For a voided update (its sender was revoked when it was sent): that sender.
    voided_by: bytes | None = None
    #: ...and its id, when this device could open it: a member may have seen and named it
    #: before the revocation was learnt, so a reference to it must still find it.
    voided_id: bytes | None = None
    #: Updates: the broker's receipt time (ms), if a receipt came with the entry; and those of
    #: the ``unlocked`` updates.  Rules that date an act judge it by the later of this and the
    #: record's own time (a sender cannot backdate without the broker's help).
    receipt_time: int | None = None
    unlocked_receipt_times: tuple[int | None, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Staged:
    """An update sealed by ``CaseView.prepare`` and not yet confirmed."""

    sealed: SealedUpdate
    epoch: int
    counter: int


@dataclasses.dataclass(slots=True)
class _Held:
    """An envelope this view verified but could not (yet) decrypt."""

    envelope: Envelope
    state: CaseState
    entry_hash: bytes
    receipt_time: int | None


class CaseView:
    """One device's verified view of one case, fed entries in log order."""

    def __init__(self, *, trust: TrustStore, me: DeviceKeys | None = None) -> None:
        self.trust = trust
        self.me = me
        self.state: CaseState | None = None
        self.case_id: bytes | None = None
        self.heads: list[bytes] = []
        self.entry_hashes: list[bytes] = []
        self.commit_seqs: dict[int, int] = {}  # epoch -> seq of its commit
        self.states: dict[int, CaseState] = {}
        self._epoch_secret: bytes | None = None
        self._chains: dict[bytes, Chain] = {}  # receive chains of the current epoch
        self._last: dict[bytes, Seen] = {}  # sender -> latest update seen from it
        self._slots: dict[tuple[bytes, int, int], bytes] = {}  # (sender, epoch, counter) -> id
        self._held: dict[int, _Held] = {}
        self._message_keys: dict[int, bytes] = {}  # seq -> key of every update opened
        self._since_own: dict[bytes, Seen] = {}  # others' latest since my last post
        # Sending side (only for ``me``).
        self._send_chain: Chain | None = None
        self._own_last: bytes = b""
        self._own_counter: int = 0

    # ---------------------------------------------------------------- reading
    @property
    def count(self) -> int:
        return len(self.entry_hashes)

    @property
    def head(self) -> bytes:
        if self.case_id is None:
            raise ChainError("the view holds no genesis yet")
        return self.heads[-1]

    def position(self) -> LogPosition:
        return LogPosition(count=self.count, head=self.head)

    def message_key(self, seq: int) -> bytes:
        """The message key of an update this view opened (for evidence and history shares)."""
        try:
            return self._message_keys[seq]
        except KeyError:
            raise NotMemberError("this view never opened the update at that position") from None

    def holds_update(self, update_id: bytes) -> bool:
        """Whether this view accepted, and can name, the update with this id.

        Updates it could not open (no key, or purged) have no id it knows; one a
        history share opened later has its real id from then on.
        """
        return bool(update_id) and update_id != bytes(32) and update_id in self._slots.values()

    def case_info(self) -> CaseInfo | None:
        """The title and reference sealed in the current commit, if this device can read them."""
        if self.state is None or self._epoch_secret is None:
            return None
        return open_case_info(self.state, self._epoch_secret)

    def check_position(self, position: LogPosition) -> None:
        """Check a log position someone else saw against this view (gossip, commits)."""
        if position.count > self.count:
            raise GapError("a member has seen more of the log than this view holds")
        if not P.constant_time_equal(self.heads[position.count], position.head):
            raise ForkError("a member saw a different history of this case")

    # ---------------------------------------------------------------- applying
    def apply(self, *, seq: int, kind: str, body: bytes, now: int, receipt: bytes | None = None) -> Applied:
        """Verify the next log entry and fold it into the view, or raise and change nothing."""
        if seq < self.count:
            raise ReplayError("log position already seen")
        if seq > self.count:
            raise GapError(f"log entry {self.count} is missing")
        if kind == KIND_COMMIT:
            return self._apply_commit(seq, body, now, receipt)
        if kind == KIND_UPDATE:
            return self._apply_update(seq, body, now, receipt)
        if kind == KIND_PURGED:
            return self._apply_purged(seq, body, now, receipt)
        raise MalformedError("unknown log entry kind")

    def _apply_purged(self, seq: int, body: bytes, now: int, receipt: bytes | None) -> Applied:
        """A retention-purged update: only its position and the receipt's hash remain.

        The receipt must be signed under the case's receipt key, and the entry
        must be older than the case's retention period: a broker cannot use
        "purged" to hide a recent update.
        """
        state = self.state
        if state is None or receipt is None:
            raise ChainError("a purged entry needs a genesis before it and its receipt")
        epoch, sender, counter = _purged_header(body)
        r = verify_receipt(receipt, state.policy.receipt_key)
        if r.case_id != state.case_id or r.seq != seq:
            raise ForkError("receipt is for another entry than the one delivered")
        if self._vouched_time(r, state) + state.policy.retention_days * DAY_MS > now:
            raise IntegrityError("update was purged before its retention period ended")
        if epoch != state.epoch or sender not in state.members:
            raise ChainError("purged update does not fit the epoch in force")
        head = self._new_head(state.case_id, seq, r.entry_hash)
        if not P.constant_time_equal(r.head, head):
            raise ForkError("receipt signs another history than this view computed")
        slot = (sender, epoch, counter)
        last = self._last.get(sender)
        expected = last.counter + 1 if last is not None and last.epoch == epoch else 0
        if slot in self._slots or counter < expected:
            raise ReplayError("this sender position was already used")
        if counter > expected:
            raise GapError("an earlier update of this sender is missing")
        self._append(r.entry_hash, head)
        self._slots[slot] = b""
        # The body is gone, so the update's id is unknown (zeros), unless this device sealed
        # it as its latest update: then its next ``prev_own`` must name the real id, which
        # members who read the update before the purge check.
        own = self.me is not None and sender == self.me.device_id and self._own_counter == counter + 1
        update_id = self._own_last if own else bytes(32)
        self._last[sender] = Seen(device_id=sender, epoch=epoch, counter=counter, update_id=update_id)
        if self._epoch_secret is not None:
            chain = self._chains.get(sender) or Chain.start(
                epoch_secret=self._epoch_secret,
                case_id=state.case_id,
                epoch=epoch,
                device_id=sender,
            )
            chain.take(counter)  # step past it; the key is gone with the body
            chain.skipped.pop(counter, None)
            self._chains[sender] = chain
        return Applied(seq=seq, kind=KIND_PURGED, entry_hash=r.entry_hash, head=head, state=state)

    def _vouched_time(self, r: AnyReceipt, state: CaseState) -> int:
        """When the entry is known to have been in the log, by someone other than the broker if
        the case is witnessed: the witnessed time of the receipt's checkpoint.

        In a witnessed case the broker's own time is worth nothing here: it
        could backdate a receipt and pass a fresh update off as purged.  The
        checkpoint must carry the case's witness quorum, whose timestamps the
        broker cannot choose.
        """
        rule = state.witnessing
        if rule.rule == "none":
            return r.time
        if not isinstance(r, tlog.VerifiedReceipt):
            raise IntegrityError("a purged entry in a witnessed case needs a witnessed receipt")
        parsed = note.Note.parse(r.note)
        lists = {a: self.trust.witnesses(a) for a in state.agencies}
        at = tlog.witnessed_time(
            tlog.collect_cosignatures(parsed.text, parsed.signatures, lists), state.agencies, rule
        )
        if at is None:
            raise IntegrityError("a purged entry's receipt lacks the case's witness quorum")
        return at

    def _new_head(self, case_id: bytes, seq: int, eh: bytes) -> bytes:
        prev = self.heads[-1] if self.heads else log_anchor(case_id)
        return next_head(prev, seq, eh)

    def _check_receipt(
        self, receipt: bytes | None, state: CaseState, seq: int, eh: bytes, head: bytes
    ) -> int | None:
        """The receipt must be for this entry under this view's head; returns the broker's time."""
        if receipt is None:
            return None
        r = verify_receipt(receipt, state.policy.receipt_key)
        if r.case_id != state.case_id or r.seq != seq or r.entry_hash != eh:
            raise ForkError("receipt is for another entry than the one delivered")
        if not P.constant_time_equal(r.head, head):
            raise ForkError("receipt signs another history than this view computed")
        return r.time

    def _apply_commit(self, seq: int, body: bytes, now: int, receipt: bytes | None) -> Applied:
        message = CommitMessage.decode(body)
        state = verify_commit(self.state, message, trust=self.trust, now=now)
        if self.case_id is not None and state.case_id != self.case_id:
            raise ChainError("commit belongs to another case")
        if self.state is not None:
            if state.commit.log.count <= self.commit_seqs[self.state.epoch]:
                raise ChainError("committer had not seen the commit it replaces")
            self.check_position(state.commit.log)
        elif seq != 0:
            raise ChainError("genesis must be the first entry")
        eh = signed_entry_hash(KIND_COMMIT, message.tbs, message.signature)
        head = self._new_head(state.case_id, seq, eh)
        self._check_receipt(receipt, state, seq, eh, head)
        secret = None
        if self.me is not None and self.me.device_id in state.members:
            secret = open_epoch_secret(state, message, self.me)
        # All checks passed: commit the new state.  The previous epoch's secret
        # and chains are dropped here (forward secrecy across epochs).
        if self.case_id is None:
            self.case_id = state.case_id
            self.heads = [log_anchor(state.case_id)]
        self._append(eh, head)
        self.state = state
        self.states[state.epoch] = state
        self.commit_seqs[state.epoch] = seq
        self._epoch_secret = secret
        self._chains = {}
        self._send_chain = None
        self._own_counter = 0
        return Applied(seq=seq, kind=KIND_COMMIT, entry_hash=eh, head=head, state=state)

    def _append(self, eh: bytes, head: bytes) -> None:
        self.entry_hashes.append(eh)
        self.heads.append(head)

    def _apply_update(self, seq: int, body: bytes, now: int, receipt: bytes | None) -> Applied:
        state = self.state
        if state is None:
            raise ChainError("an update cannot precede the genesis commit")
        tbs, sig = decode_signed(body)
        envelope = Envelope.decode(tbs)
        if envelope.case_id != state.case_id:
            raise ChainError("update belongs to another case")
        if envelope.epoch != state.epoch:
            raise ChainError("update is for another epoch than the current one")
        check_envelope(envelope, tbs, sig, state)
        eh = signed_entry_hash(KIND_UPDATE, tbs, sig)
        head = self._new_head(state.case_id, seq, eh)
        receipt_time = self._check_receipt(receipt, state, seq, eh, head)

        slot = (envelope.sender, envelope.epoch, envelope.counter)
        if slot in self._slots:
            raise ReplayError("this sender position was already used")
        last = self._last.get(envelope.sender)
        expected = last.counter + 1 if last is not None and last.epoch == envelope.epoch else 0
        if envelope.counter < expected:
            raise ReplayError("update repeats an earlier position of its sender")
        if envelope.counter > expected:
            raise GapError("an earlier update of this sender is missing")

        opened = None
        unlocked: tuple[OpenedUpdate, ...] = ()
        unlocked_keys: list[tuple[int, bytes]] = []
        unlocked_times: tuple[int | None, ...] = ()
        chain = self._chains.get(envelope.sender)
        sender_cert = state.certs[envelope.sender].cert
        if self._epoch_secret is not None:
            if chain is None:
                chain = Chain.start(
                    epoch_secret=self._epoch_secret,
                    case_id=state.case_id,
                    epoch=state.epoch,
                    device_id=envelope.sender,
                )
            mk = chain.peek(envelope.counter)
            opened = open_update(envelope, state=state, message_key=mk)
            self._check_record(opened, last, seq)
            # Dated by the later of the sender's and the broker's clocks: a thief
            # cannot backdate below the revocation without the broker's help.
            voided = envelope.sender in state.voided or self.trust.is_revoked(
                sender_cert, at=max(opened.record.time, receipt_time or 0)
            )
            if opened.record.content_type == HISTORY_SHARE and not voided:
                unlocked_keys, unlocked = self._unlock(opened, state)
                unlocked_times = tuple(self._held[s].receipt_time for s, _ in unlocked_keys)
        else:
            mk = None
            voided = envelope.sender in state.voided or (
                receipt_time is not None and self.trust.is_revoked(sender_cert, at=receipt_time)
            )

        # All checks passed: fold the entry in.  A voided update is authentic and
        # keeps its place in the chain and in its sender's sequence, so the case
        # goes on past it; only its content is withheld (PROTOCOL.md §6.4).
        self._append(eh, head)
        if chain is not None and mk is not None:
            chain.take(envelope.counter)
            self._chains[envelope.sender] = chain
            if not voided:
                self._message_keys[seq] = mk
        if opened is not None:
            seen = Seen(
                device_id=envelope.sender,
                epoch=envelope.epoch,
                counter=envelope.counter,
                update_id=opened.update_id,
            )
            self._slots[slot] = opened.update_id
            self._last[envelope.sender] = seen
            if self.me is not None and envelope.sender == self.me.device_id:
                self._since_own = {}
                if envelope.counter >= self._own_counter:
                    self._send_chain = None  # another process of this device posted: start past it
            else:
                self._since_own[envelope.sender] = seen
        else:
            self._slots[slot] = b""
            self._last[envelope.sender] = Seen(
                device_id=envelope.sender,
                epoch=envelope.epoch,
                counter=envelope.counter,
                update_id=bytes(32),
            )
            if not voided:
                self._held[seq] = _Held(envelope, state, eh, receipt_time)
        for (old_seq, key), old in zip(unlocked_keys, unlocked, strict=True):
            self._held.pop(old_seq, None)
            self._message_keys[old_seq] = key
            self._slots[(old.record.sender, old.record.epoch, old.record.counter)] = old.update_id
        return Applied(
            seq=seq,
            kind=KIND_UPDATE,
            entry_hash=eh,
            head=head,
            state=state,
            opened=None if voided else opened,
            unlocked=unlocked,
            unlocked_seqs=tuple(s for s, _ in unlocked_keys),
            voided_by=envelope.sender if voided else None,
            voided_id=opened.update_id if voided and opened is not None else None,
            receipt_time=receipt_time,
            unlocked_receipt_times=unlocked_times,
        )

    def _check_record(self, opened: OpenedUpdate, last: Seen | None, seq: int) -> None:
        record = opened.record
        expected_prev = b"" if last is None else last.update_id
        if last is not None and last.update_id == bytes(32):
            expected_prev = record.prev_own  # this view could not read the previous one
        if record.prev_own != expected_prev:
            if record.prev_own in set(self._slots.values()):
                raise ReplayError("update's predecessor is not its sender's latest update")
            raise GapError("update names a predecessor this view never received")
        if record.log.count > seq:
            raise GapError("sender had seen entries that are missing before its update here")
        self.check_position(record.log)
        for s in record.seen:
            held = self._slots.get((s.device_id, s.epoch, s.counter))
            if held is None:
                raise GapError("sender saw an update this view never received")
            if held and not P.constant_time_equal(held, s.update_id):
                raise ForkError("sender saw a different update at the same position")

    def _unlock(
        self, opened: OpenedUpdate, state: CaseState
    ) -> tuple[list[tuple[int, bytes]], tuple[OpenedUpdate, ...]]:
        """Open the held envelopes a history share gives this device the keys of.

        The author of each unlocked record is whoever signed it, never the sharer:
        a sharer can only reveal what a member really wrote (Matrix's lesson).
        """
        if state.policy.history != "shared":
            raise NotAllowedError("this case's policy forbids sharing history")
        share = HistoryShare.decode(opened.record.content)
        if self.me is None or self.me.device_id not in share.recipients:
            return [], ()
        keys: list[tuple[int, bytes]] = []
        result: list[OpenedUpdate] = []
        for key in share.keys:
            held = self._held.get(key.seq)
            if held is None:
                continue  # already readable to this device
            if not P.constant_time_equal(held.entry_hash, key.entry_hash):
                raise ForkError("history share names another entry than this view holds")
            unlocked = open_update(held.envelope, state=held.state, message_key=key.message_key)
            if unlocked.record.log.count > key.seq:
                raise GapError("a shared update had seen entries that are missing before it here")
            self.check_position(unlocked.record.log)  # its author saw this same history
            sender_cert = held.state.certs[unlocked.record.sender].cert
            if self.trust.is_revoked(sender_cert, at=max(unlocked.record.time, held.receipt_time or 0)):
                continue  # voided: sharing cannot revive what a revoked key wrote
            result.append(unlocked)
            keys.append((key.seq, key.message_key))
        return keys, tuple(result)

    # ---------------------------------------------------------------- sending
    def prepare(
        self,
        *,
        content_type: str,
        content: bytes,
        now: int,
        nonce: bytes,
        witnessed: LogRef | None = None,
        attachments: Sequence[AttachmentRef] = (),
    ) -> Staged:
        """Seal this device's next update without changing the view (vodozemac's rule).

        Every check — membership, role, scopes, content — runs here, and a
        refusal leaves the sending chain where it was.  Only ``confirm`` moves
        it on, once the caller has kept the sealed bytes somewhere safe.
        """
        me, state, secret = self.me, self.state, self._epoch_secret
        if me is None or state is None or secret is None:
            raise NotPermittedError("this device holds no key to post to the case")
        self._check_may_post(me, state)
        chain, counter, prev_own = self._send_position(me, state, secret)
        seen = sorted(self._since_own.values(), key=lambda s: (s.epoch, s.counter))[-MAX_SEEN:]
        sealed = seal_update(
            keys=me,
            state=state,
            counter=counter,
            message_key=chain.peek(counter),
            prev_own=prev_own,
            seen=seen,
            log=self.position(),
            content_type=content_type,
            content=content,
            now=now,
            nonce=nonce,
            witnessed=witnessed,
            attachments=attachments,
        )
        self._check_references(content_type, content)
        return Staged(sealed=sealed, epoch=state.epoch, counter=counter)

    def _check_may_post(self, me: DeviceKeys, state: CaseState) -> None:
        """Nothing is posted in a tainted epoch, nor by a voided member (PROTOCOL.md §5.3).

        A tainted epoch's secret was chosen by a device its agency revoked: a
        thief may read whatever is sealed under it.  Said here, with the commit's
        position, before ``seal_update`` refuses it in general terms.
        """
        if state.voided_committer is not None:
            raise NotPermittedError(
                f"the case's current members were set by entry {self.commit_seqs[state.epoch]}, a commit"
                f" by {self.committer_name(state)} after its agency revoked it: whoever holds that device"
                " may read what is posted now, so nothing is posted until an owner re-keys the case"
                f" (caseline case rekey {state.case_id.hex()})"
            )
        if me.device_id in state.voided:
            raise NotPermittedError(
                "this device does not count as a member of the case in its current epoch (revoked, or"
                " added by a revoked device): ask an owner of the case to add it again"
            )

    def committer_name(self, state: CaseState) -> str:
        """``agency:user (device …)`` of a commit's committer, as the previous epoch certified it."""
        certs = state.certs if state.epoch == 0 else self.states[state.epoch - 1].certs
        cert = certs[state.commit.committer].cert
        return f"{cert.agency_id}:{cert.user_id} (device {cert.device_id.hex()})"

    def _check_references(self, content_type: str, content: bytes) -> None:
        """A sender names only updates its own view accepted (a reply to nothing is a typo).

        Receivers do not check this (PROTOCOL.md §6.1): a member who joined later
        or was not shared the history lacks updates others can see.  Runs after
        ``seal_update`` validated the content, so the JSON here is well formed.
        """
        if content_type in SYSTEM_CONTENT_TYPES:
            return
        references = referenced_updates(content_type, decode_json(content))
        held = set(self._slots.values()) - {b"", bytes(32)} if references else set()
        for field, text in references:
            try:
                known = bytes.fromhex(text) in held
            except ValueError:
                known = False
            if not known:
                raise UnknownError(
                    f"{field} names update {text[:16]}…, which is not an update of this case you can"
                    " see: give an id that `caseline case show CASE` lists"
                )

    def confirm(self, staged: Staged) -> None:
        """Commit a prepared update: its message key is used up and the next one follows it."""
        me, state, secret = self.me, self.state, self._epoch_secret
        if me is None or state is None or secret is None or staged.epoch != state.epoch:
            raise ChainError("the case moved to a new epoch since this update was prepared")
        chain, counter, _ = self._send_position(me, state, secret)
        if staged.counter != counter:
            raise ReplayError("another update was confirmed in this position first")
        chain.take(counter)
        self._send_chain = chain
        self._own_counter = counter + 1
        self._own_last = staged.sealed.update_id

    def seal(self, *, content_type: str, content: bytes, now: int, nonce: bytes) -> SealedUpdate:
        """Prepare and confirm at once, for a caller with nowhere to keep the update first."""
        staged = self.prepare(content_type=content_type, content=content, now=now, nonce=nonce)
        self.confirm(staged)
        return staged.sealed

    def _send_position(self, me: DeviceKeys, state: CaseState, secret: bytes) -> tuple[Chain, int, bytes]:
        """The sending chain, the next counter and the previous own update id, unchanged."""
        if self._send_chain is not None:
            return self._send_chain, self._own_counter, self._own_last
        last = self._last.get(me.device_id)
        start = last.counter + 1 if last is not None and last.epoch == state.epoch else 0
        chain = Chain.start(
            epoch_secret=secret, case_id=state.case_id, epoch=state.epoch, device_id=me.device_id
        )
        chain.skip_to(start)
        return chain, start, b"" if last is None else last.update_id

    def abandon_unsent(self) -> None:
        """Forget sealed updates the broker refused: the next seal reuses their counter.

        Only safe once the broker has definitively refused them (it never stores
        a refused update), otherwise two updates could claim one position.
        """
        self._send_chain = None

    def history_share(self, *, recipients: Iterable[bytes], seqs: Iterable[int]) -> bytes:
        """The content of a history share: message keys of earlier updates this view opened."""
        keys = tuple(
            SharedKey(seq=seq, entry_hash=self.entry_hashes[seq], message_key=self.message_key(seq))
            for seq in seqs
        )
        return HistoryShare(recipients=tuple(recipients), keys=keys).encode()
