"""Hostile input at the edge: every route and the WebSocket stream, fuzzed with Hypothesis.

A real broker on loopback (pytest-aiohttp), with real agencies, officers and a
case.  For every route in the application's own router, Hypothesis sends
malformed, truncated, mutated, oversized and type-confused msgpack bodies, bad
path parameters, bad query strings and bad or absent credentials.  The
property: the answer is never a 5xx; every refusal is ``application/problem+json``
with a ``type`` URI and no stack trace; a request that changes state is always
refused; and no SQLite table changes (the audit log may only gain the security
events it records by design).  On the stream: malformed, text, oversized and
wrong-tag frames get a close with a reason code or a problem answer, never a
crash, and another member's stream keeps delivering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import string
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgpack
import pytest
from aiohttp import web
from caseline.crypto.auth import answer_challenge
from caseline.crypto.keys import SigningKey
from caseline.schemas.api import ChallengeRequest, Cursor, PostResult, PostUpdate, Subscribe
from caseline.schemas.codec import unpack
from caseline.schemas.wire import AuditLeaf
from caseline.server.app import create_app, make_runner
from caseline.server.config import ServerConfig
from caseline.server.core import Limits, token_hash
from caseline.server.keys import CONFIG, STORE
from caseline.server.problems import CONTENT_TYPE, TYPE_BASE
from caseline.server.sqlite_store import SqliteStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import Deployment
from tests.support.broker import MSGPACK, Officer

MAX_BODY = 16 * 1024
MAX_FRAME = 8 * 1024
#: The audit log records refused logins and security rejections by design; nothing else may appear.
AUDITED_ON_REFUSAL = {"rejected", "login-failed"}

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # a fixed, reproducible sample: the suite stays deterministic
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Make = Callable[..., Awaitable[Deployment]]


# --------------------------------------------------------------------------- the scene


@dataclasses.dataclass
class Scene:
    d: Deployment
    alice: Officer  # owner of the case
    bob: Officer  # member
    case_id: bytes
    real_bodies: dict[str, bytes]  # valid bodies of each kind, only ever sent altered


async def build(make_deployment: Make) -> Scene:
    d = await make_deployment(
        limits=Limits(
            max_body_bytes=MAX_BODY,
            updates_per_second=1e6,
            update_burst=1e6,
            bytes_per_second=1e9,
            bytes_burst=1e9,
            anonymous_per_second=1e6,
            anonymous_burst=1e6,
            connections_per_device=1000,
        ),
        max_frame_bytes=MAX_FRAME,
    )
    alice = await d.officer("ke-kra", "alice")
    bob = await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    await bob.sync(case_id)
    w = d.world
    r = await d.client.post(
        "/v1/auth/challenge", data=ChallengeRequest(device_id=bob.id).encode(), headers=MSGPACK
    )
    login = answer_challenge(bob.device.keys, await r.read(), server_key=d.server_key.public_key)
    carol = w.device("ke-kra", "carol")
    real = {
        "envelope": bob.seal(case_id, "never posted as is"),  # bob never posts here
        "cert": carol.cert,
        "crl": w.revoke(w.device("tz-tra", "lost")),
        "challenge": ChallengeRequest(device_id=bob.id).encode(),
        "login": login,
        "genesis": await _genesis(alice, bob),
        "commit": await _commit(alice, case_id, carol),
        "subscribe": Subscribe(cursors=(Cursor(case_id=case_id, after=0),)).encode(),
    }
    return Scene(d, alice, bob, case_id, real)


async def _genesis(alice: Officer, bob: Officer) -> bytes:
    from caseline.crypto.commits import create_commit, log_anchor
    from caseline.schemas.wire import LogPosition

    w, trust = alice.world, alice.world.trust()
    case_id = w.rng(16)
    body, _ = create_commit(
        prev=None,
        case_id=case_id,
        committer=alice.device.keys,
        roster=[(trust.verify_cert(alice.device.cert, at=w.now), "owner")],
        policy=alice.policy(),
        log=LogPosition(count=0, head=log_anchor(case_id)),
        info=None,
        now=w.now,
        rng=w.rng,
    )
    return body


async def _commit(alice: Officer, case_id: bytes, carol: Any) -> bytes:
    from caseline.crypto.commits import create_commit

    w, trust = alice.world, alice.world.trust()
    view = alice.views[case_id]
    assert view.state is not None
    body, _ = create_commit(
        prev=view.state,
        case_id=case_id,
        committer=alice.device.keys,
        roster=[(trust.verify_cert(alice.device.cert, at=w.now), "owner"), (w.verified(carol), "member")],
        policy=view.state.policy,
        log=view.position(),
        info=None,
        now=w.now,
        rng=w.rng,
    )
    return body


async def tables(d: Deployment) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, straight from SQLite."""
    store = d.app[STORE]
    assert isinstance(store, SqliteStore)
    cursor = await store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    names = [row[0] for row in await cursor.fetchall()]
    out = {}
    for name in names:
        rows = await (await store.db.execute(f'SELECT * FROM "{name}"')).fetchall()  # noqa: S608 - names from sqlite_master
        out[name] = sorted(tuple(r) for r in rows)
    return out


def assert_unchanged(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> None:
    assert before.keys() == after.keys()
    for name, rows in before.items():
        if name == "audit":
            assert after[name][: len(rows)] == rows, "audit log rewritten"
            added = {row[2] for row in after[name][len(rows) :]}
            assert added <= AUDITED_ON_REFUSAL, added
        elif name == "log_leaves":
            # A refusal's audit row is sealed into the broker log (issue 12): only audit
            # leaves may follow, and nothing before them may change.
            assert after[name][: len(rows)] == rows, "broker log rewritten"
            for _, leaf in after[name][len(rows) :]:
                AuditLeaf.decode(leaf)
        elif name == "checkpoints":
            assert after[name][: len(rows)] == rows, "checkpoints rewritten"
        else:
            assert after[name] == rows, f"table {name} changed"


# --------------------------------------------------------------------------- strategies

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=24)
    | st.binary(max_size=48)
)
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=16,
)


@st.composite
def type_confused(draw: st.DrawFn) -> bytes:
    """Something shaped like a wire object: ``[version, tag, fields...]`` of the wrong kinds."""
    head = [draw(st.integers(0, 2) | leaves), draw(st.integers(0, 40) | leaves)]
    return msgpack.packb(head + draw(st.lists(trees, max_size=12)), use_bin_type=draw(st.booleans()))


@st.composite
def mutated(draw: st.DrawFn, real: bytes) -> bytes:
    """A real body changed for sure: truncated, a byte flipped, bytes inserted, or re-wrapped."""
    how = draw(mostly(st.just("flip"), st.sampled_from(["truncate", "insert", "wrap", "append"])))
    if how == "truncate":
        return real[: draw(st.integers(0, len(real) - 1))]
    if how == "flip":
        i = draw(st.integers(0, len(real) - 1))
        return real[:i] + bytes([real[i] ^ draw(st.integers(1, 255))]) + real[i + 1 :]
    if how == "insert":
        i = draw(st.integers(0, len(real)))
        return real[:i] + draw(st.binary(min_size=1, max_size=8)) + real[i:]
    if how == "wrap":
        return msgpack.packb([real, draw(trees)], use_bin_type=True)
    return real + draw(st.binary(min_size=1, max_size=8))


def bodies(real: dict[str, bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        type_confused(),
        st.builds(lambda t: msgpack.packb(t, use_bin_type=True), trees),
        st.sampled_from(list(real.values())).flatmap(mutated),
        st.sampled_from(
            [
                b"",
                b"\xc6\xff\xff\xff\xff",  # bin 32 declaring 4 GiB
                b"\xdd\xff\xff\xff\xff",  # array 32 declaring 4 billion items
                b"\xdb\xff\xff\xff\xff" + b"a" * 8,  # str 32, lying
                b"\x91" * 5000,  # deep nesting
                b"\x00" * (MAX_BODY + 1),  # over the body limit
            ]
        ),
    )


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four (a plain ``|`` would flatten and weigh every branch of ``other``)."""
    return st.tuples(st.booleans(), st.booleans()).flatmap(lambda b: other if b[0] and b[1] else usual)


content_types = mostly(
    st.just("application/msgpack"),
    st.sampled_from(["application/json", "text/plain", "application/x-msgpack", "multipart/form-data", ""]),
)

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
bad_auth = st.one_of(
    st.none(),
    st.just("Bearer"),
    st.just("Bearer "),
    st.builds(
        lambda t: f"Bearer {t}",
        st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=43, max_size=43),
    ),
    st.builds(lambda t: f"Bearer {t}", st.text(alphabet=string.ascii_letters, min_size=65, max_size=200)),
    st.builds(lambda t: f"Basic {t}", printable),
    printable,
)

hostile_segment = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdefABCDEFxyz", min_size=30, max_size=34),
    st.sampled_from(
        ["..", ".", "%00", "ke-kra/../tz-tra", "KE-KRA", "-", "a" * 300, "\u0663" * 32, "ff" * 16]
    ),
)

#: Characters Python calls digits (``str.isdigit``) that are not ASCII: "²", "①", "٣", ...
odd_digits = st.text(
    alphabet=st.characters(categories=("No", "Nd"), exclude_characters="0123456789"), min_size=1, max_size=4
)
queries = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["after", "limit"]), odd_digits, min_size=1, max_size=2),
    st.dictionaries(
        st.sampled_from(["after", "limit", "x", ""]), printable | st.text(max_size=20), max_size=3
    ),
    st.builds(
        lambda a, b: f"after={a}&limit={b}", st.integers(-(10**30), 10**30), st.integers(-(10**30), 10**30)
    ),
    st.sampled_from(
        ["after=-1", "after=1e3", "after=%00", "limit=99999999999999999999", "after=1&after=2", "%zz", "&&=="]
    ),
)


def on_this_loop() -> Callable[[Coroutine[Any, Any, None]], None]:
    """Hypothesis drives sync tests: it runs in a worker thread and each example runs here, on
    the loop that serves the broker and its test client."""
    loop = asyncio.get_running_loop()

    def run(coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    return run


def routes(d: Deployment) -> list[tuple[str, str]]:
    return sorted(
        (r.method, r.resource.canonical)
        for r in d.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    )


async def check_problem(r: aiohttp.ClientResponse, what: object) -> None:
    assert r.status < 500, (what, r.status, await r.text())
    if r.status >= 400:
        assert r.content_type == CONTENT_TYPE, (what, r.status, r.content_type)
        problem = json.loads(await r.read())
        assert problem["type"].startswith(TYPE_BASE), problem
        assert problem["status"] == r.status
        assert "Traceback" not in problem["detail"]


# --------------------------------------------------------------------------- HTTP

#: Every route, with the real body (if any) whose altered copies it is sent most often.
ROUTES = {
    ("GET", "/healthz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/v1/agencies"): None,
    ("GET", "/v1/agencies/{agency_id}"): None,
    ("GET", "/v1/agencies/{agency_id}/revocations"): None,
    ("GET", "/v1/cases"): None,
    ("GET", "/v1/cases/{case_id}/entries"): None,
    ("GET", "/v1/directory/{agency_id}/{user_id}"): None,
    ("GET", "/v1/server"): None,
    ("GET", "/v1/stream"): None,
    ("POST", "/v1/auth/challenge"): "challenge",
    ("POST", "/v1/auth/logout"): None,
    ("POST", "/v1/auth/session"): "login",
    ("POST", "/v1/cases"): "genesis",
    ("POST", "/v1/cases/{case_id}/commits"): "commit",
    ("POST", "/v1/cases/{case_id}/updates"): "envelope",
    ("POST", "/v1/devices"): "cert",
    ("PUT", "/v1/agencies/{agency_id}/revocations"): "crl",
    ("GET", "/v1/agencies/{agency_id}/witnesses"): None,
    ("PUT", "/v1/agencies/{agency_id}/witnesses"): "crl",
    ("GET", "/v1/log/checkpoint"): None,
    ("GET", "/v1/log/witnessed"): None,
    ("GET", "/v1/log/proof/inclusion"): None,
    ("GET", "/v1/log/proof/consistency"): None,
    ("GET", "/v1/log/leaves"): None,
    ("POST", "/v1/cases/{case_id}/uploads"): None,
    ("GET", "/v1/cases/{case_id}/uploads/{upload_id}"): None,
    ("PATCH", "/v1/cases/{case_id}/uploads/{upload_id}"): None,
    ("DELETE", "/v1/cases/{case_id}/uploads/{upload_id}"): None,
    ("GET", "/v1/cases/{case_id}/blobs/{address}"): None,
}


async def test_every_route_is_fuzzed(deployment: Deployment) -> None:
    assert routes(deployment) == sorted(ROUTES)


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_hostile_requests_are_problems_and_change_nothing(
    route: tuple[str, str], make_deployment: Make
) -> None:
    method, template = route
    scene = await build(make_deployment)
    d = scene.d
    valid = {
        "agency_id": "ke-kra",
        "user_id": "alice",
        "case_id": scene.case_id.hex(),
        "upload_id": "ab" * 16,
        "address": "cd" * 32,
    }
    # A valid session only where the route cannot act on it alone (logout would log out).
    # Mostly valid parameters and session, so most examples reach the handler's own checks.
    session = st.just(f"Bearer {scene.alice.token}")
    auth = bad_auth if template == "/v1/auth/logout" else mostly(session, bad_auth)
    seen: list[int] = []
    own = ROUTES[route]
    body_strategy = bodies(scene.real_bodies)
    if own is not None:
        body_strategy = mostly(mutated(scene.real_bodies[own]), body_strategy)

    @FUZZ
    @given(
        params=st.fixed_dictionaries({k: mostly(st.just(v), hostile_segment) for k, v in valid.items()}),
        query=queries,
        authorization=auth,
        content_type=content_types,
        body=body_strategy,
    )
    def attempt(
        params: dict[str, str], query: Any, authorization: str | None, content_type: str, body: bytes
    ) -> None:
        run(one(params, query, authorization, content_type, body))

    async def one(
        params: dict[str, str], query: Any, authorization: str | None, content_type: str, body: bytes
    ) -> None:
        path = template
        for name, value in params.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        url = URL(path, encoded=True)
        if isinstance(query, str):
            url = URL(f"{path}?{query}", encoded=True)
        elif query:
            url = url.with_query(query)
        headers = {"Content-Type": content_type} if content_type else {}
        if authorization is not None:
            headers["Authorization"] = authorization
        before = await tables(d)
        data = body if method != "GET" else None
        async with d.client.request(method, url, data=data, headers=headers) as r:
            await check_problem(r, (method, str(url), body[:24]))
            if method != "GET":
                assert r.status >= 400, (method, str(url), body[:24], r.status)
            seen.append(r.status)
        assert_unchanged(before, await tables(d))

    run = on_this_loop()
    await asyncio.to_thread(attempt)
    assert seen
    if template not in {"/healthz", "/v1/server", "/v1/agencies"}:  # public, and take no input
        assert any(s >= 400 for s in seen)
    # The broker still serves its members after all that.
    await scene.alice.say(scene.case_id, "still here")
    assert (await scene.bob.sync(scene.case_id)).count == 2


# --------------------------------------------------------------------------- WebSocket

#: Closing codes the broker may answer hostile frames with: protocol error, unsupported
#: data, invalid payload, policy, too big, and our own "no subscribe in time".
REASON_CODES = {1002, 1003, 1007, 1008, 1009, 4000}


@st.composite
def frames(draw: st.DrawFn, case_id: bytes, real: dict[str, bytes]) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["text", "binary", "oversized", "subscribe", "post", "wrong-tag"]))
    if kind == "text":
        return kind, draw(st.text(max_size=64))
    if kind == "binary":
        return kind, draw(bodies(real).filter(lambda b: len(b) <= MAX_FRAME))
    if kind == "oversized":
        return kind, b"\x00" * (MAX_FRAME + draw(st.integers(1, 4096)))
    if kind == "subscribe":
        cursors = draw(
            st.lists(
                st.builds(
                    Cursor,
                    case_id=st.just(case_id) | st.binary(min_size=16, max_size=16),
                    after=st.integers(0, 2**63 - 1),
                ),
                max_size=4,
            )
        )
        return kind, Subscribe(cursors=tuple(cursors)).encode()
    if kind == "post":
        post = PostUpdate(
            request_id=draw(st.integers(0, 2**63 - 1)),
            case_id=draw(st.just(case_id) | st.binary(min_size=16, max_size=16)),
            envelope=draw(mutated(real["envelope"]) | st.binary(max_size=256)),
        )
        return kind, post.encode()
    tag = draw(st.integers(0, 40).filter(lambda t: t not in (30, 33)))
    return kind, msgpack.packb([1, tag, *draw(st.lists(trees, max_size=4))], use_bin_type=True)


async def read_until(ws: aiohttp.ClientWebSocketResponse, request_id: int) -> int | None:
    """Read the server's answers: every PostResult must be a problem, until ``request_id`` answers.

    Returns the close code if the server closed instead.
    """
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        obj = unpack(msg.data)
        if obj[1] != PostResult.TAG:
            continue  # deliveries and notices of the case
        result = PostResult.decode(msg.data)
        assert 400 <= result.status < 500, result
        assert result.problem and not result.receipt
        if result.request_id == request_id:
            return None


async def test_hostile_stream_frames_are_closed_or_answered_and_others_keep_working(
    make_deployment: Make,
) -> None:
    scene = await build(make_deployment)
    d, alice, bob = scene.d, scene.alice, scene.bob
    bob_ws = await bob.client.ws_connect("/v1/stream", headers={"Authorization": f"Bearer {bob.token}"})
    await bob_ws.send_bytes(Subscribe(cursors=(Cursor(case_id=scene.case_id, after=1),)).encode())
    probe_id = 2**62

    @settings(FUZZ, max_examples=40)
    @given(sequence=st.lists(frames(scene.case_id, scene.real_bodies), min_size=1, max_size=5))
    def attempt(sequence: list[tuple[str, Any]]) -> None:
        run(one(sequence))

    async def one(sequence: list[tuple[str, Any]]) -> None:
        before = await tables(d)
        ws = await alice.client.ws_connect("/v1/stream", headers={"Authorization": f"Bearer {alice.token}"})
        try:
            for kind, payload in sequence:
                if ws.closed:
                    break
                if kind == "text":
                    await ws.send_str(payload)
                else:
                    await ws.send_bytes(payload)
            if not ws.closed:
                # A well-formed post of a broken envelope: a live stream must answer it with a problem.
                await ws.send_bytes(
                    PostUpdate(request_id=probe_id, case_id=scene.case_id, envelope=b"\x90").encode()
                )
            code = await read_until(ws, probe_id)
            if code is not None:
                assert code in REASON_CODES, (code, [k for k, _ in sequence])
        finally:
            await ws.close()
        assert_unchanged(before, await tables(d))

    run = on_this_loop()
    await asyncio.to_thread(attempt)
    # Bob's stream was open throughout and still delivers.
    await alice.say(scene.case_id, "after the storm")
    while True:
        msg = await asyncio.wait_for(bob_ws.receive(), timeout=10)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        obj = unpack(msg.data)
        if obj[1] == 31 and obj[3][0] == 1:  # the Delivery of entry 1
            break
    await bob_ws.close()


# --------------------------------------------------------------------------- below the router

#: Requests aiohttp's HTTP parser refuses before any handler or middleware runs,
#: each carrying a session-token-like secret in the offending line.
UNPARSABLE = [
    b"GET /v1/cases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET-TOKEN-1\x7f\r\n\r\n",
    b"GET /v1/cases?SECRET-TOKEN-2" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Length: -1SECRET-TOKEN-3\r\n\r\n",
]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """The broker as ``caseline-server serve`` runs it: with its runner (``make_runner``)."""
    config = ServerConfig(data_dir=tmp_path)
    runner = make_runner(create_app(config, server_key=SigningKey(bytes(32))), config)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield "127.0.0.1", tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def test_a_request_the_http_parser_refuses_leaves_no_secret_in_the_logs(
    served: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logs a refused request with a traceback quoting the offending bytes, a header line
    with a session token among them; the broker keeps the event and drops the detail."""
    caplog.set_level("DEBUG")
    for raw in UNPARSABLE:
        reader, writer = await asyncio.open_connection(*served)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        assert answer.startswith(b"HTTP/1.")
        assert int(answer.split(b" ", 2)[1]) == 400
        assert b"SECRET-TOKEN" not in answer  # nor in the answer (issue 14, finding 8)
    assert "Error handling request" in caplog.text  # the event is still logged ...
    assert "SECRET-TOKEN" not in caplog.text  # ... without what the request carried


async def raw_request(d: Deployment, head: bytes) -> tuple[int, bytes, bytes]:
    """Send exact request bytes (what aiohttp's client will not: headers that are not UTF-8)."""
    url = d.client.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head + b"Host: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    headers, _, body = answer.partition(b"\r\n\r\n")
    return int(headers.split(b" ", 2)[1]), headers, body


async def test_a_session_token_that_is_not_utf8_is_refused(deployment: Deployment) -> None:
    """aiohttp decodes header bytes with surrogateescape; hashing such a token raised (a 500)."""
    deployment.app[CONFIG].operator_token_path.write_bytes(token_hash("the operator's token"))
    for path in (b"/v1/cases", b"/v1/stream", b"/metrics"):
        status, headers, body = await raw_request(
            deployment, b"GET " + path + b" HTTP/1.1\r\nAuthorization: Bearer \xff\xfe-not-utf8\r\n"
        )
        assert status == 401, (path, status, body)
        assert b"application/problem+json" in headers
        assert json.loads(body)["type"] == TYPE_BASE + "unauthorized"


async def test_a_page_cursor_in_other_digits_is_malformed(deployment: Deployment) -> None:
    """``"²".isdigit()`` is true but ``int("²")`` raises: the check let a ValueError through (a 500)."""
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    for query in ("after=²", "limit=¹²", "after=①"):
        r = await alice.client.get(
            URL(f"/v1/cases/{case_id.hex()}/entries?{quote(query, safe='=')}", encoded=True),
            headers=alice.headers(),
        )
        assert r.status == 400, (query, r.status)
        assert json.loads(await r.read())["type"] == TYPE_BASE + "malformed"
    r = await alice.client.get(f"/v1/cases/{case_id.hex()}/entries?after=٠", headers=alice.headers())
    assert r.status == 400  # Arabic-Indic zero: a digit to Python, not to a client in another language


@FUZZ
@given(
    value=st.builds(
        bytes.__add__,
        st.sampled_from([b"Bearer ", b"bearer ", b"Basic ", b""]),
        st.binary(min_size=1, max_size=64).filter(lambda b: b"\r" not in b and b"\n" not in b),
    )
)
def test_raw_authorization_header_bytes_never_cause_a_5xx(value: bytes) -> None:
    """Any bytes in the Authorization header: a problem (or the parser's own 400), never a 5xx."""
    asyncio.run(_raw_authorization(value))


async def _raw_authorization(value: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(data_dir=Path(tmp))
        config.operator_token_path.write_bytes(token_hash("the operator's token"))
        app = create_app(config, server_key=SigningKey(bytes(32)))
        runner = make_runner(app, config)
        await runner.setup()
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            for path in (b"/v1/cases", b"/metrics"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
                writer.write(b"Authorization: " + value + b"\r\n\r\n")
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(), timeout=10)
                writer.close()
                status = int(answer.split(b" ", 2)[1])
                assert 400 <= status < 500, (path, value, answer[:200])
                assert b"Traceback" not in answer
        finally:
            await runner.cleanup()
