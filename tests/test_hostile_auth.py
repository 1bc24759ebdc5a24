"""Authentication under hostile load (issue 14, findings 4, 5 and 7), against a real broker on loopback.

* Challenge floods from many sources fill nothing: challenges cost the broker
  no state, and an honest device logs in throughout (finding 4).
* A login response is single use, and the broker enforces the challenge expiry
  it issued, not one the device re-signed (finding 7).
* Failed authentication is counted per source, answered with 429 past a
  threshold, and audited as one row per source per interval (finding 5); old
  audit rows are deleted by retention and ``audit verify`` still passes.

Extra sources are extra loopback addresses (127.0.0.N), bound with
``local_addr``.  Floods are bounded in count, sized for a small shared machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sized
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from caseline.crypto.auth import AUTH_LABEL, CHALLENGE_TTL_MS, answer_challenge
from caseline.crypto.caselog import DAY_MS
from caseline.schemas.api import ChallengeRequest
from caseline.schemas.wire import AuthChallenge, encode_signed
from caseline.server import cli
from caseline.server.app import flush_rejections, prune_audit
from caseline.server.config import ServerConfig
from caseline.server.core import Limits
from caseline.server.failures import MAX_DETAIL, TALLY_SOURCES
from caseline.server.keys import AUDIT, CONFIG, METRICS, STORE, USED_NONCES
from caseline.server.sqlite_store import SqliteStore, audit_hash

from tests.conftest import Deployment
from tests.support.broker import MSGPACK, Officer

MakeDeployment = Callable[..., Awaitable[Deployment]]

#: The bound the issue asks for: every request of the honest device is answered within this
#: many seconds while the flood runs.  Generous on purpose: a 2-core machine shared with other
#: test runs; an unprotected broker fails by refusing (503/429), not by a few hundred ms.
HONEST_BOUND_S = 5.0
#: Distinct attacking sources (127.0.0.2 ...) and challenge requests each sends.
FLOOD_SOURCES = 250
FLOOD_PER_SOURCE = 50
#: Requests in flight at once across the whole flood: enough to keep the broker busy.
FLOOD_CONCURRENCY = 64
#: The honest device logs in this many times during the flood (within its per-minute cap).
HONEST_LOGINS = 8


def sized_state(app: web.Application) -> int:
    """Entries in every container the application keeps: what a flood could make it hold."""
    return sum(len(v) for v in app.values() if isinstance(v, Sized) and not isinstance(v, str | bytes))


async def timed(what: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse:
    """An honest request, which must be answered within ``HONEST_BOUND_S``."""
    return await asyncio.wait_for(what, timeout=HONEST_BOUND_S)


async def challenge_for(officer: Officer) -> bytes:
    r = await officer.client.post(
        "/v1/auth/challenge", data=ChallengeRequest(device_id=officer.id).encode(), headers=MSGPACK
    )
    assert r.status == 200, await r.text()
    return await r.read()


def answer(officer: Officer, challenge: bytes) -> bytes:
    return answer_challenge(officer.device.keys, challenge, server_key=officer.server_key.public_key)


async def login_with(officer: Officer, response: bytes) -> aiohttp.ClientResponse:
    return await officer.client.post("/v1/auth/session", data=response, headers=MSGPACK)


def source_session(d: Deployment, n: int) -> aiohttp.ClientSession:
    """A client whose connections come from 127.0.0.``n``: one more source to the broker."""
    connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{n}", 0), limit=4)
    return aiohttp.ClientSession(base_url=str(d.client.make_url("/")), connector=connector)


def rejections(d: Deployment, reason: str) -> float:
    value = d.app[METRICS].registry.get_sample_value("caseline_rejections_total", {"reason": reason})
    return value or 0.0


# --------------------------------------------------------------------------- finding 4: challenge floods


async def test_a_challenge_flood_from_many_sources_fills_nothing_and_an_honest_device_logs_in(
    make_deployment: MakeDeployment,
) -> None:
    """250 sources ask for challenges (for the honest device's own id, the worst case) while the
    honest device logs in again and again: every one of its logins succeeds within the bound,
    and the broker's state grows by its logins only, not by the flood.

    Defence off (a pending-challenge table, as before; with its cap lowered to the flood's
    size, its 503) → the state grows with the flood, and honest logins fail (red).
    """
    d = await make_deployment()
    honest = await d.officer("ke-kra", "alice")
    before = sized_state(d.app)
    body = ChallengeRequest(device_id=honest.id).encode()
    total = FLOOD_SOURCES * FLOOD_PER_SOURCE
    statuses: dict[int, int] = {}
    done = 0
    milestones = [asyncio.Event() for _ in range(HONEST_LOGINS)]
    gate = asyncio.Semaphore(FLOOD_CONCURRENCY)

    async def attacker(n: int) -> None:
        nonlocal done
        async with source_session(d, n) as session:
            for _ in range(FLOOD_PER_SOURCE):
                async with gate, session.post("/v1/auth/challenge", data=body, headers=MSGPACK) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                done += 1
                for i, event in enumerate(milestones):
                    if done >= total * i // HONEST_LOGINS:
                        event.set()

    async def honest_logins() -> list[float]:
        took = []
        for event in milestones:
            await event.wait()
            start = time.perf_counter()
            asked = await timed(d.client.post("/v1/auth/challenge", data=body, headers=MSGPACK))
            assert asked.status == 200, (asked.status, await asked.read())
            r = await timed(login_with(honest, answer(honest, await asked.read())))
            assert r.status == 200, (r.status, await r.read())
            took.append(time.perf_counter() - start)
        return took

    flood = asyncio.gather(*(attacker(n) for n in range(2, 2 + FLOOD_SOURCES)))
    took = await honest_logins()
    await asyncio.wait_for(flood, timeout=60)
    assert done == total
    assert set(statuses) <= {200, 429}, statuses  # never a 503: there is no table to fill
    assert statuses.get(200, 0) >= total // 2, statuses
    assert len(took) == HONEST_LOGINS and max(took) < HONEST_BOUND_S
    print(f"honest logins during the flood: slowest {max(took):.3f} s; flood answers {statuses}")
    # Per challenge, the broker kept nothing: only the honest logins left a trace (a used
    # nonce, a cached session, the per-device login count) and each source its rate bucket.
    assert sized_state(d.app) - before <= 3 * HONEST_LOGINS + 1, (before, sized_state(d.app))


# --------------------------------------------------------------------------- finding 7: the issued expiry


async def test_a_login_response_is_single_use(deployment: Deployment) -> None:
    """Replaying a response that logged in is refused.  Defence off (``UsedNonces.use`` not
    called) → the replay gets a second session (red)."""
    alice = await deployment.officer("ke-kra", "alice")
    response = answer_challenge(
        alice.device.keys, await challenge_for(alice), server_key=alice.server_key.public_key
    )
    assert (await login_with(alice, response)).status == 200
    replay = await login_with(alice, response)
    assert replay.status == 422, replay.status
    assert (await replay.json())["type"].endswith("/untrusted")
    assert len(deployment.app[USED_NONCES]) == 2  # enrolment's login and this one


def re_signed(officer: Officer, challenge: bytes, **changes: Any) -> bytes:
    """What a device that picks its own expiry sends: the challenge edited, then signed."""
    edited = dataclasses.replace(AuthChallenge.decode(challenge), **changes).encode()
    return encode_signed(edited, officer.device.keys.sign(AUTH_LABEL, edited))


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: {"expires_at": c.expires_at + 30 * 24 * 3600 * 1000},
        lambda c: {"issued_at": c.issued_at + 70_000, "expires_at": c.expires_at + 70_000},
        lambda c: {"nonce": bytes(32)},
    ],
    ids=["expiry-plus-30-days", "issued-at-moved-on", "forged-nonce"],
)
async def test_the_broker_enforces_the_challenge_it_issued_not_one_the_device_edited(
    deployment: Deployment, edit: Callable[[AuthChallenge], dict[str, object]]
) -> None:
    """The pen-test's attack: re-sign the challenge with expiry +30 days, answer 70 s late.
    Refused, as is any edited or invented challenge, before the signature is even checked.
    Defence off (``check_issued`` not called) → the re-signed expiry logs in (red)."""
    alice = await deployment.officer("ke-kra", "alice")
    challenge = await challenge_for(alice)
    response = re_signed(alice, challenge, **edit(AuthChallenge.decode(challenge)))
    deployment.world.now += 70_000
    r = await login_with(alice, response)
    assert r.status == 422, await r.text()
    assert (await r.json())["type"].endswith("/untrusted")


async def test_an_honest_answer_after_the_issued_expiry_is_refused(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    response = answer_challenge(
        alice.device.keys, await challenge_for(alice), server_key=alice.server_key.public_key
    )
    deployment.world.now += CHALLENGE_TTL_MS + 1
    r = await login_with(alice, response)
    assert r.status == 422, await r.text()
    assert (await r.json())["type"].endswith("/expired")


async def test_a_device_may_log_in_only_so_often(make_deployment: MakeDeployment) -> None:
    """Past ``logins_per_device_per_minute``, 429 with Retry-After; a minute later, logins resume.
    Defence off (0) → the extra login succeeds (red)."""
    d = await make_deployment(limits=Limits(logins_per_device_per_minute=3))
    alice = await d.officer("ke-kra", "alice")  # login 1
    for _ in range(2):
        await alice.login()
    response = answer_challenge(
        alice.device.keys, await challenge_for(alice), server_key=alice.server_key.public_key
    )
    r = await login_with(alice, response)
    assert r.status == 429, r.status
    assert int(r.headers["Retry-After"]) >= 1
    d.world.now += 60_000
    await alice.login()


# --------------------------------------------------------------------------- finding 5: failed authentication


async def test_a_401_flood_is_limited_per_source_and_audited_in_aggregate(
    make_deployment: MakeDeployment,
) -> None:
    """One source sends requests with bad tokens while an honest device posts from another.

    The source gets 429 (with Retry-After) past the threshold, before any database work; the
    honest device is served within the bound throughout; the metrics count every rejection;
    the audit log gains no row per failure, and after the flush exactly one row names the
    source and its count.  Defences off: ``auth_failures_per_window=0`` → no 429 (red);
    ``audit_flush_interval=0`` → a row per failure (red).
    """
    d = await make_deployment()
    limits = d.app[CONFIG].limits
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    store = d.app[STORE]
    rows_before = len(await store.audit_rows())
    flood = 200
    statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    honest_took: list[float] = []

    async def attack() -> None:
        async with source_session(d, 66) as session:
            for i in range(flood):
                headers = {"Authorization": f"Bearer not-a-token-{i}"}
                async with session.get("/v1/cases", headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status == 429:
                        retry_after.add(r.headers.get("Retry-After", ""))

    async def honest() -> None:
        for i in range(10):
            start = time.perf_counter()
            r = await timed(alice.post(case_id, alice.seal(case_id, f"still here {i}")))
            assert r.status == 201, await r.text()
            honest_took.append(time.perf_counter() - start)

    await asyncio.gather(attack(), honest())
    assert statuses.get(401) == limits.auth_failures_per_window, statuses
    assert statuses.get(429) == flood - limits.auth_failures_per_window, statuses
    assert "" not in retry_after and all(int(v) >= 1 for v in retry_after)
    assert max(honest_took) < HONEST_BOUND_S
    assert rejections(d, "unauthorized") == limits.auth_failures_per_window
    assert rejections(d, "rate-limited") == flood - limits.auth_failures_per_window
    # Nothing was written per failure ...
    assert len(await store.audit_rows()) - rows_before <= 2
    # ... and the flush writes one row for the source, with what it did.
    await flush_rejections(d.app)
    rows = [r for r in await store.audit_rows() if r.event == "rejected"]
    assert len(rows) == 1, rows
    assert rows[0].detail.startswith(
        f"source=127.0.0.66 count={flood} reasons=blocked:{flood - limits.auth_failures_per_window},"
        f"unauthorized:{limits.auth_failures_per_window} routes=/v1/cases"
    ), rows[0].detail
    # Another source's failures are its own: one bad request from 127.0.0.1 is a plain 401.
    r = await d.client.get("/v1/cases", headers={"Authorization": "Bearer nope"})
    assert r.status == 401


async def test_a_failing_source_does_not_lock_out_a_session_from_it(make_deployment: MakeDeployment) -> None:
    """A valid session the broker holds is served even from a source past its failure limit
    (a shared NAT): only what would need the database is refused."""
    d = await make_deployment(limits=Limits(auth_failures_per_window=3))
    alice = await d.officer("ke-kra", "alice")
    for _ in range(3):
        assert (await d.client.get("/v1/cases", headers={"Authorization": "Bearer bad"})).status == 401
    assert (await d.client.get("/v1/cases", headers={"Authorization": "Bearer bad"})).status == 429
    r = await d.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 200, await r.text()
    # Logins from the blocked source wait too; failed logins count like bad tokens.
    r = await d.client.post(
        "/v1/auth/challenge", data=ChallengeRequest(device_id=alice.id).encode(), headers=MSGPACK
    )
    assert r.status == 429


async def test_failed_logins_count_against_the_source(make_deployment: MakeDeployment) -> None:
    d = await make_deployment(limits=Limits(auth_failures_per_window=2))
    alice = await d.officer("ke-kra", "alice")
    async with source_session(d, 77) as session:
        for _ in range(2):
            challenge = await (
                await session.post(
                    "/v1/auth/challenge", data=ChallengeRequest(device_id=alice.id).encode(), headers=MSGPACK
                )
            ).read()
            forged = re_signed(alice, challenge, expires_at=AuthChallenge.decode(challenge).expires_at + 1)
            r = await session.post("/v1/auth/session", data=forged, headers=MSGPACK)
            assert r.status == 422
        r = await session.post("/v1/auth/session", data=forged, headers=MSGPACK)
        assert r.status == 429
    await alice.login()  # from 127.0.0.1: unaffected


# --------------------------------------------------------------------------- audit retention


async def test_audit_retention_deletes_old_rows_and_audit_verify_still_passes(
    make_deployment: MakeDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows older than ``audit_retention_days`` go; the prune is itself recorded; ``audit
    verify`` passes on the pruned database, and still fails if a kept row is deleted.
    Defence off (``audit_retention_days=0``) → nothing is deleted (red)."""
    d = await make_deployment(audit_retention_days=30)
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    store = d.app[STORE]
    old = len(await store.audit_rows())
    assert old >= 3
    d.world.now += 31 * 24 * 3600 * 1000
    await alice.login()  # a recent row ...
    await alice.say(case_id)  # ... and a group commit that seals every row into the broker log
    assert await prune_audit(d.app) == old
    rows = await store.audit_rows()
    assert rows[0].seq == old and rows[0].event == "login"
    assert rows[-1].event == "audit-pruned" and rows[-1].detail.startswith(f"first_kept={old} rows={old}")

    config: ServerConfig = d.app[CONFIG]
    config.key_path.write_bytes(d.server_key.seed)
    config.key_path.chmod(0o600)
    await alice.say(case_id)  # seal the audit-pruned row too
    assert await cli.verify_audit(config) == 0
    assert "intact" in capsys.readouterr().out

    # Only a sealed record excuses missing rows: someone who deletes a kept row and appends a
    # chained "audit-pruned" row of their own (even one claiming a leaf) is still caught.
    insert = (
        "INSERT INTO audit (seq, time, event, detail, prev_hash, hash, leaf_index)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    with sqlite3.connect(config.db_path) as db:
        db.execute("DELETE FROM audit WHERE seq = ?", (old,))
        seq, prev = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        at, detail = d.world.now, f"first_kept={old + 1} rows=1 days=30"
        digest = audit_hash(prev, seq + 1, at, "audit-pruned", detail)
        db.execute(insert, (seq + 1, at, "audit-pruned", detail, prev, digest, 10**6))
    assert await cli.verify_audit(config) != 0
    assert "BROKEN" in capsys.readouterr().err


async def test_failures_from_many_sources_write_a_bounded_number_of_rows(
    make_deployment: MakeDeployment,
) -> None:
    """300 sources fail once each: the flush writes one row per source up to ``TALLY_SOURCES``
    and one ``source=other`` row for the rest, every failure counted.  Defence off
    (``audit_flush_interval=0``) → 300 rows (red)."""
    d = await make_deployment()
    store = d.app[STORE]
    before = len(await store.audit_rows())
    sources = 300
    for n in range(sources):
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.{1 + n // 250}.{2 + n % 250}", 0))
        session = aiohttp.ClientSession(base_url=str(d.client.make_url("/")), connector=connector)
        async with session, session.get("/v1/cases", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
    assert len(await store.audit_rows()) == before
    assert await flush_rejections(d.app) == TALLY_SOURCES + 1
    rows = (await store.audit_rows())[before:]
    assert len(rows) == TALLY_SOURCES + 1
    assert rows[-1].detail.startswith(f"source=other count={sources - TALLY_SOURCES} reasons=unauthorized:")
    assert sum(int(r.detail.split(" count=")[1].split(" ")[0]) for r in rows) == sources
    assert all(len(r.detail) <= MAX_DETAIL for r in rows)


async def test_the_tally_is_written_at_shutdown(make_deployment: MakeDeployment) -> None:
    """Failures not yet flushed when the broker stops are written (and sealed) on the way down."""
    d = await make_deployment()
    config: ServerConfig = d.app[CONFIG]
    r = await d.client.get("/v1/cases", headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    await d.client.close()
    store = SqliteStore(config.db_path)
    await store.open()
    try:
        rows = [r for r in await store.audit_rows() if r.event == "rejected"]
    finally:
        await store.close()
    assert [r.detail for r in rows] == ["source=127.0.0.1 count=1 reasons=unauthorized:1 routes=/v1/cases"]
    assert rows[0].leaf_index is not None  # sealed into the broker log by the stop


# --------------------------------------------------------------------------- review F1: back-dated audit rows


def _write_server_key(d: Deployment) -> ServerConfig:
    """``audit verify`` reads the server key from the data directory, as the CLI would."""
    config: ServerConfig = d.app[CONFIG]
    config.key_path.write_bytes(d.server_key.seed)
    config.key_path.chmod(0o600)
    return config


@pytest.mark.parametrize("rechained", [False, True])
async def test_back_dated_audit_rows_are_not_pruned_and_audit_verify_catches_them(
    make_deployment: MakeDeployment, capsys: pytest.CaptureFixture[str], rechained: bool
) -> None:
    """Someone with write access to the database sets ``time = 0`` on a prefix of recent, sealed
    rows, then waits for the broker's own retention: it must delete none of them (age is read
    from each row's sealed leaf, and these differ from theirs), and ``audit verify`` must fail.

    Fix reverted (prune by the ``time`` column) → the rows are deleted under a genuine
    ``audit-pruned`` record and ``audit verify`` says "intact" (red)."""
    d = await make_deployment(audit_retention_days=30)
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    await alice.login()
    await alice.say(case_id)  # a group commit: every row so far is sealed into the broker log
    store = d.app[STORE]
    before = await store.audit_rows()
    sealed = [r.seq for r in before if r.leaf_index is not None]
    target = max(sealed) - 1  # every sealed row but the newest: minutes old, not 30 days
    assert target >= 2
    config = _write_server_key(d)
    with sqlite3.connect(config.db_path) as db:
        db.execute("UPDATE audit SET time = 0 WHERE seq <= ?", (target,))
        if rechained:  # a careful attacker also recomputes the hash chain, so only the leaves differ
            prev = bytes(32)
            for seq, at, event, detail in db.execute(
                "SELECT seq, time, event, detail FROM audit ORDER BY seq"
            ).fetchall():
                digest = audit_hash(prev, seq, at, event, detail)
                db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
                prev = digest

    assert await prune_audit(d.app) == 0  # the broker's retention loop
    after = await store.audit_rows()
    assert [r.seq for r in after] == [r.seq for r in before]
    assert not any(r.event == "audit-pruned" for r in after)

    await alice.say(case_id)
    assert await cli.verify_audit(config) != 0
    err = capsys.readouterr().err
    assert "BROKEN" in err and "intact" not in err
    if rechained:
        assert "differs from its leaf" in err


@pytest.mark.parametrize("recorded", ["cut-off", "days only"])
async def test_audit_verify_excuses_only_rows_whose_sealed_leaf_is_older_than_the_cut_off(
    make_deployment: MakeDeployment, capsys: pytest.CaptureFixture[str], recorded: str
) -> None:
    """A sealed ``audit-pruned`` row excuses a missing row only if that row's sealed leaf is older
    than the cut-off the record names (``before=``; for records written before it was named,
    the record's own time less its ``days=``).  Here recent rows were deleted under a genuine,
    sealed record, as a retention fooled by a back-dated ``time`` column would have done:
    ``audit verify`` fails.

    Fix reverted (excuse every row before ``first_kept``) → "intact" (red)."""
    d = await make_deployment(audit_retention_days=30)
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    await alice.login()
    await alice.say(case_id)
    store = d.app[STORE]
    rows = await store.audit_rows()
    recent = [r for r in rows if r.leaf_index is not None][:-1]
    assert len(recent) >= 2
    assert await store.prune_audit(recent) == len(recent)  # the store deletes what it is told
    first = recent[-1].seq + 1
    cutoff = d.world.now - 30 * DAY_MS
    detail = f"first_kept={first} rows={len(recent)} days=30"
    await d.app[AUDIT]("audit-pruned", detail + (f" before={cutoff}" if recorded == "cut-off" else ""))
    await alice.say(case_id)  # seal the record: a sealed record is a genuine one

    config = _write_server_key(d)
    assert await cli.verify_audit(config) != 0
    err = capsys.readouterr().err
    assert "not older than the cut-off" in err


# --------------------------------------------------------------------------- review F2: anonymous audit flood

#: Requests each anonymous attack sends from its one source: below the anonymous burst (100), so
#: only the defences under test can refuse them.
ANON_FLOOD = 60
#: The failure limit the F2 tests set: small, so the 429s start early in the flood.
ANON_FAILURE_LIMIT = 10


async def _log_size(d: Deployment) -> tuple[int, int]:
    """Audit rows and broker-log leaves, each written for ever: what an anonymous flood could grow."""
    rows = len(await d.app[STORE].audit_rows())
    checkpoint = await d.app[STORE].latest_checkpoint()
    return rows, 0 if checkpoint is None else checkpoint[0]


async def test_replaying_a_stored_device_certificate_writes_nothing(make_deployment: MakeDeployment) -> None:
    """Anyone holding a device's public certificate re-registers it ``ANON_FLOOD`` times: each is
    a 204, and no audit row, no broker-log leaf is added.

    Fix reverted (every registration written and audited) → one row and one leaf each (red)."""
    d = await make_deployment()
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    await alice.say(case_id)  # seal every row so far: any later leaf would be the flood's
    before = await _log_size(d)
    async with source_session(d, 68) as session:
        for _ in range(ANON_FLOOD):
            async with session.post("/v1/devices", data=alice.device.cert, headers=MSGPACK) as r:
                assert r.status == 204, await r.text()
    await alice.say(case_id)  # a group commit: would seal any row the replays had added
    rows, leaves = await _log_size(d)
    assert rows == before[0]
    assert leaves == before[1] + 1  # the one update just posted, nothing else
    # The device's registration and session are untouched.
    r = await d.client.get("/v1/cases", headers=alice.headers())
    assert r.status == 200


async def test_anonymous_rejections_are_tallied_per_source_and_limited(
    make_deployment: MakeDeployment,
) -> None:
    """One source sends ``ANON_FLOOD`` device certificates with a bad signature: past
    ``auth_failures_per_window`` it gets 429 with Retry-After; no audit row is written per
    rejection, and the flush writes one row naming the source and its count.  An honest device
    from another source registers and logs in within the bound meanwhile.  A root-signed
    revocation list is never refused for its source's failures (revoking must not wait on a
    stranger's junk): a forged one from the blocked source is refused for its signature and
    tallied, a genuine one is adopted.

    Fix reverted (these codes audited one row each, not counted as failures) → ``ANON_FLOOD``
    rows and no 429 (red).  Defences off by configuration: ``audit_flush_interval=0`` → a row
    per rejection; ``auth_failures_per_window=0`` → no 429."""
    d = await make_deployment(limits=Limits(auth_failures_per_window=ANON_FAILURE_LIMIT))
    alice = await d.officer("ke-kra", "alice")
    mallory = await d.officer("ke-kra", "mallory")
    bad_cert = bytearray(mallory.device.cert)
    bad_cert[-1] ^= 1
    bad_crl = bytearray(d.world.revoke(mallory.device, at=d.world.now + DAY_MS))
    bad_crl[-1] ^= 1
    rows_before = len(await d.app[STORE].audit_rows())
    statuses: dict[int, int] = {}
    retry_after: set[str] = set()
    async with source_session(d, 69) as session:
        for i in range(ANON_FLOOD):
            async with session.post("/v1/devices", data=bytes(bad_cert), headers=MSGPACK) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 429:
                    retry_after.add(r.headers.get("Retry-After", ""))
            if i == ANON_FLOOD // 2:  # mid-flood, from another source: the honest device is served
                r = await timed(d.client.post("/v1/devices", data=alice.device.cert, headers=MSGPACK))
                assert r.status == 204, await r.text()
                await asyncio.wait_for(alice.login(), timeout=HONEST_BOUND_S)
        # The source is blocked now; revocation lists still get their answer on the merits.
        async with session.put("/v1/agencies/ke-kra/revocations", data=bytes(bad_crl), headers=MSGPACK) as r:
            assert r.status == 422, await r.text()
        crl = d.world.revoke(mallory.device, at=d.world.now + DAY_MS)
        async with session.put("/v1/agencies/ke-kra/revocations", data=crl, headers=MSGPACK) as r:
            assert r.status == 204, await r.text()
    assert statuses.get(429) == ANON_FLOOD - ANON_FAILURE_LIMIT, statuses
    assert "" not in retry_after and all(int(v) >= 1 for v in retry_after)
    assert rejections(d, "bad-signature") == ANON_FAILURE_LIMIT + 1
    added = [r for r in (await d.app[STORE].audit_rows())[rows_before:] if r.event == "rejected"]
    assert added == [], added
    await flush_rejections(d.app)
    rows = [r for r in await d.app[STORE].audit_rows() if r.event == "rejected"]
    assert len(rows) == 1, rows
    assert rows[0].detail.startswith(
        f"source=127.0.0.69 count={ANON_FLOOD + 1} reasons=bad-signature:{ANON_FAILURE_LIMIT + 1},"
        f"blocked:{ANON_FLOOD - ANON_FAILURE_LIMIT}"
    ), rows[0].detail


async def test_audit_rows_changed_after_the_check_are_not_pruned(make_deployment: MakeDeployment) -> None:
    """The store deletes the rows retention chose only if each still has the time, hash and leaf
    it was checked with, all or none: a row back-dated between the check and the delete (or any
    other change) makes the whole prune a no-op.

    Fix reverted (delete ``seq < first_kept``) → the rows go (red)."""
    d = await make_deployment(audit_retention_days=30)
    alice = await d.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    await alice.say(case_id)
    store = d.app[STORE]
    rows = await store.audit_rows()
    chosen = [r for r in rows if r.leaf_index is not None][:-1]
    assert len(chosen) >= 2
    config: ServerConfig = d.app[CONFIG]
    with sqlite3.connect(config.db_path) as db:
        db.execute("UPDATE audit SET time = time + 1 WHERE seq = ?", (chosen[-1].seq,))
    assert await store.prune_audit(chosen) == 0
    assert [r.seq for r in await store.audit_rows()] == [r.seq for r in rows]
