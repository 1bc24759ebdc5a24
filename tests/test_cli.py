"""The ``caseline`` command line as scripts see it: exit codes, ``--json``, stdin.

Commands run as real processes against a real broker on loopback; the demo's
whole story runs once as ``make demo`` does.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from caseline.schemas.errors import (
    EXIT_OK,
    EXIT_PROFILE,
    EXIT_REFUSED,
    EXIT_TEMPORARY,
    EXIT_UNTRUSTED,
    EXIT_USAGE,
)

from tests.support.agencies import PARTNERS, Network
from tests.support.clirun import cli


@pytest.fixture
def net_agencies() -> tuple[tuple[str, str, str], ...]:
    """The CLI tests enrol everyone in one agency; other agencies arrive through the CLI."""
    return PARTNERS[:1]


async def caseline(home: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    return await cli(home, *args, stdin=stdin)


async def enrolled(net: Network, home: Path) -> bytes:
    """An officer profile 'alice' made by the CLI, with an open case; returns the case id."""
    code, out, _ = await caseline(
        home, "--json", "--profile", "alice", "init", "--agency", "ke-kra", "--user", "alice",
        "--server", net.url, "--kdf", "interactive", "--request-out", str(home / "alice.req"),
    )  # fmt: skip
    assert code == EXIT_OK, out
    cert = await net.admins["ke-kra"].issue((home / "alice.req").read_bytes(), role="officer")
    (home / "alice.cert").write_bytes(cert)
    await net.publish("ke-kra")
    fpr = net.admins["ke-kra"].fingerprint
    assert (await caseline(home, "--profile", "alice", "trust", "add", "ke-kra", fpr))[0] == EXIT_OK
    assert (await caseline(home, "--profile", "alice", "login", "--cert", str(home / "alice.cert")))[
        0
    ] == EXIT_OK
    code, out, err = await caseline(home, "--json", "--profile", "alice", "case", "create", "--title", "Op")
    assert code == EXIT_OK, err
    return bytes.fromhex(json.loads(out)["case_id"])


async def test_exit_codes_and_json(net: Network, tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, _, err = await caseline(home, "--json", "--profile", "nobody", "whoami")
    assert code == EXIT_PROFILE and json.loads(err)["exit"] == EXIT_PROFILE

    case_id = await enrolled(net, home)
    code, out, _ = await caseline(home, "--json", "--profile", "alice", "whoami")
    assert code == EXIT_OK and json.loads(out)["role"] == "officer"

    # A script posts JSON on stdin; the same idempotency key twice posts once.
    doc = json.dumps({"text": "container MSKU1234565 flagged"}).encode()
    post = (
        "--json",
        "--profile",
        "alice",
        "post",
        case_id.hex()[:8],
        "--type",
        "note",
        "--idempotency-key",
        "k1",
    )
    first, second = await caseline(home, *post, stdin=doc), await caseline(home, *post, stdin=doc)
    assert first[0] == second[0] == EXIT_OK
    assert json.loads(first[1])["update_id"] == json.loads(second[1])["update_id"]

    code, _, err = await caseline(
        home, "--profile", "alice", "post", case_id.hex(), "--type", "seizure", stdin=doc
    )
    assert (
        code == EXIT_USAGE and "for a seizure" in err and "check failed" not in err and "Traceback" not in err
    )
    code, _, err = await caseline(
        home, "--profile", "alice", "post", case_id.hex(), "--type", "note", stdin=b"{"
    )
    assert code == EXIT_USAGE

    code, out, _ = await caseline(home, "--json", "--profile", "alice", "case", "show", case_id.hex())
    shown = json.loads(out)
    assert code == EXIT_OK and [e["content"]["text"] for e in shown["events"] if e["content"]] == [
        "container MSKU1234565 flagged"
    ]
    code, out, _ = await caseline(home, "--json", "--profile", "alice", "case", "list")
    assert code == EXIT_OK and json.loads(out)[0]["unread"] == 0

    # Evidence: verified offline with a fingerprint; a changed byte exits 3.
    bundle = tmp_path / "case.evidence"
    code, _, err = await caseline(
        home, "--profile", "alice", "evidence", "export", case_id.hex(), "-o", str(bundle)
    )
    assert code == EXIT_OK, err
    pin = f"ke-kra={net.admins['ke-kra'].fingerprint}"
    code, out, _ = await caseline(home, "--json", "evidence", "verify", str(bundle), "--pin", pin)
    assert code == EXIT_OK and json.loads(out)["verified"] is True
    assert json.loads(out)["witnessed"] is False and json.loads(out)["witnesses"] == []
    code, out, _ = await caseline(home, "evidence", "verify", str(bundle), "--pin", pin)
    assert code == EXIT_OK and "UNWITNESSED: only the broker vouches" in out
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 1
    bundle.write_bytes(bytes(data))
    code, _, err = await caseline(home, "--json", "evidence", "verify", str(bundle), "--pin", pin)
    assert code == EXIT_UNTRUSTED and json.loads(err)["error"] == "bad-signature"

    # The broker says no (not a member of a case that does not exist): 4.
    code, _, _ = await caseline(home, "--profile", "alice", "case", "show", "00" * 16)
    assert code == EXIT_REFUSED

    # Nobody answers: 5, and the same command may simply be run again.
    code, _, err = await caseline(home, "--profile", "alice", "login", "--server", "http://127.0.0.1:9")
    assert code == EXIT_TEMPORARY and "run the same command again" in err


async def test_an_offline_root_reaches_the_broker_only_through_a_folder(net: Network, tmp_path: Path) -> None:
    """SECURITY.md's key handling: the root never meets a network, the relay holds no secret."""
    offline, desk, relay = tmp_path / "offline", tmp_path / "desk", tmp_path / "relay"
    root = ("--profile", "root")
    assert (await caseline(offline, *root, "agency", "init", "ug-ura", "--kdf", "interactive"))[0] == EXIT_OK
    code, out, _ = await caseline(offline, "--json", *root, "agency", "show")
    shown = json.loads(out)
    await net.register_agency("ug-ura", "Uganda Revenue Authority", "UG", bytes.fromhex(shown["root_key"]))

    # Alice's request travels to the offline root; certificate and list travel back in a folder.
    request, cert = tmp_path / "alice.req", tmp_path / "alice.cert"
    code, _, err = await caseline(
        desk, "init", "--agency", "ug-ura", "--user", "alice", "--server", net.url,
        "--kdf", "interactive", "--request-out", str(request),
    )  # fmt: skip
    assert code == EXIT_OK, err
    assert (await caseline(offline, *root, "agency", "issue", str(request), "-o", str(cert)))[0] == EXIT_OK

    async def carry(folder: str) -> tuple[int, str, str]:
        assert (await caseline(offline, *root, "agency", "export", str(tmp_path / folder)))[0] == EXIT_OK
        # The relay has no profile and no passphrase: it only forwards signed objects.
        return await caseline(
            relay, "--json", "agency", "publish", "--from", str(tmp_path / folder), "--server", net.url
        )

    code, out, err = await carry("usb-1")
    assert code == EXIT_OK, err
    assert json.loads(out) == {"certificates": 1, "revocation_list": 1}
    assert not (relay / "profiles").exists()
    assert (await caseline(desk, "trust", "add", "ug-ura", shown["fingerprint"]))[0] == EXIT_OK
    assert (await caseline(desk, "login", "--cert", str(cert)))[0] == EXIT_OK
    assert (await caseline(desk, "case", "list"))[0] == EXIT_OK

    # The drill: find the device in the root's register, revoke it from when it was last safe.
    code, out, _ = await caseline(offline, "--json", *root, "agency", "list")
    (issued,) = json.loads(out)
    assert (issued["user"], issued["published"], issued["revoked"]) == ("alice", False, None)
    revoke = (*root, "agency", "revoke", issued["device"], "--reason", "device-lost", "--since")
    safe = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    assert (await caseline(offline, *revoke, f"{safe:%Y-%m-%dT%H:%M}"))[0] == EXIT_USAGE  # no zone
    assert (await caseline(offline, *revoke, f"{safe:%Y-%m-%dT%H:%M:%S}Z"))[0] == EXIT_OK
    code, out, _ = await caseline(offline, "--json", *root, "agency", "list")
    assert json.loads(out)[0]["revoked"] == f"{safe:%Y-%m-%d %H:%M:%S}Z"

    # A damaged list is refused by the broker and changes nothing it holds.
    assert (await caseline(offline, *root, "agency", "export", str(tmp_path / "usb-2")))[0] == EXIT_OK
    (crl,) = (tmp_path / "usb-2").glob("*.crl")
    damaged = bytearray(crl.read_bytes())
    damaged[-1] ^= 1
    crl.write_bytes(bytes(damaged))
    args = ("--json", "agency", "publish", "--from", str(tmp_path / "usb-2"), "--server", net.url)
    code, _, err = await caseline(relay, *args)
    assert code == EXIT_REFUSED and "revocation list refused" in json.loads(err)["message"]
    assert (await caseline(desk, "case", "list"))[0] == EXIT_OK

    # The revocation drill: the next folder cuts the device off, and a stale folder cannot undo it.
    code, out, err = await carry("usb-3")
    assert code == EXIT_OK and json.loads(out) == {"certificates": 0, "revocation_list": 2}, err
    code, _, err = await caseline(desk, "case", "list")
    assert code == EXIT_REFUSED, err
    stale = ("--json", "agency", "publish", "--from", str(tmp_path / "usb-1"), "--server", net.url)
    code, _, err = await caseline(relay, *stale)
    assert code == EXIT_REFUSED and "alice.cert refused" in json.loads(err)["message"]
    (old_cert,) = (tmp_path / "usb-1").glob("*.cert")
    old_cert.unlink()
    code, _, err = await caseline(relay, *stale)
    assert code == EXIT_REFUSED and "older than the one" in json.loads(err)["message"]
    assert (await caseline(desk, "case", "list"))[0] == EXIT_REFUSED


def running_under(root: Path) -> list[str]:
    """Command lines of live processes that name ``root`` (a demo's own brokers and witnesses)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(cmdline)
    return found


def test_make_demo_runs_the_whole_story(tmp_path: Path) -> None:
    """``make demo``: two agencies and their witnesses, a bot, a witnessed case, evidence —
    and nothing left running."""
    root = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "caseline.client.demo", "--keep", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the same history" in done.stdout
    assert "VERIFIED" in done.stdout
    assert "final: all" in done.stdout and "WITNESSED" in done.stdout
    for agency in ("ke-kra", "tz-tra"):
        assert f"witness.{agency}.example/w1" in done.stdout
    assert "Demo complete" in done.stdout
    assert running_under(root) == []


def test_make_demo_fork_shows_the_alarm_on_both_branches(tmp_path: Path) -> None:
    """``make demo-fork``: a second broker on a copy of the data; both officers get exit 3."""
    root = tmp_path / "fork"
    done = subprocess.run(
        [sys.executable, "-m", "caseline.client.demo", "--fork", "--keep", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "split-view alarm" in done.stdout
    for profile in ("alice", "juma"):
        assert list((root / "home" / "profiles" / profile / "alarms").iterdir())
    assert "Demo complete" in done.stdout
    assert running_under(root) == []
