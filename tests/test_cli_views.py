"""What the ``caseline`` screens show (issue 13 items 1, 2, 9): records as blocks that cut,
drop and pad nothing at 60 and 80 columns or piped, the markings of disclosed updates,
``whoami``'s own revocation, hidden entries counted, and words a person can copy.

Every command runs as a real process against a real broker on loopback.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from caseline.client.cli.output import UNWITNESSED_LINE
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE

from tests.support.agencies import Network
from tests.support.clirun import cli_env, cli_home, finish, until_following
from tests.test_cli_ux import (
    ALL_COMMANDS,
    ANSI,
    LONG_TEXT,
    RESTRICTIONS,
    marked_case,
    run,
    terminal,
    words_intact,
)

WIDTHS = [60, 80, None]  # None: piped
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


def screen(columns: int | None) -> dict[str, str]:
    return terminal(columns) if columns else {}


def fits(out: str, columns: int | None, *, whole: tuple[str, ...] = ()) -> list[str]:
    """The lines, checked: within the terminal's width, or (piped) with no trailing spaces.

    ``whole``: values wider than the screen (a 64-digit root), which stand alone on a line, uncut.
    """
    lines = [ANSI.sub("", line) for line in out.splitlines()]
    if columns:
        assert all(len(line) <= columns for line in lines if line.strip() not in whole), out
    else:
        assert all(line == line.rstrip() for line in lines), [line for line in lines if line != line.rstrip()]
    return lines


@pytest.mark.parametrize("columns", WIDTHS)
async def test_agency_list_shows_every_field_whole(tmp_path: Path, columns: int | None) -> None:
    home = tmp_path / "home"
    root = ("--profile", "root")
    assert (await run(home, *root, "agency", "init", "ke-kra", "--kdf", "interactive"))[0] == EXIT_OK
    request = tmp_path / "bot.req"
    code, _, err = await run(
        home, "--profile", "bot", "init", "--agency", "ke-kra", "--user", "scanner.mombasa",
        "--server", "http://127.0.0.1:9", "--kdf", "interactive", "--request-out", str(request),
    )  # fmt: skip
    assert code == EXIT_OK, err
    issue = (*root, "agency", "issue", str(request), "--role", "bot", "--scope", "alert", "--scope", "read")
    assert (await run(home, *issue, "-o", str(tmp_path / "bot.cert")))[0] == EXIT_OK
    [row] = json.loads((await run(home, *root, "agency", "list", "--json"))[1])
    device = row["device"]
    assert (await run(home, *root, "agency", "revoke", device, "--reason", "device-lost"))[0] == EXIT_OK
    [row] = json.loads((await run(home, *root, "agency", "list", "--json"))[1])

    code, out, _ = await run(home, *root, "agency", "list", env=screen(columns))
    assert code == EXIT_OK
    lines = fits(out, columns)
    assert any(line.startswith("serial ") and "scanner.mombasa" in line and "bot" in line for line in lines)
    assert f"    device: {device}" in lines  # whole, on one line
    assert "    scopes: alert, read" in lines
    assert f"    issued: {row['issued']}" in lines
    assert f"    valid: {row['valid_from']} to {row['valid_until']}" in lines
    assert "    published: no" in lines
    assert any(line.startswith(f"    revoked: {row['revoked']}") for line in lines)
    assert "device-lost" in out


async def test_whoami_says_no_and_learns_its_own_revocation(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    code, out, _ = await run(home, "--profile", profile, "whoami")
    assert code == EXIT_OK and "None" not in out
    assert "    revoked: no" in out.splitlines()

    await net.admins["ke-kra"].revoke(alice.keys.device_id, reason="device-lost")
    await net.publish("ke-kra")  # the list this profile has never fetched
    code, out, _ = await run(home, "--profile", profile, "whoami")
    assert code == EXIT_OK
    [line] = [line for line in out.splitlines() if line.startswith("    revoked: ")]
    assert TIME.search(line), out
    shown = json.loads((await run(home, "--profile", profile, "whoami", "--json"))[1])
    assert shown["revoked"] and TIME.fullmatch(shown["revoked"]) and shown["revocations_checked"] is True

    await net.server.close()  # a broker out of reach: whoami still answers, from what it holds
    code, out, err = await run(home, "--profile", profile, "whoami")
    assert code == EXIT_OK, err
    [line] = [line for line in out.splitlines() if line.startswith("    revoked: ")]
    assert TIME.search(line) and line.endswith("(as last known: the broker was not reached)"), out


@pytest.mark.parametrize("columns", WIDTHS)
async def test_evidence_verify_shows_markings_and_splits_no_value(
    net: Network, tmp_path: Path, columns: int | None
) -> None:
    alice, juma, case_id = await marked_case(net)
    # TRA's note is H3 no-evidence: it goes before a court only once TRA releases it (§6.7).
    theirs = [e for e in await juma.history(case_id) if e.kind == "update" and e.author is not None]
    [note] = [e for e in theirs if e.author is not None and e.author.agency_id == "tz-tra"]
    assert note.update_id is not None
    release = {
        "of": note.update_id.hex(),
        "purpose": "evidence",
        "lifts": ["no-evidence", "no-dissemination"],
    }
    await juma.post_typed(case_id, "release", release | {"markings": {"handling": "H0", "tlp": "GREEN"}})
    await alice.sync(case_id)
    home, profile = cli_home(alice)
    bundle = tmp_path / "case.evidence"
    assert (await run(home, "--profile", profile, "evidence", "export", case_id.hex(), "-o", str(bundle)))[
        0
    ] == 0
    pin = f"ke-kra={net.admins['ke-kra'].fingerprint}"
    verify = (
        "evidence",
        "verify",
        str(bundle),
        "--pin",
        pin,
        "--pin",
        f"tz-tra={net.admins['tz-tra'].fingerprint}",
    )
    report = json.loads((await run(home, "--json", *verify))[1])
    code, out, _ = await run(home, *verify, env=screen(columns))
    assert code == EXIT_OK
    checkpoint = report["checkpoint"] or {}
    lines = fits(out, columns, whole=(checkpoint.get("origin", ""), checkpoint.get("root", "")))
    for record in report["records"]:
        assert any(line.startswith(record["update_id"][:8]) for line in lines)
        assert any(record["time"] in line for line in lines), record["time"]  # never split mid-value
        assert record["author"] in out
    assert "\n".join(lines).count("H3 TLP:RED") == 2, out  # the two notes' markings, as `case show` has them
    words_intact(RESTRICTIONS, out)
    assert out.count("restrictions:") == 2
    if checkpoint:  # each on one line, to compare and copy
        assert {checkpoint["origin"], checkpoint["root"]} <= {line.strip() for line in lines}
    assert len(TIME.findall(out)) >= len(report["records"])


@pytest.mark.parametrize("columns", WIDTHS)
async def test_case_show_counts_the_entries_it_hides(net: Network, columns: int | None) -> None:
    alice, _, case_id = await marked_case(net)
    home, profile = cli_home(alice)
    total = len(await alice.history(case_id))
    show = ("--profile", profile, "case", "show", case_id.hex())
    code, out, _ = await run(home, *show, "--limit", "1", env=screen(columns))
    assert code == EXIT_OK
    flat = " ".join(ANSI.sub("", out).split())
    assert f"… {total - 1} earlier entries not shown (--limit N or --all)" in flat
    assert "()" not in out  # a case with no reference shows no empty brackets
    code, out, _ = await run(home, *show, "--all", env=screen(columns))
    assert code == EXIT_OK and "not shown" not in out
    words_intact(LONG_TEXT, out)
    shown = json.loads((await run(home, "--json", *show, "--limit", "2"))[1])
    assert (len(shown["events"]), shown["hidden"]) == (2, total - 2)
    code, _, err = await run(home, *show, "--limit", "0")
    assert code == EXIT_USAGE and "--limit" in err


async def test_piped_views_are_neither_padded_nor_wrapped(net: Network) -> None:
    alice, juma, case_id = await marked_case(net)
    home, profile = cli_home(alice)
    for command in (
        ("case", "show", case_id.hex()), ("case", "list"), ("trust", "list"), ("whoami",),
        ("forms",), ("forms", "show", "seizure"),
    ):  # fmt: skip
        code, out, err = await run(home, "--profile", profile, *command, env={"COLUMNS": "60"})
        assert code == EXIT_OK, err
        fits(out, None)
        if command[:2] == ("case", "show"):
            # Piped, a paragraph is one line, however narrow COLUMNS says: grep finds it whole.
            assert any(LONG_TEXT in line for line in out.splitlines()), out

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caseline.client.cli",
        "--profile", profile, "follow", case_id.hex(), "--count", "1",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**cli_env(home), "COLUMNS": "60"},
    )  # fmt: skip
    await until_following(proc)
    posted = await juma.post_typed(
        case_id, "note", {"text": LONG_TEXT, "markings": {"restrictions": RESTRICTIONS}}
    )
    code, out, _ = await finish(proc)
    assert code == EXIT_OK
    lines = fits(out, None)
    [head] = [line for line in lines if posted.update_id.hex()[:8] in line]
    assert "tz-tra:juma.mussa" in head and "H3 TLP:RED" in head  # one line, however long
    assert any(LONG_TEXT in line for line in lines), out


async def test_case_list_and_create_say_it_once_in_words(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    code, out, err = await run(home, "--profile", profile, "case", "create", "--title", "Op Kilimanjaro")
    assert code == EXIT_OK, err
    assert "ke-kra lists no witnesses" in err and err.count("unwitnessed") == 1
    assert UNWITNESSED_LINE not in out and "unwitnessed" not in out
    code, out, _ = await run(home, "--profile", profile, "case", "list")
    assert code == EXIT_OK and "1 entry " in out + " " and "1 entries" not in out and "()" not in out


@pytest.mark.parametrize(
    ("path", "command"), ALL_COMMANDS, ids=[" ".join(p) or "caseline" for p, _ in ALL_COMMANDS]
)
def test_help_examples_can_be_copied_whole(path: tuple[str, ...], command: object) -> None:
    """No example elides a value with an ellipsis: what is shown can be pasted."""
    help_text = str(getattr(command, "help", "") or "")
    examples = help_text.partition("Examples:")[2]
    assert "…" not in examples, (path, examples)
