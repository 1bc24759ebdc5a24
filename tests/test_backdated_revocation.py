"""A backdated revocation voids, it never stops a case (PROTOCOL.md §5.3, §6.4).

An agency learns on Thursday that a device was stolen on Tuesday and revokes
it "since Tuesday".  Commits made meanwhile still list that device, or were
made by it.  Refusing them would stop the case for every member who replays
it, and keep newcomers out; instead the device is voided in those epochs, and
a commit the thief made keeps its place but grants nothing and taints its
epoch until an owner re-keys.  Real clients against a real broker on loopback;
the CLI as a real process.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from caseline.client.client import Client, wall_clock
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE, NotPermittedError
from caseline.schemas.wire import CommitMessage
from caseline.server.keys import STORE

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home, finish, start_cli, until_following


async def _after(ms: int) -> None:
    """Let the wall clock pass ``ms``: a revocation dated ``ms`` must fall between two acts."""
    while wall_clock() <= ms:
        await asyncio.sleep(0)


async def _last_commit(net: Network, case_id: bytes) -> tuple[int, CommitMessage]:
    rows = await net.app[STORE].entries(case_id, after=0, limit=10_000)
    row = [r for r in rows if r.kind == "commit"][-1]
    return row.seq, CommitMessage.decode(row.body)


async def _revoke(net: Network, agency: str, client: Client, since: int) -> None:
    await net.admins[agency].revoke(client.keys.device_id, reason="key-compromise", since=since)
    await net.publish(agency)


async def test_a_commit_carrying_a_device_revoked_since_before_it_keeps_the_case_going(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    bob, carol = await net.device("ke-kra", "bob"), await net.device("ke-kra", "carol")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
    safe = await juma.post_note(case_id, "posted while safe")
    since = safe.receipt_time + 1  # Tuesday: the theft
    await _after(since)
    await juma.post_note(case_id, "posted by the thief")
    # Wednesday: alice adds bob; her commit carries juma, whom nobody knows to be stolen.
    await alice.add_members(case_id, [("ke-kra", "bob", "member")])
    await _revoke(net, "tz-tra", juma, since)  # Thursday: revoked since Tuesday
    await alice.refresh_revocations(force=True)

    events = await alice.sync(case_id)  # verified again from genesis under the new list
    history = await alice.history(case_id)
    assert [e.content["text"] for e in history if e.content] == ["posted while safe"]
    assert [e.author.user_id for e in history if e.kind == "voided" and e.author] == ["juma"]
    voided = {m.author.user_id: m.voided for m in await alice.members(case_id)}
    assert voided == {"alice": False, "juma": True, "bob": False}
    home, profile = cli_home(alice)  # the officer sees it too
    code, out, err = await cli(home, "--profile", profile, "case", "show", case_id.hex())
    assert code == EXIT_OK, err
    assert "tz-tra:juma (member, voided)" in " ".join(out.split())
    await bob.refresh_revocations(force=True)
    await bob.sync(case_id)
    await bob.post_note(case_id, "bob reads and posts")
    await alice.post_note(case_id, "alice too")
    assert events == []  # the view was rebuilt, nothing new was fetched

    # Alice's next commit leaves juma out: no wrap of the new epoch secret goes to it.
    await alice.add_members(case_id, [("ke-kra", "carol", "member")], share_history=True)
    _, commit = await _last_commit(net, case_id)
    assert juma.keys.device_id not in {w.device_id for w in commit.wraps}
    assert {m.author.user_id for m in await alice.members(case_id)} == {"alice", "bob", "carol"}

    # Carol joins afterwards and replays the case from genesis: it reads, and she posts.
    await carol.refresh_revocations(force=True)
    await carol.sync(case_id)
    shared = [e.content["text"] for e in await carol.history(case_id) if e.content]
    assert "posted by the thief" not in shared and "bob reads and posts" in shared
    await carol.post_note(case_id, "carol joins in")
    assert [e.content["text"] for e in await bob.sync(case_id) if e.content][-1] == "carol joins in"


async def test_a_commit_by_the_stolen_device_grants_nothing_and_taints_its_epoch(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await net.device("ke-kra", "alice")
    juma, juma2 = await net.device("tz-tra", "juma"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op")
    await alice.add_members(case_id, [("tz-tra", "juma", "owner")])
    await alice.remove_devices(case_id, [juma2.keys.device_id])  # juma's desk PC stays out
    safe = await juma.post_note(case_id, "posted while safe")
    since = safe.receipt_time + 1
    await _after(since)
    # The thief, holding juma's phone, adds juma's other device as an owner and posts from it.
    await juma.add_members(case_id, [("tz-tra", "juma", "owner")])
    thief_seq, _ = await _last_commit(net, case_id)
    await juma2.sync(case_id)
    await juma2.post_note(case_id, "posted from the thief's added device")
    await _revoke(net, "tz-tra", juma, since)

    await alice.refresh_revocations(force=True)
    with caplog.at_level("ERROR", logger="caseline.client"):
        await alice.sync(case_id)
    alarm = [r.getMessage() for r in caplog.records if "ALARM" in r.getMessage()]
    assert alarm and f"entry {thief_seq} " in alarm[0] and juma.keys.device_id.hex() in alarm[0]
    history = await alice.history(case_id)
    [thief_commit] = [e for e in history if e.seq == thief_seq]
    assert thief_commit.voided_by is not None and thief_commit.voided_by.device_id == juma.keys.device_id
    assert [e.kind for e in history if e.author and e.author.device_id == juma2.keys.device_id] == ["voided"]
    members = {m.author.device_id: m for m in await alice.members(case_id)}
    assert members[juma2.keys.device_id].voided and members[juma.keys.device_id].voided
    assert not members[alice.keys.device_id].voided

    # Nobody posts in the tainted epoch: the library and the CLI both refuse, and say why.
    with pytest.raises(NotPermittedError, match="rekey"):
        await alice.post_note(case_id, "in the thief's epoch")
    home, profile = cli_home(alice)
    code, _, err = await cli(
        home, "--profile", profile, "post", case_id.hex(), "--type", "note", "--field", "text=still theirs"
    )
    assert code == EXIT_USAGE, err
    assert f"entry {thief_seq}" in err and "caseline case rekey" in err and "Traceback" not in err
    # The added device cannot commit either, once its client knows.
    await juma2.refresh_revocations(force=True)
    with pytest.raises(NotPermittedError):
        await juma2.remove_devices(case_id, [alice.keys.device_id])

    # Alice re-keys: a fresh secret, without the voided devices, and posting works again.
    code, out, err = await cli(home, "--profile", profile, "--json", "case", "rekey", case_id.hex())
    assert code == EXIT_OK, err
    dropped = set(json.loads(out)["devices"])
    assert dropped == {juma.keys.device_id.hex(), juma2.keys.device_id.hex()}
    _, commit = await _last_commit(net, case_id)
    assert {w.device_id for w in commit.wraps} == {alice.keys.device_id}
    await alice.sync(case_id)
    await alice.post_note(case_id, "after the re-key")
    assert [e.content["text"] for e in await alice.history(case_id) if e.content][-1] == "after the re-key"

    # Evidence across the voided commit verifies, and says what was voided and why.
    bundle = alice.directory.parent / "case.evidence"
    bundle.write_bytes(await alice.export_evidence(case_id))
    pins = [f"--pin={a}={admin.fingerprint}" for a, admin in net.admins.items()]
    code, out, err = await cli(home, "--json", "evidence", "verify", str(bundle), *pins)
    assert code == EXIT_OK, err
    voided = {(v["seq"], v["device"], v["reason"]) for v in json.loads(out)["voided"]}
    assert (thief_seq, juma.keys.device_id.hex(), "voided-commit") in voided
    assert (thief_seq, juma2.keys.device_id.hex(), "added-by-voided-commit") in voided
    code, out, err = await cli(home, "evidence", "verify", str(bundle), *pins)
    assert code == EXIT_OK and f"commit #{thief_seq}: VOIDED" in " ".join(out.split()), out


async def test_one_case_that_fails_does_not_hide_the_others_from_case_list_or_follow(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    bob = await net.device("ke-kra", "bob")
    case_a = await alice.create_case(title="Case A", members=[("tz-tra", "juma")])
    case_b = await alice.create_case(title="Case B", members=[("ke-kra", "bob")])
    # A backdated revocation in case A, after a commit there: A is voided, not broken.
    safe = await juma.post_note(case_a, "safe")
    await _after(safe.receipt_time + 1)
    await alice.add_members(case_a, [("ke-kra", "bob", "member")])
    await _revoke(net, "tz-tra", juma, safe.receipt_time + 1)
    home, profile = cli_home(alice)
    code, out, err = await cli(home, "--profile", profile, "--json", "case", "list")
    assert code == EXIT_OK, err
    assert {c["title"]: c["error"] for c in json.loads(out)} == {"Case A": None, "Case B": None}

    # Case A's stored genesis is damaged: A fails verification; B is still listed and followed.
    await alice.store.db.execute("UPDATE entries SET body=? WHERE case_id=? AND seq=0", (b"\x90", case_a))
    await alice.store.db.commit()
    await alice._views.drop(case_a)
    alice._ledger().forget(case_a)
    code, out, err = await cli(home, "--profile", profile, "--json", "case", "list")
    assert code == EXIT_OK, err
    listed = {c["case_id"]: c for c in json.loads(out)}
    assert listed[case_b.hex()]["title"] == "Case B" and listed[case_b.hex()]["error"] is None
    assert listed[case_a.hex()]["error"] and "Traceback" not in err
    code, out, err = await cli(home, "--profile", profile, "--json", "whoami")
    assert code == EXIT_OK and json.loads(out)["user"] == "alice", err

    follow = await start_cli(home, "--profile", profile, "--json", "follow", "--count", "1")
    await until_following(follow)
    posted = await bob.post_note(case_b, "B goes on")
    code, out, err = await finish(follow)
    assert code == EXIT_OK, err
    assert json.loads(out.splitlines()[-1])["update_id"] == posted.update_id.hex()


async def test_follow_goes_on_with_the_other_cases_when_one_fails_midway(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await net.device("ke-kra", "alice"), await net.device("ke-kra", "bob")
    case_a = await alice.create_case(title="Case A", members=[("ke-kra", "bob")])
    case_b = await alice.create_case(title="Case B", members=[("ke-kra", "bob")])
    got: list[tuple[bytes, str]] = []
    first_seen = asyncio.Event()

    async def follow() -> None:
        async for event in bob.follow([case_a, case_b]):
            if event.kind == "update" and event.content:
                got.append((event.case_id, event.content["text"]))
                first_seen.set()
                if event.case_id == case_b:
                    return

    task = asyncio.create_task(follow())
    await alice.post_note(case_a, "A one")
    await asyncio.wait_for(first_seen.wait(), 20)
    # Bob's record of case A is damaged in memory (a stored head that is not the log's): A's next
    # entry fails verification there.  B must go on being followed.
    bob._ledger().views[case_a].heads[-1] = bytes(32)
    with caplog.at_level("ERROR", logger="caseline.client"):
        await alice.post_note(case_a, "A two")
        await alice.post_note(case_b, "B one")
        await asyncio.wait_for(task, 20)
    assert got == [(case_a, "A one"), (case_b, "B one")]
    assert any(
        case_a.hex() in r.getMessage() and "no longer followed" in r.getMessage() for r in caplog.records
    )
