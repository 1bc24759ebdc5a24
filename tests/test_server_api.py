"""The broker's HTTP API end to end, against a real aiohttp server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
from caseline.crypto.caselog import verify_receipt
from caseline.schemas.api import CaseList
from caseline.server.core import Limits
from caseline.server.keys import STORE
from caseline.server.sqlite_store import SqliteStore

from tests.conftest import Deployment


async def stored_count(d: Deployment, case_id: bytes) -> int:
    return len(await d.app[STORE].entries(case_id, after=0, limit=10_000))


async def test_officers_run_a_case_and_every_view_verifies(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    await bob.sync(case_id)
    receipt = verify_receipt(await alice.say(case_id, "40 kg seized"), deployment.server_key.public_key)
    assert receipt.seq == 1
    await bob.sync(case_id)
    await bob.say(case_id, "received")
    a, b = await alice.sync(case_id), await bob.sync(case_id)
    assert a.head == b.head
    assert a.count == 3
    r = await bob.client.get("/v1/cases", headers=bob.headers())
    listed = CaseList.decode(await r.read()).cases
    assert [(c.case_id, c.role, c.count) for c in listed] == [(case_id, "member", 3)]


async def test_retry_with_same_envelope_returns_same_receipt_and_stores_nothing(
    deployment: Deployment,
) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    envelope = alice.seal(case_id, "once")
    first = await alice.post(case_id, envelope)
    second = await alice.post(case_id, envelope)
    assert first.status == 201
    assert second.status == 201
    assert await first.read() == await second.read()
    assert await stored_count(deployment, case_id) == 2


async def test_different_update_at_a_used_position_is_a_conflict(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    view = alice.views[case_id]
    first = alice.seal(case_id, "one")
    # Rewind the sender chain by hand to seal a second, different update at counter 0.
    view._send_chain = None
    view._own_last = b""
    view._last.pop(alice.id, None)
    other = alice.seal(case_id, "two")
    assert (await alice.post(case_id, first)).status == 201
    r = await alice.post(case_id, other)
    assert r.status == 409
    assert r.content_type == "application/problem+json"
    assert await stored_count(deployment, case_id) == 2


async def test_concurrent_commits_one_wins_the_other_conflicts(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    carol = await deployment.officer("ke-kra", "carol")
    bob = deployment.world.device("tz-tra", "bob")
    dave = deployment.world.device("tz-tra", "dave")
    case_id = await alice.create_case([(carol.device, "owner")])
    await carol.sync(case_id)
    r1 = await alice.change(case_id, [(alice.device, "owner"), (carol.device, "owner"), (bob, "member")])
    r2 = await carol.change(case_id, [(alice.device, "owner"), (carol.device, "owner"), (dave, "member")])
    assert sorted([r1.status, r2.status]) == [201, 409]
    body = json.loads(await (r2 if r2.status == 409 else r1).read())
    assert body["type"].endswith("/conflict")
    # The loser re-bases on the new head and retries.
    await carol.sync(case_id)
    await alice.sync(case_id)
    loser = carol if r2.status == 409 else alice
    extra = dave if loser is carol else bob
    view = loser.views[case_id]
    assert view.state is not None
    roster = [(alice.device, "owner"), (carol.device, "owner"), (bob, "member"), (dave, "member")]
    assert extra in [d for d, _ in roster]
    assert (await loser.change(case_id, roster)).status == 201


async def test_non_member_cannot_read_or_post(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    eve = await deployment.officer("ke-kra", "eve")
    case_id = await alice.create_case([])
    r = await eve.client.get(f"/v1/cases/{case_id.hex()}/entries", headers=eve.headers())
    assert r.status == 404  # as for a case that does not exist
    r = await eve.client.post(f"/v1/cases/{case_id.hex()}/updates", data=b"\x90", headers=eve.headers())
    assert r.status == 404
    assert await stored_count(deployment, case_id) == 1


async def test_stale_session_and_no_session_are_refused(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    r = await alice.client.get("/v1/cases")
    assert r.status == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    deployment.world.now += 2 * 3600 * 1000
    r = await alice.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 401


async def test_logout_kills_the_token(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    r = await alice.client.post("/v1/auth/logout", headers=alice.headers())
    assert r.status == 204
    r = await alice.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 401


async def test_revocation_kills_sessions(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    crl = deployment.world.revoke(alice.device)
    r = await alice.client.put(
        "/v1/agencies/ke-kra/revocations", data=crl, headers={"Content-Type": "application/msgpack"}
    )
    assert r.status == 204
    r = await alice.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 401
    r = await alice.client.get("/v1/agencies/ke-kra/revocations")
    assert await r.read() == crl


async def test_replayed_login_response_fails(deployment: Deployment) -> None:
    from caseline.crypto.auth import answer_challenge
    from caseline.schemas.api import ChallengeRequest

    alice = await deployment.officer("ke-kra", "alice")
    r = await alice.client.post(
        "/v1/auth/challenge",
        data=ChallengeRequest(device_id=alice.id).encode(),
        headers={"Content-Type": "application/msgpack"},
    )
    response = answer_challenge(
        alice.device.keys, await r.read(), server_key=deployment.server_key.public_key
    )
    ok = await alice.client.post(
        "/v1/auth/session", data=response, headers={"Content-Type": "application/msgpack"}
    )
    assert ok.status == 200
    again = await alice.client.post(
        "/v1/auth/session", data=response, headers={"Content-Type": "application/msgpack"}
    )
    assert again.status == 422
    assert json.loads(await again.read())["type"].endswith("/untrusted")


async def test_bad_input_is_a_problem_and_changes_nothing(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    path = f"/v1/cases/{case_id.hex()}/updates"
    good = alice.seal(case_id, "x")
    bad_bodies = [
        good[:-5],  # truncated
        good + b"\x00",  # trailing
        msgpack.packb({"a": 1}),  # a map
        msgpack.packb([good, b"x"]),  # wrong shape
        b"\xdb\xff\xff\xff\xff",  # a huge declared length
        b"\xa2\xff\xfe",  # invalid UTF-8
        msgpack.packb([1, 7, "not", "an", "envelope"]),
    ]
    for body in bad_bodies:
        r = await alice.client.post(path, data=body, headers=alice.headers())
        assert 400 <= r.status < 500, (body[:16], r.status)
        assert r.content_type == "application/problem+json"
        problem = json.loads(await r.read())
        assert problem["type"].startswith("https://caseline.example/problems/")
        assert "Traceback" not in problem["detail"]
    r = await alice.client.post(path, data=good, headers={**alice.headers(), "Content-Type": "text/plain"})
    assert r.status == 415
    r = await alice.client.post(path, data=b"\x00" * (300 * 1024), headers=alice.headers())
    assert r.status == 413
    assert await stored_count(deployment, case_id) == 1


async def test_oversized_chunked_body_is_refused(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"\x00" * 8192

    r = await alice.client.post(f"/v1/cases/{case_id.hex()}/updates", data=chunks(), headers=alice.headers())
    assert r.status == 413
    assert await stored_count(deployment, case_id) == 1


async def test_directory_serves_certificates_as_claims(deployment: Deployment) -> None:
    from caseline.schemas.api import Directory

    alice = await deployment.officer("ke-kra", "alice")
    r = await alice.client.get("/v1/directory/ke-kra/alice", headers=alice.headers())
    d = Directory.decode(await r.read())
    assert d.certs == (alice.device.cert,)
    r = await alice.client.get("/v1/directory/ke-kra/nobody", headers=alice.headers())
    assert Directory.decode(await r.read()).certs == ()
    r = await alice.client.get("/v1/directory/ke-kra/alice")
    assert r.status == 401


async def test_certificate_from_an_unregistered_agency_is_refused(deployment: Deployment) -> None:
    deployment.world.agency("ug-ura")  # known to the world, never registered with the broker
    outsider = deployment.world.device("ug-ura", "olivia")
    r = await deployment.client.post(
        "/v1/devices", data=outsider.cert, headers={"Content-Type": "application/msgpack"}
    )
    assert r.status == 422
    assert json.loads(await r.read())["type"].endswith("/untrusted")


async def test_rate_limit_answers_429_with_retry_after(make_deployment) -> None:  # type: ignore[no-untyped-def]
    from caseline.server.core import Limits

    # A burst of three: the genesis is charged too (issue 14 review, finding 5), then two updates.
    d = await make_deployment(limits=Limits(updates_per_second=1, update_burst=3))
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    statuses = [(await alice.post(case_id, alice.seal(case_id, str(i)))).status for i in range(3)]
    assert statuses[:2] == [201, 201]
    assert statuses[2] == 429
    r = await alice.post(case_id, alice.seal(case_id, "again"))
    assert int(r.headers["Retry-After"]) >= 1


async def test_member_limit(make_deployment) -> None:  # type: ignore[no-untyped-def]
    from caseline.server.core import Limits

    d = await make_deployment(limits=Limits(max_members=2))
    alice = await d.officer("ke-kra", "alice")
    others = [d.world.device("tz-tra", f"m{i}") for i in range(2)]
    trust = d.world.trust()
    from caseline.crypto.commits import create_commit, log_anchor
    from caseline.schemas.wire import LogPosition

    case_id = d.world.rng(16)
    body, _ = create_commit(
        prev=None,
        case_id=case_id,
        committer=alice.device.keys,
        roster=[(trust.verify_cert(alice.device.cert, at=d.world.now), "owner")]
        + [(trust.verify_cert(o.cert, at=d.world.now), "member") for o in others],
        policy=alice.policy(),
        log=LogPosition(count=0, head=log_anchor(case_id)),
        info=None,
        now=d.world.now,
        rng=d.world.rng,
    )
    r = await alice.client.post("/v1/cases", data=body, headers=alice.headers())
    assert r.status == 413
    assert json.loads(await r.read())["type"].endswith("/limit")


async def test_retention_purges_old_update_bodies_and_the_log_still_verifies(
    deployment: Deployment,
) -> None:
    from caseline.crypto.caselog import CaseView
    from caseline.server.app import purge_expired

    alice = await deployment.officer("ke-kra", "alice")
    bob = await deployment.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")], retention_days=1)
    await alice.say(case_id, "old news")
    deployment.world.now += 2 * 86_400_000
    await alice.login()
    await bob.login()
    await alice.sync(case_id)
    await alice.say(case_id, "fresh")
    assert await purge_expired(deployment.app) == 1
    page = await bob.entries(case_id)
    assert [e.kind for e in page.entries] == ["commit", "purged", "update"]
    fresh = CaseView(trust=deployment.world.trust(), me=bob.device.keys)
    applied = [
        fresh.apply(seq=e.seq, kind=e.kind, body=e.body, now=deployment.world.now, receipt=e.receipt)
        for e in page.entries
    ]
    assert applied[2].opened is not None
    assert applied[2].opened.record.content.endswith(b'"fresh"}')


async def test_a_partner_agency_cannot_cut_off_our_devices(deployment: Deployment) -> None:
    from caseline.crypto.certs import issue_revocation_list
    from caseline.schemas.wire import Revocation

    alice = await deployment.officer("ke-kra", "alice")
    w = deployment.world
    crl = issue_revocation_list(
        w.roots["tz-tra"],
        number=1,
        issued_at=w.now,
        entries=[Revocation(device_id=alice.id, serial=0, revoked_at=w.now - 1, reason="key-compromise")],
    )
    r = await alice.client.put(
        "/v1/agencies/tz-tra/revocations", data=crl, headers={"Content-Type": "application/msgpack"}
    )
    assert r.status == 204
    r = await alice.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 200


async def test_logins_and_registrations_are_rate_limited_per_address(make_deployment) -> None:  # type: ignore[no-untyped-def]
    from caseline.schemas.api import ChallengeRequest

    d = await make_deployment(limits=Limits(anonymous_per_second=1, anonymous_burst=3))
    body = ChallengeRequest(device_id=bytes(16)).encode()
    statuses = [
        (
            await d.client.post(
                "/v1/auth/challenge", data=body, headers={"Content-Type": "application/msgpack"}
            )
        ).status
        for _ in range(4)
    ]
    assert statuses == [404, 404, 404, 429]


async def test_full_disk_fails_cleanly_and_the_broker_recovers(make_deployment) -> None:  # type: ignore[no-untyped-def]
    """A failed write rolls the core back: nothing half-stored, no hole, and a retry works later."""
    d = await make_deployment(db_max_bytes=192 * 1024)
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    status, envelope = 201, b""
    for i in range(500):
        envelope = alice.seal(case_id, f"filler {i} " + "x" * 900)
        r = await alice.post(case_id, envelope)
        status = r.status
        if status != 201:
            problem = json.loads(await r.read())
            break
    assert status == 507
    assert problem["type"].endswith("/storage-full")
    stored = await stored_count(d, case_id)
    again = await alice.post(case_id, envelope)  # the same update: still cleanly refused
    assert again.status == 507
    assert await stored_count(d, case_id) == stored
    store = d.app[STORE]
    assert isinstance(store, SqliteStore)
    await store.db.execute("PRAGMA max_page_count=1000000")  # space returns
    ok = await alice.post(case_id, envelope)
    assert ok.status == 201
    view = await alice.sync(case_id)
    assert view.count == stored + 1


async def test_a_backdated_revocation_does_not_stop_the_broker_loading_a_case(
    make_deployment: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    from caseline.server.app import create_app
    from caseline.server.config import ServerConfig

    d = await make_deployment()
    alice = await d.officer("ke-kra", "alice")
    bob = await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    await alice.say(case_id, "before")
    crl = d.world.revoke(bob.device, at=d.world.now - 3_600_000)  # before the case existed
    r = await d.client.put(
        "/v1/agencies/tz-tra/revocations", data=crl, headers={"Content-Type": "application/msgpack"}
    )
    assert r.status == 204
    await d.client.close()  # the broker stops ...
    again = await aiohttp_client(  # ... and starts again on the same data
        create_app(ServerConfig(data_dir=tmp_path), server_key=d.server_key, clock=lambda: d.world.now)
    )
    alice.client = again  # agencies and the case come back from storage
    await alice.login()
    assert (await alice.entries(case_id)).count == 2
