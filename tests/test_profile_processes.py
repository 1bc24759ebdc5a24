"""One profile, several processes: a ``follow`` window, posts from another terminal.

Each test runs the real CLI as separate processes on one profile (and a library
``Client`` in the test's own process on the same profile), against a real
broker on loopback.  Storing an already-verified entry is idempotent, and two
posters take turns under the profile's posting lock instead of sealing the same
position twice.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from caseline.client.client import Client
from caseline.client.store import LocalStore, StoredEntry
from caseline.schemas.errors import EXIT_OK, ForkError

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home, finish, start_cli, until_following


async def officer_with_case(net: Network) -> tuple[Client, bytes, Path, str]:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op")
    home, profile = cli_home(alice)
    return alice, case_id, home, profile


def followed_texts(out: str) -> list[str]:
    return [json.loads(line)["content"]["text"] for line in out.splitlines() if line.strip()]


async def test_a_post_beside_an_open_follow_window(net: Network) -> None:
    _, case_id, home, profile = await officer_with_case(net)
    follow = await start_cli(home, "--json", "--profile", profile, "follow", case_id.hex(), "--count", "3")
    await until_following(follow)
    for i in range(3):
        code, _, err = await cli(home, "--profile", profile, "post", case_id.hex(), "--type", "note",
                                 "--field", f"text=update {i}")  # fmt: skip
        assert code == EXIT_OK, err
    code, out, err = await finish(follow)
    assert code == EXIT_OK, err
    assert followed_texts(out) == ["update 0", "update 1", "update 2"]


async def test_two_follow_windows_on_one_profile(net: Network) -> None:
    alice, case_id, home, profile = await officer_with_case(net)
    args = ("--json", "--profile", profile, "follow", case_id.hex(), "--count", "4")
    windows = [await start_cli(home, *args) for _ in range(2)]
    for window in windows:
        await until_following(window)
    for i in range(4):
        await alice.post_note(case_id, f"update {i}")  # and a third process: this one
    for window in windows:
        code, out, err = await finish(window)
        assert code == EXIT_OK, err
        assert followed_texts(out) == [f"update {i}" for i in range(4)]


async def test_two_posters_on_one_profile_take_turns(net: Network) -> None:
    alice, case_id, home, profile = await officer_with_case(net)
    posters = [
        await start_cli(
            home,
            "--json",
            "--profile",
            profile,
            "post",
            case_id.hex(),
            "--type",
            "note",
            "--field",
            f"text=from poster {i}",
        )
        for i in range(3)
    ]
    results = await asyncio.gather(*(finish(p) for p in posters))
    assert [code for code, _, _ in results] == [EXIT_OK] * 3, [err for _, _, err in results]
    assert sorted(json.loads(out)["seq"] for _, out, _ in results) == [1, 2, 3]
    await alice.sync(case_id)
    texts = sorted(e.content["text"] for e in await alice.history(case_id) if e.content)
    assert texts == ["from poster 0", "from poster 1", "from poster 2"]


async def test_storing_a_verified_entry_again_is_a_no_op_but_a_different_one_is_a_fork(
    tmp_path: Path,
) -> None:
    case_id = bytes(16)
    entry = StoredEntry(0, "commit", b"genesis", b"receipt")
    one, two = await LocalStore.open(tmp_path / "p"), await LocalStore.open(tmp_path / "p")
    try:
        assert await one.add_entries(case_id, [entry]) == []
        assert await two.add_entries(case_id, [entry]) == []  # the other process, the same entry
        other = StoredEntry(0, "commit", b"another genesis", b"receipt")
        assert await two.add_entries(case_id, [other]) == [entry]  # what the first one stored
        assert await one.entries(case_id) == [entry]
    finally:
        await one.close()
        await two.close()


async def test_a_client_refuses_what_contradicts_another_process_of_its_profile(net: Network) -> None:
    alice, case_id, _, _ = await officer_with_case(net)
    await alice.post_note(case_id, "seen by this process")
    # Another process of the profile stored another seq 2 than this one will be shown.
    forged = StoredEntry(2, "update", b"what another process was shown", b"its receipt")
    await alice.store.add_entries(case_id, [forged])
    with pytest.raises(ForkError, match="two different entries at 2"):
        await alice.post_note(case_id, "the broker's seq 2, as this process is shown it")
