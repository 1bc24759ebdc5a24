"""The exception hierarchy every layer of caseline raises.

Verification raises; it never returns a bool (pyca's rule), so a caller cannot
forget to look at the result.  Each class names *what kind* of check failed so
that a client can show an officer a precise reason and a test can assert it,
while messages never carry secrets, plaintext or key material.

``status_hint`` is read only by the HTTP edge to choose a response code, the way
h11 carries ``error_status_hint``; the core never thinks about HTTP.
"""

from __future__ import annotations


class CaselineError(Exception):
    """Root of every error caseline raises on purpose."""

    status_hint: int = 400
    #: Stable, machine-readable name; the server's problem ``type`` URI ends in it.
    code: str = "error"


class MalformedError(CaselineError):
    """Bytes that do not decode to exactly one canonical, well-formed object."""

    code = "malformed"


class ContentError(MalformedError):
    """Case-update content that does not validate against its JSON Schema."""

    code = "invalid-content"


class UnsupportedError(CaselineError):
    """A protocol version or a required algorithm is not available: fail closed."""

    code = "unsupported"


class VerificationError(CaselineError):
    """An object decoded, but a cryptographic or protocol check on it failed."""

    status_hint = 422
    code = "verification-failed"


class BadSignatureError(VerificationError):
    """A signature does not verify under the expected key and label."""

    code = "bad-signature"


class DecryptionError(VerificationError):
    """An AEAD or HPKE open failed: wrong key, wrong context or altered bytes."""

    code = "decryption-failed"


class UntrustedError(VerificationError):
    """The object chains to no pinned agency root, or to the wrong one."""

    code = "untrusted"


class RevokedError(VerificationError):
    """The device that signed was revoked by its agency."""

    code = "revoked"


class ExpiredError(VerificationError):
    """A certificate or challenge is outside its validity window."""

    code = "expired"


class NotMemberError(VerificationError):
    """The device is not a member of the case in the epoch it claims."""

    status_hint = 403
    code = "not-member"


class NotAllowedError(VerificationError):
    """The device is a member but its role or scopes do not permit the act."""

    status_hint = 403
    code = "not-allowed"


class IntegrityError(VerificationError):
    """The history does not fit together: something was dropped, altered or replayed."""

    status_hint = 409
    code = "integrity"


class ChainError(IntegrityError):
    """A commit or update does not continue the chain it claims to continue."""

    code = "chain-broken"


class GapError(IntegrityError):
    """An entry the history proves to exist is missing from this view (a drop)."""

    code = "gap"


class ReplayError(IntegrityError):
    """An entry appears twice, or an old entry appears at a new position."""

    code = "replay"


class ForkError(IntegrityError):
    """Two signed, conflicting histories of one case exist: the broker equivocated."""

    code = "fork"
