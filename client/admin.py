"""Agency administration: the root of trust, device certificates, revocation.

An agency root signs two things: certificates binding an officer's (or bot's)
keys to a user id, and the agency's complete revocation list.  The root's seed
is sealed under the administrator's passphrase in its own profile and is never
needed by an officer's device.  Nothing the root signs is secret, so the root
can stay on a machine that never touches a network: ``export`` writes what it
signed to a folder, and ``publish_folder`` sends that folder to the broker from
any machine, without the root.  The broker and every client verify each object
against the pinned root, so the machine in between is trusted with nothing.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from caseline.client import keystore
from caseline.client.client import Clock, wall_clock
from caseline.client.store import Issued, LocalStore
from caseline.client.transport import BrokerConnection
from caseline.crypto.certs import (
    issue_device_cert,
    issue_revocation_list,
    issue_witness_list,
    open_enrolment_request,
)
from caseline.crypto.keys import AgencyRootKey, device_id_for
from caseline.schemas.content import CONTENT_TYPES
from caseline.schemas.errors import (
    BrokerRefusal,
    MalformedError,
    NotPermittedError,
    ProfileError,
    UnknownError,
    UsageError,
)
from caseline.schemas.wire import (
    AGENCY_ID,
    DEVICE_ROLES,
    READ_SCOPE,
    REVOCATION_REASONS,
    DeviceCert,
    Revocation,
    RevocationList,
    Witness,
    decode_signed,
)

DAY_MS: Final = 86_400_000
MAX_CERT_DAYS: Final = 3 * 365


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    certificates: int
    revocation_number: int | None


#: What a bot's certificate may name: the content types it may post, and ``read`` for history.
BOT_SCOPES: Final = (*sorted(CONTENT_TYPES), READ_SCOPE)


def check_scopes(role: str, scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes of a new certificate, or the caller's mistake named with the valid ones.

    A scope the devices do not know would sign a certificate that allows
    nothing (a bot scoped ``alerts`` posts no ``alert``); other roles carry no
    scopes at all (PROTOCOL.md §4.4), so one given for them is a mistake too.
    """
    scopes = tuple(scopes)
    valid = ", ".join(BOT_SCOPES)
    if role != "bot":
        if scopes:
            raise UsageError(f"only a bot certificate takes scopes; an {role} may post every content type")
        return scopes
    if not scopes:
        raise UsageError(f"a bot needs at least one scope: one or more of {valid}")
    unknown = [s for s in scopes if s not in BOT_SCOPES]
    if unknown:
        raise UsageError(f"{', '.join(map(repr, unknown))} is not a scope: the valid scopes are {valid}")
    if len(set(scopes)) != len(scopes):
        raise UsageError("a scope is given twice")
    return scopes


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedCert:
    """One certificate an agency issued, as ``agency list`` shows it (times in ms since the epoch)."""

    serial: int
    device_id: bytes
    user_id: str
    role: str
    scopes: tuple[str, ...]
    not_before: int
    not_after: int
    issued_at: int
    published: bool
    #: When its device was revoked (the agency revokes devices, so every cert of one), else None.
    revoked_at: int | None
    revocation_reason: str | None
    cert: bytes

    @classmethod
    def of(cls, item: Issued, revoked: tuple[int, str] | None) -> IssuedCert:
        cert = DeviceCert.decode(decode_signed(item.cert)[0])
        return cls(
            serial=item.serial,
            device_id=item.device_id,
            user_id=item.user_id,
            role=item.role,
            scopes=cert.scopes,
            not_before=cert.not_before,
            not_after=cert.not_after,
            issued_at=item.issued_at,
            published=item.published,
            revoked_at=None if revoked is None else revoked[0],
            revocation_reason=None if revoked is None else revoked[1],
            cert=item.cert,
        )


CERT_SUFFIX: Final = ".cert"
CRL_SUFFIX: Final = ".crl"


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
        try:
            req = open_enrolment_request(request)
        except MalformedError as exc:
            raise UsageError(f"not an enrolment request: {exc}") from None
        if req.agency_id != self.agency_id:
            raise UsageError(
                f"the request is addressed to {req.agency_id!r}, not {self.agency_id!r}:"
                f" {req.agency_id}'s administrator must issue it"
            )
        if role not in DEVICE_ROLES:
            raise UsageError(f"role must be one of {', '.join(sorted(DEVICE_ROLES))}")
        scopes = check_scopes(role, scopes)
        if not 1 <= days <= MAX_CERT_DAYS:
            raise UsageError(f"a certificate lives 1 to {MAX_CERT_DAYS} days")
        device_id = device_id_for(req.sign_key)
        if device_id in {d for d, *_ in await self.store.revoked()}:
            raise NotPermittedError("that device was revoked; it needs new keys")
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

    async def issued(self) -> list[IssuedCert]:
        """Every certificate this root signed, with what it allows and whether it was revoked."""
        revoked = {d: (t, r) for d, _, t, r in await self.store.revoked()}
        return [IssuedCert.of(item, revoked.get(item.device_id)) for item in await self.store.issued()]

    async def revoke(
        self, device_id: bytes, *, reason: str = "unspecified", since: int | None = None
    ) -> bytes:
        """Add a device to the agency's list and sign the next complete list.

        ``since`` backdates the revocation to the last moment the key was known
        to be safe: clients then refuse what the key signed after it, even
        updates a broker accepted before the list was published.
        """
        if reason not in REVOCATION_REASONS:
            raise UsageError(f"reason must be one of {', '.join(sorted(REVOCATION_REASONS))}")
        known = {i.device_id: i for i in await self.store.issued()}
        if device_id not in known:
            raise UnknownError(
                "this agency never issued a certificate for that device (give its full 32-digit id)"
            )
        at = self.clock() if since is None else since
        if at > self.clock():
            raise UsageError("a revocation cannot start in the future")
        await self.store.add_revoked(device_id, known[device_id].serial, at, reason)
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

    async def set_witnesses(self, witnesses: Sequence[Witness]) -> bytes:
        """Sign the agency's next complete witness list (it replaces the last one)."""
        if len({w.name for w in witnesses}) != len(witnesses):
            raise UsageError("a witness list names each witness once")
        number = int((await self.store.get("witness-list-number") or b"0").decode()) + 1
        signed = issue_witness_list(self.root, number=number, issued_at=self.clock(), witnesses=witnesses)
        await self.store.put("witness-list-number", str(number).encode())
        await self.store.put("witness-list", signed)
        return signed

    async def witness_list(self) -> bytes | None:
        return await self.store.get("witness-list")

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
        await _put_revocations(broker, self.agency_id, await self._current_list())
        witnesses = await self.store.get("witness-list")
        if witnesses is not None:
            await broker.put_witnesses(self.agency_id, witnesses)
        number = int((await self.store.get("crl-number") or b"0").decode())
        return Published(certificates=count, revocation_number=number)

    async def export(self, folder: Path) -> Published:
        """Write every live certificate and the current revocation list to a new, empty folder.

        Every unrevoked, unexpired certificate goes out, not only new ones: the
        offline root cannot know what reached the broker, and registering a
        certificate twice is harmless.
        """
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(folder.iterdir()):
            raise UsageError(f"{folder} is not empty; export into a new or empty folder")
        revoked, now, count = {d for d, *_ in await self.store.revoked()}, self.clock(), 0
        for item in await self.store.issued():
            if item.device_id in revoked or DeviceCert.decode(decode_signed(item.cert)[0]).not_after <= now:
                continue
            (folder / f"{item.serial:06d}-{item.user_id}{CERT_SUFFIX}").write_bytes(item.cert)
            count += 1
        crl = await self._current_list()
        number = int((await self.store.get("crl-number") or b"0").decode())
        (folder / f"revocations-{number:06d}{CRL_SUFFIX}").write_bytes(crl)
        return Published(certificates=count, revocation_number=number)

    async def _current_list(self) -> bytes:
        crl = await self.store.get("crl")
        # An empty list still tells partners "nothing revoked", and gives a number to hold.
        return crl if crl is not None else await self._sign_list()


async def publish_folder(broker: BrokerConnection, folder: Path) -> Published:
    """Publish what ``AgencyAdmin.export`` wrote, from a machine that holds no root key.

    Each file is decoded first, so a wrong or damaged file is named before
    anything is sent; its signature is for the broker (and every client) to check.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: give the one `caseline agency export` wrote")
    certs = sorted(folder.glob(f"*{CERT_SUFFIX}"))
    lists = sorted(folder.glob(f"*{CRL_SUFFIX}"))
    if len(lists) != 1:
        raise UsageError(f"{folder} must hold exactly one revocation list, found {len(lists)}")
    for path in certs:
        try:
            DeviceCert.decode(decode_signed(path.read_bytes())[0])
        except MalformedError as exc:
            raise UsageError(f"{path.name}: not a device certificate ({exc})") from None
    try:
        crl = RevocationList.decode(decode_signed(lists[0].read_bytes())[0])
    except MalformedError as exc:
        raise UsageError(f"{lists[0].name}: not a revocation list ({exc})") from None
    for path in certs:
        try:
            await broker.register(path.read_bytes())
        except BrokerRefusal as exc:
            raise type(exc)(
                f"{path.name} refused: {exc.detail}", status=exc.status, problem=exc.problem
            ) from None
    await _put_revocations(broker, crl.agency_id, lists[0].read_bytes())
    return Published(certificates=len(certs), revocation_number=crl.number)


async def _put_revocations(broker: BrokerConnection, agency_id: str, crl: bytes) -> None:
    try:
        await broker.put_revocations(agency_id, crl)
    except BrokerRefusal as exc:
        raise type(exc)(
            f"revocation list refused: {exc.detail}", status=exc.status, problem=exc.problem
        ) from None
