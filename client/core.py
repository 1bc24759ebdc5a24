"""The client's sans-I/O core: pinned trust, one verified view per case, and the
commits and updates this device makes.

Nothing here touches the network, the disk, the clock or the RNG; the async
``Client`` feeds it bytes and time and stores what it accepts.  Everything the
broker hands over goes through ``CaseView.apply`` before it becomes a
``CaseEvent``, so an event is by construction something this device verified.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from caseline.client.core_marks import CaseMarks
from caseline.crypto import primitives as P
from caseline.crypto.caselog import (
    KIND_COMMIT,
    KIND_PURGED,
    KIND_UPDATE,
    AnyReceipt,
    Applied,
    CaseView,
    Staged,
    entry_hash,
    signed_entry_hash,
    verify_receipt,
)
from caseline.crypto.certs import TrustStore, VerifiedCert, cert_hash, check_may_post, check_may_read
from caseline.crypto.commits import CaseState, create_commit, log_anchor
from caseline.crypto.keys import DeviceKeys, Rng
from caseline.crypto.updates import HISTORY_SHARE, OpenedUpdate
from caseline.schemas.api import Directory
from caseline.schemas.content import decode_json
from caseline.schemas.errors import (
    CaselineError,
    ChainError,
    ForkError,
    GapError,
    NotPermittedError,
    UnknownError,
    UntrustedError,
    UsageError,
)
from caseline.schemas.handling import V_RELEASE_FORBIDDEN, Marked, Violation
from caseline.schemas.wire import (
    AttachmentRef,
    CaseInfo,
    DeviceCert,
    Envelope,
    HistoryShare,
    LogPosition,
    LogRef,
    Policy,
    Witnessing,
    decode_signed,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Author:
    """Who signed something, as their agency's certificate says."""

    agency_id: str
    user_id: str
    device_id: bytes
    device_role: str

    @classmethod
    def of(cls, cert: DeviceCert) -> Author:
        return cls(cert.agency_id, cert.user_id, cert.device_id, cert.role)

    @property
    def name(self) -> str:
        return f"{self.agency_id}:{self.user_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    author: Author
    role: str
    #: Listed but not counted in this epoch (PROTOCOL.md §5.3): revoked at the commit's time, or
    #: added by a voided commit.  Its updates are withheld; owners' next commits drop it.
    voided: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class CaseEvent:
    """One verified entry of a case log, as an officer would read it."""

    case_id: bytes
    seq: int
    kind: str  # "update", "commit", "purged" or "voided" (an update its sender's agency revoked)
    epoch: int
    author: Author | None
    time: int
    #: Updates: False when this device holds no key for it (joined later, history not shared).
    readable: bool = False
    content_type: str | None = None
    content: dict[str, Any] | None = None
    #: Updates, and voided updates this device could open (so a reference to one is recognised).
    update_id: bytes | None = None
    #: Commits: the complete roster the commit set.
    members: tuple[Member, ...] = ()
    #: Set for an earlier update that a history share has just made readable.
    shared: bool = False
    #: Commits made by a device its agency revoked at the commit's time: that device.  Such a
    #: commit grants nothing and opens a tainted epoch, where nothing is posted until an owner
    #: re-keys the case.
    voided_by: Author | None = None
    #: Updates: the files riding on it, as its signed record names them (keys included:
    #: an event stays in memory or sealed at rest).  Never set on a voided update.
    attachments: tuple[AttachmentRef, ...] = ()
    #: Updates and history shares that break a marking rule (PROTOCOL.md §6.7), as this
    #: device's rule book judged them: signed, so attributable, but not valid content.
    #: An update a violating share unlocked carries one too.
    violation: Violation | None = None
    #: The broker's receipt time (ms) of the entry, when it came with one.
    received: int | None = None

    @property
    def judged_at(self) -> int:
        """When the marking rules date it: the later of its own time and the broker's receipt."""
        return max(self.time, self.received or 0)


def _update_event(
    case_id: bytes, seq: int, opened: OpenedUpdate, cert: DeviceCert, *, shared: bool, received: int | None
) -> CaseEvent:
    record = opened.record
    content = None if record.content_type == HISTORY_SHARE else decode_json(record.content)
    return CaseEvent(
        case_id=case_id,
        seq=seq,
        kind="update",
        epoch=record.epoch,
        author=Author.of(cert),
        time=record.time,
        readable=True,
        content_type=record.content_type,
        content=content,
        update_id=opened.update_id,
        shared=shared,
        attachments=record.attachments or (),
        received=received,
    )


def marked_event(event: CaseEvent) -> Marked | None:
    """The event as the marking rules see it, or None for what carries no markings of its own."""
    if event.kind != "update" or not event.readable or event.content is None or event.update_id is None:
        return None
    if event.author is None or event.content_type is None:
        return None
    return Marked(
        update_id=event.update_id,
        agency_id=event.author.agency_id,
        user_id=event.author.user_id,
        device_role=event.author.device_role,
        content_type=event.content_type,
        content=event.content,
        time=event.judged_at,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CertChange:
    """One member's device moved onto a re-issued certificate: what the case pinned, and now pins.

    Kept whole so that an owner sees what a re-pin grants before and after
    (role, scopes, validity), not only that something changed.
    """

    old: DeviceCert
    new: DeviceCert

    @property
    def device_id(self) -> bytes:
        return self.new.device_id

    @property
    def name(self) -> str:
        return f"{self.new.agency_id}:{self.new.user_id}"


def repinned_roster(
    roster: Sequence[tuple[VerifiedCert, str]], offered: Sequence[VerifiedCert]
) -> tuple[list[tuple[VerifiedCert, str]], list[CertChange]]:
    """The roster with each member's newest re-issued certificate, and what changed for whom.

    Of several newer certificates for one device the latest ``not_before``
    wins, then the highest serial.

    A re-issued certificate takes a member's place only if it is for the very
    same device — same id, same signing and encryption keys, same agency and
    user — and starts after the pinned one.  One for the same device id with
    other keys is refused outright, never skipped: the device's keys are
    what the case trusts, and a certificate binding another encryption key to
    them would hand the next epoch secret to whoever holds that key.  The
    ``offered`` certificates must already be verified (chained to a pinned
    root, valid and not revoked now).
    """
    out: list[tuple[VerifiedCert, str]] = []
    changed: list[CertChange] = []
    for pinned, role in roster:
        old = pinned.cert
        newer = [
            vc for vc in offered if vc.device_id == pinned.device_id and vc.cert.not_before > old.not_before
        ]
        for vc in newer:
            new = vc.cert
            if (new.sign_key, new.kem_key, new.agency_id, new.user_id) != (
                old.sign_key,
                old.kem_key,
                old.agency_id,
                old.user_id,
            ):
                raise UntrustedError(
                    f"a certificate offered for {old.agency_id}:{old.user_id}'s device"
                    f" {pinned.device_id.hex()} binds other keys than the case holds: not re-pinned;"
                    f" ask {old.agency_id}'s administrator"
                )
        newest = max(newer, key=lambda vc: (vc.cert.not_before, vc.cert.serial), default=pinned)
        if newest.cert.role == "bot" and role == "owner":
            raise NotPermittedError(
                f"{old.agency_id}:{old.user_id} was re-issued as a bot, and a bot cannot own a case:"
                " make them a member first"
            )
        out.append((newest, role))
        if newest is not pinned:
            changed.append(CertChange(old=old, new=newest.cert))
    return out, changed


def members_of(view: CaseView) -> tuple[Member, ...]:
    state = view.state
    if state is None:
        return ()
    return tuple(
        Member(Author.of(state.certs[d].cert), m.role, voided=d in state.voided)
        for d, m in state.members.items()
    )


def head_code(count: int, head: bytes) -> str:
    """A short code for a log head that two officers can compare by phone.

    Equal codes mean both devices verified the same history up to ``count``
    entries (about 66 bits: a broker cannot find a colliding fork in time).
    """
    digest = P.hash_labeled("head-code", P.u64(count), head)
    return " ".join(f"{int.from_bytes(digest[i * 4 : i * 4 + 4], 'big') % 100000:05d}" for i in range(4))


class LogEntry(Protocol):
    """An entry as the broker serves it or the profile stores it."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def receipt(self) -> bytes: ...


E = TypeVar("E", bound=LogEntry)


@dataclasses.dataclass(slots=True)
class Taken(Generic[E]):
    """What a batch of entries from the broker meant, h11-style: the shell acts on it.

    ``accepted`` must be stored even when ``error`` is set: they passed every
    check before the one that failed, and the view already holds them.
    """

    events: list[CaseEvent]
    accepted: list[E]
    error: CaselineError | None = None


class Ledger:
    """This device's verified knowledge of every case it holds.

    Besides verifying, it makes the client's decisions — which entries of a
    page are new, whether the log was rolled back, whether a receipt is for the
    update sent, whether a refused update should be sealed again — so that any
    shell (the CLI's ``Client``, a web app, a test link) decides the same way.
    """

    def __init__(self, *, keys: DeviceKeys, cert: bytes, trust: TrustStore, server_key: bytes) -> None:
        self.keys = keys
        self.cert = cert
        self.trust = trust
        self.server_key = server_key
        self.views: dict[bytes, CaseView] = {}
        #: Each held case's marking rule book, fed in ``describe`` (or rebuilt by ``restore_marks``).
        self.marks: dict[bytes, CaseMarks] = {}
        #: Other members' gossip since the shell last checked it: (case, seq, their witnessed checkpoint).
        self.gossip: list[tuple[bytes, int, LogRef]] = []

    def view(self, case_id: bytes) -> CaseView:
        view = self.views.get(case_id)
        if view is None:
            view = self.views[case_id] = CaseView(trust=self.trust, me=self.keys)
        return view

    def forget(self, case_id: bytes) -> None:
        self.views.pop(case_id, None)
        self.marks.pop(case_id, None)

    def case_marks(self, case_id: bytes) -> CaseMarks:
        marks = self.marks.get(case_id)
        if marks is None:
            marks = self.marks[case_id] = CaseMarks()
        return marks

    def restore_marks(self, case_id: bytes, events: Sequence[CaseEvent]) -> None:
        """Rebuild a restored view's rule book from its stored events, in the order they were stored.

        Judging again the same updates in the same order at the same times gives
        the same book; the violations themselves were stored with the events.
        """
        marks = self.marks[case_id] = CaseMarks()
        for event in events:
            item = marked_event(event)
            if item is not None:
                marks.add(event.seq, item)

    def _judged(self, case_id: bytes, applied: Applied, events: list[CaseEvent]) -> list[CaseEvent]:
        """The events with the violations the rule book finds (PROTOCOL.md §6.7); never raises."""
        marks = self.case_marks(case_id)
        out = []
        # What a share unlocks is judged in log order, whatever order the sharer listed it in.
        for event in events[:1] + sorted(events[1:], key=lambda e: e.seq):
            item = marked_event(event)
            violation = None if item is None else marks.add(event.seq, item)
            out.append(event if violation is None else dataclasses.replace(event, violation=violation))
        opened = applied.opened
        if opened is None or opened.record.content_type != HISTORY_SHARE:
            return out
        share = HistoryShare.decode(opened.record.content)
        certs = applied.state.certs
        agencies = {certs[d].cert.agency_id for d in share.recipients if d in certs}
        at = out[0].judged_at
        violation = marks.judge_share(
            opened.update_id, [k.seq for k in share.keys], agency_ids=agencies, at=at
        )
        if violation is not None:
            out[0] = dataclasses.replace(out[0], violation=violation)
        for i, event in enumerate(out[1:], 1):
            if event.update_id is not None and event.violation is None:
                unshared = marks.unshareable(event.update_id, agency_ids=agencies, at=at)
                if unshared is not None:
                    out[i] = dataclasses.replace(event, violation=unshared)
        return out

    # ---------------------------------------------------------------- receiving
    def apply(
        self, case_id: bytes, *, seq: int, kind: str, body: bytes, receipt: bytes, now: int
    ) -> list[CaseEvent]:
        """Verify the next entry of ``case_id`` (or raise, changing nothing) and describe it."""
        view = self.view(case_id)
        applied = view.apply(seq=seq, kind=kind, body=body, now=now, receipt=receipt)
        if view.case_id != case_id:  # the genesis of another case, passed off under this id
            self.forget(case_id)
            raise ChainError("the broker delivered another case's log under this case id")
        record = applied.opened.record if applied.opened is not None else None
        if record is not None and record.witnessed is not None and record.sender != self.keys.device_id:
            self.gossip.append((case_id, seq, record.witnessed))
        return self.describe(case_id, applied)

    def describe(self, case_id: bytes, applied: Applied) -> list[CaseEvent]:
        state = applied.state
        if applied.kind == KIND_COMMIT:
            commit = state.commit
            events = [
                CaseEvent(
                    case_id=case_id,
                    seq=applied.seq,
                    kind="commit",
                    epoch=state.epoch,
                    author=Author.of(state.certs[commit.committer].cert)
                    if commit.committer in state.certs
                    else None,
                    time=commit.time,
                    members=members_of(self.views[case_id]),
                    voided_by=None
                    if state.voided_committer is None
                    else Author.of(self._committer_cert(case_id, state)),
                )
            ]
        elif applied.kind == KIND_PURGED:
            events = [
                CaseEvent(
                    case_id=case_id, seq=applied.seq, kind="purged", epoch=state.epoch, author=None, time=0
                )
            ]
        elif applied.voided_by is not None:
            events = [
                CaseEvent(
                    case_id=case_id,
                    seq=applied.seq,
                    kind="voided",
                    epoch=state.epoch,
                    author=Author.of(state.certs[applied.voided_by].cert),
                    time=0,
                    update_id=applied.voided_id,  # its content is withheld, its name is not
                )
            ]
        elif applied.opened is not None:
            cert = state.certs[applied.opened.envelope.sender].cert
            events = [
                _update_event(
                    case_id, applied.seq, applied.opened, cert, shared=False, received=applied.receipt_time
                )
            ]
        else:
            events = [
                CaseEvent(
                    case_id=case_id, seq=applied.seq, kind="update", epoch=state.epoch, author=None, time=0
                )
            ]
        view = self.views[case_id]
        times = applied.unlocked_receipt_times or (None,) * len(applied.unlocked)
        for seq, opened, received in zip(applied.unlocked_seqs, applied.unlocked, times, strict=True):
            author = view.states[opened.record.epoch].certs[opened.record.sender].cert
            events.append(_update_event(case_id, seq, opened, author, shared=True, received=received))
        return self._judged(case_id, applied, events)

    # ---------------------------------------------------------------- membership
    def eligible_devices(
        self, directory: Directory, *, agency_id: str, user_id: str, now: int
    ) -> list[VerifiedCert]:
        """The directory's certificates for one user that verify under our pins, now.

        Its revocation list is the caller's to adopt first (``Client._adopt_lists``).

        The broker's answer is only a claim: every certificate must chain to the
        pinned root of the agency asked about and name the user asked about.
        """
        if directory.agency_id != agency_id or directory.user_id != user_id:
            raise UntrustedError("the broker answered for another user than the one asked about")
        if agency_id not in self.trust.roots:
            raise UnknownError(f"{agency_id} is not pinned: caseline trust add {agency_id} FINGERPRINT")
        if not directory.certs:  # a mistyped or unknown user: nothing was received to distrust
            raise UnknownError(
                f"{agency_id}:{user_id} has no enrolled device{self._did_you_mean(agency_id, user_id)}"
            )
        found: list[VerifiedCert] = []
        for signed in directory.certs:
            try:
                vc = self.trust.verify_cert(signed, at=now)
            except CaselineError:
                continue  # expired, revoked or foreign: never a member, but others may be fine
            if vc.cert.agency_id != agency_id or vc.cert.user_id != user_id:
                raise UntrustedError("the directory returned a certificate for someone else")
            found.append(vc)
        if not found:
            raise UntrustedError(
                f"{agency_id}:{user_id} has no device certified by a pinned root of {agency_id!r}"
            )
        return found

    def _did_you_mean(self, agency_id: str, user_id: str) -> str:
        """A close name among the members of the cases this device has open, if there is one."""
        known = {
            f"{vc.cert.agency_id}:{vc.cert.user_id}"
            for view in self.views.values()
            if view.state is not None
            for vc in view.state.certs.values()
        }
        close = difflib.get_close_matches(f"{agency_id}:{user_id}", sorted(known), n=1, cutoff=0.8)
        return f" (did you mean {close[0]}?)" if close else ""

    def repinned(
        self, case_id: bytes, directories: Sequence[Directory], *, now: int
    ) -> tuple[list[tuple[VerifiedCert, str]], list[CertChange]]:
        """The case's roster with its members' re-issued certificates (``repinned_roster``).

        Each directory must answer for a user in the roster, and every
        certificate in it must verify under the pinned roots now and name that
        user; one that does not verify (expired, revoked, foreign) is no
        candidate, one naming someone else is the broker lying.
        """
        roster = self.roster(case_id)
        users = {(vc.cert.agency_id, vc.cert.user_id) for vc, _ in roster}
        offered: list[VerifiedCert] = []
        for directory in directories:
            if (directory.agency_id, directory.user_id) not in users:
                raise UntrustedError("the broker answered for another user than the one asked about")
            for signed in directory.certs:
                try:
                    vc = self.trust.verify_cert(signed, at=now)
                except CaselineError:
                    continue
                if (vc.cert.agency_id, vc.cert.user_id) != (directory.agency_id, directory.user_id):
                    raise UntrustedError("the directory returned a certificate for someone else")
                offered.append(vc)
        return repinned_roster(roster, offered)

    def _committer_cert(self, case_id: bytes, state: CaseState) -> DeviceCert:
        """A commit's committer, as the epoch before it certified it (genesis: itself)."""
        certs = state.certs if state.epoch == 0 else self.views[case_id].states[state.epoch - 1].certs
        return certs[state.commit.committer].cert

    def roster(self, case_id: bytes, *, voided: bool = False) -> list[tuple[VerifiedCert, str]]:
        """The case's roster as an owner's next commit starts from: without its voided members.

        An owner's commit drops them (PROTOCOL.md §5.3), so no new epoch secret
        is wrapped to them; ``voided=True`` lists them too, to name whom to remove.
        """
        state = self._state(case_id)
        return [(state.certs[d], m.role) for d, m in state.members.items() if voided or d not in state.voided]

    def _state(self, case_id: bytes) -> CaseState:
        view = self.views.get(case_id)
        if view is None or view.state is None:
            raise UnknownError("this device holds no such case")
        return view.state

    def genesis(
        self,
        *,
        case_id: bytes,
        members: Sequence[tuple[VerifiedCert, str]],
        policy: Policy,
        info: CaseInfo,
        now: int,
        rng: Rng,
        witnessing: Witnessing | None = None,
    ) -> bytes:
        me = self.trust.verify_cert(self.cert, at=now)
        roster = [(me, "owner"), *[(vc, role) for vc, role in members if vc.device_id != me.device_id]]
        body, _ = create_commit(
            prev=None,
            case_id=case_id,
            committer=self.keys,
            roster=roster,
            policy=policy,
            log=LogPosition(count=0, head=log_anchor(case_id)),
            info=info,
            now=now,
            rng=rng,
            witnessing=witnessing,
        )
        return body

    def change(
        self, case_id: bytes, roster: Sequence[tuple[VerifiedCert, str]], *, now: int, rng: Rng
    ) -> bytes:
        """The next commit of ``case_id`` with a new complete roster (same policy and title)."""
        state = self._state(case_id)
        view = self.views[case_id]
        mine = state.members.get(self.keys.device_id) if state.active(self.keys.device_id) else None
        if mine is None or mine.role != "owner":
            raise NotPermittedError("only an owner of the case may change its members")
        if len({vc.device_id for vc, _ in roster}) != len(roster):
            raise UsageError("the new roster names a device twice")
        body, _ = create_commit(
            prev=state,
            case_id=case_id,
            committer=self.keys,
            roster=list(roster),
            policy=state.policy,
            log=view.position(),
            info=view.case_info(),
            now=now,
            rng=rng,
        )
        return body

    def take(self, case_id: bytes, entries: Sequence[E], *, now: int) -> Taken[E]:
        """Verify a batch in log order, skipping entries this view already holds.

        An entry at a position already held must be the very same entry (a
        reconnect race delivers some twice); a different one is a fork.  The
        first failure stops the batch and is returned, not raised, with what
        passed before it.
        """
        view = self.view(case_id)
        taken: Taken[E] = Taken(events=[], accepted=[])
        try:
            for e in entries:
                if e.seq < view.count:
                    if not P.constant_time_equal(entry_hash(e.kind, e.body), view.entry_hashes[e.seq]):
                        raise ForkError(f"the broker now shows a different entry {e.seq} than it did before")
                    continue
                taken.events += self.apply(
                    case_id, seq=e.seq, kind=e.kind, body=e.body, receipt=e.receipt, now=now
                )
                taken.accepted.append(e)
        except CaselineError as exc:
            taken.error = exc
        return taken

    def next_page(self, case_id: bytes, *, served: int, got: int) -> int | None:
        """Where to ask next after a page (``None``: up to date), or ``ForkError`` on a rollback.

        ``served`` is the log length the broker claims, ``got`` how many entries
        the page held.  A page may hold fewer entries than asked (the broker
        bounds pages by bytes), so a short page is not the end: paging goes on
        while the view is below ``served``.  An empty page below the broker's
        own count is a broker withholding entries it claims (``GapError``),
        never a reason to ask forever.
        """
        view = self.view(case_id)
        if served < view.count:
            raise ForkError("the broker's log is shorter than the history this device verified: a rollback")
        if view.count >= served:
            return None
        if not got:
            raise GapError(
                f"the broker states {served} entries but serves none after {view.count}: it withholds entries"
            )
        return view.count

    # ---------------------------------------------------------------- receipts
    def check_receipt(self, case_id: bytes, envelope: bytes, receipt: bytes) -> AnyReceipt:
        """The broker's receipt for an update this device posted: signed, and for that very update."""
        r = verify_receipt(receipt, self.server_key)
        tbs, sig = decode_signed(envelope)
        if r.case_id != case_id or not P.constant_time_equal(
            r.entry_hash, signed_entry_hash(KIND_UPDATE, tbs, sig)
        ):
            raise ForkError("the broker's receipt is for another entry than the update posted")
        return r

    def receipt_is_next(self, case_id: bytes, receipt: AnyReceipt) -> bool:
        """Whether the posted update is the next entry: then it and its receipt can be applied as is."""
        return receipt.seq == self.view(case_id).count

    def check_acknowledged(self, case_id: bytes, receipt: AnyReceipt) -> None:
        """After the update was taken in, the log must hold it where the receipt says."""
        view = self.view(case_id)
        if receipt.seq >= view.count or not P.constant_time_equal(
            view.entry_hashes[receipt.seq], receipt.entry_hash
        ):
            raise ForkError("the broker acknowledged an update its log does not hold")

    def reseal_after_refusal(self, case_id: bytes, envelope: bytes, status: int) -> bool:
        """Whether a refused update should be sealed again: a membership change overtook it.

        Only a conflict over an epoch the case has since left qualifies, and
        only while this device is still a member; anything else is final.
        """
        state = self.view(case_id).state
        sent = Envelope.decode(decode_signed(envelope)[0])
        return (
            status == 409
            and state is not None
            and state.epoch > sent.epoch
            and self.keys.device_id in state.members
        )

    # ---------------------------------------------------------------- sending
    def prepare(
        self,
        case_id: bytes,
        *,
        content_type: str,
        content: bytes,
        now: int,
        nonce: bytes,
        witnessed: LogRef | None = None,
        attachments: Sequence[AttachmentRef] = (),
    ) -> Staged:
        """Seal the next update of ``case_id``; nothing moves until ``confirm``.

        ``attachments`` name blobs already uploaded to the case and checked.
        """
        self.check_marking(case_id, content_type=content_type, content=content, now=now)
        try:
            return self.view(case_id).prepare(
                content_type=content_type,
                content=content,
                now=now,
                nonce=nonce,
                witnessed=witnessed,
                attachments=attachments,
            )
        except NotPermittedError:
            if self.reissued_would_allow(case_id, content_type):
                raise self.repin_needed(case_id, content_type) from None
            raise

    def check_marking(self, case_id: bytes, *, content_type: str, content: bytes, now: int) -> None:
        """Refuse an update the other members' clients would mark as a violation (PROTOCOL.md §6.7).

        The sender asks the very rule book the receivers use, before anything is
        sealed or a message key used up, and is told what would make it legal.
        """
        view = self.views.get(case_id)
        state = None if view is None else view.state
        me = None if state is None else state.certs.get(self.keys.device_id)
        if me is None or content_type == HISTORY_SHARE:
            return  # not a member: the view's own check says so
        try:
            body = decode_json(content)
        except CaselineError:
            return  # not JSON content: the schemas' check refuses it where it applies
        item = Marked(
            update_id=b"",
            agency_id=me.cert.agency_id,
            user_id=me.cert.user_id,
            device_role=me.cert.role,
            content_type=content_type,
            content=body,
            time=now,
        )
        marks = self.case_marks(case_id)
        violation = marks.book.judge(item)
        if violation is None:
            return
        if violation.rule == V_RELEASE_FORBIDDEN:
            raise NotPermittedError(
                f"not posted: {violation.message}. Ask them inside the case:"
                f" `caseline release-request {case_id.hex()[:12]} {str(body.get('of', ''))[:12]} ...`"
            )
        floor = marks.book.floor(item.inherits_from())
        refs = ", ".join(r.hex()[:12] for r in item.inherits_from() if r in marks.book)
        raise NotPermittedError(
            f"not posted: it is marked {item.markings.label} but names {refs}, so it must carry at least"
            f" {floor.label}; mark it so (or leave the markings out), or ask the originator for a downgrade"
            f" release: `caseline release-request {case_id.hex()[:12]} REF --for downgrade --reason TEXT`"
        )

    def reissued_would_allow(self, case_id: bytes, content_type: str | None) -> bool:
        """Whether this device's installed certificate is not the case's pin, and allows posting
        ``content_type`` (``None``: reading) where the pinned one may not.

        A bot that may not read holds no view of the case, so for reading an
        unknown pin counts as another one: the broker refused to serve the case
        by a certificate this device no longer holds.
        """
        view = self.views.get(case_id)
        state = None if view is None else view.state
        pinned = None if state is None else state.certs.get(self.keys.device_id)
        if not self.cert or (pinned is None and content_type is not None):
            return False
        if pinned is not None and P.constant_time_equal(pinned.hash, cert_hash(self.cert)):
            return False
        try:
            cert = DeviceCert.decode(decode_signed(self.cert)[0])
            if content_type is None:
                check_may_read(cert)
            else:
                check_may_post(cert, content_type)
        except CaselineError:
            return False
        return True

    @staticmethod
    def repin_needed(case_id: bytes, content_type: str | None) -> NotPermittedError:
        """What a device is told when only its re-issued certificate would allow the act."""
        act = "reading" if content_type is None else content_type
        return NotPermittedError(
            f"your certificate was re-issued, but this case still holds the old one, which does not"
            f" allow {act}: ask an owner of the case to run `caseline case repin {case_id.hex()}`"
        )

    def confirm(self, case_id: bytes, staged: Staged) -> None:
        """The staged update is kept safe (in the outbox): its message key is now used up."""
        self.view(case_id).confirm(staged)
