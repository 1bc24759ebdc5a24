"""The aiohttp edge: the application factory, middlewares and shared resources.

Handlers (``routes.py``) only decode, call the service, and encode; errors
become problem+json here, in one place.  Every resource has one cleanup
context, and everything shared lives under a typed ``AppKey``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from aiohttp import web
from caseline.crypto.auth import NONCE_KEY_SIZE
from caseline.crypto.caselog import DAY_MS, KIND_UPDATE
from caseline.crypto.certs import MAX_SKEW_MS, TrustStore
from caseline.crypto.commits import CaseState
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import REVOCATIONS_HEADER
from caseline.schemas.errors import BrokerRateLimited, BrokerRefusal, BrokerStorageFull, CaselineError
from caseline.schemas.wire import RevocationList, decode_signed
from caseline.server import blob_routes, problems, retention, routes
from caseline.server.admission import Admission, Refusal, Ticket, derived_total
from caseline.server.blob_service import Blobs
from caseline.server.challenges import DeviceLogins, UsedNonces
from caseline.server.config import ServerConfig
from caseline.server.core import BrokerCore
from caseline.server.core_log import plan_audit_prune, prune_detail
from caseline.server.deadlines import Deadlines
from caseline.server.edge import EdgeRunner, descriptor_limit
from caseline.server.failures import FailureLimiter, RejectionTally
from caseline.server.file_blobs import BLOBS_DIR, FileBlobStore
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
    IN_FLIGHT,
    IN_FLIGHT_LOGINS,
    IN_FLIGHT_SESSIONS,
    METRICS,
    NONCE_KEY,
    REJECTIONS,
    REVOCATIONS,
    SERVER_KEY,
    SESSIONS,
    STORE,
    STREAM_EXPIRY,
    USED_NONCES,
    WITNESSING,
    Clock,
)
from caseline.server.logs import ACCESS_LOG, AccessLogger, request_id
from caseline.server.metrics import Metrics
from caseline.server.paging import check_paging, page_budget
from caseline.server.revocations import RevocationsDigest
from caseline.server.service import Broker
from caseline.server.sources import parse_networks
from caseline.server.sqlite_store import SqliteStore
from caseline.server.store import Store
from caseline.server.stream import Connection, Hub
from caseline.server.witnessing import WitnessPusher, seconds_since_witnessed

log = logging.getLogger("caseline.server")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


#: Rejections that are security events, and so go to the audit log as well as the metrics.
#: Malformed input and conflicts are only counted: auditing them would let a flood of junk
#: turn every bad request into a database write.  Failed authentications (``is_auth_failure``,
#: *unknown-case* among them) are audited too, but summed per source (``failures.py``), so that
#: neither a flood nor the audit write tells a stranger's probe of a real case from one of none.
#: On the routes that need no session (``routes.ANONYMOUS_ROUTES``) these are summed per source
#: too: there a stranger sends them, and one row each would let anyone grow the log without end.
AUDITED_REJECTIONS: Final = frozenset(
    {"bad-signature", "untrusted", "revoked", "expired", "not-member", "not-allowed", "fork"}
)


def is_auth_failure(route: str, status: int, code: str) -> bool:
    """A 401, a refused login, a case route naming a case the device is not in (``failures.py``),
    or a security rejection on a route that needs no session (``routes.ANONYMOUS_ROUTES``)."""
    if code == "rate-limited":
        return False
    if route in routes.ANONYMOUS_ROUTES and code in AUDITED_REJECTIONS:
        return True
    return status == 401 or code in {"not-member", "unknown-case"} or route == routes.LOGIN_ROUTE


async def _rejected(request: web.Request, route: str, status: int, code: str, *, audited: bool) -> None:
    """Count a failed authentication against its source and tally it; audit other security events."""
    app = request.app
    if is_auth_failure(route, status, code):
        src = routes.source(request)
        app[AUTH_FAILURES].record(src, now=time.monotonic())
        if app[CONFIG].audit_flush_interval > 0:
            app[REJECTIONS].add(src, code, route)
            return
        audited = True
    if audited:
        await app[AUDIT]("rejected", f"route={route} reason={code}")


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map every failure to problem+json; count rejections by reason."""
    metrics = request.app[METRICS]
    route = routes.route_name(request)
    start = time.perf_counter()
    try:
        response = await handler(request)
    except CaselineError as exc:
        metrics.rejections.labels(exc.code).inc()
        await _rejected(request, route, exc.status_hint, exc.code, audited=exc.code in AUDITED_REJECTIONS)
        headers = dict(exc.headers) if isinstance(exc, BrokerRefusal) else {}
        if isinstance(exc, BrokerRateLimited) and exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
        response = problems.problem(exc.status_hint, exc.code, str(exc), headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = problems.HTTP_CODES.get(exc.status, "http-error")
        metrics.rejections.labels(code).inc()
        await _rejected(request, route, exc.status, code, audited=exc.status in (401, 403))
        headers = {k: v for k, v in exc.headers.items() if k in {"Allow", "WWW-Authenticate", "Retry-After"}}
        response = problems.problem(exc.status, code, exc.reason or code, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception(
            "unhandled error on %s", route, extra={"route": route, "request_id": request_id(request)}
        )
        response = problems.problem(500, "internal", "the broker hit an internal error")
    if not response.prepared:  # a WebSocket has sent its headers already
        with contextlib.suppress(CaselineError):  # a hint: never worth failing the answer over
            response.headers[REVOCATIONS_HEADER] = await request.app[REVOCATIONS].value()
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - start)
    if response.status == 408:
        await _answer_and_close(request, response)
    return response


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send the answer to a body cut for slowness, then close at once.

    aiohttp would otherwise drain the rest of the unread body for
    ``unread_body_linger`` seconds first: not worth waiting for from a sender
    that was just cut for being slow.  (aiohttp's own prepare and write_eof
    after this return at once: the answer is already out.)
    """
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()


@web.middleware
async def in_flight_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bound the requests being handled at once, per source (429) and in all (503).

    Every request counts, from its headers until its answer, body reading
    included: a client that trickles bodies holds slots only of its own
    source.  A WebSocket gives its slot back once upgraded (``routes.stream``):
    from then on it is a connection, held to the connection limits instead.
    Requests that present a session the broker holds count in a pool of their
    own, so no flood of anonymous requests from many sources can fill the
    global limit against members (only a held session's token gets in there).
    Logins, whose bodies are at most ``routes.LOGIN_BODY_BYTES``, have a pool
    bounded per source only: a slow login body holds a connection and at most
    a kilobyte, and the body pace cuts it.
    """
    admission = request.app[_pool(request)]
    source = routes.source(request)
    refused = admission.admit(source)
    if refused is not None:
        request.app[METRICS].edge_refusals.labels(f"requests-in-flight-{refused.value}").inc()
    if refused is Refusal.SOURCE:
        raise BrokerRateLimited("too many requests in flight from this source", retry_after=1.0)
    if refused is Refusal.TOTAL:
        raise web.HTTPServiceUnavailable(
            reason="the broker is handling as many requests as it may", headers={"Retry-After": "1"}
        )
    ticket = request[FLIGHT_TICKET] = Ticket(admission, source)
    try:
        return await handler(request)
    finally:
        ticket.release()


def _pool(request: web.Request) -> web.AppKey[Admission]:
    if routes.holds_session(request):
        return IN_FLIGHT_SESSIONS
    if routes.route_name(request) in routes.LOGIN_ROUTES:
        return IN_FLIGHT_LOGINS
    return IN_FLIGHT


def create_app(
    config: ServerConfig,
    *,
    server_key: SigningKey,
    store: Store | None = None,
    clock: Clock = wall_clock_ms,
) -> web.Application:
    """Build the broker application; ``store`` defaults to SQLite in the data directory."""
    check_paging(config.limits, max_frame_bytes=config.max_frame_bytes)  # refused before anything opens
    app = web.Application(
        middlewares=[problem_middleware, in_flight_middleware], client_max_size=config.limits.max_body_bytes
    )
    app[CONFIG] = config
    per_source, total = config.limits.requests_in_flight_per_source, config.limits.requests_in_flight
    for pool in (IN_FLIGHT, IN_FLIGHT_SESSIONS):
        app[pool] = Admission(per_source=per_source, total=total)
    app[IN_FLIGHT_LOGINS] = Admission(per_source=per_source, total=0)
    app[CLOCK] = clock
    app[SERVER_KEY] = server_key
    app[METRICS] = Metrics()
    app[METRICS].export_limits(config, config.limits)
    # A fresh key per process, never stored: a restart forgets which nonces were used, and with
    # them every challenge issued before it (at most a minute's logins, which simply retry).
    app[NONCE_KEY] = secrets.token_bytes(NONCE_KEY_SIZE)
    app[USED_NONCES] = UsedNonces()
    app[DEVICE_LOGINS] = DeviceLogins(config.limits.logins_per_device_per_minute)
    app[AUTH_FAILURES] = FailureLimiter(
        limit=config.limits.auth_failures_per_window, window=config.limits.auth_failure_window
    )
    app[REJECTIONS] = RejectionTally()
    pools = (IN_FLIGHT, IN_FLIGHT_SESSIONS, IN_FLIGHT_LOGINS)
    app[METRICS].requests_in_flight.set_function(lambda: sum(app[pool].open for pool in pools))
    app[SESSIONS] = {}
    the_store = store if store is not None else SqliteStore(config.db_path, max_bytes=config.db_max_bytes)
    app[STORE] = the_store
    app[REVOCATIONS] = RevocationsDigest(the_store)
    core = BrokerCore(server_key=server_key, trust=TrustStore(), limits=config.limits)
    app[CORE] = core
    broker = Broker(core=core, store=the_store, clock=clock)
    app[BROKER] = broker

    async def fetch(case_id: bytes, after: int, limit: int, max_bytes: int | None) -> list:  # type: ignore[type-arg]
        return await the_store.entries(case_id, after=after, limit=limit, max_bytes=max_bytes)

    hub = Hub(
        fetch=fetch, buffer_bytes=config.limits.stream_buffer_bytes, page_bytes=page_budget(config.limits)
    )
    app[HUB] = hub
    broker.listeners.append(hub.publish)

    async def cut_off(key: tuple[str, bytes]) -> None:
        await routes.cut_off(app, *key)

    async def close_expired(conn: Connection) -> None:
        await routes.close_expired_stream(app, conn)

    app[CUTOFFS] = Deadlines(clock, cut_off)
    app[STREAM_EXPIRY] = Deadlines(clock, close_expired)

    async def audit(event: str, detail: str) -> None:
        with contextlib.suppress(BrokerStorageFull):
            await the_store.append_audit(event, detail, time=clock())
            broker.audit_appended()  # its leaf goes into the broker log with the next batch

    app[AUDIT] = audit
    metrics = app[METRICS]
    app[BLOBS] = Blobs(
        store=the_store,
        files=FileBlobStore(config.data_dir / BLOBS_DIR),
        limits=config.limits,
        clock=clock,
        metrics=metrics,
        audit=audit,
    )

    def checkpoint_signed(size: int) -> None:
        metrics.checkpoints.inc()
        metrics.log_size.set(size)

    broker.checkpoint_listeners.append(checkpoint_signed)
    pusher: WitnessPusher | None = None
    if config.push_to_witnesses:
        pusher = WitnessPusher(
            broker=broker, store=the_store, metrics=metrics, timeout=config.witness_timeout, clock=clock
        )
        app[WITNESSING] = pusher
        broker.checkpoint_listeners.append(pusher.wake)
    metrics.witnessed_age.set_function(lambda: seconds_since_witnessed(pusher))
    app.cleanup_ctx.append(_storage_context)
    app.cleanup_ctx.append(_witness_context)
    app.cleanup_ctx.append(_retention_context)
    app.cleanup_ctx.append(_deadlines_context)
    app.cleanup_ctx.append(_rejections_context)
    app.cleanup_ctx.append(_blobs_context)
    app.on_shutdown.append(_close_streams)
    routes.setup(app)
    blob_routes.setup(app)
    return app


class _WithoutExceptionDetail(logging.Filter):
    """Keep aiohttp's connection-level events, drop the exception text attached to them.

    When its HTTP parser refuses a request, aiohttp logs a traceback whose message
    quotes the offending bytes, and a malformed header line may hold a session
    token.  The event stays ("Error handling request from ADDRESS: BadHttpMessage").
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.msg}: {type(exc).__name__}"
            record.exc_info = None
            record.exc_text = None
        return True


#: aiohttp's own request handler logs here instead of ``aiohttp.server``.
HTTP_LOG: Final = logging.getLogger("caseline.server.http")
HTTP_LOG.addFilter(_WithoutExceptionDetail())


def runner_options(config: ServerConfig) -> dict[str, object]:
    """Server settings that belong to the connection, not the app.

    aiohttp arms its keep-alive timer when a connection opens and closes the
    connection if no complete request arrived by then; a short keep-alive
    therefore doubles as the header timeout that defeats slowloris clients.
    A body the handler did not read (an early refusal) is drained for at most
    ``unread_body_linger`` seconds before the connection is closed.
    """
    return {
        "lingering_time": config.unread_body_linger,
        "keepalive_timeout": config.header_timeout,
        "access_log": ACCESS_LOG if config.access_log else None,
        "access_log_class": AccessLogger,
        "logger": HTTP_LOG,
        "max_line_size": 8190,
        "max_field_size": 8190,
        "max_headers": 64,
        "shutdown_timeout": 5.0,
    }


def make_runner(app: web.Application, config: ServerConfig, *, handle_signals: bool = False) -> web.AppRunner:
    """The runner the broker serves with: ``runner_options`` plus the connection limits (``edge.py``).

    The global connection limit, unless configured, is what the descriptor
    limit in force now leaves after ``descriptor_reserve``: ``cmd_serve``
    raises that limit before it calls this.
    """
    limits = config.limits
    connections = Admission(
        per_source=limits.connections_per_source,
        total=derived_total(limits.max_connections, descriptor_limit(), limits.descriptor_reserve),
    )
    metrics = app[METRICS]
    metrics.tcp_connections.set_function(lambda: connections.open)
    metrics.limits.labels("max_connections").set(connections.total)  # the limit in force, not -1

    def refused(why: Refusal) -> None:
        metrics.edge_refusals.labels(f"connections-{why.value}").inc()

    return EdgeRunner(
        app,
        connections=connections,
        on_refused=refused,
        trusted=parse_networks(config.trusted_proxies),
        handle_signals=handle_signals,
        **runner_options(config),
    )


async def _storage_context(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    for agency in await store.list_agencies():
        app[CORE].trust.pin(agency.agency_id, agency.root_key)
    await app[BROKER].start()
    await routes.warm_sessions(app)
    yield
    await app[BROKER].stop()
    await store.close()


async def _deadlines_context(app: web.Application) -> AsyncIterator[None]:
    """Re-arm the revocation cut-offs of the stored lists at start; drop every timer at shutdown.

    A list accepted before a restart may date a revocation after it: the cut-off
    must still happen.  Only lists the trust store adopted at start-up
    (``Broker.start``) count.  A ``revoked_at`` that passed while the broker was
    down is cut off at once (its sessions are deleted).
    """
    trust = app[CORE].trust
    if app[CONFIG].revocation_cutoff:
        for data in await app[STORE].all_revocation_lists():
            crl = RevocationList.decode(decode_signed(data)[0])
            if trust.revocation_number(crl.agency_id) != crl.number:
                continue  # refused at start-up (its agency is no longer pinned, say)
            for entry in crl.entries:
                app[CUTOFFS].set((crl.agency_id, entry.device_id), entry.revoked_at)
    yield
    for deadlines in (app[CUTOFFS], app[STREAM_EXPIRY]):
        deadlines.close()
        await deadlines.wait_closed()


async def _blobs_context(app: web.Application) -> AsyncIterator[None]:
    """Finish blob moves a crash interrupted, then collect garbage every ``blob_gc_interval_seconds``."""
    blobs = app[BLOBS]
    moved = await blobs.recover()
    if moved:
        log.info("finished moving %d complete uploads into the blob store", moved)
    interval = app[CONFIG].limits.blob_gc_interval_seconds
    task = asyncio.create_task(blobs.run(interval), name="caseline-blob-gc") if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _witness_context(app: web.Application) -> AsyncIterator[None]:
    """Push checkpoints to witnesses in the background, after storage is open (and before it closes)."""
    pusher = app.get(WITNESSING)
    if pusher is None:
        yield
        return
    await pusher.start()
    yield
    await pusher.stop()


async def _retention_context(app: web.Application) -> AsyncIterator[None]:
    """Purge update bodies past each case's signed retention period, periodically."""
    task = asyncio.create_task(_retention_loop(app), name="caseline-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def purge_expired(app: web.Application) -> int:
    """Purge every update older than its case's signed retention, plus the tolerated clock skew.

    Members accept a purged entry only once ``receipt.time + retention`` has
    passed on *their* clock (PROTOCOL.md §7.4).  Waiting ``MAX_SKEW_MS`` more
    keeps a member whose clock runs behind the broker's, within the skew the
    protocol tolerates, from refusing an honest purge; with ``retention_days``
    0 that margin is the only time a body is kept.
    """
    store, now = app[STORE], app[CLOCK]()
    purged = 0
    for case in await store.cases_with_retention():
        runtime = app[CORE].cases.get(case.case_id)
        days = runtime.state.policy.retention_days if runtime is not None else case.retention_days
        cutoff = now - days * DAY_MS - MAX_SKEW_MS
        before = await store.stored_bytes(case.case_id)
        if runtime is None or runtime.state.witnessing.rule == "none":
            count = await store.purge(case.case_id, before_time=cutoff)
        else:
            count = await _purge_witnessed(app, case.case_id, runtime.state, cutoff)
        if count:
            _give_back(app, case.case_id, before - await store.stored_bytes(case.case_id))
        purged += count
    return purged


def _give_back(app: web.Application, case_id: bytes, freed: int) -> None:
    """Purged bodies no longer count against ``case_max_bytes``.

    ``freed`` is measured around the purge, so an update written meanwhile makes
    it smaller, never larger: the count may stay above what the disk holds, never below.
    """
    runtime = app[CORE].cases.get(case_id)
    if runtime is not None and freed > 0:
        runtime.size = max(0, runtime.size - freed)


async def _purge_witnessed(app: web.Application, case_id: bytes, state: CaseState, cutoff: int) -> int:
    """A witnessed case: purge by the witnesses' time, keeping receipts members accept (§7.4)."""
    store = app[STORE]
    lists = {a: app[CORE].trust.witnesses(a) for a in state.agencies}
    witnessed = retention.quorum_checkpoints(
        await store.cosigned_checkpoints(before=cutoff // 1000), state, lists, before=cutoff
    )
    if not witnessed:
        return 0
    rows = [r for r in await app[BROKER].all_entries(case_id) if r.kind == KIND_UPDATE]
    return await store.purge_with_receipts(case_id, retention.purge_plan(rows, witnessed, app[BROKER].log))


async def prune_audit(app: web.Application) -> int:
    """Delete audit rows older than ``audit_retention_days``, and record that in the audit log.

    Only a prefix of rows already sealed into the broker log goes; their leaves
    stay (hashes, not text).  Age is the time in each row's *sealed leaf*, not
    the row's ``time`` column, which anyone with write access to the database
    could back-date (``core_log.plan_audit_prune``); a row that differs from its
    leaf is never deleted, and is logged as damage.  The ``audit-pruned`` row
    names the first row kept and the cut-off, so ``audit verify`` tells rows
    retention removed from rows someone deleted.
    """
    days = app[CONFIG].audit_retention_days
    if days <= 0:
        return 0
    cutoff = app[CLOCK]() - days * DAY_MS
    store, tree, size = app[STORE], app[BROKER].log.tree, app[BROKER].log.size
    plan = plan_audit_prune(await store.audit_rows(), tree.leaf, size, before_time=cutoff)
    if plan.mismatched:
        log.error(
            "audit row %d differs from its leaf in the broker log: not pruned; run audit verify",
            plan.mismatched[0],
        )
    if not plan.rows:
        return 0
    pruned = await store.prune_audit(plan.rows)
    if pruned:
        await app[AUDIT]("audit-pruned", prune_detail(plan, before_time=cutoff, days=days))
    else:
        log.error("audit rows changed while being pruned: none deleted; run audit verify")
    return pruned


async def _retention_loop(app: web.Application) -> None:
    while True:
        try:
            purged = await purge_expired(app)
            if purged:
                log.info("retention purged %d update bodies", purged)
            pruned = await prune_audit(app)
            if pruned:
                log.info("retention pruned %d audit rows", pruned)
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(app[CONFIG].retention_interval)


async def flush_rejections(app: web.Application) -> int:
    """Write the tally of failed authentications: one ``rejected`` row per source (``failures.py``)."""
    details = app[REJECTIONS].drain()
    for detail in details:
        await app[AUDIT]("rejected", detail)
    return len(details)


async def _flush_loop(app: web.Application, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await flush_rejections(app)
        except Exception:
            log.exception("writing the rejection tally failed")


async def _rejections_context(app: web.Application) -> AsyncIterator[None]:
    """Flush the failure tally every ``audit_flush_interval`` seconds, and once more at shutdown.

    Registered after storage, so its cleanup runs first: the last tally is
    written, and sealed by the broker's stop, before the store closes.
    """
    interval = app[CONFIG].audit_flush_interval
    task = (
        asyncio.create_task(_flush_loop(app, interval), name="caseline-rejections") if interval > 0 else None
    )
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        await flush_rejections(app)
    except Exception:
        log.exception("writing the last rejection tally failed")


async def _close_streams(app: web.Application) -> None:
    hub = app[HUB]
    for conns in list(hub.by_device.values()):
        for conn in list(conns):
            hub.close(conn, 1001, "broker shutting down")
