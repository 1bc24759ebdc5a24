"""The sending side of the marking rules, and how a violation is shown (PROTOCOL.md §6.7).

Real clients against a real broker on loopback; the CLI as a real process.
A sender is refused before anything is sealed; a reply inherits what it
answers without the officer typing markings; a history share leaves out what
the new agencies may not have; a violation is shown as a warning, never as
content, in ``case show`` and its JSON, and its files are not opened.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from caseline.client.client import Client
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE, NotAllowedError, NotPermittedError
from caseline.schemas.handling import V_DOWNGRADE

from tests.support.agencies import PASSPHRASE, Network
from tests.support.clirun import cli, cli_home, finish, start_cli, until_following
from tests.support.marks import CLEAR, H3_RED, modified

AMBER_H2: dict[str, Any] = {"handling": "H2", "tlp": "AMBER"}


async def _pair(net: Network) -> tuple[Client, Client, bytes]:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op", members=[("tz-tra", "juma")], handling="H0", tlp="CLEAR")
    return alice, juma, case_id


async def _content(client: Client, case_id: bytes, update_id: bytes) -> dict[str, Any]:
    await client.sync(case_id)
    event = next(e for e in await client.history(case_id) if e.update_id == update_id)
    assert event.violation is None and event.content is not None
    return event.content


async def test_a_reply_inherits_the_markings_of_what_it_answers(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    secret = await alice.post_note(case_id, "informant", markings=H3_RED)
    await juma.sync(case_id)
    reply = await juma.post_reply(case_id, in_reply_to=secret.update_id, text="noted")
    markings = (await _content(alice, case_id, reply.update_id))["markings"]
    assert (markings["handling"], markings["tlp"]) == ("H3", "RED")
    assert markings["restriction_codes"] == ["no-dissemination", "no-evidence"]
    assert markings["restrictions"] == H3_RED["restrictions"]  # restated, not invented
    ack = await juma.post_ack(case_id, of=secret.update_id)  # an ack quotes too
    assert (await _content(alice, case_id, ack.update_id))["markings"]["tlp"] == "RED"
    # Answering what has not been synced yet: the client fetches it first, then inherits.
    later = await alice.post_note(case_id, "later", markings={"handling": "H1", "tlp": "AMBER+STRICT"})
    ack = await juma.post_ack(case_id, of=later.update_id)
    assert (await _content(alice, case_id, ack.update_id))["markings"]["tlp"] == "AMBER+STRICT"


async def test_a_reply_marked_lower_than_what_it_answers_is_refused_before_sealing(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    secret = await alice.post_note(case_id, "TRA may not pass it on", markings=AMBER_H2)
    await juma.sync(case_id)
    count = (await juma.view(case_id)).count
    with pytest.raises(NotPermittedError) as caught:
        await juma.post_reply(
            case_id, in_reply_to=secret.update_id, text="x", markings={"handling": "H0", "tlp": "CLEAR"}
        )
    message = str(caught.value)
    assert "H2/TLP:AMBER" in message and secret.update_id.hex()[:12] in message
    assert "release-request" in message
    assert (await juma.view(case_id)).count == count
    assert await juma.store.outbox(case_id) == []  # nothing sealed, no message key used up
    # The provider's release to downgrade makes the same reply legal.
    await alice.release(case_id, secret.update_id, purpose="downgrade", to={"handling": "H0", "tlp": "CLEAR"})
    await juma.sync(case_id)
    reply = await juma.post_reply(
        case_id, in_reply_to=secret.update_id, text="x", markings={"handling": "H0", "tlp": "CLEAR"}
    )
    await _content(alice, case_id, reply.update_id)


async def test_a_release_by_someone_who_may_not_release_is_refused(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    h1 = await alice.post_note(case_id, "not for court", markings={"handling": "H1", "tlp": "AMBER"})
    await juma.sync(case_id)
    with pytest.raises(NotPermittedError, match="only its author or a supervisor of ke-kra may"):
        await juma.release(case_id, h1.update_id, purpose="evidence")
    asked = await juma.request_release(case_id, h1.update_id, purpose="evidence", reason="exhibit")
    assert (await _content(alice, case_id, asked.update_id))["purpose"] == "evidence"
    released = await alice.release(case_id, h1.update_id, purpose="evidence", recipients=["tz-tra"])
    await juma.sync(case_id)
    book = juma._ledger().case_marks(case_id).book
    assert book.may_export(h1.update_id, agency_id="tz-tra", at=released.receipt_time).allowed


async def test_sharing_history_withholds_red_and_unreleased_h2(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    bob = await net.device("ke-kra", "bob")
    red = await juma.post_note(case_id, "red", markings={"handling": "H0", "tlp": "RED"})
    h2 = await juma.post_note(case_id, "h2", markings=AMBER_H2)
    released = await juma.post_note(case_id, "h2 released", markings=AMBER_H2)
    await juma.release(case_id, released.update_id, purpose="disseminate")
    plain = await juma.post_note(case_id, "plain", markings={"handling": "H0", "tlp": "CLEAR"})
    added = await alice.add_members(case_id, [("ke-kra", "bob", "member")], share_history=True)
    assert added == [bob.keys.device_id]
    assert {w.update_id: w.reason.split(",")[0] for w in added.withheld} == {
        red.update_id: "it is TLP:RED",
        h2.update_id: "it is H2",
    }
    await bob.sync(case_id)
    history = await bob.history(case_id)
    readable = {e.update_id for e in history if e.readable and e.kind == "update"}
    assert {released.update_id, plain.update_id} <= readable
    assert not {red.update_id, h2.update_id} & readable
    assert all(e.violation is None for e in history)


@pytest.mark.parametrize("book", ["kept", "rebuilt"])
async def test_a_violation_survives_the_event_store_and_a_restored_snapshot(net: Network, book: str) -> None:
    """The book comes back kept beside the snapshot, or (none usable) rebuilt from the stored events."""
    alice, juma, case_id = await _pair(net)
    secret = await alice.post_note(case_id, "informant", markings=H3_RED)
    await juma.sync(case_id)
    bad = await modified(juma).post_reply(
        case_id, in_reply_to=secret.update_id, text="leaked", markings={"handling": "H0", "tlp": "CLEAR"}
    )
    await alice.sync(case_id)
    await alice.save_views()
    if book == "rebuilt":  # a kept book that does not open is not trusted in part
        await alice.store.put(f"case-marks:{case_id.hex()}", bytes(64))
    directory = alice.directory
    await alice.close()
    net.clients.remove(alice)
    again = await Client.open(directory, passphrase=PASSPHRASE)
    net.clients.append(again)
    restored = await again._views.load(case_id, trust=again.trust, me=again.keys)
    assert restored is not None  # the view really comes from the snapshot
    if book == "rebuilt":
        assert await again._views.load_marks(case_id, restored.count) is None
        again._ledger().forget(case_id)  # opened again: the book is rebuilt, then kept
        await again.view(case_id)
    assert await again._views.load_marks(case_id, restored.count) is not None
    event = next(e for e in await again.history(case_id) if e.update_id == bad.update_id)
    assert event.violation is not None and event.violation.rule == V_DOWNGRADE
    # The book was rebuilt: a reply to the leak inherits what it should have carried.
    reply = await again.post_reply(case_id, in_reply_to=bad.update_id, text="who leaked this?")
    event = next(e for e in await again.history(case_id) if e.update_id == reply.update_id)
    assert event.content is not None and event.content["markings"]["tlp"] == "RED"


async def test_case_show_prints_a_violation_as_a_warning_and_never_its_content(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    secret = await alice.post_note(case_id, "informant", markings=H3_RED)
    await juma.sync(case_id)
    leak = net.root / "leak.txt"
    leak.write_bytes(b"LEAKED-FILE")
    fields = {"in_reply_to": secret.update_id.hex(), "text": "LEAKED-TEXT", "markings": CLEAR}
    bad = await modified(juma).post_typed(case_id, "reply", fields, attachments=[leak])
    home, profile = cli_home(alice)
    code, out, err = await cli(home, "--profile", profile, "case", "show", case_id.hex())
    assert code == EXIT_OK, err
    flat = " ".join(out.split())
    assert "marking violation (downgrade) by tz-tra:juma" in flat
    assert "LEAKED-TEXT" not in out
    code, out, err = await cli(home, "--profile", profile, "--json", "case", "show", case_id.hex())
    assert code == EXIT_OK, err
    shown = next(e for e in json.loads(out)["events"] if e["update_id"] == bad.update_id.hex())
    assert shown["violation"]["rule"] == "downgrade" and "H3/TLP:RED" in shown["violation"]["message"]
    assert shown["content"] is None and "LEAKED-TEXT" not in out
    assert await alice.attachments(case_id) == []
    with pytest.raises(NotAllowedError, match="marking violation"):
        await alice.save_attachment(case_id, bad.update_id, 0, net.root)


async def test_cli_release_and_release_request(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    h2 = await alice.post_note(case_id, "h2", markings=AMBER_H2)
    await juma.sync(case_id)
    jhome, jprofile = cli_home(juma)
    code, out, err = await cli(
        jhome, "--profile", jprofile, "--json", "release-request", case_id.hex()[:8], h2.update_id.hex()[:8],
        "--for", "evidence", "--reason", "exhibit in CR 114/2026",
    )  # fmt: skip
    assert code == EXIT_OK, err
    assert json.loads(out)["of"] == h2.update_id.hex()
    code, out, err = await cli(
        jhome,
        "--profile",
        jprofile,
        "release",
        case_id.hex()[:8],
        h2.update_id.hex()[:8],
        "--for",
        "evidence",
    )
    assert code == EXIT_USAGE
    assert "only its author or a supervisor of ke-kra may" in " ".join(err.split())
    assert "Traceback" not in err
    ahome, aprofile = cli_home(alice)
    code, out, err = await cli(
        ahome, "--profile", aprofile, "release", case_id.hex()[:8], "#" + str(h2.seq),
        "--for", "downgrade", "--downgrade-to", "H1/AMBER", "--recipient", "tz-tra",
        "--expires", "2099-01-01T00:00:00Z", "--note", "for the port police",
    )  # fmt: skip
    assert code == EXIT_OK, err
    assert f"released {h2.update_id.hex()[:8]} for downgrade" in out
    await juma.sync(case_id)
    (release,) = juma._ledger().case_marks(case_id).book.releases(h2.update_id)
    assert release.to is not None and release.to.label == "H1/TLP:AMBER"
    assert release.recipients == frozenset({"tz-tra"})


async def test_cli_post_with_restriction_codes(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    home, profile = cli_home(alice)
    code, out, err = await cli(
        home, "--profile", profile, "--json", "post", case_id.hex()[:8], "--type", "note",
        "--field", "text=informant", "--field", "markings.handling=H3",
        "--field", "markings.restrictions=Namanga only", "--restriction", "no-evidence",
    )  # fmt: skip
    assert code == EXIT_OK, err
    update_id = bytes.fromhex(json.loads(out)["update_id"])
    assert (await _content(juma, case_id, update_id))["markings"]["restriction_codes"] == ["no-evidence"]
    code, out, err = await cli(
        home, "--profile", profile, "post", case_id.hex()[:8], "--type", "note",
        "--field", "text=x", "--field", "markings.handling=H2", "--restriction", "no-evidence",
    )  # fmt: skip
    assert code == EXIT_USAGE and "--restriction is for H3" in err


async def test_follow_prints_a_violation_as_it_arrives_and_json_carries_it(net: Network) -> None:
    alice, juma, case_id = await _pair(net)
    secret = await alice.post_note(case_id, "informant", markings=H3_RED)
    await juma.sync(case_id)
    bad = modified(juma)
    home, profile = cli_home(alice)
    for json_flag in ((), ("--json",)):
        proc = await start_cli(
            home, *json_flag, "--profile", profile, "follow", case_id.hex(), "--count", "1"
        )
        await until_following(proc)
        await bad.post_reply(case_id, in_reply_to=secret.update_id, text="LEAKED-TEXT", markings=CLEAR)
        code, out, err = await finish(proc)
        assert code == EXIT_OK, err
        assert "LEAKED-TEXT" not in out
        if json_flag:
            assert json.loads(out)["violation"]["rule"] == "downgrade"
        else:
            assert "marking violation (downgrade) by tz-tra:juma" in " ".join(out.split())
