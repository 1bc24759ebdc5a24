"""Agency administration: the root of trust, device certificates, revocation.

An agency root signs two things: certificates binding an officer's (or bot's)
keys to a user id, and the agency's complete revocation list.  The root's seed
is sealed under the administrator's passphrase in its own profile and is never
needed by an officer's device; keep that profile on an offline machine and
carry certificates and lists to the broker with ``agency publish``.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from caseline.client import keystore
from caseline.client.client import Clock, wall_clock
from caseline.client.errors import BrokerError, ProfileError
from caseline.client.store import Issued, LocalStore
from caseline.client.transport import BrokerConnection
from caseline.crypto.certs import issue_device_cert, issue_revocation_list, open_enrolment_request
from caseline.crypto.keys import AgencyRootKey, device_id_for
from caseline.schemas.errors import MalformedError, NotAllowedError
from caseline.schemas.wire import (
    AGENCY_ID,
    CONTENT_TYPE,
    DEVICE_ROLES,
    READ_SCOPE,
    REVOCATION_REASONS,
    Revocation,
)

DAY_MS: Final = 86_400_000
MAX_CERT_DAYS: Final = 3 * 365


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    certificates: int
    revocation_number: int | None


class AgencyAdmin:
    """One agency's root key and the register of what it issued and revoked."""

    def __init__(self, store: LocalStore, root: AgencyRootKey, *, clock: Clock = wall_clock) -> None:
        self.store = store
        self.root = root
        self.clock = clock

    @property
    def agency_id(self) -> str:
        return self.root.agency_id

    @property
    def fingerprint(self) -> str:
        return self.root.fingerprint

    @classmethod
    async def create(
        cls,
        directory: Path,
        agency_id: str,
        *,
        passphrase: str,
        kdf: str = "moderate",
        clock: Clock = wall_clock,
    ) -> AgencyAdmin:
        AGENCY_ID.check(agency_id, "agency")
        store = await LocalStore.open(directory)
        if await store.get("agency-root") is not None:
            await store.close()
            raise ProfileError(f"{directory} already holds an agency root")
        seed = secrets.token_bytes(32)
        blob = keystore.seal(seed, passphrase, purpose="agency-root", rng=secrets.token_bytes, limits=kdf)
        await store.put("agency-root", blob)
        await store.put("agency-root-id", agency_id.encode())
        return cls(store, AgencyRootKey(agency_id, seed), clock=clock)

    @classmethod
    async def open(cls, directory: Path, *, passphrase: str | None, clock: Clock = wall_clock) -> AgencyAdmin:
        if not (directory / "state.db").exists():
            raise ProfileError(f"no caseline profile at {directory}; run `caseline agency init` first")
        store = await LocalStore.open(directory)
        try:
            blob, agency = await store.get("agency-root"), await store.get("agency-root-id")
            if blob is None or agency is None:
                raise ProfileError("this profile holds no agency root; run `caseline agency init`")
            if not passphrase:
                raise ProfileError("the agency root is locked: give its passphrase")
            seed = keystore.open_sealed(blob, passphrase, purpose="agency-root")
        except BaseException:
            await store.close()
            raise
        return cls(store, AgencyRootKey(agency.decode(), seed), clock=clock)

    async def close(self) -> None:
        await self.store.close()

    async def issue(self, request: bytes, *, role: str, scopes: Iterable[str] = (), days: int = 365) -> bytes:
        """Certify the keys in a device's enrolment request (its proof of possession is checked)."""
        req = open_enrolment_request(request)
        if req.agency_id != self.agency_id:
            raise NotAllowedError(f"the request is addressed to {req.agency_id!r}, not {self.agency_id!r}")
        if role not in DEVICE_ROLES:
            raise MalformedError(f"role must be one of {', '.join(sorted(DEVICE_ROLES))}")
        scopes = tuple(scopes)
        if role == "bot" and not scopes:
            raise MalformedError("a bot needs at least one scope (content types it may post, or 'read')")
        for scope in scopes:
            if scope != READ_SCOPE:
                CONTENT_TYPE.check(scope, "scope")
        if not 1 <= days <= MAX_CERT_DAYS:
            raise MalformedError(f"a certificate lives 1 to {MAX_CERT_DAYS} days")
        device_id = device_id_for(req.sign_key)
        if device_id in {d for d, *_ in await self.store.revoked()}:
            raise NotAllowedError("that device was revoked; it needs new keys")
        now, serial = self.clock(), await self.store.next_serial()
        cert = issue_device_cert(
            self.root,
            user_id=req.user_id,
            role=role,
            scopes=scopes,
            sign_key=req.sign_key,
            kem_key=req.kem_key,
            not_before=now,
            not_after=now + days * DAY_MS,
            serial=serial,
        )
        await self.store.add_issued(Issued(serial, device_id, req.user_id, role, cert, now, published=False))
        return cert

    async def issued(self) -> list[Issued]:
        return await self.store.issued()

    async def revoke(self, device_id: bytes, *, reason: str = "unspecified") -> bytes:
        """Add a device to the agency's list and sign the next complete list."""
        if reason not in REVOCATION_REASONS:
            raise MalformedError(f"reason must be one of {', '.join(sorted(REVOCATION_REASONS))}")
        known = {i.device_id: i for i in await self.store.issued()}
        if device_id not in known:
            raise MalformedError("this agency never issued a certificate for that device")
        await self.store.add_revoked(device_id, known[device_id].serial, self.clock(), reason)
        return await self._sign_list()

    async def _sign_list(self) -> bytes:
        number = int((await self.store.get("crl-number") or b"0").decode()) + 1
        entries = [
            Revocation(device_id=d, serial=s, revoked_at=t, reason=r)
            for d, s, t, r in await self.store.revoked()
        ]
        crl = issue_revocation_list(self.root, number=number, issued_at=self.clock(), entries=entries)
        await self.store.put("crl-number", str(number).encode())
        await self.store.put("crl", crl)
        return crl

    async def publish(self, broker: BrokerConnection) -> Published:
        """Register issued certificates with the broker and upload the newest revocation list."""
        count = 0
        revoked = {d for d, *_ in await self.store.revoked()}
        for item in await self.store.issued():
            if item.published or item.device_id in revoked:
                continue
            await broker.register(item.cert)
            await self.store.mark_published(item.serial)
            count += 1
        crl = await self.store.get("crl")
        if crl is None:
            crl = await self._sign_list()  # an empty list still tells partners "nothing revoked"
        try:
            await broker.put_revocations(self.agency_id, crl)
        except BrokerError as exc:
            raise BrokerError(exc.status, exc.problem, f"revocation list refused: {exc.detail}") from None
        number = int((await self.store.get("crl-number") or b"0").decode())
        return Published(certificates=count, revocation_number=number)
