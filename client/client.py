"""``Client``: the async library officers' tools and agency scripts are built on.

A script drives a case in a dozen lines::

    async with await Client.open(profile_dir("kra-bot")) as client:
        case_id = await client.create_case(title="Op. Kilimanjaro", members=[("tz-tra", "juma")])
        await client.post_note(case_id, "container MSKU 123 released to inspection")
        async for event in client.follow([case_id]):
            print(event.author.name, event.content)

Every byte from the broker passes the core's checks before it is stored or
shown; an attack surfaces as the protocol error that names it (``ForkError``,
``GapError``, ``UntrustedError``…), never as content.  Posting is exactly-once:
an update's final bytes are saved in the outbox before the first send, and
every retry — in this run or after a crash — sends those same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

import aiohttp
from caseline.client import keystore
from caseline.client.attachments import Attachments
from caseline.client.content import ContentHelpers
from caseline.client.core import CaseEvent, CertChange, Ledger, Member, head_code, members_of
from caseline.client.core_marks import Added, Withheld
from caseline.client.evidence_dir import refuse_existing_export, verify_export, write_export
from caseline.client.evidence_select import EvidencePlan, plan_evidence
from caseline.client.follow import Following
from caseline.client.outbox import Outbox
from caseline.client.profile import PostingLock
from caseline.client.store import LocalStore, StoredEntry
from caseline.client.terms import MembershipTerms, approvals_missing, collect_approvals
from caseline.client.transport import BrokerConnection
from caseline.client.uploads import ProgressSink
from caseline.client.viewstore import ViewStore
from caseline.client.watch import LogWatching
from caseline.client.workflow_index import RequestIndex
from caseline.crypto import primitives as P
from caseline.crypto import tlog
from caseline.crypto.caselog import CaseView
from caseline.crypto.certs import TrustStore, VerifiedCert, make_enrolment_request
from caseline.crypto.commits import EACH_AGENCY_OWNER
from caseline.crypto.evidence import EvidenceReport, export_evidence, verify_evidence
from caseline.crypto.evidence_files import ExhibitStatus, choose
from caseline.crypto.keys import DeviceKeys, fingerprint, normalize_fingerprint
from caseline.crypto.snapshot import trust_binding
from caseline.crypto.updates import HISTORY_SHARE
from caseline.schemas.api import Directory, EntryPage, Session, is_loopback_host
from caseline.schemas.codec import own_input
from caseline.schemas.errors import (
    BrokerForbidden,
    BrokerRefusal,
    CaselineError,
    ForkError,
    GapError,
    MalformedError,
    NotPermittedError,
    ProfileError,
    SplitViewError,
    UnknownError,
    UntrustedError,
    UsageError,
    VerificationError,
)
from caseline.schemas.wire import (
    AGENCY_ID,
    CASE_ROLES,
    DEFAULT_ALARM_AFTER,
    USER_ID,
    CaseInfo,
    DeviceCert,
    Policy,
    Witnessing,
    decode_signed,
)

Clock = Callable[[], int]
log = logging.getLogger("caseline.client")
#: How long a fetched revocation list is trusted to be current before asking again.
REVOCATION_REFRESH_MS: Final = 60_000
#: Sealed meta entry: the broker's revocations digest when this profile last fetched its pins' lists.
REVOCATIONS_SEEN: Final = "revocations-seen"
#: A kept session is not reused this close to its expiry (the broker's clock may run ahead).
SESSION_MARGIN_MS: Final = 60_000
#: A long-running process (``follow``) saves a case's view after this many new entries.
SNAPSHOT_EVERY: Final = 1024


def wall_clock() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    agency_id: str
    user_id: str
    device_id: bytes
    role: str
    scopes: tuple[str, ...]
    not_after: int
    server_url: str
    server_key: bytes | None
    #: When this device's agency revoked it, if a list this profile holds says so.
    revoked_at: int | None = None

    @property
    def enrolled(self) -> bool:
        return self.role != ""


@dataclasses.dataclass(frozen=True, slots=True)
class CaseSummary:
    case_id: bytes
    title: str
    reference: str
    role: str
    epoch: int
    count: int
    unread: int
    handling: str
    tlp: str
    #: Why this case could not be brought up to date (the others were): empty when it was.
    error: str = ""
    #: The current epoch was opened by a revoked device: nothing is posted until an owner re-keys.
    tainted: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Repinned:
    """A case whose roster ``Client.repin`` moved onto re-issued certificates."""

    case_id: bytes
    #: Each device whose pinned certificate changed: the old certificate and the new.
    changes: tuple[CertChange, ...]

    @property
    def devices(self) -> tuple[bytes, ...]:
        return tuple(c.device_id for c in self.changes)


class RepinIncompleteError(CaselineError):
    """``Client.repin`` over every case: some cases were re-pinned, others failed.

    Each case is its own commit, so one case's failure (a member re-issued as
    a bot who owns it, a broker refusal) does not stop the others; the cases
    done are committed, and this names each that failed.  Its exit code is the
    first failure's.
    """

    code = "repin-incomplete"
    title = "Re-pin incomplete"

    def __init__(self, done: list[Repinned], failed: list[tuple[bytes, CaselineError]]) -> None:
        cases = "; ".join(f"case {cid.hex()[:8]}: {exc}" for cid, exc in failed)
        super().__init__(f"re-pinned {len(done)} case(s), but {len(failed)} failed: {cases}")
        self.done = done
        self.failed = failed
        self.hint = failed[0][1].hint

    @property
    def exit_code(self) -> int:
        return self.failed[0][1].exit_code


@dataclasses.dataclass(frozen=True, slots=True)
class CaseReport:
    """A case verified end to end from the broker's complete log."""

    case_id: bytes
    count: int
    head: bytes
    code: str
    epoch: int
    members: tuple[Member, ...]
    updates: int
    readable: int
    #: Updates withheld: their sender was revoked when it sent them, or voided in their epoch.
    voided: int


def check_new_device(*, agency_id: str, user_id: str, server_url: str) -> str:
    """Check what ``init`` was given before anything is written or asked; the broker URL as kept.

    A refused value leaves no profile behind and is the caller's mistake (exit 2).
    """
    with own_input():
        AGENCY_ID.check(agency_id, "agency")
        USER_ID.check(user_id, "user")
    return broker_url(server_url)


def broker_url(text: str) -> str:
    """A broker's base URL as typed: ``https://host[:port]``, or ``http://`` on loopback only.

    Session tokens travel in the clear over plain HTTP; the broker refuses it
    beyond loopback, and so does the client.
    """
    url = urllib.parse.urlsplit(text.strip().rstrip("/"))
    try:
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        url = url._replace(netloc="")
    if url.scheme not in ("https", "http") or not url.hostname or url.path or url.query or url.fragment:
        raise UsageError(f"{text!r} is not a broker URL: give it as https://HOST[:PORT]")
    if url.scheme == "http" and not is_loopback_host(url.hostname):
        raise UsageError(f"{text!r}: a broker beyond this machine is reached over https:// only")
    return url.geturl()


def parse_member(text: str, default_role: str = "member") -> tuple[str, str, str]:
    """``agency:user[:role]`` as typed on the command line."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"{text!r}: expected AGENCY:USER or AGENCY:USER:ROLE, e.g. tz-tra:juma.mussa")
    try:
        agency, user = AGENCY_ID.check(parts[0], "agency"), USER_ID.check(parts[1], "user")
    except MalformedError as exc:
        raise UsageError(f"{text!r}: {exc}") from None
    role = parts[2] if len(parts) == 3 else default_role
    if role not in CASE_ROLES:
        raise UsageError(f"role must be one of {', '.join(sorted(CASE_ROLES))}")
    return agency, user, role


class Client(Outbox, Attachments, ContentHelpers, Following, LogWatching, MembershipTerms, RequestIndex):
    """One device's session with its broker, over its local profile."""

    def __init__(
        self,
        store: LocalStore,
        directory: Path,
        *,
        secrets_: keystore.DeviceSecrets,
        clock: Clock = wall_clock,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self._secrets = secrets_
        self.keys: DeviceKeys = secrets_.keys()
        self.clock = clock
        self._timeout = timeout
        self._session = session
        self.trust = TrustStore()
        self.cert: bytes = b""
        self.server_url = ""
        self.server_key: bytes | None = None
        self._broker: BrokerConnection | None = None
        self.ledger: Ledger | None = None
        self._views = ViewStore(
            store, local_key=secrets_.local_key, device_id=self.keys.device_id, rng=secrets.token_bytes
        )
        self._crl_checked_at: int | None = None
        self.retries = 0
        self._post_lock = asyncio.Lock()
        self._profile_lock = PostingLock(directory)

    # ---------------------------------------------------------------- opening a profile
    @classmethod
    async def create(
        cls,
        directory: Path,
        *,
        agency_id: str,
        user_id: str,
        server_url: str,
        passphrase: str | None = None,
        key_file: Path | None = None,
        kdf: str = "moderate",
        clock: Clock = wall_clock,
        session: aiohttp.ClientSession | None = None,
    ) -> Client:
        """Make a new device: fresh keys, sealed at rest, and an enrolment request."""
        server_url = check_new_device(agency_id=agency_id, user_id=user_id, server_url=server_url)
        if key_file is None and not passphrase:
            raise ProfileError("a new device needs a passphrase, or a key file for a bot")
        store = await LocalStore.open(directory)
        try:
            if await store.get("identity") is not None:
                raise ProfileError(f"{directory} already holds a device; use another --profile")
            device = keystore.DeviceSecrets.generate(secrets.token_bytes)
            if key_file is not None:
                keystore.write_key_file(key_file, device)
                await store.put("key-file", str(key_file.resolve()).encode())
                await store.put("identity", b"key-file")
            elif passphrase:
                blob = keystore.seal(
                    device.encode(), passphrase, purpose="device", rng=secrets.token_bytes, limits=kdf
                )
                await store.put("identity", blob)
            else:
                raise ProfileError("a new device needs a passphrase, or a key file for a bot")
            await store.put("agency", agency_id.encode())
            await store.put("user", user_id.encode())
            await store.put("server-url", server_url.encode())
            request = make_enrolment_request(device.keys(), agency_id=agency_id, user_id=user_id, now=clock())
            await store.put("request", request)
        except BaseException:
            await store.close()
            raise
        client = cls(store, directory, secrets_=device, clock=clock, session=session)
        try:
            await client._load()
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        passphrase: str | None = None,
        clock: Clock = wall_clock,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> Client:
        if not (directory / "state.db").exists():
            raise ProfileError(f"no caseline profile at {directory}; run `caseline init` first")
        store = await LocalStore.open(directory)
        try:
            device = await cls._unlock(store, passphrase)
        except BaseException:
            await store.close()
            raise
        client = cls(store, directory, secrets_=device, clock=clock, timeout=timeout, session=session)
        try:
            await client._load()
        except BaseException:  # Ctrl-C included: a store left open outlives the event loop
            await client.close()
            raise
        return client

    @staticmethod
    async def _unlock(store: LocalStore, passphrase: str | None) -> keystore.DeviceSecrets:
        identity = await store.get("identity")
        if identity is None:
            raise ProfileError("this profile holds no device; run `caseline init`")
        if identity == b"key-file":
            path = await store.get("key-file")
            return keystore.read_key_file(Path((path or b"").decode()))
        if not passphrase:
            raise ProfileError("this device's keys are locked: give its passphrase")
        return keystore.DeviceSecrets.decode(keystore.open_sealed(identity, passphrase, purpose="device"))

    async def _load(self) -> None:
        for agency_id, root in (await self.store.pins()).items():
            self.trust.pin(agency_id, root)
        for crl in await self.store.crls():
            with contextlib.suppress(CaselineError):  # a list whose root was unpinned since
                self.trust.add_revocation_list(crl)
        await self._load_witness_lists()
        self.cert = await self.store.get("cert") or b""
        self.server_url = (await self.store.get("server-url") or b"").decode()
        self.server_key = await self.store.get("server-key")
        if self._broker is not None:
            await self._broker.close()
        self._broker = BrokerConnection(
            self.server_url,
            keys=self.keys if self.cert else None,
            server_key=self.server_key,
            timeout=self._timeout,
            session=self._session,
        )
        self.ledger = Ledger(
            keys=self.keys, cert=self.cert, trust=self.trust, server_key=self.server_key or b""
        )
        await self._resume_session()

    async def _resume_session(self) -> None:
        """Reuse the session an earlier command opened, if it is for this broker and still fresh.

        The token is kept sealed under the local key with its broker and expiry,
        and never logged or shown.  The broker stays the judge: a token it no
        longer honours (logout, revocation, restart) gets a 401, and the
        transport logs in once more.
        """
        if self._broker is None:
            return
        self._broker.on_session = self._keep_session
        kept = await self._views.get_secret("session")
        if kept is None or len(kept) != 3:
            return
        url, token, expires_at = kept
        fresh = isinstance(expires_at, int) and expires_at - SESSION_MARGIN_MS > self.clock()
        if url == self.server_url and isinstance(token, str) and fresh:
            self._broker.resume(token)

    async def _keep_session(self, session: Session | None) -> None:
        if session is None:
            await self._views.put_secret("session", [])
        else:
            await self._views.put_secret("session", [self.server_url, session.token, session.expires_at])

    async def save_views(self) -> None:
        """Seal every loaded view that moved forward, so the next run starts from here."""
        if self.ledger is None:
            return
        for case_id, view in list(self.ledger.views.items()):
            await self._views.save(case_id, view, self.trust, marks=self.ledger.marks.get(case_id))

    async def close(self) -> None:
        try:
            with contextlib.suppress(CaselineError):
                await self.save_views()
        finally:
            if self._broker is not None:
                await self._broker.close()
            await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def broker(self) -> BrokerConnection:
        if self._broker is None or not self.server_url:
            raise ProfileError("this profile names no broker; give --server")
        return self._broker

    def _ledger(self) -> Ledger:
        if self.ledger is None or not self.cert or self.server_key is None:
            raise ProfileError("this device is not enrolled yet: run `caseline login --cert FILE`")
        return self.ledger

    # ---------------------------------------------------------------- identity
    async def enrolment_request(self) -> bytes:
        request = await self.store.get("request")
        if request is None:
            raise ProfileError("this profile has no enrolment request")
        return request

    async def identity(self) -> Identity:
        agency = (await self.store.get("agency") or b"").decode()
        user = (await self.store.get("user") or b"").decode()
        role, not_after = "", 0
        scopes: tuple[str, ...] = ()
        if self.cert:
            cert = DeviceCert.decode(decode_signed(self.cert)[0])
            role, scopes, not_after = cert.role, cert.scopes, cert.not_after
        return Identity(
            agency_id=agency,
            user_id=user,
            device_id=self.keys.device_id,
            role=role,
            scopes=scopes,
            not_after=not_after,
            server_url=self.server_url,
            server_key=self.server_key,
            revoked_at=self.own_revocation(),
        )

    async def login(
        self,
        *,
        cert: bytes | None = None,
        server_url: str | None = None,
        server_key: bytes | None = None,
        server_key_code: str | None = None,
    ) -> Identity:
        """Install this device's certificate, pin the broker's key, register and log in.

        The broker's key signs every receipt, so it is pinned like an agency
        root: on first use it is shown for comparison with the operator (or
        given as ``server_key``, or as ``server_key_code``: the 30-digit code
        ``caseline-server key`` prints); later a different key is refused.
        """
        expected_code = None
        if server_key_code is not None:
            try:
                expected_code = normalize_fingerprint(server_key_code).encode()
            except ValueError:
                raise UsageError(
                    "a broker key code is 30 digits, as `caseline-server key` prints it"
                ) from None
        # Kept only if the login succeeds: a failed one (a mistyped URL, another broker's key)
        # must not leave the profile pointing at that broker.
        saved = {key: await self.store.get(key) for key in ("server-url", "cert", "server-key")}
        try:
            return await self._login(
                cert=cert, server_url=server_url, server_key=server_key, expected_code=expected_code
            )
        except BaseException:
            await self.store.restore(saved)
            await self._load()
            raise

    async def _login(
        self,
        *,
        cert: bytes | None,
        server_url: str | None,
        server_key: bytes | None,
        expected_code: bytes | None,
    ) -> Identity:
        if server_url:
            self.server_url = broker_url(server_url)
            await self.store.put("server-url", self.server_url.encode())
            await self._load()
        agency = (await self.store.get("agency") or b"").decode()
        if cert is not None:
            checked = self.trust.verify_cert(cert, at=self.clock())  # our own agency must be pinned
            if checked.device_id != self.keys.device_id or checked.cert.kem_key != self.keys.kem_public:
                raise UsageError(
                    "this certificate is for another device's keys: give the one issued for this device"
                )
            if checked.cert.agency_id != agency:
                raise UsageError("this certificate was issued by another agency than this device's")
            await self.store.put("cert", cert)
        if not (cert or self.cert):
            raise ProfileError("this device has no certificate yet: give --cert FILE from your administrator")
        info = await self.broker.server_info()
        if self.server_key is not None and not P.constant_time_equal(self.server_key, info.server_key):
            raise UntrustedError("the broker's key has changed since this device first met it")
        if server_key is not None and not P.constant_time_equal(server_key, info.server_key):
            raise UntrustedError("the broker's key is not the one you were given")
        if expected_code is not None and not P.constant_time_equal(
            fingerprint("broker", info.server_key).encode(), expected_code
        ):
            raise UntrustedError(
                "the broker's key code is not the one you were given: ask the broker's operator"
            )
        await self.store.put("server-key", info.server_key)
        await self._load()
        await self.broker.register(self.cert)
        await self.broker.login()
        return await self.identity()

    # ---------------------------------------------------------------- trust
    async def trust_add(self, agency_id: str, fingerprint_text: str, *, root_key: bytes | None = None) -> str:
        """Pin a partner's root after checking the fingerprint read to you out of band.

        The key may come from anywhere — the broker's registry by default — since
        only a key whose fingerprint matches is accepted.
        """
        AGENCY_ID.check(agency_id, "agency")
        expected = normalize_fingerprint(fingerprint_text)
        if root_key is None:
            info = await self.broker.agency(agency_id)
            if info.agency_id != agency_id:
                raise UntrustedError("the broker answered for another agency")
            root_key = info.root_key
        actual = fingerprint(agency_id, root_key)
        if not P.constant_time_equal(actual.encode(), expected.encode()):
            raise UntrustedError(
                f"the root key offered for {agency_id!r} does not match that fingerprint — do not pin it"
            )
        async with self._changing_trust():
            self.trust.pin(agency_id, root_key)
        await self.store.pin(agency_id, root_key, self.clock())
        return actual

    async def trust_remove(self, agency_id: str) -> bool:
        removed = await self.store.unpin(agency_id)
        async with self._changing_trust():
            self.trust.unpin(agency_id)
        return removed

    def trusted(self) -> dict[str, str]:
        return {a: fingerprint(a, k) for a, k in sorted(self.trust.roots.items())}

    async def refresh_revocations(self, *, force: bool = False) -> None:
        """Fetch each pinned agency's newest revocation list; refuse any rollback.

        Unforced, the lists are fetched only when they may have changed: when
        the broker's ``Caseline-Revocations`` digest (sent on every answer,
        PROTOCOL.md §9) differs from the one stored when this profile last
        fetched the lists of the agencies it pins now.  A fresh process thus
        still sees a list published a moment ago, at no request while none
        was.  From a broker that sends no digest, they are fetched unless this
        process did so in the last ``REVOCATION_REFRESH_MS``.  The digest is
        only a hint: every list adopted is verified and rollback-checked.
        """
        now = self.clock()
        hint = None if self._broker is None else self._broker.revocations_hint
        pins: list[object] = [*sorted(self.trust.roots)]
        if not force:
            if hint is not None:
                if await self._views.get_secret(REVOCATIONS_SEEN) == [hint, *pins]:
                    return
            elif self._crl_checked_at is not None and now - self._crl_checked_at < REVOCATION_REFRESH_MS:
                return
        # The digest to keep is one from before the lists were read: if another list
        # lands meanwhile, the next command sees a digest that differs and asks again.
        seen = hint
        for agency_id in self.trust.roots:
            await self._fetch_revocations(agency_id)
            seen = seen or self.broker.revocations_hint
        self._crl_checked_at = now
        if seen is not None:
            await self._views.put_secret(REVOCATIONS_SEEN, [seen, *pins])

    async def _fetch_revocations(self, agency_id: str) -> None:
        """Ask for one agency's list by its ETag, and adopt it if it is new (a 304 costs no body)."""
        crl = await self.broker.revocations(agency_id, held=self.trust.revocation_list(agency_id))
        if crl is None:
            return  # none published, or the one held is current (304)
        async with self._changing_trust():
            parsed = self.trust.add_revocation_list(crl)  # verified; an older list raises RevokedError
        await self.store.put_crl(agency_id, parsed.number, crl)

    def own_revocation(self) -> int | None:
        """When this device's agency revoked it, as far as the lists this profile holds say."""
        if not self.cert:
            return None
        return self.trust.revoked_at(DeviceCert.decode(decode_signed(self.cert)[0]))

    async def _revoked_since_post(self, case_id: bytes, seq: int) -> int | None:
        """After a post: the revocation that voids it, if this device's own agency published one.

        The own agency's list is asked for by its ETag (a 304 when unchanged:
        one small request), since a list published while the post was on its
        way is in no digest this device has seen.  Whether the update is void
        is the view's judgement, made as every member makes it (§6.4: revoked
        at or before the later of the record's and the receipt's times).  A
        revocation its agency has not yet published anywhere cannot be known
        here: members learn it with the list, and the update turns voided then.
        """
        agency = (await self.store.get("agency") or b"").decode()
        if agency in self.trust.roots:
            try:
                await self._fetch_revocations(agency)
            except CaselineError as exc:
                # The post itself is stored and out of the outbox: reporting it as failed would
                # have the officer post it again.  Whatever the list's answer was (a refusal, junk,
                # a bad signature, a rollback), the check is said to have failed, not the post.
                log.warning("posted; could not check this device's revocation afterwards: %s", exc)
                return None
        revoked_at = self.own_revocation()
        if revoked_at is None:
            return None
        await self.view(case_id)  # re-verified under the new list if it changed
        events = await self._views.events(case_id, seq)
        return revoked_at if any(e.seq == seq and e.kind == "voided" for e in events) else None

    @contextlib.asynccontextmanager
    async def _changing_trust(self) -> AsyncIterator[None]:
        """Around any change of pins or revocation lists: forget the views it concerns.

        A view verified under the old lists could hold an update that the new
        ones void; it is dropped with its snapshot, and the next ``view()``
        re-verifies the case from genesis, as a fresh run would, rewriting its
        events.  So a loaded view is always one verified under today's trust,
        which is what its snapshot's binding records.
        """
        views = {} if self.ledger is None else dict(self.ledger.views)
        before = {case_id: trust_binding(view, self.trust) for case_id, view in views.items()}
        try:
            yield
        finally:  # also when the change stopped part-way: what was adopted stands
            for case_id, view in views.items():
                if trust_binding(view, self.trust) != before[case_id] and self.ledger is not None:
                    self.ledger.forget(case_id)
                    await self._views.drop(case_id)

    async def _adopt_lists(self, directories: Sequence[Directory]) -> None:
        """Take in the revocation lists directory answers carry, and keep each one adopted.

        Verified under the pinned roots; an older list than the one held is
        refused (``RevokedError``).  Each list is stored as soon as it is taken,
        as ``_fetch_revocations`` does, so a later directory's junk list leaves
        the earlier ones both adopted and kept, and the views they concern
        dropped (``_changing_trust``).
        """
        async with self._changing_trust():
            for directory in directories:
                # An unpinned agency's list cannot be verified: the member check that follows
                # says to pin it (``Ledger.eligible_devices``), a caller's mistake, not an attack.
                if directory.revocations and directory.agency_id in self.trust.roots:
                    parsed = self.trust.add_revocation_list(directory.revocations)
                    await self.store.put_crl(parsed.agency_id, parsed.number, directory.revocations)

    # ---------------------------------------------------------------- case views
    async def view(self, case_id: bytes) -> CaseView:
        """This device's verified view of a case: its sealed snapshot, then the entries after it.

        Without a usable snapshot (none yet, or one ``ViewStore.load`` discards)
        every stored entry is verified again from genesis, as before.
        """
        ledger = self._ledger()
        if case_id not in ledger.views:
            try:
                await self._load_view(case_id)
            except CaselineError:
                # A replay that stopped at a bad entry leaves the entries before it in the
                # ledger; served next time, they would pass for the verified case.
                ledger.forget(case_id)
                raise
        return ledger.view(case_id)

    async def _load_view(self, case_id: bytes) -> None:
        ledger = self._ledger()
        restored = await self._views.load(case_id, trust=self.trust, me=self.keys)
        after = 0
        if restored is not None:
            ledger.views[case_id] = restored
            after = restored.count
            marks = await self._views.load_marks(case_id, after)
            if marks is not None:
                ledger.marks[case_id] = marks
            else:  # none kept at this count: one pass over the stored events rebuilds it, once
                ledger.restore_marks(case_id, await self._views.events(case_id, before=after))
                await self._views.keep_marks(case_id, after, ledger.marks[case_id])
        try:
            await self._replay(case_id, after)
        except CaselineError:
            if restored is None:
                raise
            log.warning("case %s: entries after the snapshot fail; re-verifying from genesis", case_id.hex())
            ledger.forget(case_id)
            await self._views.drop(case_id)
            await self._replay(case_id, 0)

    async def _replay(self, case_id: bytes, after: int) -> None:
        """Verify the stored entries from ``after`` on and keep the events they produce."""
        ledger = self._ledger()
        events: list[CaseEvent] = []
        now = self.clock()
        for e in await self.store.entries(case_id, after):
            events += ledger.apply(case_id, seq=e.seq, kind=e.kind, body=e.body, receipt=e.receipt, now=now)
        await self._views.put_events(case_id, events)
        if case_id in ledger.views:
            await self._index(case_id, ledger.views[case_id], events, fresh=after == 0)
        _raise_alarms(events)

    async def _accept(self, case_id: bytes, entries: Sequence[StoredEntry]) -> list[CaseEvent]:
        """Verify entries in log order, store what passed, and describe it."""
        view = await self.view(case_id)
        taken = self._ledger().take(case_id, entries, now=self.clock())
        others = await self.store.add_entries(case_id, taken.accepted)  # what passed, even before an error
        await self._kept(case_id, view, taken.events)
        if taken.error is not None:
            raise taken.error
        if others:  # another process of this profile stored a different entry at that seq
            raise ForkError(f"the broker showed this profile two different entries at {others[0].seq}")
        return taken.events

    async def _kept(self, case_id: bytes, view: CaseView, events: list[CaseEvent]) -> None:
        """Entries were stored: keep their events, and now and then the view (long-running follow)."""
        await self._views.put_events(case_id, events)
        await self._index(case_id, view, events)
        _raise_alarms(events)
        if view.count - self._views.saved.get(case_id, 0) >= SNAPSHOT_EVERY:
            await self._views.save(case_id, view, self.trust, marks=self._ledger().marks.get(case_id))

    async def sync(self, case_id: bytes) -> list[CaseEvent]:
        """Fetch, verify and store everything new in a case; return what it meant.

        Revocation lists are checked after the first page is fetched and before
        any of it is verified: the page's ``Caseline-Revocations`` digest tells
        whether they changed, so unchanged lists cost no request.
        """
        asked = (await self.view(case_id)).count
        try:
            first: EntryPage | None = await self.broker.entries(case_id, after=asked)
        except BrokerForbidden:
            if self._ledger().reissued_would_allow(case_id, None):
                raise self._ledger().repin_needed(case_id, None) from None
            raise
        await self.refresh_revocations()
        # A new list may have sent the view back to genesis: then ask again from there.
        after: int | None = (await self.view(case_id)).count
        events: list[CaseEvent] = []
        try:
            while after is not None:
                page = (
                    first
                    if first is not None and after == asked
                    else await self.broker.entries(case_id, after=after)
                )
                first = None
                stored = [StoredEntry(e.seq, e.kind, e.body, e.receipt) for e in page.entries]
                events += await self._accept(case_id, stored)
                after = self._ledger().next_page(case_id, served=page.count, got=len(stored))
        except ForkError as exc:
            if not isinstance(exc, SplitViewError):
                # The case's own chain saw a rollback or a fork first.  The broker log's check
                # names it as the split-view alarm and keeps the signed checkpoints as proof
                # (§7.8); if the log shows nothing, the case's own error stands.
                with contextlib.suppress(BrokerRefusal):
                    await self.check_log()
            raise
        await self.check_log(case_id)
        return events

    async def history(self, case_id: bytes) -> list[CaseEvent]:
        """Every verified event of a case this device holds, in log order."""
        await self.view(case_id)
        return sorted(await self._views.events(case_id), key=lambda e: (e.seq, e.shared))

    async def cases(self) -> list[CaseSummary]:
        """The cases this device is in, synced, with what is unread."""
        out = []
        me = self.keys.device_id
        await self.check_log()
        for summary in (await self.broker.cases()).cases:
            error = ""
            try:
                view = await self.view(summary.case_id)
                if view.count < summary.count:
                    await self.sync(summary.case_id)
            except VerificationError as exc:
                if isinstance(exc, SplitViewError):
                    raise  # the broker's whole log: no case of it is to be believed
                # One case whose entries fail must not hide the others: it is listed with its
                # error, as far as this device verified it.
                log.error("case %s could not be brought up to date: %s", summary.case_id.hex(), exc)
                error = str(exc)
                held = self._ledger().views.get(summary.case_id)  # never an empty one left behind
                if held is None or held.state is None:
                    out.append(CaseSummary(summary.case_id, "", "", "?", 0, 0, 0, "", "", error=error))
                    continue
                view = held
            if view.state is None:
                continue
            read_upto = await self.store.read_upto(summary.case_id)
            unread = sum(
                1
                for e in await self._views.events(summary.case_id, read_upto)
                if e.kind == "update"
                and e.seq >= read_upto
                and (e.author is None or e.author.device_id != me)
            )
            info = view.case_info()
            out.append(
                CaseSummary(
                    case_id=summary.case_id,
                    title=info.title if info else "",
                    reference=info.reference if info else "",
                    role=(
                        "voided"
                        if me in view.state.voided
                        else view.state.members[me].role
                        if me in view.state.members
                        else "removed"
                    ),
                    epoch=view.state.epoch,
                    count=view.count,
                    unread=unread,
                    handling=view.state.policy.handling,
                    tlp=view.state.policy.tlp,
                    error=error,
                    tainted=view.state.tainted,
                )
            )
        return out

    async def mark_read(self, case_id: bytes) -> None:
        view = await self.view(case_id)
        await self.store.mark_read(case_id, view.count)

    async def resolve_case(self, text: str) -> bytes:
        """A case id from its hex, or from a unique prefix of one this device holds."""
        text = text.strip().lower()
        if len(text) == 32:
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
        if len(text) < 6 or any(ch not in "0123456789abcdef" for ch in text):
            raise UsageError(
                f"{text!r} is not a case id: give its 32 hex digits or a unique prefix of at least 6"
                " (`caseline case list` shows them)"
            )
        matches = [c for c in await self.store.case_ids() if c.hex().startswith(text)]
        if len(matches) != 1:
            raise UnknownError(
                f"{'no' if not matches else 'more than one'} case of this device starts with {text}"
            )
        return matches[0]

    # ---------------------------------------------------------------- membership
    async def _devices(self, agency_id: str, user_id: str) -> list[VerifiedCert]:
        directory = await self.broker.directory(agency_id, user_id)
        await self._adopt_lists([directory])  # it may carry a newer revocation list
        return self._ledger().eligible_devices(
            directory, agency_id=agency_id, user_id=user_id, now=self.clock()
        )

    async def create_case(
        self,
        *,
        title: str,
        reference: str = "",
        members: Iterable[tuple[str, str] | tuple[str, str, str]] = (),
        handling: str = "H2",
        tlp: str = "AMBER",
        retention_days: int = 365,
        history: str = "shared",
        witnessed: bool | None = None,
        alarm_after_ms: int = DEFAULT_ALARM_AFTER,
        require_approval: bool = False,
    ) -> bytes:
        """Open a case with this device as owner and the given users' devices as members.

        ``require_approval``: a device of a third agency joins only with the
        approval of an owner of every other agency in the case (PROTOCOL.md §5.5).

        ``witnessed``: True requires a witness of every agency in the case to
        cosign its history (refused if one of them lists none), False leaves it
        unwitnessed, and None (the default) witnesses it when every agency in it
        lists witnesses.  The rule is signed into the case and cannot change.
        """
        ledger = self._ledger()
        with own_input():  # checked before anything is asked of the broker
            policy = Policy(
                retention_days=retention_days,
                handling=handling,
                tlp=tlp,
                history=history,
                receipt_key=self.server_key or b"",
            )
            info = CaseInfo(title=title, reference=reference)
        await self.refresh_revocations(force=True)
        roster = []
        for m in members:
            agency, user, role = (*m, "member") if len(m) == 2 else m
            roster += [(vc, role) for vc in await self._devices(agency, user)]
        agencies = {vc.cert.agency_id for vc, _ in roster} | {self._agency()}
        rule = None
        if witnessed is not False:
            await self.refresh_witness_lists(agencies)
            missing = sorted(a for a in agencies if not self.trust.witnesses(a))
            lists = "lists" if len(missing) == 1 else "list"
            if missing and witnessed:
                raise NotPermittedError(
                    f"{', '.join(missing)} {lists} no witnesses: a witnessed case needs one of every"
                    " agency in it (or create it with --unwitnessed)"
                )
            if not missing:
                rule = Witnessing(rule="each-agency", alarm_after=alarm_after_ms)
            else:
                log.warning(
                    "this case is unwitnessed: %s %s no witnesses, so only the broker vouches for"
                    " its order and time",
                    ", ".join(missing),
                    lists,
                )
        case_id = secrets.token_bytes(16)
        body = ledger.genesis(
            case_id=case_id,
            members=roster,
            policy=policy,
            info=info,
            now=self.clock(),
            rng=secrets.token_bytes,
            witnessing=rule,
            admission=EACH_AGENCY_OWNER if require_approval else None,
        )
        await self.broker.create_case(body)
        await self.sync(case_id)
        return case_id

    async def _commit(
        self,
        case_id: bytes,
        roster: Sequence[tuple[VerifiedCert, str]],
        *,
        terms: Mapping[bytes, int] | None = None,
        admission: str | None = None,
        approvals: Sequence[bytes] = (),
    ) -> None:
        """Commit ``roster``, refused here if it still holds a device its agency revoked.

        The broker refuses such a commit too, but its words ("device was
        revoked") read as if this device were; the member to remove is named.
        Nobody is dropped silently: which member leaves is the owner's decision.
        """
        ledger = self._ledger()
        now = self.clock()
        for vc, _ in roster:
            if vc.device_id != self.keys.device_id and self.trust.is_revoked(vc.cert, at=now):
                name = f"{vc.cert.agency_id}:{vc.cert.user_id}"
                raise UsageError(
                    f"{name}'s device was revoked by its agency; remove it first:"
                    f" caseline case remove {case_id.hex()} {name}"
                )
        body = ledger.change(
            case_id,
            roster,
            now=now,
            rng=secrets.token_bytes,
            terms=terms,
            admission=admission,
            approvals=approvals,
        )
        await self.broker.commit(case_id, body)
        await self.sync(case_id)

    async def add_members(
        self,
        case_id: bytes,
        users: Iterable[tuple[str, str, str]],
        *,
        share_history: bool = False,
        expires: int | None = None,
    ) -> Added:
        """Add users' current devices; optionally give them the keys of the history so far.

        The history shared is what the updates' markings allow for the new
        members' agencies (PROTOCOL.md §6.7): never TLP:RED, H2 and H3
        no-dissemination only with a release.  The rest is withheld, and the
        result's ``withheld`` says which and why.  ``expires`` (ms) ends their
        membership then, unless an owner renews it.  Where the case needs other
        agencies' approval of a third agency, the approvals posted in the case
        for these devices are carried along; if some are missing, nothing is
        committed and the agencies are named.
        """
        users = list(users)
        if expires is not None and expires <= self.clock():
            raise UsageError("the membership would end before it starts: give a later expiry")
        await self.sync(case_id)
        await self.refresh_revocations(force=True)
        roster = self._ledger().roster(case_id)
        # A voided device is not added back here: carried over it would stay voided (§5.3).
        present = {vc.device_id for vc, _ in self._ledger().roster(case_id, voided=True)}
        added = []
        agencies = set()
        for agency, user, role in users:
            for vc in await self._devices(agency, user):
                if vc.device_id not in present:
                    roster.append((vc, role))
                    present.add(vc.device_id)
                    added.append(vc.device_id)
                    agencies.add(vc.cert.agency_id)
        if not added:
            raise UsageError("every device of those users is already in the case")
        view = await self.view(case_id)
        events = await self.history(case_id)
        readable = [e.seq for e in events if e.kind == "update" and e.readable]
        withheld: list[Withheld] = []
        if share_history:
            marks = self._ledger().case_marks(case_id)
            readable, withheld = marks.shareable(readable, agency_ids=agencies, at=self.clock())
        terms = None if expires is None else dict.fromkeys(added, expires)
        approvals = collect_approvals(view.state, events, added) if view.state is not None else []
        try:
            await self._commit(case_id, roster, terms=terms, approvals=approvals)
        except NotPermittedError as exc:
            raise approvals_missing(
                exc, case_id, users=[(a, u, r) for a, u, r in users], expires=expires
            ) from None
        state = view.state
        recipients = [d for d in added if state is not None and state.active(d)]
        if share_history and readable and recipients:
            share = view.history_share(recipients=recipients, seqs=readable)
            await self.post(case_id, HISTORY_SHARE, share)
        return Added(added, withheld)

    async def remove_members(self, case_id: bytes, users: Iterable[tuple[str, str]]) -> list[bytes]:
        """Remove every device of the given users; they cannot read what follows."""
        await self.sync(case_id)
        gone = set(users)
        listed = self._ledger().roster(case_id, voided=True)
        keep = [
            (vc, r)
            for vc, r in self._ledger().roster(case_id)
            if (vc.cert.agency_id, vc.cert.user_id) not in gone
        ]
        removed = [vc.device_id for vc, _ in listed if (vc.cert.agency_id, vc.cert.user_id) in gone]
        if not removed:
            raise UnknownError("none of those users is in the case")
        await self._commit(case_id, keep)
        return removed

    async def remove_devices(self, case_id: bytes, device_ids: Iterable[bytes]) -> list[bytes]:
        """Remove single devices (a lost phone) and keep their users' other devices in the case."""
        await self.sync(case_id)
        gone = set(device_ids)
        roster = self._ledger().roster(case_id)
        removed = [
            vc.device_id for vc, _ in self._ledger().roster(case_id, voided=True) if vc.device_id in gone
        ]
        if not removed:
            raise UnknownError("none of those devices is in the case")
        await self._commit(case_id, [(vc, r) for vc, r in roster if vc.device_id not in gone])
        return removed

    async def rekey(self, case_id: bytes) -> list[bytes]:
        """Commit the current roster, without its voided members, under a fresh epoch secret.

        The way out of a tainted epoch (PROTOCOL.md §5.3): the case's secret was
        chosen by a device its agency revoked, so an owner gives the case a new
        one, wrapped only to the members that count.  Returns the devices dropped.
        """
        await self.sync(case_id)
        await self.refresh_revocations(force=True)
        await self.sync(case_id)  # under the lists just fetched
        state = (await self.view(case_id)).state
        listed = self._ledger().roster(case_id, voided=True)
        dropped = [vc.device_id for vc, _ in listed if state is not None and vc.device_id in state.voided]
        await self._commit(case_id, self._ledger().roster(case_id))
        return dropped

    async def set_role(self, case_id: bytes, agency_id: str, user_id: str, role: str) -> None:
        if role not in CASE_ROLES:
            raise UsageError(f"role must be one of {', '.join(sorted(CASE_ROLES))}")
        await self.sync(case_id)
        roster = self._ledger().roster(case_id)
        if not any((vc.cert.agency_id, vc.cert.user_id) == (agency_id, user_id) for vc, _ in roster):
            raise UnknownError(f"{agency_id}:{user_id} is not in the case")
        await self._commit(
            case_id,
            [
                (vc, role if (vc.cert.agency_id, vc.cert.user_id) == (agency_id, user_id) else r)
                for vc, r in roster
            ],
        )

    async def repin(self, case_id: bytes | None = None) -> list[Repinned]:
        """Move members onto their agencies' re-issued certificates: one commit per case that changed.

        A roster pins each device's exact certificate, so a certificate its
        agency re-issued (new scopes, a later expiry) takes effect in a case
        only once an owner commits the same roster with the new one
        (PROTOCOL.md §5.3).  Every case this device owns is done, or only
        ``case_id`` (refused unless this device owns it).  The candidates come
        from the broker's directory and are verified here: pinned root, valid
        and not revoked now, same device and keys (``repinned_roster``).
        Cases where nothing changed get no commit.  Over every case, one that
        fails does not stop the others: ``RepinIncompleteError`` names each
        failed case and carries those done.
        """
        self._ledger()
        await self.refresh_revocations(force=True)
        cases = [case_id] if case_id is not None else [c.case_id for c in (await self.broker.cases()).cases]
        directories: dict[tuple[str, str], Directory] = {}
        done: list[Repinned] = []
        failed: list[tuple[bytes, CaselineError]] = []
        for cid in cases:
            try:
                repinned = await self._repin_case(cid, directories, only=case_id is not None)
            except CaselineError as exc:
                if case_id is not None:
                    raise
                failed.append((cid, exc))
                continue
            if repinned is not None:
                done.append(repinned)
        if failed:
            raise RepinIncompleteError(done, failed)
        return done

    async def _repin_case(
        self, cid: bytes, directories: dict[tuple[str, str], Directory], *, only: bool
    ) -> Repinned | None:
        """One case of ``repin``: its commit if a member's certificate changed, else None."""
        await self.sync(cid)
        state = (await self.view(cid)).state
        mine = None if state is None else state.members.get(self.keys.device_id)
        if mine is None or mine.role != "owner":
            if only:
                raise NotPermittedError("only an owner of the case may re-pin its members' certificates")
            return None
        users = sorted({(vc.cert.agency_id, vc.cert.user_id) for vc, _ in self._ledger().roster(cid)})
        for user in users:
            if user not in directories:
                directories[user] = await self.broker.directory(*user)
        asked = [directories[u] for u in users]
        await self._adopt_lists(asked)  # a directory may carry a newer revocation list
        await self.view(cid)
        roster, changed = self._ledger().repinned(cid, asked, now=self.clock())
        if not changed:
            return None
        await self._commit(cid, roster)
        return Repinned(case_id=cid, changes=tuple(changed))

    async def members(self, case_id: bytes) -> tuple[Member, ...]:
        return members_of(await self.view(case_id))

    # ---------------------------------------------------------------- verification and evidence
    async def verify_case(self, case_id: bytes) -> CaseReport:
        """Re-verify a case from genesis against the broker's complete log.

        The fresh view must extend what this device stored before: a broker that
        rewrote history since is caught here (``ForkError``).  The report's code
        lets two officers compare heads by phone.
        """
        await self.refresh_revocations(force=True)
        await self.sync(case_id)
        after, now = 0, self.clock()
        events: list[CaseEvent] = []
        scratch = Ledger(keys=self.keys, cert=self.cert, trust=self.trust, server_key=self.server_key or b"")
        fresh = scratch.view(case_id)
        while True:
            page = await self.broker.entries(case_id, after=after)
            for e in page.entries:
                events += scratch.apply(
                    case_id, seq=e.seq, kind=e.kind, body=e.body, receipt=e.receipt, now=now
                )
            after = fresh.count
            if after >= page.count:
                break  # a page may be short (bounded by bytes): only the count says the log ended
            if not page.entries:
                raise GapError(
                    f"the broker states {page.count} entries but serves none after {after}:"
                    " it withholds entries"
                )
        mine = await self.view(case_id)
        if fresh.count < mine.count or fresh.entry_hashes[: mine.count] != mine.entry_hashes:
            raise ForkError("the broker's log is not the history this device verified before")
        if fresh.state is None:
            raise UnknownError("the broker holds no entries of that case")
        updates = [e for e in events if e.kind == "update"]
        return CaseReport(
            case_id=case_id,
            count=fresh.count,
            head=fresh.head,
            code=head_code(fresh.count, fresh.head),
            epoch=fresh.state.epoch,
            members=members_of(fresh),
            updates=len(updates),
            readable=sum(1 for e in updates if e.readable),
            voided=sum(1 for e in events if e.kind == "voided"),
        )

    async def evidence_plan(self, case_id: bytes, seqs: Iterable[int] | None = None) -> EvidencePlan:
        """What a bundle of the chosen updates would disclose, and what it would withhold.

        Default: every update this device can read that the markings let its
        agency disclose as evidence now; the others are withheld, each with the
        release it lacks.  A chosen update that may not be disclosed is refused
        (``NotPermittedError``).  The releases the disclosed updates rely on are
        disclosed with them (client/evidence_select.py).
        """
        return (await self._evidence_plan(case_id, seqs, self.clock()))[0]

    async def _evidence_plan(
        self, case_id: bytes, seqs: Iterable[int] | None, now: int
    ) -> tuple[EvidencePlan, int, bytes]:
        """The plan, the bundle's entry count and the receipt of its last entry."""
        await self.sync(case_id)  # includes check_log(case_id): finality and its receipt
        view = await self.view(case_id)
        stored = await self.store.entries(case_id)
        if not stored or view.state is None:
            raise UnknownError("this device holds no entries of that case")
        if view.state.witnessing.rule != "none":
            receipt = await self.store.finality_receipt(case_id)
            upto = 0 if receipt is None else min(tlog.receipt_leaf(receipt).seq + 1, view.count)
            if receipt is None or upto == 0:
                raise NotPermittedError(
                    "no entry of this case is final yet; try again once the witnesses have cosigned"
                )
        else:
            upto = view.count
            receipt = next(e.receipt for e in stored if e.seq == upto - 1)
        plan = plan_evidence(
            await self.history(case_id),
            agency_id=(await self.identity()).agency_id,
            at=now,
            upto=upto,
            chosen=None if seqs is None else list(seqs),
        )
        return plan, upto, receipt

    async def export_evidence(self, case_id: bytes, seqs: Iterable[int] | None = None) -> bytes:
        """A bundle disclosing the chosen updates (default: every one the markings let it).

        See ``evidence_plan`` for what is disclosed and withheld.  In a witnessed
        case the bundle ends at the case's last *final* entry and carries the
        receipt into the witnessed checkpoint that made it final; disclosing an
        entry still pending witness is refused.  ``sync`` ends by checking the
        broker log, so the finality used here is fresh.
        """
        now = self.clock()
        plan, upto, receipt = await self._evidence_plan(case_id, seqs, now)
        view = await self.view(case_id)
        stored = {e.seq: e for e in await self.store.entries(case_id)}
        return export_evidence(
            view,
            exporter=self.keys,
            envelopes={seq: stored[seq].body for seq in plan.disclose},
            receipt=receipt,
            now=now,
            upto=upto,
        )

    async def export_evidence_folder(
        self,
        case_id: bytes,
        out: str | os.PathLike[str],
        seqs: Iterable[int] | None = None,
        *,
        attachments: Iterable[tuple[int, int]] | None = None,
        force: bool = False,
        progress: ProgressSink | None = None,
    ) -> EvidenceReport:
        """An export folder: the bundle ``export_evidence`` makes, with the disclosed updates' files.

        ``attachments`` names (seq, index) pairs to include (default: every file of
        every disclosed update); one of an update the bundle does not disclose is
        refused (``UsageError``) before anything is fetched.  The bundle is verified
        with this device's own pins before use, each file is fetched through the
        verified download path, and the folder appears at ``out`` only once all of
        it is written (client/evidence_dir.py).  Returns the report of what was written.
        """
        target = Path(os.fspath(out))
        refuse_existing_export(target, force=force)
        bundle = await self.export_evidence(case_id, seqs)
        own_pins = {a: fingerprint(a, key) for a, key in self.trust.roots.items()}
        report = verify_evidence(bundle, pinned=own_pins)
        chosen = choose(report.attachments, attachments)

        async def fetch(status: ExhibitStatus, fileobj: BinaryIO) -> None:
            await self.fetch_attachment_into(
                case_id, status.update_id, status.index, fileobj, progress=progress
            )

        return await write_export(
            target,
            bundle=bundle,
            report=report,
            chosen=[(c.seq, c.index) for c in chosen],
            fetch=fetch,
            force=force,
        )


def _raise_alarms(events: Iterable[CaseEvent]) -> None:
    """A voided commit is an alarm: a device its agency revoked set the case's members and secret.

    Raised (logged as an error) each time this device verifies it, so also
    when a new revocation list makes it re-verify a case from genesis.
    """
    for e in events:
        if e.kind == "commit" and e.voided_by is not None:
            log.error(
                "ALARM case %s: entry %d is a commit by %s (device %s) made after its agency revoked"
                " that device; whom it added does not count, and nothing is posted in the case until"
                " an owner re-keys it: caseline case rekey %s",
                e.case_id.hex(),
                e.seq,
                e.voided_by.name,
                e.voided_by.device_id.hex(),
                e.case_id.hex(),
            )


def verify_bundle(bundle: bytes | str | os.PathLike[str], pins: Mapping[str, str]) -> EvidenceReport:
    """Verify an evidence bundle offline, trusting only the fingerprints given.

    ``bundle`` is the bundle's bytes, or the path of a bundle file or of an
    export folder (whose attachments are then checked too; see ``EvidenceReport.attachments``).
    """
    if isinstance(bundle, bytes):
        return verify_evidence(bundle, pinned=pins)
    path = Path(os.fspath(bundle))
    if path.is_dir():
        return verify_export(path, pins)
    return verify_evidence(path.read_bytes(), pinned=pins)
