"""The ``caseline`` CLI as a person meets it (issue 13): help, flags anywhere, ids and
markings on screen at any width, short update ids, safe files, errors in words.

Every command runs as a real process (``python -m caseline.client.cli``) against
a real broker on loopback; every stderr it prints is checked for Python
internals (``assert_words``).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import stat
import sys
from pathlib import Path
from typing import Any

import click
import msgpack
import pytest
from aiohttp import web
from caseline.client.cli import main
from caseline.client.cli.officer import STDIN_NOTICE
from caseline.client.cli.output import when
from caseline.client.cli.root import cli as root_group
from caseline.client.client import Client
from caseline.crypto.keys import fingerprint
from caseline.schemas.errors import EXIT_OK, EXIT_PROFILE, EXIT_TEMPORARY, EXIT_UNTRUSTED, EXIT_USAGE
from caseline.schemas.wire import DeviceCert, decode_signed
from caseline.server.keys import STORE

from tests.support.agencies import PASSPHRASE, Network
from tests.support.clirun import cli_env, cli_home, finish, until_following
from tests.support.process import free_port
from tests.test_client_ux import SEIZURE

BOXES = set("┃━│─┏┓┗┛╇╸┡┩╭╮╰╯")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PYTHON_INTERNALS = re.compile(r"\b[A-Z][a-zA-Z]+(Error|Exception)\b|Traceback|\btag \d+")
LONG_TEXT = (
    "Container MSKU1234565 was released at Mombasa after the scanner flagged dense organic matter "
    "behind the false wall; the consignee's agent insisted on a second inspection at the inland depot "
    "and asked that the broker's operator be told before anyone moves it again"
)
RESTRICTIONS = "not for court without the originator's written consent; no onward sharing to third parties"


def assert_words(err: str) -> None:
    """What a person reads on stderr names no Python class and shows no traceback."""
    assert not PYTHON_INTERNALS.search(err), err


async def run(
    home: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """One CLI process with ``env`` layered over the usual test environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caseline.client.cli", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**cli_env(home), **(env or {})},
    )  # fmt: skip
    code, out, err = await finish(proc, stdin=stdin)
    assert_words(err)
    return code, out, err


def terminal(columns: int, *, colour: bool = False) -> dict[str, str]:
    """A forced terminal of ``columns`` (rich honours TTY_COMPATIBLE and COLUMNS)."""
    env = {"TTY_COMPATIBLE": "1", "COLUMNS": str(columns)}
    if colour:
        env["FORCE_COLOR"] = "1"
    return env


# --------------------------------------------------------------------------- help, version, completion


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(path, group)]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


ALL_COMMANDS = commands(root_group)


@pytest.mark.parametrize(
    ("path", "command"), ALL_COMMANDS, ids=[" ".join(p) or "caseline" for p, _ in ALL_COMMANDS]
)
def test_every_command_explains_its_options_and_ends_with_examples(
    path: tuple[str, ...], command: click.Command, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--help"]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "Examples:" in shown
    assert (
        shown.rstrip()
        .rsplit("Examples:", 1)[1]
        .strip()
        .splitlines()[0]
        .lstrip()
        .startswith(("caseline", "bash"))
    )
    assert shown.index("Examples:") < shown.index("Options:")  # the help text ends with them
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"


async def test_version_names_the_package_and_the_protocol(tmp_path: Path) -> None:
    code, out, _ = await run(tmp_path, "--version")
    assert code == EXIT_OK
    assert re.fullmatch(r"caseline \d+\.\d+\.\d+\S* \(protocol \d+\)\n", out), out


@pytest.mark.parametrize(
    ("shell", "mark"), [("bash", "complete -o"), ("zsh", "#compdef caseline"), ("fish", "complete")]
)
async def test_completion_scripts_for_each_shell(tmp_path: Path, shell: str, mark: str) -> None:
    code, out, _ = await run(tmp_path, "completion", shell)
    assert code == EXIT_OK and mark in out and "_CASELINE_COMPLETE" in out


async def test_tab_completes_a_command(tmp_path: Path) -> None:
    env = {"_CASELINE_COMPLETE": "bash_complete", "COMP_WORDS": "caseline ca", "COMP_CWORD": "1"}
    code, out, _ = await run(tmp_path, env=env)
    assert code == EXIT_OK and "plain,case" in out.splitlines()  # bash's "type,value" lines
    env = {"_CASELINE_COMPLETE": "bash_complete", "COMP_WORDS": "caseline case sh", "COMP_CWORD": "2"}
    code, out, _ = await run(tmp_path, env=env)
    assert "plain,show" in out.splitlines()


async def test_a_mistyped_command_or_option_gets_a_suggestion(tmp_path: Path) -> None:
    code, _, err = await run(tmp_path, "cse", "list")
    assert code == EXIT_USAGE and "did you mean case" in err
    code, _, err = await run(tmp_path, "case", "shw", "x")
    assert code == EXIT_USAGE and "did you mean show" in err
    code, _, err = await run(tmp_path, "case", "list", "--jsn")
    assert code == EXIT_USAGE and "--json" in err


# --------------------------------------------------------------------------- views


async def marked_case(net: Network) -> tuple[Client, Client, bytes]:
    """An H3 / TLP:RED case between two agencies with a long note from each side."""
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma.mussa")
    case_id = await alice.create_case(
        title="Op Tembo", members=[("tz-tra", "juma.mussa", "member")], handling="H3", tlp="RED",
        witnessed=False,
    )  # fmt: skip
    markings = {"restrictions": RESTRICTIONS}
    await alice.post_typed(case_id, "note", {"text": LONG_TEXT, "markings": markings})
    await juma.sync(case_id)
    await juma.post_typed(case_id, "note", {"text": "seen", "markings": markings})
    await alice.sync(case_id)
    return alice, juma, case_id


def words_intact(text: str, screen: str) -> None:
    flat = " ".join(screen.split())
    for word in text.split():
        assert word in flat, word


@pytest.mark.parametrize("columns", [80, 60])
async def test_case_show_and_list_on_a_narrow_terminal_cut_no_id_and_no_word(
    net: Network, columns: int
) -> None:
    alice, _, case_id = await marked_case(net)
    home, profile = cli_home(alice)
    code, out, _ = await run(
        home, "--profile", profile, "case", "show", case_id.hex()[:8], env=terminal(columns)
    )
    assert code == EXIT_OK
    assert all(len(ANSI.sub("", line)) <= columns for line in out.splitlines()), out
    assert case_id.hex() in out
    assert "ke-kra:alice" in out and "tz-tra:juma.mussa" in out
    words_intact(LONG_TEXT, out)
    words_intact(RESTRICTIONS, out)
    assert "H3" in out and "TLP:RED" in out
    events = await alice.history(case_id)
    for event in events:
        if event.update_id:
            assert event.update_id.hex()[:8] in out

    code, out, _ = await run(home, "--profile", profile, "case", "list", env=terminal(columns))
    assert code == EXIT_OK and case_id.hex() in out


async def test_tlp_is_coloured_on_a_terminal_and_output_is_plain_when_piped(net: Network) -> None:
    alice, _, case_id = await marked_case(net)
    home, profile = cli_home(alice)
    env = {**terminal(100, colour=True)}
    proc_env = {k: v for k, v in cli_env(home).items() if k != "NO_COLOR"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caseline.client.cli", "--profile", profile, "case", "show", case_id.hex(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**proc_env, **env},
    )  # fmt: skip
    code, out, _ = await finish(proc)
    assert code == EXIT_OK
    assert re.search(r"\x1b\[[0-9;]*31m(\x1b\[[0-9;]*m)*TLP:RED", out), out  # red

    code, out, _ = await run(home, "--profile", profile, "case", "show", case_id.hex())
    assert code == EXIT_OK and "TLP:RED" in out
    assert "\x1b[" not in out and not set(out) & BOXES  # words only in a pipe
    for command in (("verify", case_id.hex()), ("whoami",), ("case", "list")):
        code, out, _ = await run(home, "--profile", profile, *command)
        assert code == EXIT_OK and "\x1b[" not in out and not set(out) & BOXES, out
    assert case_id.hex() in out


async def test_a_partners_text_cannot_write_escape_sequences_to_the_terminal(net: Network) -> None:
    """A hostile member's note carries OSC 52 (set the clipboard), a line overwrite and a bidi override.

    On a real terminal every escape sequence in the output is rich's own colour (SGR), and the
    partner's control and format characters are shown as U+FFFD.
    """
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(
        title="Op \x1b]0;pwned\x07", members=[("tz-tra", "juma")], witnessed=False
    )
    await juma.post_note(case_id, text="ok\x1b]52;c;ZXZpbA==\x1b\\\r\x1b[2Kreceipt verified\u202eevil")
    home, profile = cli_home(alice)
    proc_env = {k: v for k, v in cli_env(home).items() if k != "NO_COLOR"}
    for command in (("case", "show", case_id.hex()), ("case", "list")):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "caseline.client.cli", "--profile", profile, *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**proc_env, **terminal(100, colour=True)},
        )  # fmt: skip
        code, out, _ = await finish(proc)
        assert code == EXIT_OK
        assert re.sub(r"\x1b\[[0-9;]*m", "", out).count("\x1b") == 0, repr(out)
        assert "\r" not in out and "\u202e" not in out and "\x07" not in out
        assert "\ufffd" in out


async def test_follow_shows_ids_markings_and_restrictions(net: Network) -> None:
    alice, juma, case_id = await marked_case(net)
    home, profile = cli_home(alice)
    markings = {"restrictions": RESTRICTIONS}
    for args, env in (((), terminal(60)), (("--json",), {})):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "caseline.client.cli", "--profile", profile,
            "follow", case_id.hex(), "--count", "1", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**cli_env(home), **env},
        )  # fmt: skip
        await until_following(proc)
        posted = await juma.post_typed(case_id, "note", {"text": LONG_TEXT, "markings": markings})
        code, out, err = await finish(proc)
        assert code == EXIT_OK
        assert_words(err)
        if not args:
            assert posted.update_id.hex()[:8] in out and "tz-tra:juma.mussa" in out
            assert "H3" in out and "TLP:RED" in out
            words_intact(LONG_TEXT, out)
            words_intact(RESTRICTIONS, out)
        else:
            shown = json.loads(out)
            assert shown["update_id"] == posted.update_id.hex()
            # Unstated H3 restriction codes are sent as all four, the strictest (PROTOCOL.md §6.7).
            codes = ["no-action-without-consent", "no-dissemination", "no-evidence", "no-third-party"]
            assert shown["markings"] == {
                "handling": "H3", "tlp": "RED", "restrictions": RESTRICTIONS, "restriction_codes": codes
            }  # fmt: skip


# --------------------------------------------------------------------------- flags anywhere, refs


async def test_global_flags_work_before_and_after_the_command(net: Network) -> None:
    alice, _, case_id = await marked_case(net)
    home, profile = cli_home(alice)
    before = await run(home, "--json", "--profile", profile, "case", "list")
    after = await run(home, "case", "list", "--json", "--profile", profile)
    between = await run(home, "case", "--json", "list", "--profile", profile)
    assert before[0] == after[0] == between[0] == EXIT_OK
    assert json.loads(before[1]) == json.loads(after[1]) == json.loads(between[1])
    assert json.loads(after[1])[0]["case_id"] == case_id.hex()
    # An error is JSON too when --json comes after the command.
    code, _, err = await run(home, "case", "show", "ffffffff", "--json", "--profile", profile)
    assert code == EXIT_USAGE and json.loads(err)["exit"] == EXIT_USAGE


async def test_a_reply_names_its_update_by_the_short_id_and_an_unknown_one_is_refused(net: Network) -> None:
    alice, juma, case_id = await marked_case(net)
    home, profile = cli_home(juma)
    first = next(e for e in await alice.history(case_id) if e.content_type == "note")
    assert first.update_id is not None
    post = ("--json", "--profile", profile, "post", case_id.hex()[:8], "--type", "reply")
    fields = ("--field", "text=on it", "--field", f"markings.restrictions={RESTRICTIONS}")
    code, _, err = await run(home, *post, "--in-reply-to", first.update_id.hex()[:8], *fields)
    assert code == EXIT_OK, err
    await alice.sync(case_id)
    reply = (await alice.history(case_id))[-1]
    assert reply.content is not None and reply.content["in_reply_to"] == first.update_id.hex()

    # By position too; and an id that is not in the case is refused, with nothing sent.
    ack = ("--json", "--profile", profile, "post", case_id.hex(), "--type", "ack", "--of", f"#{first.seq}")
    code, _, err = await run(
        home, *ack, "--field", "state=received", "--field", f"markings.restrictions={RESTRICTIONS}"
    )
    assert code == EXIT_OK, err
    stored = len(await net.app[STORE].entries(case_id, after=0, limit=100))
    for bad in ("ffffffff", "f" * 64):
        code, _, err = await run(home, *post, "--in-reply-to", bad, *fields)
        assert code == EXIT_USAGE and f"no update {bad}" in json.loads(err)["message"]
        code, _, err = await run(home, *post, "--field", f"in_reply_to={bad}", *fields)
        assert code == EXIT_USAGE
    assert len(await net.app[STORE].entries(case_id, after=0, limit=100)) == stored


async def test_a_reply_to_an_update_voided_since_it_was_shown_is_refused_not_redirected(
    net: Network,
) -> None:
    """An update juma saw turns voided when its sender's revocation is learnt, just before he answers.

    The reference he types must not resolve to another update sharing its
    prefix: it is matched against the voided update's id too, and refused.  A
    reply that does resolve says which update and whose it answers.
    """
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    bob = await net.device("ke-kra", "bob")
    case_id = await alice.create_case(
        title="Op. Voided", members=[("tz-tra", "juma"), ("ke-kra", "bob")], witnessed=False
    )
    honest = await alice.post_note(case_id, "an honest note")
    await net.admins["ke-kra"].revoke(bob.keys.device_id, reason="device-lost")  # signed, not published
    late = await bob.post_note(case_id, "posted after the phone was lost")  # the broker cannot tell yet
    shown = {e.update_id: e.kind for e in await juma.sync(case_id)}
    assert shown[late.update_id] == "update"  # what juma saw: an ordinary update
    await net.publish("ke-kra")

    home, profile = cli_home(juma)
    post = ("--profile", profile, "post", case_id.hex()[:8], "--type", "reply", "--field", "text=on it")
    stored = len(await net.app[STORE].entries(case_id, after=0, limit=100))
    for ref in (late.update_id.hex()[:8], late.update_id.hex()[:4], late.update_id.hex()):
        code, _, err = await run(home, *post, "--in-reply-to", ref)
        assert code == EXIT_USAGE, err
        assert f"update {late.update_id.hex()[:8]} in case {case_id.hex()[:8]} was voided" in err
    assert len(await net.app[STORE].entries(case_id, after=0, limit=100)) == stored  # nothing sent
    voided = [e for e in await juma.history(case_id) if e.kind == "voided"]
    assert [e.update_id for e in voided] == [late.update_id]  # the view keeps the voided update's id

    code, out, err = await run(home, *post, "--in-reply-to", honest.update_id.hex()[:6])
    assert code == EXIT_OK, err
    assert f"replying to {honest.update_id.hex()[:8]} (#{honest.seq}) by ke-kra:alice" in out


async def test_on_a_terminal_post_says_it_reads_standard_input(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", witnessed=False)
    home, profile = cli_home(alice)
    main_fd, child = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caseline.client.cli",
        "--profile", profile, "post", case_id.hex(), "--type", "note",
        stdin=child, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(home),
    )  # fmt: skip
    os.close(child)
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), timeout=60)
    assert line.decode().strip() == STDIN_NOTICE
    os.write(main_fd, b'{"text": "typed by hand"}\n\x04')
    code, out, err = await finish(proc)
    os.close(main_fd)
    assert code == EXIT_OK, err
    assert "posted note #1" in out

    # A script's pipe is read without a word.
    code, _, err = await run(home, "--profile", profile, "post", case_id.hex(), "--type", "note",
                             stdin=b'{"text": "piped"}')  # fmt: skip
    assert code == EXIT_OK and STDIN_NOTICE not in err


# --------------------------------------------------------------------------- safe files


async def test_issue_refuses_to_overwrite_and_mints_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = ("--profile", "root")
    assert (await run(home, *root, "agency", "init", "ke-kra", "--kdf", "interactive"))[0] == EXIT_OK
    request = tmp_path / "alice.req"
    code, _, err = await run(
        home, "--profile", "alice", "init", "--agency", "ke-kra", "--user", "alice",
        "--server", "http://127.0.0.1:9", "--kdf", "interactive", "--request-out", str(request),
    )  # fmt: skip
    assert code == EXIT_OK, err
    cert = tmp_path / "alice.cert"
    assert (await run(home, *root, "agency", "issue", str(request), "-o", str(cert)))[0] == EXIT_OK
    assert stat.S_IMODE(cert.stat().st_mode) == 0o600
    first = cert.read_bytes()

    code, _, err = await run(home, *root, "agency", "issue", str(request), "-o", str(cert))
    assert code == EXIT_USAGE and "--force" in err
    assert cert.read_bytes() == first
    code, out, _ = await run(home, "--json", *root, "agency", "list")
    assert len(json.loads(out)) == 1  # nothing minted for the refused run

    assert (await run(home, *root, "agency", "issue", str(request), "-o", str(cert), "--force"))[0] == EXIT_OK
    assert cert.read_bytes() != first and stat.S_IMODE(cert.stat().st_mode) == 0o600
    code, out, _ = await run(home, "--json", *root, "agency", "list")
    assert len(json.loads(out)) == 2


async def test_agency_issue_checks_scopes_and_list_shows_them(tmp_path: Path) -> None:
    """Item 9: a scope that names no content type is refused with the valid ones; list shows scopes."""
    home = tmp_path / "home"
    root = ("--profile", "root")
    assert (await run(home, *root, "agency", "init", "ke-kra", "--kdf", "interactive"))[0] == EXIT_OK
    request = tmp_path / "bot.req"
    code, _, err = await run(
        home, "--profile", "bot", "init", "--agency", "ke-kra", "--user", "scanner",
        "--server", "http://127.0.0.1:9", "--kdf", "interactive", "--request-out", str(request),
    )  # fmt: skip
    assert code == EXIT_OK, err
    issue = (*root, "agency", "issue", str(request), "--role", "bot")
    code, _, err = await run(home, *issue, "--scope", "alerts", "-o", str(tmp_path / "bot.cert"))
    assert code == EXIT_USAGE and "'alerts' is not a scope" in err and "alert, " in err
    assert not (tmp_path / "bot.cert").exists()
    code, out, _ = await run(home, "--json", *root, "agency", "list")
    assert json.loads(out) == []  # nothing signed for the refused run
    code, _, err = await run(
        home, *issue, "--scope", "alert", "--scope", "read", "-o", str(tmp_path / "bot.cert")
    )
    assert code == EXIT_OK, err
    code, out, _ = await run(home, *root, "agency", "list", "--json")
    [row] = json.loads(out)
    assert (row["role"], row["scopes"]) == ("bot", ["alert", "read"])
    assert row["valid_from"] and row["valid_until"] and row["revoked"] is None


async def test_case_repin_moves_a_member_onto_its_reissued_certificate(net: Network) -> None:
    """Item 9: re-issuing takes effect with one owner command, not a remove and re-add per case."""
    alice = await net.device("ke-kra", "alice")
    bot = await net.device("ke-kra", "scanner", role="bot", scopes=("alert", "read"))
    case_id = await alice.create_case(title="Op. Repin", members=[("ke-kra", "scanner")], witnessed=False)
    old = DeviceCert.decode(decode_signed(bot.cert)[0])  # the certificate the case pins
    cert = await net.admins["ke-kra"].issue(
        await bot.enrolment_request(), role="bot", scopes=("alert", "read", "seizure")
    )
    await net.publish("ke-kra")
    await bot.login(cert=cert)
    home, profile = cli_home(alice)
    new = DeviceCert.decode(decode_signed(cert)[0])
    code, out, err = await run(home, "--profile", profile, "case", "repin", env=terminal(200))
    assert code == EXIT_OK, err
    assert f"case {case_id.hex()}: re-pinned 1 device(s)" in out
    # The owner sees what the re-pin grants: scopes and validity, before and after.
    until = when(old.not_after), when(new.not_after)
    until_text = until[0] if until[0] == until[1] else f"{until[0]} → {until[1]}"  # issued in one second
    assert (
        f"ke-kra:scanner (device {bot.keys.device_id.hex()[:8]}): scopes alert, read → alert, read, seizure;"
        f" valid until {until_text}"
    ) in " ".join(out.split())
    code, out, err = await run(home, "--profile", profile, "case", "repin", case_id.hex()[:8])
    assert code == EXIT_OK and "nothing to re-pin" in out, err
    posted = await bot.post_seizure(case_id, **SEIZURE)  # what the re-issued certificate allows
    assert posted.update_id in {e.update_id for e in await alice.sync(case_id)}


async def test_case_repin_reports_the_cases_done_and_each_that_failed(net: Network) -> None:
    alice, bob = await net.device("ke-kra", "alice"), await net.device("ke-kra", "bob")
    owned = await alice.create_case(title="Op. Owned", members=[("ke-kra", "bob")], witnessed=False)
    await alice.set_role(owned, "ke-kra", "bob", "owner")
    member = await alice.create_case(title="Op. Member", members=[("ke-kra", "bob")], witnessed=False)
    cert = await net.admins["ke-kra"].issue(await bob.enrolment_request(), role="bot", scopes=("alert",))
    await net.publish("ke-kra")
    await bob.login(cert=cert)
    home, profile = cli_home(alice)
    code, out, err = await run(home, "--profile", profile, "case", "repin", "--json")
    assert code == EXIT_USAGE
    [done] = json.loads(out)  # the case done, with what changed, though another failed
    assert (done["case_id"], done["devices"]) == (member.hex(), [bob.keys.device_id.hex()])
    [change] = done["changes"]
    assert (change["member"], change["old"]["role"], change["new"]["role"]) == (
        "ke-kra:bob",
        "officer",
        "bot",
    )
    assert change["new"]["scopes"] == ["alert"] and change["new"]["serial"] > change["old"]["serial"]
    assert f"case {owned.hex()[:8]}: ke-kra:bob was re-issued as a bot" in json.loads(err)["message"]
    code, out, err = await run(home, "--profile", profile, "case", "repin")  # the failed case is left
    assert code == EXIT_USAGE and "nothing to re-pin" not in out
    assert (
        f"re-pinned 0 case(s), but 1 failed: case {owned.hex()[:8]}: ke-kra:bob was re-issued as a bot"
        in (" ".join(err.split()))
    )


async def test_evidence_export_refuses_to_overwrite(net: Network, tmp_path: Path) -> None:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", witnessed=False)
    home, profile = cli_home(alice)
    bundle = tmp_path / "case.evidence"
    bundle.write_bytes(b"earlier work")
    export = ("--profile", profile, "evidence", "export", case_id.hex(), "-o", str(bundle))
    code, _, err = await run(home, *export)
    assert code == EXIT_USAGE and "--force" in err and bundle.read_bytes() == b"earlier work"
    assert (await run(home, *export, "--force"))[0] == EXIT_OK
    assert bundle.read_bytes() != b"earlier work" and stat.S_IMODE(bundle.stat().st_mode) == 0o600


async def test_a_passphrase_file_others_can_read_is_refused(net: Network, tmp_path: Path) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o644)
    env = {"CASELINE_PASSPHRASE": ""}
    args = ("--profile", profile, "whoami", "--passphrase-file", str(secret))
    code, _, err = await run(home, *args, env=env)
    assert code == EXIT_PROFILE and "chmod go-rwx" in err
    secret.chmod(0o600)
    assert (await run(home, *args, env=env))[0] == EXIT_OK
    # A link is not followed: what is checked must be what is read.
    link = tmp_path / "link"
    link.symlink_to(secret)
    code, _, err = await run(home, "--profile", profile, "whoami", "--passphrase-file", str(link), env=env)
    assert code == EXIT_USAGE and "is a symbolic link" in err


# --------------------------------------------------------------------------- broker key code


async def test_login_takes_the_broker_key_code_the_operator_reads_out(net: Network) -> None:
    """Item 10: the code ``caseline-server key`` prints is what ``login --server-key`` takes."""
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    code = fingerprint("broker", (await alice.identity()).server_key or b"")
    done, out, err = await run(home, "--profile", profile, "--json", "login", "--server-key", code)
    assert done == EXIT_OK, err
    assert json.loads(out)["server_key"] == code
    wrong = ("1" if code[0] != "1" else "2") + code[1:]
    done, _, err = await run(home, "--profile", profile, "login", "--server-key", wrong)
    assert done == EXIT_UNTRUSTED, err
    assert_words(err)


# --------------------------------------------------------------------------- errors in words


async def test_errors_say_what_happened_in_words(net: Network, tmp_path: Path) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    closed = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run(home, "--profile", profile, "login", "--server", closed)
    assert code == EXIT_TEMPORARY and f"cannot reach the broker at {closed}: connection refused" in err
    assert len(err.strip().splitlines()) == 2  # the reason, and what to do

    request = tmp_path / "request.bin"
    request.write_bytes(await alice.enrolment_request())
    code, _, err = await run(home, "--profile", profile, "login", "--cert", str(request))
    assert code == EXIT_USAGE and f"{request} is an enrolment request, not the certificate" in err
    code, _, err = await run(home, "--profile", profile, "login", "--server-key", "not-hex")
    assert code == EXIT_USAGE and "--server-key takes the broker key's 30-digit code" in err
    code, _, err = await run(tmp_path, "--profile", "root", "agency", "revoke", "zz")
    assert code == EXIT_USAGE and "DEVICE takes 32 hex digits" in err
    code, _, err = await run(home, "--profile", profile, "case", "show", "xyz")
    assert code == EXIT_USAGE and "is not a case id" in err
    not_a_bundle = tmp_path / "junk.evidence"
    not_a_bundle.write_bytes(b"\x93\x01\x0a\x00")
    code, _, err = await run(tmp_path, "evidence", "verify", str(not_a_bundle), "--pin", "ke-kra=" + "1" * 30)
    assert code == EXIT_UNTRUSTED and "is not a caseline evidence bundle, or it is damaged" in err


async def test_a_broker_that_answers_junk_is_named_in_words(net: Network, aiohttp_server: Any) -> None:
    """A 'broker' whose answers decode as msgpack but are no caseline message: exit 3, no codec jargon."""

    async def junk(_request: web.Request) -> web.Response:
        return web.Response(body=msgpack.packb([1, 99, b"x"]), content_type="application/msgpack")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", junk)
    server = await aiohttp_server(app)
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    url = str(server.make_url("")).rstrip("/")
    code, _, err = await run(home, "--profile", profile, "login", "--server", url)
    assert code == EXIT_UNTRUSTED, err
    assert "the broker sent something that is not a caseline message" in err


async def test_membership_commands_say_what_they_changed(net: Network) -> None:
    alice = await net.device("ke-kra", "alice")
    await net.device("tz-tra", "juma.mussa")
    case_id = await alice.create_case(title="Op", witnessed=False)
    home, profile = cli_home(alice)
    case = ("--profile", profile, "case")
    code, out, err = await run(home, *case, "add", case_id.hex(), "tz-tra:juma.mussa", "--share-history")
    assert (code, out.strip()) == (EXIT_OK, "added 1 device(s)"), err
    code, out, _ = await run(home, *case, "role", case_id.hex(), "tz-tra:juma.mussa", "owner")
    assert (code, out.strip()) == (EXIT_OK, "tz-tra:juma.mussa is now owner")
    assert (await run(home, *case, "remove", case_id.hex()))[0] == EXIT_USAGE  # whom?
    code, out, _ = await run(home, "--json", *case, "remove", case_id.hex(), "tz-tra:juma.mussa")
    assert code == EXIT_OK and len(json.loads(out)["devices"]) == 1
    assert [m.author.name for m in await alice.members(case_id)] == ["ke-kra:alice"]
