"""Device certificates, revocation lists and the pinned trust store.

A client trusts exactly the agency roots it pinned after an out-of-band
fingerprint check; the broker's registry is only ever a source of *claims* that
this module verifies.  The same ``TrustStore`` serves the broker (whose pins are
the agencies its operator registered) and the client (whose pins are partners
checked at an MoU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from caseline.crypto import primitives as P
from caseline.crypto.keys import AgencyRootKey, DeviceKeys, device_id_for
from caseline.schemas.errors import (
    ExpiredError,
    MalformedError,
    NotAllowedError,
    RevokedError,
    UntrustedError,
)
from caseline.schemas.wire import (
    MAX_CERT_BYTES,
    READ_SCOPE,
    DeviceCert,
    EnrolmentRequest,
    Revocation,
    RevocationList,
    Witness,
    WitnessList,
    decode_signed,
    encode_signed,
)

CERT_LABEL: Final = "device-cert"
CRL_LABEL: Final = "revocation-list"
REQUEST_LABEL: Final = "enrolment-request"
WITNESS_LIST_LABEL: Final = "witness-list"
#: Clock skew tolerated between devices, the broker and agency administrators.
MAX_SKEW_MS: Final = 5 * 60 * 1000
MAX_CHECKED_CERTS: Final = 65536


def cert_hash(signed_cert: bytes) -> bytes:
    """The hash by which rosters pin an exact certificate."""
    return P.hash_labeled("device-cert", signed_cert)


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedCert:
    """A certificate whose signature chains to a pinned root (checked when built)."""

    cert: DeviceCert
    signed: bytes
    hash: bytes

    @property
    def device_id(self) -> bytes:
        return self.cert.device_id


def issue_device_cert(
    root: AgencyRootKey,
    *,
    user_id: str,
    role: str,
    sign_key: bytes,
    kem_key: bytes,
    not_before: int,
    not_after: int,
    serial: int,
    scopes: Iterable[str] = (),
) -> bytes:
    """Sign a device certificate; the agency administrator's act of enrolment."""
    cert = DeviceCert(
        agency_id=root.agency_id,
        user_id=user_id,
        device_id=device_id_for(sign_key),
        role=role,
        scopes=tuple(scopes),
        sign_key=sign_key,
        kem_key=kem_key,
        not_before=not_before,
        not_after=not_after,
        serial=serial,
    )
    _check_cert_shape(cert)
    tbs = cert.encode()
    return encode_signed(tbs, root.sign(CERT_LABEL, tbs))


def make_enrolment_request(keys: DeviceKeys, *, agency_id: str, user_id: str, now: int) -> bytes:
    """What a new device hands its administrator: its public keys, signed by itself."""
    request = EnrolmentRequest(
        agency_id=agency_id, user_id=user_id, sign_key=keys.sign_public, kem_key=keys.kem_public, time=now
    )
    tbs = request.encode()
    return encode_signed(tbs, keys.sign(REQUEST_LABEL, tbs))


def open_enrolment_request(signed: bytes) -> EnrolmentRequest:
    """Check a request's proof of possession and its KEM key before anyone certifies it."""
    tbs, sig = decode_signed(signed, max_size=MAX_CERT_BYTES)
    request = EnrolmentRequest.decode(tbs)
    P.verify_labeled(request.sign_key, REQUEST_LABEL, tbs, sig)
    P.check_kem_public(request.kem_key)
    return request


def issue_revocation_list(
    root: AgencyRootKey, *, number: int, issued_at: int, entries: Iterable[Revocation]
) -> bytes:
    """Sign an agency's complete revocation list (a later number replaces an earlier one)."""
    crl = RevocationList(agency_id=root.agency_id, number=number, issued_at=issued_at, entries=tuple(entries))
    tbs = crl.encode()
    return encode_signed(tbs, root.sign(CRL_LABEL, tbs))


def issue_witness_list(
    root: AgencyRootKey, *, number: int, issued_at: int, witnesses: Sequence[Witness]
) -> bytes:
    """An agency root's signed list of the witnesses its agency runs (PROTOCOL.md §7.6)."""
    body = WitnessList(
        agency_id=root.agency_id, number=number, issued_at=issued_at, witnesses=tuple(witnesses)
    )
    tbs = body.encode()
    return encode_signed(tbs, root.sign(WITNESS_LIST_LABEL, tbs))


def _check_cert_shape(cert: DeviceCert) -> None:
    if cert.not_after <= cert.not_before:
        raise MalformedError("certificate validity window is empty")
    if cert.device_id != device_id_for(cert.sign_key):
        raise MalformedError("certificate device id does not match its signing key")
    if cert.role != "bot" and cert.scopes:
        raise MalformedError("only bot certificates carry scopes")
    if len(set(cert.scopes)) != len(cert.scopes):
        raise MalformedError("certificate scopes repeat")


class TrustStore:
    """Pinned agency roots plus the newest verified revocation list of each.

    Revocation lists only move forward: one with a number at or below the held
    one is refused, so a broker cannot roll a revocation back.
    """

    def __init__(self, roots: Mapping[str, bytes] | None = None) -> None:
        self._roots: dict[str, bytes] = dict(roots or {})
        self._crls: dict[str, RevocationList] = {}
        self._crl_bytes: dict[str, bytes] = {}
        # Keyed by (agency, device): an agency revokes only its own devices, so a
        # partner's list cannot cut off a device another agency certified.
        self._revoked: dict[tuple[str, bytes], Revocation] = {}
        # Certificates whose signature, shape and KEM key already checked out
        # under the current pins, by the hash of their exact bytes.  Only the
        # time-independent checks are remembered; validity and revocation are
        # checked on every use.  Any change of pins empties it.
        self._checked: dict[bytes, DeviceCert] = {}
        self._witness_lists: dict[str, tuple[WitnessList, bytes]] = {}

    # -- roots
    def pin(self, agency_id: str, root_key: bytes) -> None:
        if len(root_key) != P.SIGN_PUBLIC_SIZE:
            raise MalformedError("an agency root key is 32 bytes")
        if self._roots.get(agency_id) != root_key:
            self._checked.clear()
        self._roots[agency_id] = root_key

    def unpin(self, agency_id: str) -> None:
        self._roots.pop(agency_id, None)
        self._checked.clear()

    @property
    def roots(self) -> Mapping[str, bytes]:
        return dict(self._roots)

    def root(self, agency_id: str) -> bytes:
        try:
            return self._roots[agency_id]
        except KeyError:
            raise UntrustedError(f"agency {agency_id!r} is not pinned") from None

    # -- revocation
    def add_revocation_list(self, signed: bytes) -> RevocationList:
        """Verify and adopt a revocation list; refuse rollbacks and unknown agencies."""
        tbs, sig = decode_signed(signed)
        crl = RevocationList.decode(tbs)
        P.verify_labeled(self.root(crl.agency_id), CRL_LABEL, tbs, sig)
        held = self._crls.get(crl.agency_id)
        if held is not None:
            if crl.number < held.number or (
                crl.number == held.number and signed != self._crl_bytes[crl.agency_id]
            ):
                raise RevokedError("revocation list is older than the one already held")
            now_at = {r.device_id: r.revoked_at for r in crl.entries}
            if any(now_at.get(r.device_id, r.revoked_at + 1) > r.revoked_at for r in held.entries):
                # Dropping a device, or dating its revocation later, would revive what it signed.
                raise RevokedError("a newer revocation list may not un-revoke a device")
        self._crls[crl.agency_id] = crl
        self._crl_bytes[crl.agency_id] = signed
        for entry in crl.entries:
            self._revoked[(crl.agency_id, entry.device_id)] = entry
        return crl

    # -- witness lists
    def add_witness_list(self, signed: bytes) -> WitnessList:
        """Verify and adopt an agency's witness list under its pinned root; never go back."""
        tbs, sig = decode_signed(signed)
        body = WitnessList.decode(tbs)
        P.verify_labeled(self.root(body.agency_id), WITNESS_LIST_LABEL, tbs, sig)
        names = [w.name for w in body.witnesses]
        if len(set(names)) != len(names):
            raise MalformedError("a witness list names one witness twice")
        held = self._witness_lists.get(body.agency_id)
        if held is not None and (
            body.number < held[0].number or (body.number == held[0].number and signed != held[1])
        ):
            raise RevokedError("witness list is older than the one already held")
        self._witness_lists[body.agency_id] = (body, signed)
        return body

    def witnesses(self, agency_id: str) -> tuple[Witness, ...]:
        held = self._witness_lists.get(agency_id)
        return () if held is None or agency_id not in self._roots else held[0].witnesses

    def witness_list(self, agency_id: str) -> bytes | None:
        held = self._witness_lists.get(agency_id)
        return None if held is None else held[1]

    def witness_lists(self) -> list[bytes]:
        return [signed for _, signed in self._witness_lists.values()]

    # -- revocation lists
    def revocation_lists(self) -> list[bytes]:
        return list(self._crl_bytes.values())

    def revocation_list(self, agency_id: str) -> bytes | None:
        """The exact bytes of the list held for ``agency_id`` (to ask the broker whether it changed)."""
        return self._crl_bytes.get(agency_id)

    def revocation_number(self, agency_id: str) -> int:
        held = self._crls.get(agency_id)
        return -1 if held is None else held.number

    def revoked_at(self, cert: DeviceCert) -> int | None:
        """When the certified device stopped being trustworthy, or None if never revoked."""
        entry = self._revoked.get((cert.agency_id, cert.device_id))
        return None if entry is None else entry.revoked_at

    def is_revoked(self, cert: DeviceCert, *, at: int) -> bool:
        """Whether its agency revoked the device at or before ``at``."""
        revoked_at = self.revoked_at(cert)
        return revoked_at is not None and at >= revoked_at

    def check_not_revoked(self, cert: DeviceCert, *, at: int) -> None:
        if self.is_revoked(cert, at=at):
            raise RevokedError("device was revoked by its agency")

    # -- certificates
    def verify_cert(self, signed: bytes, *, at: int, revocation: bool = True) -> VerifiedCert:
        """Verify a device certificate for use at time ``at`` (ms), or raise.

        Order matters: the signature is checked before any field is believed.
        ``revocation=False`` leaves revocation to the caller: a commit voids a
        member revoked at its time instead of failing (PROTOCOL.md §5.3).
        """
        if len(signed) > MAX_CERT_BYTES:
            raise MalformedError("certificate too large")
        digest = cert_hash(signed)
        cert = self._checked.get(digest)
        if cert is None:
            tbs, sig = decode_signed(signed)
            cert = DeviceCert.decode(tbs)
            P.verify_labeled(self.root(cert.agency_id), CERT_LABEL, tbs, sig)
            _check_cert_shape(cert)
            P.check_kem_public(cert.kem_key)
            if len(self._checked) >= MAX_CHECKED_CERTS:
                self._checked.clear()
            self._checked[digest] = cert
        if not cert.not_before - MAX_SKEW_MS <= at <= cert.not_after:
            raise ExpiredError("certificate is not valid at this time")
        if revocation:
            self.check_not_revoked(cert, at=at)
        return VerifiedCert(cert=cert, signed=signed, hash=digest)


def check_may_post(cert: DeviceCert, content_type: str) -> None:
    """Bots post only the content types their certificate names."""
    if cert.role == "bot" and content_type not in cert.scopes:
        raise NotAllowedError("bot certificate does not allow this content type")


def check_may_read(cert: DeviceCert) -> None:
    """Bots read history only with the ``read`` scope (scripts that only post never need it)."""
    if cert.role == "bot" and READ_SCOPE not in cert.scopes:
        raise NotAllowedError("bot certificate does not allow reading")
