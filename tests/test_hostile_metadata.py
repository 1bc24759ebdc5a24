"""Issue 14, findings 9 and 10: what the broker gives away besides the case content.

* Backups and the files ``init`` writes hold secrets or their hashes: they are
  owner-only (0600) whatever the umask, and a backup never overwrites a file
  unless told to.
* A device that is not a member of a case learns nothing from a case route,
  not even that the case exists: its answer is byte for byte the answer for a
  case id nobody ever used, decided from the same in-memory state with the
  same storage calls.  A member its scopes refuse still gets its 403.
* The user directory (another agency's device certificates) is for devices that
  read cases: a bot without the ``read`` scope is refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from caseline.schemas.api import Directory, PostResult, PostUpdate, Subscribe
from caseline.schemas.codec import unpack
from caseline.schemas.errors import PROBLEM_TYPE_BASE, UNKNOWN_CASE_DETAIL
from caseline.server import cli as server_cli
from caseline.server.keys import STORE
from caseline.witness import cli as witness_cli

from tests.conftest import Deployment
from tests.support.broker import Officer

#: Every honest answer in these tests comes back well within this (seconds); a bound, not a measurement.
ANSWER_TIMEOUT = 10.0
PROBLEM_JSON = "application/problem+json"


# --------------------------------------------------------------------------- finding 9: files


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def initialised(tmp_path: Path) -> Path:
    data = tmp_path / "broker"
    assert server_cli.main(["--data-dir", str(data), "init"]) == 0
    add = ["agency", "add", "ke-kra", "--name", "KRA", "--country", "KE", "--root-key", "ab" * 32]
    assert server_cli.main(["--data-dir", str(data), *add]) == 0
    return data


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_a_backup_is_owner_only_whatever_the_umask(
    tmp_path: Path, mask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with umask(mask):
        data = initialised(tmp_path)
        dest = tmp_path / "out" / "backup.sqlite3"
        dest.parent.mkdir()
        assert server_cli.main(["--data-dir", str(data), "backup", str(dest)]) == 0
    assert mode(dest) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["backup.sqlite3"]  # no temporary left
    with contextlib.closing(sqlite3.connect(dest)) as db:  # a usable copy of what the broker holds
        assert db.execute("SELECT agency_id FROM agencies").fetchall() == [("ke-kra",)]


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_files_init_writes_are_owner_only(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        data = initialised(tmp_path)
        witness = tmp_path / "witness"
        assert witness_cli.main(["--data-dir", str(witness), "init", "--name", "witness.example/w1"]) == 0
        with contextlib.closing(sqlite3.connect(data / "broker.sqlite3")) as db:  # as the broker writes it
            db.execute("CREATE TABLE probe (x)")
            db.commit()
            wal = ["broker.sqlite3-wal", "broker.sqlite3-shm"]
            assert all(mode(data / name) == 0o600 for name in wal)  # SQLite copies the database's mode
    for name in ("server.key", "operator.token.sha256", "broker.sqlite3"):
        assert mode(data / name) == 0o600, name
    assert mode(data) == 0o700
    assert mode(witness / "witness.key") == 0o600


def test_a_backup_never_overwrites_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = initialised(tmp_path)
    dest = tmp_path / "backup.sqlite3"
    dest.write_bytes(b"yesterday's backup")
    dest.chmod(0o644)
    capsys.readouterr()
    assert server_cli.main(["--data-dir", str(data), "backup", str(dest)]) != 0
    _, err = capsys.readouterr()
    assert dest.read_bytes() == b"yesterday's backup"
    assert err.count("\n") == 1 and "exists" in err and "--force" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.sqlite3", "broker"]
    with umask(0o022):
        assert server_cli.main(["--data-dir", str(data), "backup", "--force", str(dest)]) == 0
    assert mode(dest) == 0o600 and dest.read_bytes().startswith(b"SQLite format 3\x00")


# --------------------------------------------------------------------------- finding 10: case routes


def random_case_id(d: Deployment) -> bytes:
    return d.world.rng(16)


Probe = Callable[[Officer, bytes], Awaitable[tuple[int, str, bytes]]]


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, str, bytes]:
    return response.status, response.content_type, await response.read()


def probes(envelope: bytes) -> dict[str, Probe]:
    """Every route that names a case, as a stranger would call it."""

    async def entries(o: Officer, cid: bytes) -> tuple[int, str, bytes]:
        return await _answer(await o.client.get(f"/v1/cases/{cid.hex()}/entries", headers=o.headers()))

    async def update(o: Officer, cid: bytes) -> tuple[int, str, bytes]:
        return await _answer(
            await o.client.post(f"/v1/cases/{cid.hex()}/updates", data=envelope, headers=o.headers())
        )

    async def commit(o: Officer, cid: bytes) -> tuple[int, str, bytes]:
        return await _answer(
            await o.client.post(f"/v1/cases/{cid.hex()}/commits", data=b"\x90", headers=o.headers())
        )

    async def witnessed(o: Officer, cid: bytes) -> tuple[int, str, bytes]:
        return await _answer(await o.client.get(f"/v1/log/witnessed?case={cid.hex()}", headers=o.headers()))

    return {"entries": entries, "updates": update, "commits": commit, "log-witnessed": witnessed}


def assert_unknown_case(answer: tuple[int, str, bytes]) -> None:
    status, content_type, body = answer
    problem = json.loads(body)
    assert (status, content_type) == (404, PROBLEM_JSON), answer
    assert problem == {
        "type": PROBLEM_TYPE_BASE + "unknown-case",
        "title": "Unknown case",
        "status": 404,
        "detail": UNKNOWN_CASE_DETAIL,
    }


async def stream_post(o: Officer, case_id: bytes, envelope: bytes) -> PostResult:
    ws = await o.client.ws_connect("/v1/stream", headers={"Authorization": f"Bearer {o.token}"})
    try:
        await ws.send_bytes(Subscribe(cursors=()).encode())
        await ws.send_bytes(PostUpdate(request_id=7, case_id=case_id, envelope=envelope).encode())
        while True:
            msg = await asyncio.wait_for(ws.receive(), timeout=ANSWER_TIMEOUT)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            if unpack(msg.data)[1] == PostResult.TAG:
                return PostResult.decode(msg.data)
    finally:
        await ws.close()


async def test_a_stranger_cannot_tell_a_real_case_from_none(make_deployment: Any) -> None:
    d: Deployment = await make_deployment()
    owner = await d.officer("ke-kra", "owner")
    stranger = await d.officer("tz-tra", "stranger")
    case_id = await owner.create_case([])
    envelope = owner.seal(case_id, "for members only")
    for name, probe in probes(envelope).items():
        real = await probe(stranger, case_id)
        none = await probe(stranger, random_case_id(d))
        assert real == none, name
        assert_unknown_case(real)
    real_ws = await stream_post(stranger, case_id, envelope)
    none_ws = await stream_post(stranger, random_case_id(d), envelope)
    assert (real_ws.status, real_ws.problem, real_ws.detail) == (404, "unknown-case", UNKNOWN_CASE_DETAIL)
    assert (none_ws.status, none_ws.problem, none_ws.detail) == (
        real_ws.status,
        real_ws.problem,
        real_ws.detail,
    )
    assert len((await owner.entries(case_id)).entries) == 1  # nothing the stranger sent was stored


async def test_a_removed_member_is_a_stranger(make_deployment: Any) -> None:
    d: Deployment = await make_deployment()
    owner = await d.officer("ke-kra", "owner")
    juma = await d.officer("tz-tra", "juma")
    case_id = await owner.create_case([(juma.device, "member")])
    await juma.sync(case_id)
    r = await owner.change(case_id, [(owner.device, "owner")])
    assert r.status == 201, await r.text()
    envelope = juma.seal(case_id, "after removal")
    for name, probe in probes(envelope).items():
        real = await probe(juma, case_id)
        assert real == await probe(juma, random_case_id(d)), name
        assert_unknown_case(real)


async def test_a_member_refused_by_its_scopes_still_gets_not_allowed(make_deployment: Any) -> None:
    """A member knows the case exists: its refusal says why (403 not-allowed), not 404."""
    d: Deployment = await make_deployment()
    owner = await d.officer("ke-kra", "owner")
    bot = await d.officer("ke-kra", "poster", role="bot", scopes=("alert",))
    case_id = await owner.create_case([(bot.device, "member")])
    status, content_type, body = await probes(b"")["entries"](bot, case_id)
    assert (status, content_type, json.loads(body)["type"]) == (
        403,
        PROBLEM_JSON,
        PROBLEM_TYPE_BASE + "not-allowed",
    )


async def test_both_answers_make_the_same_storage_calls(make_deployment: Any) -> None:
    """No database read (or write) tells a real case from none: both are decided in memory.

    Every store call a request handler makes is recorded (the group-commit
    writer, which seals audit rows in the background, is left out); the
    stranger's two requests must make the very same calls, and no read.
    """
    d: Deployment = await make_deployment()
    owner = await d.officer("ke-kra", "owner")
    stranger = await d.officer("tz-tra", "stranger")
    case_id = await owner.create_case([])
    envelope = owner.seal(case_id, "for members only")
    r = await stranger.client.get("/v1/cases", headers=stranger.headers())  # its session is now cached
    assert r.status == 200
    calls: list[str] = []
    store = d.app[STORE]

    def spy(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            task = asyncio.current_task()
            if task is None or task.get_name() != "caseline-group-commit":
                calls.append(name)
            return await method(*args, **kwargs)

        return wrapper

    for name in dir(store):
        method = getattr(store, name)
        if not name.startswith("_") and asyncio.iscoroutinefunction(method):
            setattr(store, name, spy(name, method))
    for name, probe in probes(envelope).items():
        calls.clear()
        await probe(stranger, case_id)
        real = list(calls)
        calls.clear()
        await probe(stranger, random_case_id(d))
        assert real == calls, name
        case_reads = {"entries", "case_leaf_before", "get_case", "all_entries"}
        assert not case_reads & set(real), (name, real)


# --------------------------------------------------------------------------- finding 10: directory


async def test_the_directory_is_for_devices_that_read(make_deployment: Any) -> None:
    d: Deployment = await make_deployment()
    await d.officer("tz-tra", "juma")  # the user looked up, in another agency
    poster = await d.officer("ke-kra", "poster", role="bot", scopes=("alert",))
    reader = await d.officer("ke-kra", "reader", role="bot", scopes=("alert", "read"))
    officer = await d.officer("ke-kra", "alice")
    r = await poster.client.get("/v1/directory/tz-tra/juma", headers=poster.headers())
    problem = json.loads(await r.read())
    assert (r.status, r.content_type, problem["type"]) == (
        403,
        PROBLEM_JSON,
        PROBLEM_TYPE_BASE + "not-allowed",
    )
    assert "certs" not in problem and "juma" not in json.dumps(problem)
    for device in (reader, officer):
        r = await device.client.get("/v1/directory/tz-tra/juma", headers=device.headers())
        assert r.status == 200
        assert len(Directory.decode(await r.read()).certs) == 1
