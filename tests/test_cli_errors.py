"""Errors a new user's walk met in ``caseline`` (issue 13, items 8 and 19): each says what
happened and what to fix, in one line, with the exit code of its family.

Every command runs as a real process against a real broker on loopback;
``run`` checks each stderr for Python internals.
"""

from __future__ import annotations

import json
from pathlib import Path

from caseline.crypto.evidence import MAX_BUNDLE_BYTES
from caseline.schemas.errors import EXIT_OK, EXIT_TEMPORARY, EXIT_UNTRUSTED, EXIT_USAGE
from caseline.schemas.wire import EvidenceBundle, decode_signed

from tests.support.agencies import Network
from tests.support.clirun import cli_home
from tests.support.process import free_port
from tests.test_cli_ux import run

FINGERPRINT_WORDS = "a fingerprint is 30 digits (6 groups of 5), as `caseline agency show` prints it"


async def test_a_mistyped_fingerprint_is_the_callers_mistake(net: Network, tmp_path: Path) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    code, _, err = await run(home, "--profile", profile, "trust", "add", "tz-tra", "4224509656")
    assert code == EXIT_USAGE and FINGERPRINT_WORDS in err
    bundle = tmp_path / "case.evidence"
    bundle.write_bytes(b"anything")
    code, _, err = await run(tmp_path, "evidence", "verify", str(bundle), "--pin", "ke-kra=8447")
    assert code == EXIT_USAGE and "--pin 'ke-kra=8447'" in err and FINGERPRINT_WORDS in err


async def test_agency_commands_refuse_before_minting_or_writing(tmp_path: Path) -> None:
    """Items 2, 7 and 9: a folder that is not there, a certificate given as a request, a full folder."""
    home = tmp_path / "home"
    root = ("--profile", "root")
    assert (await run(home, *root, "agency", "init", "ke-kra", "--kdf", "interactive"))[0] == EXIT_OK
    request = tmp_path / "juma.req"
    code, _, err = await run(
        home, "--profile", "juma", "init", "--agency", "ke-kra", "--user", "juma",
        "--server", "http://127.0.0.1:9", "--kdf", "interactive", "--request-out", str(request),
    )  # fmt: skip
    assert code == EXIT_OK, err

    code, _, err = await run(
        home, *root, "agency", "issue", str(request), "-o", str(tmp_path / "nodir" / "a.cert")
    )
    assert code == EXIT_USAGE and f"there is no folder {tmp_path / 'nodir'}" in err
    code, out, _ = await run(home, "--json", *root, "agency", "list")
    assert json.loads(out) == []  # nothing minted for the refused run

    cert = tmp_path / "juma.cert"
    assert (await run(home, *root, "agency", "issue", str(request), "-o", str(cert)))[0] == EXIT_OK
    code, _, err = await run(home, *root, "agency", "issue", str(cert), "-o", str(tmp_path / "b.cert"))
    assert code == EXIT_USAGE
    assert f"{cert} is a device certificate, not an enrolment request (the file `caseline init` wrote)" in err
    code, out, _ = await run(home, "--json", *root, "agency", "list")
    assert len(json.loads(out)) == 1

    full = tmp_path / "usb"
    full.mkdir()
    (full / "notes.txt").write_text("earlier work")
    code, _, err = await run(home, *root, "agency", "export", str(full))
    assert code == EXIT_USAGE and f"{full} is not empty" in err
    assert [p.name for p in full.iterdir()] == ["notes.txt"]


async def test_a_revoked_member_is_named_with_the_command_that_removes_it(net: Network) -> None:
    """Item 3: the commit would carry the revoked device; the owner is told whom to remove."""
    alice = await net.device("ke-kra", "alice")
    baraka = await net.device("tz-tra", "baraka")
    await net.device("ke-kra", "bot")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "baraka")], witnessed=False)
    await net.admins["tz-tra"].revoke(baraka.keys.device_id)
    await net.publish("tz-tra")
    home, profile = cli_home(alice)
    case = ("--profile", profile, "case")
    code, _, err = await run(home, *case, "add", case_id.hex(), "ke-kra:bot")
    assert code == EXIT_USAGE, err
    assert (
        "tz-tra:baraka's device was revoked by its agency; remove it first:"
        f" caseline case remove {case_id.hex()} tz-tra:baraka"
    ) in err
    code, _, err = await run(home, *case, "remove", case_id.hex(), "tz-tra:baraka")
    assert code == EXIT_OK, err
    code, _, err = await run(home, *case, "add", case_id.hex(), "ke-kra:bot")
    assert code == EXIT_OK, err


async def test_an_unknown_member_or_agency_is_the_callers_mistake(net: Network) -> None:
    """Item 4: nothing was received to distrust; say who is unknown and what to do."""
    alice = await net.device("ke-kra", "alice")
    await net.device("tz-tra", "juma.mussa")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma.mussa")], witnessed=False)
    home, profile = cli_home(alice)
    p = ("--profile", profile)
    code, _, err = await run(home, *p, "case", "create", "--title", "Op 2", "--member", "tz-tra:nobody")
    assert code == EXIT_USAGE and "tz-tra:nobody has no enrolled device" in err
    code, _, err = await run(home, *p, "case", "add", case_id.hex(), "tz-tra:juma.musa")
    assert code == EXIT_USAGE
    assert "tz-tra:juma.musa has no enrolled device (did you mean tz-tra:juma.mussa?)" in err
    code, _, err = await run(home, *p, "case", "add", case_id.hex(), "ug-ura:someone")
    assert code == EXIT_USAGE and "ug-ura is not pinned: caseline trust add ug-ura FINGERPRINT" in err
    assert "do not rely" not in err


async def test_own_input_that_does_not_fit_is_named_in_words(net: Network, tmp_path: Path) -> None:
    """Items 5 and 10: exit 2, the field in words, and a refused init leaves no profile."""
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    create = ("--profile", profile, "case", "create", "--unwitnessed")
    code, _, err = await run(home, *create, "--title", "x" * 1000)
    assert code == EXIT_USAGE and "the title is longer than 200 characters" in err
    code, _, err = await run(home, *create, "--title", "Op", "--reference", "r" * 500)
    assert code == EXIT_USAGE and "the reference is longer than" in err
    code, _, err = await run(home, *create, "--title", "Op", "--retention-days", "-5")
    assert code == EXIT_USAGE and "--retention-days" in err and "0<=x<=36500" in err
    assert "Policy" not in err and "CaseInfo" not in err
    assert await alice.cases() == []

    fresh = tmp_path / "fresh"
    code, _, err = await run(
        fresh, "--profile", "x", "init", "--agency", "KE_KRA", "--user", "alice",
        "--server", net.url, "--kdf", "interactive",
    )  # fmt: skip
    assert code == EXIT_USAGE
    assert "an agency id is lowercase letters, digits, '.' and '-', like ke-kra" in err
    assert not (fresh / "profiles" / "x" / "state.db").exists()
    code, _, err = await run(
        fresh, "--profile", "x", "init", "--agency", "ke-kra", "--user", "alice",
        "--server", "ftp://broker.example", "--kdf", "interactive",
    )  # fmt: skip
    assert code == EXIT_USAGE and "is not a broker URL" in err
    assert not (fresh / "profiles" / "x" / "state.db").exists()


async def test_a_failed_login_leaves_the_profile_on_its_broker(net: Network) -> None:
    """Item 6: neither an unreachable URL nor a non-TLS one is kept; the next command still works."""
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    closed = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run(home, "--profile", profile, "login", "--server", closed)
    assert code == EXIT_TEMPORARY and f"cannot reach the broker at {closed}" in err
    assert "refused" not in err.replace("connection refused", "")  # no broker answered at all
    assert "a post resends" not in err

    # Item 7: https:// to a plain-HTTP broker is said in words, not in OpenSSL's.
    tls = net.url.replace("http://", "https://")
    code, _, err = await run(home, "--profile", profile, "login", "--server", tls)
    assert code == EXIT_TEMPORARY and "does not speak TLS (try http://" in err
    assert "SSL" not in err

    code, _, err = await run(home, "--profile", profile, "--json", "case", "list")
    assert code == EXIT_OK, err
    assert await alice.identity()  # the library's own view of the profile is intact too


async def test_evidence_verify_names_the_missing_pin(net: Network, tmp_path: Path) -> None:
    """Item 8: an agency in the bundle without --pin is the caller's mistake."""
    alice = await net.device("ke-kra", "alice")
    await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")], witnessed=False)
    home, profile = cli_home(alice)
    bundle = tmp_path / "case.evidence"
    code, _, err = await run(
        home, "--profile", profile, "evidence", "export", case_id.hex(), "-o", str(bundle)
    )
    assert code == EXIT_OK, err
    ke = net.admins["ke-kra"].fingerprint
    code, _, err = await run(tmp_path, "evidence", "verify", str(bundle), "--pin", f"ke-kra={ke}")
    assert code == EXIT_USAGE
    assert "add --pin tz-tra=FINGERPRINT (read it from tz-tra's administrator)" in err
    tz = net.admins["tz-tra"].fingerprint
    code, _, err = await run(
        tmp_path, "evidence", "verify", str(bundle), "--pin", f"ke-kra={ke}", "--pin", f"tz-tra={tz}"
    )
    assert code == EXIT_OK, err


async def test_a_bundle_whose_parts_do_not_fit_is_said_to_be_altered(net: Network, tmp_path: Path) -> None:
    """Item 7: an altered log entry reads as a damaged bundle, not as the verifier's own jargon."""
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", witnessed=False)
    home, profile = cli_home(alice)
    bundle = tmp_path / "case.evidence"
    export = ("--profile", profile, "evidence", "export", case_id.hex(), "-o", str(bundle))
    assert (await run(home, *export))[0] == EXIT_OK
    data = bytearray(bundle.read_bytes())
    tbs, _ = decode_signed(bytes(data), max_size=MAX_BUNDLE_BYTES)
    first = EvidenceBundle.decode(tbs, max_size=MAX_BUNDLE_BYTES).entry_hashes[0]
    data[data.index(first)] ^= 0x01  # the genesis commit's entry in the bundle's log
    bundle.write_bytes(bytes(data))
    pin = f"ke-kra={net.admins['ke-kra'].fingerprint}"
    code, _, err = await run(tmp_path, "evidence", "verify", str(bundle), "--pin", pin)
    assert code == EXIT_UNTRUSTED
    assert "the evidence bundle is damaged or was altered: " in err
