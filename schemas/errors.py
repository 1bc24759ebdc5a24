"""The one exception hierarchy of caseline, sorted by what the person should do next.

Every error caseline raises on purpose belongs to one of three families:

* ``LocalError`` — the caller's own mistake: a wrong argument, content that
  does not fit its form, a case or member this device does not know, or an act
  the case's rules or this device's certificate do not allow.  Nothing was sent.
* ``VerificationError`` — data received from the broker or a partner failed a
  check.  Do not rely on it; compare fingerprints and head codes out of band.
* ``BrokerRefusal`` — the broker answered with a problem.  Typed from the
  problem's ``type``, so one class serves both ends: the broker raises
  ``BrokerConflict`` and the client that receives that answer raises it again.

Verification raises; it never returns a bool (pyca's rule), so a caller cannot
forget to look at the result.  The same check can belong to either side: a
``ContentError`` is a verification failure when an opened update does not fit
its schema, and the sender's own ``InvalidContentError`` before sealing.  The
code that knows where the bytes came from picks the class.

The classes are the table: each carries its problem ``code``, ``title`` and
HTTP ``status_hint`` (read only by the broker's edge, the way h11 carries
``error_status_hint``), and its family's exit code and hint for the CLI.  The
broker's problem titles, the OpenAPI list of problem types and the CLI's exit
codes are all derived from ``catalogue()``.  Messages never carry secrets,
plaintext or key material.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final


class Family(enum.Enum):
    LOCAL = "local"
    VERIFICATION = "verification"
    REFUSAL = "refusal"


#: The CLI's exit codes, stable for scripts.
EXIT_OK: Final = 0
EXIT_BUG: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNTRUSTED: Final = 3
EXIT_REFUSED: Final = 4
EXIT_TEMPORARY: Final = 5
EXIT_PROFILE: Final = 6
#: What a shell expects of a program stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED: Final = 130

#: Every problem ``type`` the broker sends is this base and the error's ``code``.
PROBLEM_TYPE_BASE: Final = "https://caseline.example/problems/"

#: Broker answers worth repeating unchanged: overload, rate limits, server-side failures.
TRANSIENT_STATUSES: Final = frozenset({0, 408, 429, 500, 502, 503, 504, 507})


class CaselineError(Exception):
    """Root of every error caseline raises on purpose."""

    family: ClassVar[Family] = Family.LOCAL
    status_hint: ClassVar[int] = 400
    #: Stable, machine-readable name; the broker's problem ``type`` URI ends in it.
    code: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"
    #: What to do next; a class default an error may refine (``InvalidContentError``'s field to fix).
    hint: str = "see caseline --help"

    @property
    def exit_code(self) -> int:
        return {
            Family.LOCAL: EXIT_USAGE,
            Family.VERIFICATION: EXIT_UNTRUSTED,
            Family.REFUSAL: EXIT_REFUSED,
        }[self.family]


# --------------------------------------------------------------------------- local


class LocalError(CaselineError):
    """The caller's own mistake, found before anything was sent."""

    family = Family.LOCAL
    code = "usage"
    title = "Invalid request"
    hint = "check the command with --help; nothing was sent"


class UsageError(LocalError):
    """An argument that cannot be acted on: a malformed id, a bad option, a missing file."""


class InvalidValueError(UsageError):
    """A value this device was asked to send does not fit its field: a title too long, a bad id.

    The same check on received bytes is a ``MalformedError`` (exit 3); here the
    value came from the person, so it is their mistake to fix (exit 2), said
    in their words (``codec.own_input``).
    """

    code = "invalid-value"
    title = "Invalid value"


class InvalidContentError(LocalError):
    """Content this device was asked to send does not fit its content type's form."""

    code = "invalid-content"
    title = "Invalid content"
    hint = "fix the fields named above (`caseline forms show TYPE` lists them); nothing was sent"

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        if fix:
            self.hint = f"{fix}; nothing was sent"


class UnknownError(LocalError):
    """A case, member or device this device does not know."""

    code = "unknown"
    title = "Unknown"
    status_hint = 404
    hint = "check the name or id (`caseline case list`, `caseline case show CASE`); nothing was sent"


class NotPermittedError(LocalError):
    """The case's rules or this device's certificate do not allow the act asked for."""

    code = "not-permitted"
    title = "Not permitted"
    status_hint = 403
    hint = "the case's rules or your certificate do not allow this; nothing was sent"


class ProfileError(LocalError):
    """This device's local state is missing, locked, unsafe, or busy in another process."""

    code = "profile"
    title = "Profile problem"
    hint = "check --profile, the passphrase, or the key file's permissions"

    @property
    def exit_code(self) -> int:
        return EXIT_PROFILE


# --------------------------------------------------------------------------- verification


class VerificationError(CaselineError):
    """Data received failed a cryptographic, protocol or format check."""

    family = Family.VERIFICATION
    status_hint = 422
    code = "verification-failed"
    title = "Verification failed"
    hint = "do not rely on what was received; compare fingerprints and head codes with partners"


class MalformedError(VerificationError):
    """Bytes that do not decode to exactly one canonical, well-formed object."""

    status_hint = 400
    code = "malformed"
    title = "Malformed request"


class ContentError(MalformedError):
    """Received case-update content that does not validate against its JSON Schema.

    ``fix`` says what to type instead, in ``--field`` terms.  It is kept apart
    from ``hint``: to the receiver of a partner's bad update it means nothing,
    so only the sender's ``InvalidContentError`` shows it.
    """

    code = "invalid-content"
    title = "Invalid content"

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


class UnsupportedError(VerificationError):
    """A protocol version or a required algorithm is not available: fail closed."""

    status_hint = 400
    code = "unsupported"
    title = "Unsupported"


class BadSignatureError(VerificationError):
    """A signature does not verify under the expected key and label."""

    code = "bad-signature"
    title = "Bad signature"


class DecryptionError(VerificationError):
    """An AEAD or HPKE open failed: wrong key, wrong context or altered bytes."""

    code = "decryption-failed"
    title = "Decryption failed"


class UntrustedError(VerificationError):
    """The object chains to no pinned agency root, or to the wrong one."""

    code = "untrusted"
    title = "Untrusted"


class RevokedError(VerificationError):
    """The device that signed was revoked by its agency."""

    code = "revoked"
    title = "Device revoked"


class PostedAfterRevocationError(RevokedError):
    """The broker accepted this device's update, but its agency had revoked the device by then.

    Raised by the sender after the post, never by the broker (it shares
    ``revoked``'s problem code only so that the broker's catalogue is
    unchanged).  The update is in the case for good, and every member shows it
    voided (PROTOCOL.md §6.4): the verification family (exit 3), because what
    the person believes happened — partners can read the post — did not.
    """

    title = "Posted after revocation"
    hint = "this device can no longer post; ask your agency's administrator about the revocation"

    def __init__(
        self,
        *,
        case_id: bytes,
        update_id: bytes,
        seq: int,
        revoked_at: int,
        shown_at: str,
        earlier: bool = False,
    ) -> None:
        """``shown_at`` is ``revoked_at`` as the person reads times (this module keeps no clock).

        ``earlier``: the update is one an earlier run sealed and left in the
        outbox, sent first; the one being posted now was then not sent.
        """
        if earlier:
            super().__init__(
                f"update {update_id.hex()[:8]}, left unsent by an earlier run, was posted now, but your"
                f" device was revoked at {shown_at}; partners will see it voided; this update was not sent"
            )
        else:
            super().__init__(
                f"posted, but your device was revoked at {shown_at}; partners will see it voided"
            )
        self.case_id = case_id
        self.earlier = earlier
        self.update_id = update_id
        self.seq = seq
        self.revoked_at = revoked_at


class ExpiredError(VerificationError):
    """A certificate or challenge is outside its validity window."""

    code = "expired"
    title = "Expired"


class NotMemberError(VerificationError):
    """The device that signed is not a member of the case in the epoch it claims."""

    status_hint = 403
    code = "not-member"
    title = "Not a member"


class NotAllowedError(VerificationError):
    """The device that signed is a member, but its role or scopes do not permit the act."""

    status_hint = 403
    code = "not-allowed"
    title = "Not allowed"


class IntegrityError(VerificationError):
    """The history does not fit together: something was dropped, altered or replayed."""

    status_hint = 409
    code = "integrity"
    title = "Integrity check failed"


class ChainError(IntegrityError):
    """A commit or update does not continue the chain it claims to continue."""

    code = "chain-broken"
    title = "Chain broken"


class GapError(IntegrityError):
    """An entry the history proves to exist is missing from this view (a drop)."""

    code = "gap"
    title = "Gap"


class ReplayError(IntegrityError):
    """An entry appears twice, or an old entry appears at a new position."""

    code = "replay"
    title = "Replay"


class ForkError(IntegrityError):
    """Two signed, conflicting histories of one case exist: the broker equivocated."""

    code = "fork"
    title = "Fork"


class SplitViewError(ForkError):
    """The broker log shows this device another history than the witnesses saw, or keeps it
    from them: an inconsistent or smaller checkpoint, a witness's proof of equivocation,
    or entries left unwitnessed past the case's bound.

    ``proof`` holds the signed notes that show it (two checkpoints, as a rule):
    the client saves them in the profile for the agency to hand on.
    """

    code = "split-view"
    title = "Split view"

    def __init__(self, detail: str, *, proof: tuple[bytes, ...] = ()) -> None:
        super().__init__(detail)
        self.proof = proof


# --------------------------------------------------------------------------- broker refusals


class BrokerRefusal(CaselineError):
    """The broker said no, as an ``application/problem+json`` answer.

    On the broker a subclass is raised with a detail alone; on the client the
    answer's status and problem code are kept, since a broker may refuse with
    a code this client does not know (a verification failure of what it sent,
    for one).
    """

    family = Family.REFUSAL
    code = "refused"
    title = "Refused"
    hint = "the broker refused this; nothing was changed"
    #: Chosen for a problem answer only by its own code, never as the class of its status alone.
    only_by_code: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        problem: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        #: Response headers the answer carries (a 409's ``Upload-Offset``, a 416's ``Content-Range``).
        self.headers = headers or {}
        self.status = self.status_hint if status is None else status
        self.problem = problem or self.code
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth repeating unchanged later: overload, rate limits and server-side failures."""
        return self.status in TRANSIENT_STATUSES

    @property
    def exit_code(self) -> int:
        return EXIT_TEMPORARY if self.transient else EXIT_REFUSED


class BrokerUnauthorized(BrokerRefusal):
    status_hint = 401
    code = "unauthorized"
    title = "Authentication required"
    hint = "log in again (`caseline login`); if that fails, ask your administrator whether it was revoked"


class BrokerForbidden(BrokerRefusal):
    status_hint = 403
    code = "forbidden"
    title = "Forbidden"


class BrokerNotFound(BrokerRefusal):
    status_hint = 404
    code = "not-found"
    title = "Not found"


class BrokerUnknownCase(BrokerNotFound):
    """A case route for a case id this device may not see: none exists, or it is not a member.

    The broker gives both the same answer (status, code and detail), decided
    from its in-memory state, so that a stranger cannot learn which case ids
    exist.  A member whose role or scopes forbid the act gets *not-allowed*.
    """

    code = "unknown-case"
    title = "Unknown case"
    hint = (
        "the broker refused this; nothing was changed.  Check the case id (`caseline case list`);"
        " if it is right, this device is not, or no longer, a member of the case"
    )


#: The one detail of ``BrokerUnknownCase``: it must not say which of the two it is.
UNKNOWN_CASE_DETAIL: Final = "no such case, or this device is not a member of it"


class BrokerMethodNotAllowed(BrokerRefusal):
    status_hint = 405
    code = "method-not-allowed"
    title = "Method not allowed"


class BrokerConflict(BrokerRefusal):
    """The request raced another one; the client can rebase or re-seal and retry."""

    status_hint = 409
    code = "conflict"
    title = "Conflict"


class BrokerLimit(BrokerRefusal):
    """A configured limit was exceeded (members per case, sizes)."""

    status_hint = 413
    code = "limit"
    title = "Limit exceeded"


class BrokerTooLarge(BrokerRefusal):
    status_hint = 413
    code = "too-large"
    title = "Request too large"


class BrokerUnsupportedMediaType(BrokerRefusal):
    status_hint = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class BrokerRangeNotSatisfiable(BrokerRefusal):
    """A download's ``Range`` starts past the blob's end (the answer says its length)."""

    status_hint = 416
    code = "range-not-satisfiable"
    title = "Range not satisfiable"


class BrokerRateLimited(BrokerRefusal):
    status_hint = 429
    code = "rate-limited"
    title = "Too many requests"
    hint = "temporary: wait a moment and run the same command again"


class BrokerInternal(BrokerRefusal):
    status_hint = 500
    code = "internal"
    title = "Internal error"
    hint = "temporary: run the same command again (a post resends the very same update)"


class BrokerStorageFull(BrokerRefusal):
    """The broker's disk (or its configured size cap) is full: the write did not happen."""

    status_hint = 507
    code = "storage-full"
    title = "Storage full"
    hint = "temporary: the broker's storage is full; run the same command again later"


class BrokerCaseFull(BrokerStorageFull):
    """The case holds as many stored bytes as the broker allows one case: nothing was stored.

    Membership changes are still accepted, so the case's owners can act; only
    updates wait, in the sender's outbox (507 is temporary), until the broker's
    operator raises the limit or retention purges old bodies.
    """

    code = "case-full"
    title = "Case full"
    hint = "the case reached the broker's per-case storage limit: ask the broker's operator to raise it"


class BrokerAgencyFull(BrokerStorageFull):
    """The agency's attachment quota on this broker is used up: the upload was not started.

    Uploads in progress count with their declared lengths, so concurrent uploads
    cannot pass it together.  Deleting abandoned uploads, or retention and the
    blob grace period freeing old attachments, makes room.
    """

    code = "agency-full"
    title = "Agency full"
    hint = "your agency reached the broker's attachment quota: ask the broker's operator to raise it"


class BrokerMissingBlob(BrokerRefusal):
    """An update names an attachment blob the case does not hold complete: nothing was stored.

    The client uploads every attachment of an update, to the end, before it posts
    the update (PROTOCOL.md §9, Blobs); a broker never accepts a reference to bytes
    it cannot serve.
    """

    status_hint = 422
    code = "missing-blob"
    title = "Missing blob"
    hint = "an attachment of this update is not (fully) uploaded to the case: run the same command again"
    #: A 422 with another code is a verification failure of what was sent, never this.
    only_by_code = True


class BrokerUnavailable(BrokerRefusal):
    """No answer at all (connection refused or reset, a timeout), or a 503."""

    status_hint = 503
    code = "unavailable"
    title = "Service unavailable"
    hint = "temporary: check the broker's address, then run the same command again"

    @property
    def transient(self) -> bool:
        return True


def catalogue() -> list[type[CaselineError]]:
    """Every error class, root first: the one table titles and exit codes come from."""
    found: list[type[CaselineError]] = []
    todo: list[type[CaselineError]] = [CaselineError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def problem_titles() -> dict[str, str]:
    """Problem code → title, for every code the broker can answer with."""
    titles = {"http-error": "HTTP error"}
    for cls in catalogue():
        if cls.family is not Family.LOCAL or cls is CaselineError:
            titles.setdefault(cls.code, cls.title)
    return titles


def refusal_for(status: int, problem: str) -> type[BrokerRefusal]:
    """The class a client raises for a broker's problem answer: by code, else by status."""
    by_code: type[BrokerRefusal] | None = None
    by_status: type[BrokerRefusal] | None = None
    for cls in catalogue():
        if issubclass(cls, BrokerRefusal) and cls is not BrokerRefusal:
            if cls.code == problem and cls.status_hint == status:
                by_code = by_code or cls
            if cls.status_hint == status and not cls.only_by_code:
                by_status = by_status or cls
    return by_code or by_status or BrokerRefusal
