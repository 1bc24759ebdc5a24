"""Every failure an officer or a script can meet, through the real CLI: its exit code and hint.

One table: the situation, the command line, the exit code its error family
gives and a piece of the hint printed under the reason.  The caller's mistakes
exit 2 and say nothing was sent; received data that failed verification exits
3 and says not to rely on it; the broker's refusals exit 4 (5 when temporary).
None of them may print a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from caseline.client.client import Client
from caseline.crypto.caselog import KIND_COMMIT, KIND_UPDATE
from caseline.crypto.commits import create_commit
from caseline.schemas.errors import (
    EXIT_PROFILE,
    EXIT_REFUSED,
    EXIT_TEMPORARY,
    EXIT_UNTRUSTED,
    EXIT_USAGE,
)
from caseline.schemas.wire import EvidenceBundle, decode_signed, encode_signed

from tests.support.agencies import Network, start_network
from tests.support.clirun import cli, cli_home
from tests.support.hostile import HostileBroker, start_hostile

MISTAKE = "nothing was sent"
UNTRUSTED = "do not rely on what was received"
REFUSED = "the broker refused this"
TEMPORARY = "run the same command again"


@dataclasses.dataclass
class Scene:
    net: Network
    hostile: HostileBroker
    hostile_url: str
    alice: Client
    juma: Client
    case_id: bytes
    home: Path
    profile: str
    tmp: Path

    async def run(self, *args: str, client: Client | None = None) -> tuple[int, str]:
        home, profile = (self.home, self.profile) if client is None else cli_home(client)
        code, _, err = await cli(home, "--profile", profile, *args)
        assert "Traceback" not in err, err
        return code, err


@pytest.fixture
async def scene(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Scene]:
    net = await start_network(aiohttp_server, tmp_path)
    await net.agency("ke-kra", "Kenya Revenue Authority", "KE")
    await net.agency("tz-tra", "Tanzania Revenue Authority", "TZ")
    async with aiohttp.ClientSession() as session:
        hostile, url = await start_hostile(aiohttp_server, net, session)
        alice = await net.device("ke-kra", "alice")
        juma = await net.device("tz-tra", "juma")
        case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")])
        await alice.post_note(case_id, "first")
        home, profile = cli_home(alice)
        yield Scene(net, hostile, url, alice, juma, case_id, home, profile, tmp_path)
    await net.close()


# --------------------------------------------------------------------------- the table


async def show_by_name(s: Scene) -> tuple[int, str]:
    return await s.run("case", "show", "Operation-Serengeti")


async def member_without_agency(s: Scene) -> tuple[int, str]:
    return await s.run("case", "create", "--title", "Op 2", "--member", "juma.mussa")


async def add_a_member_again(s: Scene) -> tuple[int, str]:
    return await s.run("case", "add", s.case_id.hex(), "tz-tra:juma")


async def unknown_case_prefix(s: Scene) -> tuple[int, str]:
    return await s.run("case", "show", "abcdef")


async def revoke_by_prefix(s: Scene) -> tuple[int, str]:
    return await run_admin(s, "agency", "revoke", s.alice.keys.device_id.hex()[:8])


async def verify_a_certificate_as_evidence(s: Scene) -> tuple[int, str]:
    (s.tmp / "alice.cert").write_bytes(s.alice.cert)
    fpr = s.net.admins["ke-kra"].fingerprint
    return await s.run("evidence", "verify", str(s.tmp / "alice.cert"), "--pin", f"ke-kra={fpr}")


async def issue_a_junk_request(s: Scene) -> tuple[int, str]:
    (s.tmp / "junk.req").write_bytes(os.urandom(200))
    return await run_admin(s, "agency", "issue", str(s.tmp / "junk.req"), "-o", str(s.tmp / "x.cert"))


async def issue_another_agencys_request(s: Scene) -> tuple[int, str]:
    (s.tmp / "juma.req").write_bytes(await s.juma.enrolment_request())
    return await run_admin(s, "agency", "issue", str(s.tmp / "juma.req"), "-o", str(s.tmp / "x.cert"))


async def publish_a_missing_folder(s: Scene) -> tuple[int, str]:
    missing = str(s.tmp / "no-such-usb")
    return await s.run("agency", "publish", "--from", missing, "--server", s.net.url)


async def url_without_scheme(s: Scene) -> tuple[int, str]:
    return await s.run("login", "--server", "broker.example:8443")


async def plain_http_beyond_loopback(s: Scene) -> tuple[int, str]:
    return await s.run("login", "--server", "http://broker.example:8443")


async def missing_profile(s: Scene) -> tuple[int, str]:
    return await s.run("--profile", "nobody", "whoami")


async def commit_by_a_plain_member(s: Scene) -> tuple[int, str]:
    juma = s.juma
    view = await juma.view(s.case_id)
    await juma.sync(s.case_id)
    assert view.state is not None
    forged, _ = create_commit(
        prev=view.state, case_id=s.case_id, committer=juma.keys, roster=juma._ledger().roster(s.case_id),
        policy=view.state.policy, log=view.position(), info=None, now=juma.clock(), rng=os.urandom,
    )  # fmt: skip
    s.hostile.rewrite_log = lambda _dev, _cid, log: [*log, (KIND_COMMIT, forged)]
    await s.alice.login(server_url=s.hostile_url)
    return await s.run("case", "show", s.case_id.hex())


async def flipped_sender_in_a_log_page(s: Scene) -> tuple[int, str]:
    other = s.juma.keys.device_id

    def flip(_dev: bytes, _cid: bytes, log: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        kind, body = log[1]
        assert kind == KIND_UPDATE
        return [log[0], (kind, body.replace(s.alice.keys.device_id, other)), *log[2:]]

    s.hostile.rewrite_log = flip
    bob = await s.net.device("ke-kra", "bob")
    await s.alice.add_members(s.case_id, [("ke-kra", "bob", "member")])
    await bob.login(server_url=s.hostile_url)
    return await s.run("case", "show", s.case_id.hex(), client=bob)


async def flipped_exporter_in_a_bundle(s: Scene) -> tuple[int, str]:
    tbs, sig = decode_signed(await s.alice.export_evidence(s.case_id))
    bundle = dataclasses.replace(EvidenceBundle.decode(tbs), exporter=s.juma.keys.device_id)
    (s.tmp / "case.evidence").write_bytes(encode_signed(bundle.encode(), sig))
    pins = [f"--pin={a}={admin.fingerprint}" for a, admin in s.net.admins.items()]
    return await s.run("evidence", "verify", str(s.tmp / "case.evidence"), *pins)


async def post_after_removal(s: Scene) -> tuple[int, str]:
    await s.alice.remove_members(s.case_id, [("tz-tra", "juma")])
    return await s.run("post", s.case_id.hex(), "--type", "note", "--field", "text=x", client=s.juma)


async def broker_gone(s: Scene) -> tuple[int, str]:
    await s.alice.store.put("server-url", b"http://127.0.0.1:9")  # discard port: nothing listens
    return await s.run("case", "list")


Case = Callable[[Scene], Awaitable[tuple[int, str]]]
TABLE: list[tuple[Case, int, str]] = [
    (show_by_name, EXIT_USAGE, MISTAKE),
    (member_without_agency, EXIT_USAGE, MISTAKE),
    (add_a_member_again, EXIT_USAGE, MISTAKE),
    (unknown_case_prefix, EXIT_USAGE, "caseline case list"),
    (revoke_by_prefix, EXIT_USAGE, MISTAKE),
    (verify_a_certificate_as_evidence, EXIT_USAGE, MISTAKE),
    (issue_a_junk_request, EXIT_USAGE, MISTAKE),
    (issue_another_agencys_request, EXIT_USAGE, MISTAKE),
    (publish_a_missing_folder, EXIT_USAGE, MISTAKE),
    (url_without_scheme, EXIT_USAGE, MISTAKE),
    (plain_http_beyond_loopback, EXIT_USAGE, MISTAKE),
    (missing_profile, EXIT_PROFILE, "--profile"),
    (commit_by_a_plain_member, EXIT_UNTRUSTED, UNTRUSTED),
    (flipped_sender_in_a_log_page, EXIT_UNTRUSTED, UNTRUSTED),
    (flipped_exporter_in_a_bundle, EXIT_UNTRUSTED, UNTRUSTED),
    (post_after_removal, EXIT_REFUSED, REFUSED),
    (broker_gone, EXIT_TEMPORARY, TEMPORARY),
]


@pytest.mark.parametrize(("situation", "exit_code", "hint"), TABLE, ids=[c.__name__ for c, _, _ in TABLE])
async def test_exit_code_and_hint(scene: Scene, situation: Case, exit_code: int, hint: str) -> None:
    code, err = await situation(scene)
    assert code == exit_code, err
    assert "hint:" in err and hint in err, err


async def test_json_errors_name_the_code_and_the_exit(scene: Scene) -> None:
    code, _, err = await cli(scene.home, "--json", "--profile", scene.profile, "case", "show", "Op-X")
    assert code == EXIT_USAGE and json.loads(err) == {
        "error": "usage",
        "message": json.loads(err)["message"],
        "exit": EXIT_USAGE,
    }


async def run_admin(s: Scene, *args: str) -> tuple[int, str]:
    home, profile = cli_home(s.net.root / "admin-ke-kra")  # the administrator's own profile
    code, _, err = await cli(home, "--profile", profile, *args)
    assert "Traceback" not in err, err
    return code, err
