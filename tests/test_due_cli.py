"""``caseline due`` and ``caseline remind`` as real processes, on profiles of a real broker's agencies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from caseline.client.client import Client
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE
from caseline.schemas.handling import format_time

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home

DAY = 86_400_000
AGENCIES = (
    ("ke-kra", "Kenya Revenue Authority", "KE"),
    ("tz-tra", "Tanzania Revenue Authority", "TZ"),
    ("ug-ura", "Uganda Revenue Authority", "UG"),
)


@pytest.fixture
def net_agencies() -> tuple[tuple[str, str, str], ...]:
    return AGENCIES


async def caseline(client: Client, *args: str) -> tuple[int, str, str]:
    home, profile = cli_home(client)
    return await cli(home, "--profile", profile, *args)


async def due_json(client: Client, *args: str) -> dict[str, Any]:
    code, out, err = await caseline(client, "--json", "due", *args)
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


async def test_due_lists_what_each_side_owes_and_an_extension_moves_it(net: Network) -> None:
    amina = await net.device("ke-kra", "amina")
    juma = await net.device("tz-tra", "juma")
    case_id = await amina.create_case(title="Operation Mto", reference="KE-2026-7")
    await amina.add_members(case_id, [("tz-tra", "juma", "member")])
    request = await amina.post_request(
        case_id, subject="Vehicle records for KBX 123A", category="urgent-indirect"
    )

    owed_by_tra = await due_json(juma)  # syncs first: the request arrived since juma last looked
    assert owed_by_tra["agency"] == "tz-tra" and owed_by_tra["owed"] == []
    (row,) = owed_by_tra["owe"]
    assert row["request_id"] == request.update_id.hex() and row["seq"] == request.seq
    assert (row["from"], row["to"], row["category"], row["state"]) == (
        "ke-kra",
        ["tz-tra"],
        "urgent-indirect",
        "open",
    )
    assert row["subject"] == "Vehicle records for KBX 123A" and row["overdue"] is False
    assert row["deadline"].endswith("Z") and "." in row["deadline"]  # RFC 3339 UTC with ms

    code, out, err = await caseline(amina, "due")
    assert code == EXIT_OK, err
    assert "owed to ke-kra (1)" in out and "ke-kra -> tz-tra" in out and "in 2d 23h" in out
    assert "Vehicle records for KBX 123A" in out and "Traceback" not in err

    later = format_time(request.receipt_time + 5 * DAY)
    code, out, err = await caseline(
        juma, "post", case_id.hex()[:8], "--type", "ack", "--of", f"#{request.seq}",
        "--field", "state=extended", "--field", f"deadline={later}",
        "--field", "extension_reason=judicial-authorisation", "--field", "note=court order pending",
    )  # fmt: skip
    assert code == EXIT_OK, err
    code, out, err = await caseline(amina, "due", "--case", case_id.hex()[:8])
    assert code == EXIT_OK, err
    assert "extended x1" in out and "in 4d 23h" in out
    assert (await due_json(amina, "--overdue", "--offline"))["owed"] == []


async def test_an_ack_from_an_agency_not_asked_or_from_the_requester_does_not_close_it(net: Network) -> None:
    """Attack: URA (not asked) answers for TRA, and KRA marks its own request answered."""
    amina = await net.device("ke-kra", "amina")
    juma = await net.device("tz-tra", "juma")
    okello = await net.device("ug-ura", "okello")
    case_id = await amina.create_case(title="Operation Mto", reference="KE-2026-7")
    await amina.add_members(case_id, [("tz-tra", "juma", "member"), ("ug-ura", "okello", "member")])
    request = await amina.post_request(case_id, subject="Manifest", category="other", to=["tz-tra"])
    await okello.sync(case_id)
    reply = await okello.post_reply(case_id, in_reply_to=request.update_id, text="here", outcome="answered")
    await okello.post_ack(case_id, of=request.update_id, state="answered", answer=reply.update_id.hex())
    await amina.post_ack(case_id, of=request.update_id, state="refused", ground="not-available")

    owed = await due_json(juma)
    assert [r["request_id"] for r in owed["owe"]] == [request.update_id.hex()]
    assert owed["owe"][0]["state"] == "open"
    assert (await due_json(okello))["owe"] == []  # URA was not asked: it owes nothing


async def test_the_reminder_bot_posts_one_reminder_per_threshold_and_runs_commands(
    net: Network, tmp_path: Path
) -> None:
    juma = await net.device("tz-tra", "juma")
    amina = await net.device("ke-kra", "amina")
    poster = await net.device("ke-kra", "reminder-bot", role="bot", scopes=("reminder", "read"))
    runner = await net.device("ke-kra", "desk-bot", role="bot", scopes=("reminder", "read"))
    case_id = await juma.create_case(title="Operation Ziwa", reference="TZ-2026-3")
    await juma.add_members(
        case_id,
        [
            ("ke-kra", "amina", "member"),
            ("ke-kra", "reminder-bot", "member"),
            ("ke-kra", "desk-bot", "member"),
        ],
    )
    request = await juma.post_request(case_id, subject="Driver's record", category="urgent-direct")

    for expected in (1, 0):  # the second run remembers the first: never twice
        code, out, err = await caseline(poster, "--json", "remind", "--before", "9h", "--post", "--once")
        assert code == EXIT_OK, err
        assert json.loads(out) == {"reminded": expected}
    await amina.sync(case_id)
    reminders = [e for e in await amina.history(case_id) if e.content_type == "reminder"]
    assert len(reminders) == 1 and reminders[0].content is not None
    assert reminders[0].content["of"] == request.update_id.hex()
    assert reminders[0].author is not None and reminders[0].author.user_id == "reminder-bot"

    sink = tmp_path / "reminded.json"
    script = f"import sys, pathlib; pathlib.Path({str(sink)!r}).write_text(sys.stdin.read())"
    code, out, err = await caseline(
        runner, "--json", "remind", "--before", "9h", "--exec", "--once", "--", sys.executable, "-c", script
    )
    assert code == EXIT_OK, err
    assert json.loads(out) == {"reminded": 1}
    document = json.loads(sink.read_text())
    assert document["request_id"] == request.update_id.hex() and document["reminder"] == "9h"
    assert document["to"] == ["ke-kra"] and document["category"] == "urgent-direct"

    # A command that cannot run is logged (without the request's content) and is not fatal.
    code, out, err = await caseline(
        runner,
        "--json",
        "remind",
        "--before",
        "8h",
        "--exec",
        "--once",
        "--",
        str(tmp_path / "no-such-command"),
    )
    assert code == EXIT_OK and json.loads(out) == {"reminded": 1}
    assert "could not be started" in err and "Driver" not in err and "Traceback" not in err
    assert (await caseline(poster, "remind", "--post", "--exec", "--once"))[0] == EXIT_USAGE  # one of them
