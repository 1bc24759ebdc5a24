"""The access-control matrix: every route × every kind of caller.

The route list comes from the application's own router, so a new route without
a row here fails ``test_every_route_is_in_the_matrix``.  Each cell performs the
request as that caller and asserts the status and that storage changed only
where the cell says it should.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from caseline.crypto.certs import issue_revocation_list, issue_witness_list
from caseline.crypto.commits import create_commit, log_anchor
from caseline.crypto.keys import AgencyRootKey
from caseline.schemas.api import (
    UPLOAD_OFFSET_HEADER,
    UPLOAD_PART_TYPE,
    ChallengeRequest,
    UploadRequest,
    UploadState,
)
from caseline.schemas.wire import LogPosition
from caseline.server.core import token_hash
from caseline.server.keys import CONFIG, STORE

from tests.conftest import Deployment
from tests.support.broker import MSGPACK, Officer
from tests.test_updates import ALERT

PRINCIPALS = (
    "anonymous",
    "malformed",
    "expired",
    "revoked",
    "unregistered",
    "other-case",
    "non-member",
    "member",
    "bot-no-scope",
    "owner",
    "operator",
)
SESSION = {"other-case", "non-member", "member", "bot-no-scope", "owner"}
STRANGERS = {"other-case", "non-member"}  # sessions that are not members of the scene's case


@dataclasses.dataclass
class Scene:
    d: Deployment
    case_hex: str
    headers: dict[str, dict[str, str]]
    officers: dict[str, Officer]
    member_update: bytes  # sealed once; strangers present it as theirs


async def build(d: Deployment) -> Scene:
    w = d.world
    owner = await d.officer("ke-kra", "owner")
    member = await d.officer("tz-tra", "member")
    bot = await d.officer("ke-kra", "scanner", role="bot", scopes=("alert",))
    other = await d.officer("tz-tra", "other")
    nonmember = await d.officer("ke-kra", "stranger")
    revoked = await d.officer("tz-tra", "lost")
    expired = await d.officer("ke-kra", "late")
    case_id = await owner.create_case(
        [(member.device, "member"), (bot.device, "member"), (revoked.device, "member")]
    )
    await member.sync(case_id)
    # The bot may not read over the broker (no ``read`` scope); it follows the owner's copy.
    page = await owner.entries(case_id)
    bot_view = bot.views.setdefault(
        case_id,
        __import__("caseline.crypto.caselog", fromlist=["CaseView"]).CaseView(
            trust=w.trust(), me=bot.device.keys
        ),
    )
    for e in page.entries:
        bot_view.apply(seq=e.seq, kind=e.kind, body=e.body, now=w.now, receipt=e.receipt)
    await other.create_case([])
    crl = w.revoke(revoked.device)
    r = await d.client.put("/v1/agencies/tz-tra/revocations", data=crl, headers=MSGPACK)
    assert r.status == 204
    # An expired session: written as it would be after its time passed.
    await d.app[STORE].add_session(
        __import__("caseline.server.store", fromlist=["SessionRow"]).SessionRow(
            token_hash=token_hash("e" * 43), device_id=expired.id, expires_at=w.now - 1
        )
    )
    operator_token = secrets.token_urlsafe(32)
    d.app[CONFIG].operator_token_path.write_bytes(token_hash(operator_token))

    def bearer(token: str) -> dict[str, str]:
        return {**MSGPACK, "Authorization": f"Bearer {token}"}

    headers = {
        "anonymous": dict(MSGPACK),
        "malformed": bearer("not a token at all"),
        "expired": bearer("e" * 43),
        "revoked": bearer(revoked.token),
        "unregistered": bearer(secrets.token_urlsafe(32)),
        "other-case": other.headers(),
        "non-member": nonmember.headers(),
        "member": member.headers(),
        "bot-no-scope": bot.headers(),
        "owner": owner.headers(),
        "operator": bearer(operator_token),
    }
    officers = {
        "owner": owner,
        "member": member,
        "bot-no-scope": bot,
        "other-case": other,
        "non-member": nonmember,
    }
    return Scene(d, case_id.hex(), headers, officers, member.seal(case_id, "from the member"))


async def snapshot(d: Deployment) -> tuple[object, ...]:
    store = d.app[STORE]
    cases = await store.case_ids()
    entries = [len(await store.entries(c, after=0, limit=100_000)) for c in cases]
    crls = await store.all_revocation_lists()
    return (tuple(cases), tuple(entries), tuple(crls))


Request = Callable[[Scene, str], Awaitable[int]]


def _genesis(s: Scene) -> bytes:
    owner = s.officers["owner"]
    w = s.d.world
    trust = w.trust()
    case_id = w.rng(16)
    body, _ = create_commit(
        prev=None,
        case_id=case_id,
        committer=owner.device.keys,
        roster=[(trust.verify_cert(owner.device.cert, at=w.now), "owner")],
        policy=owner.policy(),
        log=LogPosition(count=0, head=log_anchor(case_id)),
        info=None,
        now=w.now,
        rng=w.rng,
    )
    return body


def _commit(s: Scene) -> bytes:
    owner = s.officers["owner"]
    view = owner.views[bytes.fromhex(s.case_hex)]
    assert view.state is not None
    body, _ = create_commit(
        prev=view.state,
        case_id=view.state.case_id,
        committer=owner.device.keys,
        roster=[
            (view.state.certs[d], m.role)
            for d, m in view.state.members.items()
            if s.d.world.trust().revoked_at(view.state.certs[d].cert) is None  # owners drop revoked devices
        ],
        policy=view.state.policy,
        log=view.position(),
        info=None,
        now=s.d.world.now,
        rng=s.d.world.rng,
    )
    return body


def _update(s: Scene, who: str) -> bytes:
    officer = s.officers.get(who)
    case_id = bytes.fromhex(s.case_hex)
    if officer is None or case_id not in officer.views or who == "member":
        return s.member_update
    if who == "bot-no-scope":
        view = officer.views[case_id]
        return view.seal(
            content_type="alert", content=ALERT, now=s.d.world.now, nonce=s.d.world.rng(24)
        ).envelope
    return officer.seal(case_id, f"from {who}")


async def call(s: Scene, who: str, method: str, path: str, body: bytes | None = None, **headers: str) -> int:
    r = await s.d.client.request(method, path, data=body, headers={**s.headers[who], **headers})
    await r.read()
    return r.status


async def _owner_upload(s: Scene) -> str:
    """An upload of the owner's in the scene's case (made once): only the owner may touch it."""
    if "upload" not in s.__dict__:
        owner = s.officers["owner"]
        r = await s.d.client.post(
            f"/v1/cases/{s.case_hex}/uploads",
            data=UploadRequest(length=4096).encode(),
            headers=owner.headers(),
        )
        assert r.status == 201, await r.text()
        s.__dict__["upload"] = UploadState.decode(await r.read()).upload_id.hex()
    return f"/v1/cases/{s.case_hex}/uploads/{s.__dict__['upload']}"


async def _blob(s: Scene) -> str:
    """A complete blob in the scene's case (made once)."""
    if "blob" not in s.__dict__:
        owner = s.officers["owner"]
        r = await s.d.client.post(
            f"/v1/cases/{s.case_hex}/uploads",
            data=UploadRequest(length=100).encode(),
            headers=owner.headers(),
        )
        path = r.headers["Location"]
        r = await s.d.client.patch(
            path,
            data=bytes(100),
            headers={**owner.headers(), "Content-Type": UPLOAD_PART_TYPE, UPLOAD_OFFSET_HEADER: "0"},
        )
        assert r.status == 200, await r.text()
        s.__dict__["blob"] = UploadState.decode(await r.read()).address.hex()
    return f"/v1/cases/{s.case_hex}/blobs/{s.__dict__['blob']}"


def _on_upload(method: str) -> Request:
    async def request(s: Scene, who: str) -> int:
        return await call(s, who, method, await _owner_upload(s))

    return request


async def _get_blob(s: Scene, who: str) -> int:
    return await call(s, who, "GET", await _blob(s))


async def _patch(s: Scene, who: str) -> int:
    path = await _owner_upload(s)
    part = {"Content-Type": UPLOAD_PART_TYPE, UPLOAD_OFFSET_HEADER: "0"}
    return await call(s, who, "PATCH", path, bytes(1024), **part)


# route -> (request, {principal: expected status}, principals whose call may change storage)
def matrix() -> dict[tuple[str, str], tuple[Request, dict[str, int], set[str]]]:
    public200 = dict.fromkeys(PRINCIPALS, 200)
    session = {p: (200 if p in SESSION else 401) for p in PRINCIPALS}
    log = {p: (200 if p in SESSION or p == "anonymous" else 401) for p in PRINCIPALS}
    forbidden_unless = lambda allowed, ok: {  # noqa: E731
        p: (ok if p in allowed else 403 if p in SESSION else 401) for p in PRINCIPALS
    }
    # A route naming a case: a non-member is answered as for a case that does not exist (404),
    # a member the case's rules or its certificate refuse gets 403 (issue 14, finding 10).
    case_route = lambda allowed, ok: {  # noqa: E731
        p: (ok if p in allowed else 404 if p in STRANGERS else 403 if p in SESSION else 401)
        for p in PRINCIPALS
    }
    own_upload = lambda ok: {  # noqa: E731
        p: (ok if p == "owner" else 404 if p in SESSION else 401) for p in PRINCIPALS
    }
    return {
        ("GET", "/healthz"): (lambda s, p: call(s, p, "GET", "/healthz"), public200, set()),
        ("GET", "/metrics"): (
            lambda s, p: call(s, p, "GET", "/metrics"),
            {p: (200 if p == "operator" else 401) for p in PRINCIPALS},
            set(),
        ),
        ("GET", "/v1/server"): (lambda s, p: call(s, p, "GET", "/v1/server"), public200, set()),
        ("GET", "/v1/agencies"): (lambda s, p: call(s, p, "GET", "/v1/agencies"), public200, set()),
        ("GET", "/v1/agencies/{agency_id}"): (
            lambda s, p: call(s, p, "GET", "/v1/agencies/ke-kra"),
            public200,
            set(),
        ),
        ("GET", "/v1/agencies/{agency_id}/revocations"): (
            lambda s, p: call(s, p, "GET", "/v1/agencies/tz-tra/revocations"),
            public200,
            set(),
        ),
        ("PUT", "/v1/agencies/{agency_id}/revocations"): (
            # Authorised by the agency's signature, not by a session: a list signed by
            # the wrong root is refused whoever sends it.
            lambda s, p: call(
                s,
                p,
                "PUT",
                "/v1/agencies/tz-tra/revocations",
                issue_revocation_list(
                    __import__("caseline.crypto.keys", fromlist=["AgencyRootKey"]).AgencyRootKey(
                        "tz-tra", s.d.world.rng(32)
                    ),
                    number=99,
                    issued_at=s.d.world.now,
                    entries=[],
                ),
            ),
            dict.fromkeys(PRINCIPALS, 422),
            set(),
        ),
        ("POST", "/v1/devices"): (
            lambda s, p: call(s, p, "POST", "/v1/devices", s.officers["member"].device.cert),
            dict.fromkeys(PRINCIPALS, 204),
            set(),
        ),
        ("GET", "/v1/directory/{agency_id}/{user_id}"): (
            # Another agency's certificates are for devices that read: not a bot without ``read``.
            lambda s, p: call(s, p, "GET", "/v1/directory/ke-kra/owner"),
            forbidden_unless(SESSION - {"bot-no-scope"}, 200),
            set(),
        ),
        ("POST", "/v1/auth/challenge"): (
            lambda s, p: call(
                s,
                p,
                "POST",
                "/v1/auth/challenge",
                ChallengeRequest(device_id=s.officers["member"].id).encode(),
            ),
            public200,
            set(),
        ),
        ("POST", "/v1/auth/session"): (
            lambda s, p: call(s, p, "POST", "/v1/auth/session", b"\x92\xc4\x00\xc4\x40" + bytes(64)),
            dict.fromkeys(PRINCIPALS, 400),
            set(),
        ),
        ("POST", "/v1/auth/logout"): (
            lambda s, p: call(s, p, "POST", "/v1/auth/logout"),
            {p: (204 if p in SESSION else 401) for p in PRINCIPALS},
            set(),
        ),
        ("GET", "/v1/cases"): (lambda s, p: call(s, p, "GET", "/v1/cases"), session, set()),
        ("POST", "/v1/cases"): (
            lambda s, p: call(s, p, "POST", "/v1/cases", _genesis(s)),
            forbidden_unless({"owner"}, 201),
            {"owner"},
        ),
        ("POST", "/v1/cases/{case_id}/commits"): (
            lambda s, p: call(s, p, "POST", f"/v1/cases/{s.case_hex}/commits", _commit(s)),
            case_route({"owner"}, 201),
            {"owner"},
        ),
        ("POST", "/v1/cases/{case_id}/updates"): (
            # The broker cannot see content types, so a bot's content scopes are
            # enforced by clients (test_updates.py); here a member bot may post.
            lambda s, p: call(s, p, "POST", f"/v1/cases/{s.case_hex}/updates", _update(s, p)),
            case_route({"owner", "member", "bot-no-scope"}, 201),
            {"owner", "member", "bot-no-scope"},
        ),
        # Attachments: uploads need a member that may post (a bot may, an observer may not); an
        # upload is only its own device's (another member gets 404); downloads need read access.
        ("POST", "/v1/cases/{case_id}/uploads"): (
            lambda s, p: call(
                s, p, "POST", f"/v1/cases/{s.case_hex}/uploads", UploadRequest(length=10).encode()
            ),
            case_route({"owner", "member", "bot-no-scope"}, 201),
            set(),
        ),
        ("GET", "/v1/cases/{case_id}/uploads/{upload_id}"): (
            _on_upload("GET"),
            own_upload(200),
            set(),
        ),
        ("PATCH", "/v1/cases/{case_id}/uploads/{upload_id}"): (_patch, own_upload(200), set()),
        ("DELETE", "/v1/cases/{case_id}/uploads/{upload_id}"): (
            _on_upload("DELETE"),
            own_upload(204),
            set(),
        ),
        ("GET", "/v1/cases/{case_id}/blobs/{address}"): (
            _get_blob,
            case_route({"owner", "member"}, 200),
            set(),
        ),
        ("GET", "/v1/cases/{case_id}/entries"): (
            lambda s, p: call(s, p, "GET", f"/v1/cases/{s.case_hex}/entries"),
            case_route({"owner", "member"}, 200),
            set(),
        ),
        # The broker log is hashes only: witnesses and monitors read it without an account,
        # but a token that is sent must be valid (issue 12).
        ("GET", "/v1/log/checkpoint"): (lambda s, p: call(s, p, "GET", "/v1/log/checkpoint"), log, set()),
        ("GET", "/v1/log/witnessed"): (
            lambda s, p: call(s, p, "GET", "/v1/log/witnessed?since=0"),
            log,
            set(),
        ),
        ("GET", "/v1/log/proof/inclusion"): (
            lambda s, p: call(s, p, "GET", "/v1/log/proof/inclusion?index=0&size=1"),
            log,
            set(),
        ),
        ("GET", "/v1/log/proof/consistency"): (
            lambda s, p: call(s, p, "GET", "/v1/log/proof/consistency?old=1&new=1"),
            log,
            set(),
        ),
        ("GET", "/v1/log/leaves"): (
            lambda s, p: call(s, p, "GET", "/v1/log/leaves?start=0&end=1"),
            session,
            set(),
        ),
        ("GET", "/v1/agencies/{agency_id}/witnesses"): (
            lambda s, p: call(s, p, "GET", "/v1/agencies/tz-tra/witnesses"),
            dict.fromkeys(PRINCIPALS, 404),
            set(),
        ),
        ("PUT", "/v1/agencies/{agency_id}/witnesses"): (
            # Like revocation lists: a list signed by the wrong root is refused, whoever sends it.
            lambda s, p: call(
                s,
                p,
                "PUT",
                "/v1/agencies/tz-tra/witnesses",
                issue_witness_list(
                    AgencyRootKey("tz-tra", s.d.world.rng(32)),
                    number=1,
                    issued_at=s.d.world.now,
                    witnesses=[],
                ),
            ),
            dict.fromkeys(PRINCIPALS, 422),
            set(),
        ),
        ("GET", "/v1/stream"): (
            # A plain GET is not a WebSocket upgrade: authenticated callers get 400.
            lambda s, p: call(s, p, "GET", "/v1/stream"),
            {p: (400 if p in SESSION else 401) for p in PRINCIPALS},
            set(),
        ),
    }


MATRIX = matrix()


def test_every_route_is_in_the_matrix(tmp_path: Path) -> None:
    from caseline.crypto.keys import SigningKey
    from caseline.server.app import create_app
    from caseline.server.config import ServerConfig

    app = create_app(ServerConfig(data_dir=tmp_path), server_key=SigningKey(bytes(32)))
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert routes == set(MATRIX)


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
async def test_route_for_every_principal(route: tuple[str, str], make_deployment) -> None:  # type: ignore[no-untyped-def]
    request, expected, may_change = MATRIX[route]
    d = await make_deployment()
    scene = await build(d)
    failures = []
    for principal in PRINCIPALS:
        before = await snapshot(d)
        status = await request(scene, principal)
        after = await snapshot(d)
        if status != expected[principal]:
            failures.append(f"{principal}: {status} (expected {expected[principal]})")
        if principal not in may_change and before != after:
            failures.append(f"{principal}: storage changed")
        if principal in may_change and status < 300 and before == after:
            failures.append(f"{principal}: accepted but nothing stored")
        if principal in may_change and status < 300:
            for name, o in scene.officers.items():
                for cid in list(o.views):
                    if name != "bot-no-scope":
                        await o.sync(cid)
    assert not failures, failures
