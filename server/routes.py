"""HTTP and WebSocket handlers: decode, call the service, encode.  Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import secrets
import time
from typing import Final, TypeVar

from aiohttp import WSMsgType, web
from caseline.crypto import primitives as P
from caseline.crypto.auth import check_issued, make_challenge, verify_response
from caseline.crypto.certs import check_may_read
from caseline.crypto.keys import fingerprint
from caseline.schemas.api import (
    MAX_LEAVES,
    MAX_PAGE,
    AgencyInfo,
    AgencyList,
    CaseList,
    CaseSummary,
    ChallengeRequest,
    ConsistencyProof,
    Directory,
    EntryPage,
    InclusionProof,
    LeafPage,
    PostResult,
    PostUpdate,
    ServerInfo,
    Session,
    Subscribe,
    WitnessedAnswer,
    etag_matches,
    revocation_etag,
)
from caseline.schemas.errors import (
    BrokerNotFound,
    BrokerRateLimited,
    BrokerUnauthorized,
    CaselineError,
    MalformedError,
    UntrustedError,
)
from caseline.schemas.wire import (
    AGENCY_ID,
    ID_SIZE,
    USER_ID,
    AuthChallenge,
    DeviceCert,
    RevocationList,
    WitnessList,
    decode_signed,
)
from caseline.server import problems
from caseline.server.blob_service import envelope_blobs
from caseline.server.body_pace import BodyPace
from caseline.server.core import Accepted, entry_of, token_hash
from caseline.server.keys import (
    AUDIT,
    AUTH_FAILURES,
    BLOBS,
    BROKER,
    CLOCK,
    CONFIG,
    CORE,
    CUTOFFS,
    DEVICE_LOGINS,
    FLIGHT_TICKET,
    HUB,
    METRICS,
    NONCE_KEY,
    REJECTIONS,
    REVOCATIONS,
    SERVER_KEY,
    SESSION_CERT,
    SESSIONS,
    STORE,
    STREAM_EXPIRY,
    USED_NONCES,
    WITNESSING,
)
from caseline.server.paging import page_budget, page_count
from caseline.server.sources import IPNetwork, parse_networks, source_of
from caseline.server.store import AgencyRow, DeviceRow, SessionRow
from caseline.server.stream import (
    CLOSE_LOGOUT,
    CLOSE_REVOKED,
    CLOSE_SESSION_EXPIRED,
    Connection,
    session_guard,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("caseline.server")
MSGPACK: Final = "application/msgpack"
MAX_CACHED_SESSIONS: Final = 100_000
MAX_POSTS_IN_FLIGHT: Final = 1024


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/v1/server", server_info)
    r.add_get("/v1/agencies", list_agencies)
    r.add_get("/v1/agencies/{agency_id}", get_agency)
    r.add_get("/v1/agencies/{agency_id}/revocations", get_revocations)
    r.add_put("/v1/agencies/{agency_id}/revocations", put_revocations)
    r.add_get("/v1/agencies/{agency_id}/witnesses", get_witnesses)
    r.add_put("/v1/agencies/{agency_id}/witnesses", put_witnesses)
    r.add_post("/v1/devices", register_device)
    r.add_get("/v1/directory/{agency_id}/{user_id}", directory)
    r.add_post("/v1/auth/challenge", auth_challenge)
    r.add_post("/v1/auth/session", auth_session)
    r.add_post("/v1/auth/logout", auth_logout)
    r.add_get("/v1/cases", list_cases)
    r.add_post("/v1/cases", create_case)
    r.add_post("/v1/cases/{case_id}/commits", post_commit)
    r.add_post("/v1/cases/{case_id}/updates", post_update)
    r.add_get("/v1/cases/{case_id}/entries", get_entries)
    r.add_get("/v1/stream", stream)
    r.add_get("/v1/log/checkpoint", log_checkpoint)
    r.add_get("/v1/log/witnessed", log_witnessed)
    r.add_get("/v1/log/proof/inclusion", log_inclusion)
    r.add_get("/v1/log/proof/consistency", log_consistency)
    r.add_get("/v1/log/leaves", log_leaves)


# --------------------------------------------------------------------------- helpers


def reply(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=MSGPACK)


async def read_body(request: web.Request, *, limit: int | None = None) -> bytes:
    """Read a msgpack body, counting bytes ourselves (streamed bodies included), at a minimum pace.

    A body that trickles in (or a chunk size it never fills) is cut with 408
    and its connection closed, by the rules of ``body_pace.BodyPace``: it
    would otherwise hold a connection and a request slot for as long as the
    sender likes.  ``limit`` lowers ``max_body_bytes`` for a route whose body
    is small by its nature (a login's).
    """
    limits = request.app[CONFIG].limits
    limit = limits.max_body_bytes if limit is None else min(limit, limits.max_body_bytes)
    if request.content_type != MSGPACK:
        raise web.HTTPUnsupportedMediaType(reason=f"send {MSGPACK}")
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit, actual_size=declared, reason="request body too large"
        )
    pace = body_pace(request)
    chunks, size = [], 0
    while True:
        chunk = await paced_chunk(request, pace)
        if not chunk:
            break
        pace.add(len(chunk))
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(
                max_size=limit, actual_size=size, reason="request body too large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def body_pace(request: web.Request) -> BodyPace:
    """The minimum rate a request body must keep, from the broker's limits, starting now."""
    limits = request.app[CONFIG].limits
    return BodyPace(
        grace=limits.body_grace,
        min_rate=limits.body_min_rate,
        max_seconds=limits.body_max_seconds,
        started=asyncio.get_running_loop().time(),
    )


async def paced_chunk(request: web.Request, pace: BodyPace) -> bytes:
    """The body's next piece (``b""`` at its end); a body slower than ``pace`` is cut with 408."""
    try:
        async with asyncio.timeout_at(pace.deadline()):
            return await request.content.readany()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason="the request body arrived too slowly") from None


def hex_id(request: web.Request, name: str) -> bytes:
    text = request.match_info[name]
    if len(text) != 2 * ID_SIZE:
        raise MalformedError(f"{name} must be {2 * ID_SIZE} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise MalformedError(f"{name} must be hex") from None


async def authenticate(request: web.Request) -> bytes:
    """The device behind a live session, or 401.  Revoked devices have no sessions."""
    session, _ = await session_of(request)
    return session.device_id


def bearer_digest(request: web.Request) -> bytes | None:
    """The hash of the session token a request presents, or None if it presents none worth a look.

    Tokens are base64url; a header that was not even UTF-8 reaches us with surrogates.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 64 or not token.isascii():
        return None
    return token_hash(token)


def holds_session(request: web.Request) -> bool:
    """Whether the request presents a session token the broker holds in memory (a dict lookup).

    Only a sorting hint for the in-flight limits: ``session_of`` still checks
    the session's expiry and its device's revocation.
    """
    digest = bearer_digest(request)
    return digest is not None and digest in request.app[SESSIONS]


async def session_of(request: web.Request) -> tuple[SessionRow, DeviceCert]:
    """The live session a request presents and its device's certificate, or 401.

    A session the broker holds in memory is checked without the database and is
    never refused for its source's failures; anything else from a source past
    its failure limit is refused with 429 before the database is asked.
    """
    digest = bearer_digest(request)
    if digest is None:
        refuse_failing_source(request)
        raise web.HTTPUnauthorized(
            reason="a session token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    sessions = request.app[SESSIONS]
    cached = sessions.get(digest)
    if cached is None:
        refuse_failing_source(request)
        store = request.app[STORE]
        row = await store.get_session(digest)
        device = None if row is None else await store.get_device(row.device_id)
        if row is not None and device is not None:
            cached = (row, DeviceCert.decode(decode_signed(device.cert)[0]))
            cache_session(request.app, cached)
    now = request.app[CLOCK]()
    if cached is None or cached[0].expires_at <= now:
        sessions.pop(digest, None)
        raise web.HTTPUnauthorized(
            reason="session is unknown or expired", headers={"WWW-Authenticate": "Bearer"}
        )
    session, cert = cached
    revoked_at = request.app[CORE].trust.revoked_at(cert)
    if revoked_at is not None and revoked_at <= now:
        raise web.HTTPUnauthorized(reason="device is revoked", headers={"WWW-Authenticate": "Bearer"})
    request[SESSION_CERT] = cert
    return session, cert


def cache_session(app: web.Application, entry: tuple[SessionRow, DeviceCert]) -> None:
    """Hold a live session in memory, making room by dropping the one cached longest ago.

    Never the whole cache at once: a held session is what keeps a member served
    from a source that another client's failed logins have blocked.
    """
    sessions = app[SESSIONS]
    while len(sessions) >= MAX_CACHED_SESSIONS:
        del sessions[next(iter(sessions))]
    sessions[entry[0].token_hash] = entry


async def warm_sessions(app: web.Application) -> None:
    """At start-up, hold the live sessions of the store again (newest first, up to the cache's size).

    After a restart the members' sessions would otherwise need the database on
    their next request, which a source past its failure limit is refused.
    """
    rows = await app[STORE].live_sessions(now=app[CLOCK](), limit=MAX_CACHED_SESSIONS)
    for row, cert in reversed(rows):  # the newest cached last: dropped last
        cache_session(app, (row, DeviceCert.decode(decode_signed(cert)[0])))


def forget_sessions(app: web.Application, device_id: bytes) -> None:
    sessions = app[SESSIONS]
    for digest in [d for d, (row, _) in sessions.items() if row.device_id == device_id]:
        del sessions[digest]


async def cut_off(app: web.Application, agency_id: str, device_id: bytes) -> None:
    """End a revoked device's access now: its sessions (stored and cached) and its open streams.

    Run when a revocation takes effect: at publication for a ``revoked_at``
    already past, else by its timer (``CUTOFFS``).  Only a device the agency
    itself certified is cut off, so a list cannot name another agency's device.
    """
    device = await app[STORE].get_device(device_id)
    if device is None or device.agency_id != agency_id:
        return
    await app[STORE].delete_sessions_of(device_id)
    forget_sessions(app, device_id)
    app[HUB].close_device(device_id, CLOSE_REVOKED, "device revoked by its agency")


def schedule_cutoffs(app: web.Application, crl: RevocationList) -> None:
    """Arm a cut-off at each ``revoked_at`` of a list that is still ahead of the broker's clock.

    An agency's clock may run ahead of the broker's (certs.MAX_SKEW_MS is
    tolerated), so a revocation can be published before it takes effect; it
    must still take effect on time, on the streams already open too.  One
    timer per (agency, device): a newer list moves it.
    """
    if not app[CONFIG].revocation_cutoff:
        return
    now, cutoffs = app[CLOCK](), app[CUTOFFS]
    for entry in crl.entries:
        if entry.revoked_at > now:
            cutoffs.set((crl.agency_id, entry.device_id), entry.revoked_at)


def require_operator(request: web.Request) -> None:
    path = request.app[CONFIG].operator_token_path
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        expected = path.read_bytes()
    except OSError:
        expected = b""
    if (
        scheme.lower() != "bearer"
        or not expected
        or not token.isascii()
        or not P.constant_time_equal(token_hash(token), expected)
    ):
        raise web.HTTPUnauthorized(reason="operator token required", headers={"WWW-Authenticate": "Bearer"})


# --------------------------------------------------------------------------- operator and public


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    require_operator(request)
    m, hub = request.app[METRICS], request.app[HUB]
    m.devices.set(len(hub.by_device))
    m.connections.set(hub.connections())
    m.queue_depth.set(max(hub.queue_depths(), default=0))
    m.buffered.set(max(hub.buffered(), default=0))
    totals = await request.app[STORE].blob_totals()
    m.blob_stored.set(totals.stored_bytes)
    m.blob_uploads.set(totals.uploads_in_progress)
    m.blob_in_flight.set(totals.bytes_in_flight)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def server_info(request: web.Request) -> web.Response:
    key = request.app[SERVER_KEY].public_key
    return reply(ServerInfo(server_key=key, name=request.app[CONFIG].name).encode())


async def list_agencies(request: web.Request) -> web.Response:
    rows = await request.app[STORE].list_agencies()
    return reply(AgencyList(agencies=tuple(_agency_info(row) for row in rows)).encode())


def _agency_info(row: AgencyRow) -> AgencyInfo:
    return AgencyInfo(
        agency_id=row.agency_id,
        name=row.name,
        country=row.country,
        root_key=row.root_key,
        fingerprint=fingerprint(row.agency_id, row.root_key),
    )


async def get_agency(request: web.Request) -> web.Response:
    agency_id = AGENCY_ID.check(request.match_info["agency_id"], "agency_id")
    row = await request.app[STORE].get_agency(agency_id)
    if row is None:
        raise BrokerNotFound("no such agency")
    return reply(_agency_info(row).encode())


async def get_revocations(request: web.Request) -> web.Response:
    agency_id = AGENCY_ID.check(request.match_info["agency_id"], "agency_id")
    data = await request.app[STORE].get_revocation_list(agency_id)
    if data is None:
        raise BrokerNotFound("this agency has published no revocation list")
    etag = revocation_etag(data)
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": etag})  # the client's list is current
    response = reply(data)
    response.headers["ETag"] = etag
    return response


async def put_revocations(request: web.Request) -> web.Response:
    """Accept an agency-signed revocation list; cut revoked devices off when each revocation takes effect."""
    agency_id, body, crl = await agency_signed(request, RevocationList)
    core, store = request.app[CORE], request.app[STORE]
    held = core.trust.revocation_number(agency_id)
    if crl.number == held and body == await store.get_revocation_list(agency_id):
        return web.Response(status=204)  # the same list again: nothing to do
    core.trust.add_revocation_list(body)  # verifies signature, number and monotonicity
    await store.put_revocation_list(agency_id, crl.number, body)
    request.app[REVOCATIONS].invalidate()
    now = request.app[CLOCK]()
    for entry in crl.entries:
        if entry.revoked_at <= now:
            request.app[CUTOFFS].cancel((agency_id, entry.device_id))  # moved earlier: due now
            await cut_off(request.app, agency_id, entry.device_id)
    schedule_cutoffs(request.app, crl)  # the rest take effect at their revoked_at
    await request.app[AUDIT](
        "revocation", f"agency={agency_id} number={crl.number} entries={len(crl.entries)}"
    )
    return web.Response(status=204)


async def get_witnesses(request: web.Request) -> web.Response:
    """An agency's root-signed witness list (public, like its revocation list)."""
    agency_id = AGENCY_ID.check(request.match_info["agency_id"], "agency_id")
    data = await request.app[STORE].get_witness_list(agency_id)
    if data is None:
        raise BrokerNotFound("this agency has published no witness list")
    return reply(data)


async def put_witnesses(request: web.Request) -> web.Response:
    """Adopt an agency's witness list, authorised by its root's signature; its number must grow.

    The broker pushes every new checkpoint to the witnesses listed; members
    trust a witness through the same list, verified under the root they pinned.
    """
    agency_id, body, listed = await agency_signed(request, WitnessList)
    core, store = request.app[CORE], request.app[STORE]
    if body == core.trust.witness_list(agency_id):
        return web.Response(status=204)  # the same list again: nothing to do
    core.trust.add_witness_list(body)  # verifies signature under the root; refuses a rollback
    await store.put_witness_list(agency_id, listed.number, body)
    await request.app[AUDIT](
        "witness-list", f"agency={agency_id} number={listed.number} witnesses={len(listed.witnesses)}"
    )
    pusher = request.app.get(WITNESSING)
    if pusher is not None:
        pusher.wake()  # new witnesses get the newest checkpoint now, not at the next post
    return web.Response(status=204)


S = TypeVar("S", RevocationList, WitnessList)


async def agency_signed(request: web.Request, cls: type[S]) -> tuple[str, bytes, S]:
    """The body of a PUT that an agency root signs: for the agency in the URL, roots refreshed.

    Its signature is checked by the trust store that adopts it; here only its
    shape and agency, so a list cannot be filed under another agency's name.
    Anyone may send one, so before a byte of the body is read the request is
    charged to its source's anonymous rate limit and must name an agency the
    broker knows: a stranger's body costs nothing but its headers.
    """
    agency_id = AGENCY_ID.check(request.match_info["agency_id"], "agency_id")
    charge_anonymous(request)
    # Not refused for its source's failed authentications: a revocation must never wait on a
    # stranger's junk from the same address.  A forged list still costs one signature check,
    # within the anonymous rate limit, and is tallied with the source's failures.
    row = await request.app[STORE].get_agency(agency_id)
    if row is None:
        raise BrokerNotFound("no such agency")
    trust = request.app[CORE].trust
    if agency_id not in trust.roots:  # added with the CLI while the broker was running
        trust.pin(agency_id, row.root_key)
    body = await read_body(request)
    tbs, _ = decode_signed(body)
    parsed = cls.decode(tbs)
    if parsed.agency_id != agency_id:
        raise MalformedError(f"{cls.__name__} is for another agency than the URL names")
    return agency_id, body, parsed


async def refresh_agencies(app: web.Application) -> None:
    """Pin agencies the operator added with the CLI while the broker was running."""
    trust = app[CORE].trust
    for row in await app[STORE].list_agencies():
        if row.agency_id not in trust.roots:
            trust.pin(row.agency_id, row.root_key)


async def register_device(request: web.Request) -> web.Response:
    """Register a device by its agency-signed certificate (a public document).

    Anyone holding a certificate may send it, so sending the one already stored
    for that device again changes nothing and writes nothing: otherwise each
    replay would add an audit row and a broker-log leaf, which are never removed.
    """
    charge_anonymous(request)
    refuse_failing_source(request)
    body = await read_body(request)
    core, store = request.app[CORE], request.app[STORE]
    await refresh_agencies(request.app)
    now = request.app[CLOCK]()
    vc = core.trust.verify_cert(body, at=now)
    cert = vc.cert
    held = await store.get_device(cert.device_id)
    if held is not None and hmac.compare_digest(held.cert, body):
        return web.Response(status=204)  # a replay of a public document: no write, no audit row
    await store.put_device(
        DeviceRow(
            device_id=cert.device_id,
            agency_id=cert.agency_id,
            user_id=cert.user_id,
            cert=body,
            serial=cert.serial,
            not_after=cert.not_after,
        )
    )
    await request.app[AUDIT]("device-registered", f"agency={cert.agency_id} device={cert.device_id.hex()}")
    return web.Response(status=204)


async def directory(request: web.Request) -> web.Response:
    """Who an agency enrolled is sensitive: only enrolled devices that may read look it up.

    Adding members needs it, and only people and bots with the ``read`` scope
    (``check_may_read``) ever do; a posting-only bot has no use for another
    agency's certificates, so a stolen bot key does not enumerate them.
    """
    await authenticate(request)
    check_may_read(request[SESSION_CERT])
    agency_id = AGENCY_ID.check(request.match_info["agency_id"], "agency_id")
    user_id = USER_ID.check(request.match_info["user_id"], "user_id")
    store = request.app[STORE]
    rows = await store.devices_of_user(agency_id, user_id)
    crl = await store.get_revocation_list(agency_id) or b""
    return reply(
        Directory(
            agency_id=agency_id, user_id=user_id, certs=tuple(r.cert for r in rows), revocations=crl
        ).encode()
    )


# --------------------------------------------------------------------------- authentication


def source(request: web.Request) -> str:
    """The key per-source limits count this request under (``sources.py``)."""
    config = request.app[CONFIG]
    forwarded = request.headers.get(config.forwarded_header) if config.trusted_proxies else None
    return source_of(request.remote, forwarded, _networks(config.trusted_proxies))


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(proxies)


def charge_anonymous(request: web.Request) -> None:
    request.app[CORE].charge_anonymous(source(request), now=time.monotonic())


#: The login route: every refusal on it but a rate limit is a failed authentication (``failures.py``).
LOGIN_ROUTE: Final = "/v1/auth/session"
#: The two steps of a login.  Their bodies are small (``LOGIN_BODY_BYTES``), so they have an
#: in-flight pool of their own with no global bound (``app.in_flight_middleware``): slow bodies
#: from many addresses on other routes cannot stop a device from logging in.
LOGIN_ROUTES: Final = frozenset({"/v1/auth/challenge", LOGIN_ROUTE})
#: The most bytes a login's body may have: a challenge request, or a signed challenge (512).
LOGIN_BODY_BYTES: Final = 1024
#: Routes anyone may call without a session.  A security rejection on one of them (a bad
#: signature, an unknown agency, a revoked certificate) is a stranger's failure: it is tallied per
#: source and counts against the source's failure limit, like a failed login, rather than writing
#: an audit row (and a broker-log leaf, never removed) per request (``app._rejected``).
ANONYMOUS_ROUTES: Final = frozenset(
    {
        "/v1/devices",
        "/v1/auth/challenge",
        LOGIN_ROUTE,
        "/v1/auth/logout",
        "/v1/agencies/{agency_id}/revocations",
        "/v1/agencies/{agency_id}/witnesses",
    }
)


def refuse_failing_source(request: web.Request) -> None:
    """429 for a source past its failed-authentication limit; no database work has happened yet."""
    app = request.app
    src = source(request)
    wait = app[AUTH_FAILURES].blocked(src, now=time.monotonic())
    if wait > 0:
        if app[CONFIG].audit_flush_interval > 0:
            app[REJECTIONS].add(src, "blocked", route_name(request))
        raise BrokerRateLimited("too many failed authentications from this source", retry_after=wait)


def route_name(request: web.Request) -> str:
    """The route's pattern (``/v1/cases/{case_id}/entries``): what metrics and audit rows name."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def auth_challenge(request: web.Request) -> web.Response:
    """A challenge costs the broker no memory: its nonce authenticates itself (``crypto/auth.py``)."""
    charge_anonymous(request)
    refuse_failing_source(request)
    req = ChallengeRequest.decode(await read_body(request, limit=LOGIN_BODY_BYTES))
    if await request.app[STORE].get_device(req.device_id) is None:
        raise BrokerNotFound("device is not registered")
    challenge = make_challenge(
        request.app[SERVER_KEY],
        req.device_id,
        now=request.app[CLOCK](),
        rng=secrets.token_bytes,
        nonce_key=request.app[NONCE_KEY],
    )
    return reply(challenge)


async def auth_session(request: web.Request) -> web.Response:
    """Check the challenge is ours and unaltered (one HMAC) before the database and Ed25519.

    The nonce is marked used, and the device's login counted, only once the
    response has verified, and with no ``await`` between the checks and the
    marking, so two copies of one response cannot both pass.
    """
    charge_anonymous(request)
    refuse_failing_source(request)
    body = await read_body(request, limit=LOGIN_BODY_BYTES)
    app = request.app
    metrics = app[METRICS]
    now = app[CLOCK]()
    try:
        tbs, _ = decode_signed(body, max_size=512)
        challenge = AuthChallenge.decode(tbs)
        check_issued(challenge, nonce_key=app[NONCE_KEY])
        used = app[USED_NONCES]
        if challenge.nonce in used:
            raise UntrustedError("challenge was already used")
        row = await app[STORE].get_device(challenge.device_id)
        if row is None:
            raise BrokerNotFound("device is not registered")
        cert = app[CORE].trust.verify_cert(row.cert, at=now).cert
        verify_response(body, server_key=app[SERVER_KEY].public_key, cert=cert, now=now)
        used.use(challenge.nonce, expires_at=challenge.expires_at, now=now)
        app[DEVICE_LOGINS].charge(cert.device_id, now=now)
    except Exception:
        metrics.logins.labels("failure").inc()
        raise  # the middleware counts and audits it against the source (``failures.py``)
    token = secrets.token_urlsafe(32)
    expires = now + app[CONFIG].session_ttl * 1000
    session = SessionRow(token_hash=token_hash(token), device_id=cert.device_id, expires_at=expires)
    await app[STORE].add_session(session)
    # Cached at once: a fresh session is served from memory, even from a source past its failure limit.
    cache_session(app, (session, cert))
    metrics.logins.labels("success").inc()
    await app[AUDIT]("login", f"device={cert.device_id.hex()}")
    return reply(Session(token=token, expires_at=expires).encode())


async def auth_logout(request: web.Request) -> web.Response:
    device_id = await authenticate(request)
    token = request.headers["Authorization"].partition(" ")[2]
    await request.app[STORE].delete_session(token_hash(token))
    request.app[SESSIONS].pop(token_hash(token), None)
    request.app[HUB].close_device(device_id, CLOSE_LOGOUT, "logged out")
    await request.app[AUDIT]("logout", f"device={device_id.hex()}")
    return web.Response(status=204)


# --------------------------------------------------------------------------- cases


async def list_cases(request: web.Request) -> web.Response:
    device_id = await authenticate(request)
    cases = tuple(
        CaseSummary(
            case_id=cid,
            epoch=rt.state.epoch,
            count=rt.count,
            head=rt.head,
            role=rt.state.members[device_id].role,
        )
        for cid, rt in request.app[CORE].cases_of(device_id)
    )
    return reply(CaseList(cases=cases).encode())


def _receipt_reply(accepted: Accepted, status: int = 201) -> web.Response:
    return reply(accepted.receipt, status=status)


async def create_case(request: web.Request) -> web.Response:
    device_id = await authenticate(request)
    body = await read_body(request)
    core, now = request.app[CORE], time.monotonic()
    core.charge_case_creation(device_id, now=now)  # a device past its case quota is not charged bytes
    core.charge(device_id, len(body), now=now)
    accepted = await request.app[BROKER].post_genesis(body, device_id=device_id)
    request.app[METRICS].commits.inc()
    await request.app[AUDIT]("case-created", f"case={accepted.case_id.hex()} by={device_id.hex()}")
    return _receipt_reply(accepted)


async def post_commit(request: web.Request) -> web.Response:
    device_id = await authenticate(request)
    case_id = hex_id(request, "case_id")
    request.app[CORE].member_runtime(case_id, device_id)
    body = await read_body(request)
    request.app[CORE].charge(device_id, len(body), now=time.monotonic())
    accepted = await request.app[BROKER].post_commit(case_id, body, device_id=device_id)
    request.app[METRICS].commits.inc()
    await request.app[AUDIT](
        "commit", f"case={case_id.hex()} epoch={accepted.state.epoch} by={device_id.hex()}"
    )
    return _receipt_reply(accepted)


async def post_update(request: web.Request) -> web.Response:
    device_id = await authenticate(request)
    case_id = hex_id(request, "case_id")
    request.app[CORE].member_runtime(case_id, device_id)
    body = await read_body(request)
    core = request.app[CORE]
    core.charge(device_id, len(body), now=time.monotonic())
    async with request.app[BLOBS].referencing(case_id, envelope_blobs(body)):
        receipt = await request.app[BROKER].post_update(case_id, body, device_id=device_id)
    request.app[METRICS].updates.inc()
    return reply(receipt, status=201)


async def get_entries(request: web.Request) -> web.Response:
    device_id = await authenticate(request)
    case_id = hex_id(request, "case_id")
    core = request.app[CORE]
    core.require_reader(case_id, device_id)
    after = _int_param(request, "after", 0)
    limit = min(_int_param(request, "limit", MAX_PAGE), MAX_PAGE)
    budget = page_budget(request.app[CONFIG].limits)
    rows = await request.app[STORE].entries(case_id, after=after, limit=limit, max_bytes=budget)
    count = page_count(core.runtime(case_id).count, after=after, got=len(rows), limit=limit)
    page = EntryPage(case_id=case_id, entries=tuple(entry_of(r) for r in rows), count=count)
    return reply(page.encode())


def _int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # "²".isdigit(), but int("²") fails
        raise MalformedError(f"{name} must be a non-negative integer")
    return int(text)


# --------------------------------------------------------------------------- the broker log

TEXT: Final = "text/plain"


async def log_reader(request: web.Request) -> bytes | None:
    """Who may read the broker log: anyone, within the anonymous rate limit; a device with a session.

    Checkpoints and proofs are hashes of the log's shape and nothing else:
    witnesses must read them without an account, and monitors should be able
    to.  A request that presents a session token is checked like any other
    (a bad token is a 401, not a silent downgrade) and is not charged to the
    anonymous bucket; every other request is, per address.  Leaves are not
    anonymous (``log_leaves``).
    """
    if "Authorization" in request.headers:
        return await authenticate(request)
    charge_anonymous(request)
    return None


def _query_int(request: web.Request, name: str, *, default: int | None = None) -> int:
    if name not in request.query and default is not None:
        return default
    if name not in request.query:
        raise MalformedError(f"query parameter {name} is required")
    return _int_param(request, name, 0)


def _latest(request: web.Request) -> tuple[bytes, int]:
    blog = request.app[BROKER].log
    if blog.checkpoint is None:
        raise BrokerNotFound("the broker log is empty: no checkpoint yet")
    return blog.checkpoint, blog.size


async def _with_cosignatures(request: web.Request, size: int, checkpoint: bytes) -> bytes:
    """A stored checkpoint with every cosignature collected for it appended (one note)."""
    rows = await request.app[STORE].cosignatures(size)
    return checkpoint + "".join(r.line for r in rows).encode()


async def log_checkpoint(request: web.Request) -> web.Response:
    """The newest checkpoint (C2SP signed note), with the cosignatures collected for it so far."""
    await log_reader(request)
    checkpoint, size = _latest(request)
    note_bytes = await _with_cosignatures(request, size, checkpoint)
    return web.Response(body=note_bytes, content_type=TEXT, charset="utf-8")


async def log_witnessed(request: web.Request) -> web.Response:
    """Where the log stands for a member: newest checkpoint, newest witnessed one, proofs between.

    ``since`` (default 0) is the size of the checkpoint the member holds:
    ``since_proof`` proves the newest extends it (empty when ``since`` is
    larger than the log: the member sees the smaller size and raises the alarm).
    ``case`` (hex; a session and read access to the case required) adds that
    case's last leaf within the witnessed checkpoint and its inclusion proof.
    ``Accept: text/plain`` returns only the witnessed note (404 if none).
    """
    device_id = await log_reader(request)
    checkpoint, size = _latest(request)
    witnessed = await request.app[STORE].latest_witnessed()
    blog = request.app[BROKER].log
    accept = request.headers.get("Accept", "")
    if TEXT in accept and MSGPACK not in accept:
        if witnessed is None:
            raise BrokerNotFound("no checkpoint of this log has been witnessed yet")
        w_note = await _with_cosignatures(request, *witnessed)
        return web.Response(body=w_note, content_type=TEXT, charset="utf-8")
    since = _query_int(request, "since", default=0)
    case_text = request.query.get("case")
    leaf, index = b"", 0
    inclusion: tuple[bytes, ...] = ()
    w_size, w_note = 0, b""
    if witnessed is not None:
        w_size = witnessed[0]
        w_note = await _with_cosignatures(request, *witnessed)
    if case_text is not None:
        if device_id is None:
            raise web.HTTPUnauthorized(
                reason="naming a case needs a session", headers={"WWW-Authenticate": "Bearer"}
            )
        case_id = _hex_param(case_text, "case")
        request.app[CORE].require_reader(case_id, device_id)
        found = await request.app[STORE].case_leaf_before(case_id, w_size) if w_size else None
        if found is not None:
            index, leaf = found
            inclusion = tuple(blog.inclusion_proof(index, w_size))
    answer = WitnessedAnswer(
        latest=await _with_cosignatures(request, size, checkpoint),
        since_proof=tuple(blog.consistency_proof(since, size)) if since <= size else (),
        witnessed=w_note,
        witnessed_proof=tuple(blog.consistency_proof(w_size, size)) if w_note else (),
        leaf=leaf,
        index=index,
        inclusion=inclusion,
    )
    return reply(answer.encode())


def _hex_param(text: str, name: str) -> bytes:
    if len(text) != 2 * ID_SIZE:
        raise MalformedError(f"{name} must be {2 * ID_SIZE} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise MalformedError(f"{name} must be hex") from None


async def log_inclusion(request: web.Request) -> web.Response:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves (size ≤ the newest checkpoint)."""
    await log_reader(request)
    _, latest = _latest(request)
    index, size = _query_int(request, "index"), _query_int(request, "size")
    if not 0 < size <= latest:
        raise MalformedError(f"size must be between 1 and the log's size ({latest})")
    if index >= size:
        raise MalformedError("index must be below size")
    proof = request.app[BROKER].log.inclusion_proof(index, size)
    return reply(InclusionProof(index=index, size=size, proof=tuple(proof)).encode())


async def log_consistency(request: web.Request) -> web.Response:
    """The consistency proof from the tree of ``old`` leaves to the tree of ``new`` (≤ the newest)."""
    await log_reader(request)
    _, latest = _latest(request)
    old, new = _query_int(request, "old"), _query_int(request, "new")
    if not 0 <= old <= new <= latest:
        raise MalformedError(f"need 0 <= old <= new <= the log's size ({latest})")
    proof = request.app[BROKER].log.consistency_proof(old, new)
    return reply(ConsistencyProof(old=old, new=new, proof=tuple(proof)).encode())


async def log_leaves(request: web.Request) -> web.Response:
    """Leaves ``start`` to ``end - 1`` (at most 1024), for enrolled devices only.

    Unlike checkpoints and proofs, a leaf names a case id, a position and a
    time: who posts how much, when, in which case.  That metadata stays with
    enrolled devices (an agency's monitor is one), never with anonymous readers.
    """
    await authenticate(request)
    _, latest = _latest(request)
    start, end = _query_int(request, "start"), _query_int(request, "end")
    if not start < end <= latest or end - start > MAX_LEAVES:
        raise MalformedError(f"need start < end <= the log's size ({latest}) and at most {MAX_LEAVES} leaves")
    leaves = await request.app[STORE].log_leaves(start, end)
    return reply(LeafPage(start=start, leaves=tuple(leaves)).encode())


# --------------------------------------------------------------------------- live stream


async def _post_on_stream(app: web.Application, conn: Connection, device_id: bytes, post: PostUpdate) -> None:
    """The HTTP post route's checks and effect, answered with a ``PostResult`` frame.

    The stream's session is checked as an HTTP request's is (``authenticate``):
    a post after the device's revocation or the session's expiry is refused
    with 401, and the stream is closed.
    """
    stop = conn.guard()
    try:
        if stop is not None:
            raise BrokerUnauthorized(stop[1])
        app[CORE].member_runtime(post.case_id, device_id)
        app[CORE].charge(device_id, len(post.envelope), now=time.monotonic())
        async with app[BLOBS].referencing(post.case_id, envelope_blobs(post.envelope)):
            receipt = await app[BROKER].post_update(post.case_id, post.envelope, device_id=device_id)
        app[METRICS].updates.inc()
        result = PostResult(request_id=post.request_id, status=201, receipt=receipt, problem="", detail="")
    except CaselineError as exc:
        app[METRICS].rejections.labels(exc.code).inc()
        result = PostResult(
            request_id=post.request_id,
            status=exc.status_hint,
            receipt=b"",
            problem=exc.code,
            detail=str(exc)[:300],
        )

    except Exception:
        log.exception("unhandled error posting on a stream")
        result = PostResult(
            request_id=post.request_id, status=500, receipt=b"", problem="internal", detail="internal error"
        )
    with contextlib.suppress(ConnectionError, RuntimeError):
        await conn.reply(result.encode())
    if stop is not None:
        conn.shut(*stop)  # after the answer, which is written first


async def stream(request: web.Request) -> web.StreamResponse:
    session, cert = await session_of(request)
    device_id = session.device_id
    app = request.app
    config, hub, core = app[CONFIG], app[HUB], app[CORE]
    if len(hub.by_device.get(device_id, ())) >= config.limits.connections_per_device:
        raise web.HTTPTooManyRequests(reason="too many streams for this device", headers={"Retry-After": "5"})
    ws = web.WebSocketResponse(
        max_msg_size=config.max_frame_bytes,
        compress=False,
        heartbeat=config.heartbeat,
        receive_timeout=config.idle_timeout,
    )
    conn = hub.connection(
        ws,
        device_id,
        guard=session_guard(
            app[CLOCK],
            functools.partial(core.trust.revoked_at, cert) if config.stream_checks_revocation else None,
            session.expires_at if config.stream_session_expiry else None,
        ),
    )
    hub.attach(conn)  # before any await: the per-device limit cannot be raced past
    if config.stream_session_expiry:
        app[STREAM_EXPIRY].set(conn, session.expires_at)
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        request[FLIGHT_TICKET].release()  # a stream is a connection now, not a request in flight
        transport = request.transport
        if isinstance(transport, asyncio.Transport):
            conn.transport = transport
        sender = conn.task = asyncio.create_task(conn.run())
        try:
            first = await ws.receive(timeout=config.handshake_timeout)
        except TimeoutError:
            await ws.close(code=4000, message=b"no subscribe message in time")
            return ws
        if first.type != WSMsgType.BINARY:
            await ws.close(code=1003, message=b"expected a binary Subscribe message")
            return ws
        try:
            sub = Subscribe.decode(first.data)
        except CaselineError as exc:
            await ws.close(code=1007, message=str(exc)[:120].encode())
            return ws
        cursors = {c.case_id: c.after for c in sub.cursors}
        for case_id, runtime in core.cases_of(device_id):
            member_cert = runtime.state.certs[device_id].cert
            with contextlib.suppress(CaselineError):
                check_may_read(member_cert)
                after = cursors.get(case_id, 0)
                if after <= runtime.count:  # a cursor past the head: post only, stream nothing
                    hub.subscribe(conn, case_id, after)
        posts: set[asyncio.Task[None]] = set()
        async for msg in ws:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
            if msg.type != WSMsgType.BINARY:
                continue
            if len(posts) >= MAX_POSTS_IN_FLIGHT:
                await ws.close(code=1008, message=b"too many posts in flight")
                break
            try:
                post = PostUpdate.decode(msg.data)
            except CaselineError as exc:
                await ws.close(code=1007, message=str(exc)[:120].encode())
                break
            # Admission happens synchronously when the task first runs, and tasks
            # start in creation order, so posts are admitted in arrival order.
            task = asyncio.create_task(_post_on_stream(app, conn, device_id, post))
            posts.add(task)
            task.add_done_callback(posts.discard)
    except asyncio.CancelledError:
        raise
    finally:
        app[STREAM_EXPIRY].cancel(conn)
        hub.detach(conn)
        conn.release()  # its frames go with it, whoever closed it
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
    return ws


async def close_expired_stream(app: web.Application, conn: Connection) -> None:
    """The action of a stream's session-expiry deadline (``STREAM_EXPIRY``)."""
    app[HUB].close(conn, CLOSE_SESSION_EXPIRED, "session expired: log in again")


__all__ = ["problems", "setup"]
