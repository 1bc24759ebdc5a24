"""Every content type can be posted with its defaults, by the library and by the CLI.

A type whose schema asks for graded markings (seizure, alert, request) must get
its grades filled in like the others get the case's handling code and TLP: a
request could not be posted at all while the client kept its own list of
graded types.  One test per type and per path, so a new type without defaults
shows up here by name.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from caseline.client.client import Client
from caseline.schemas import content as content_schemas
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE, UsageError

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home

#: The fewest fields each type needs; ``{ID}`` stands for an earlier update's id.
MINIMAL: dict[str, dict[str, Any]] = {
    "note": {"text": "container moved to bay 4"},
    "seizure": {
        "occurred_at": "2026-11-20T06:40:00Z",
        "place": {"name": "Namanga"},
        "goods": [{"description": "ivory"}],
    },
    "alert": {"subject_kind": "container", "subject": {"mode": "road"}, "reason": "X-ray anomaly"},
    "request": {"subject": "vehicle records for KBX 123A", "category": "urgent-direct"},
    "reply": {"in_reply_to": "{ID}", "text": "records attached"},
    "status": {"status": "active"},
    "ack": {"of": "{ID}", "state": "received"},
    "release": {"of": "{ID}", "purpose": "evidence"},
    "release-request": {"of": "{ID}", "purpose": "evidence", "reason": "an exhibit at trial"},
    "reminder": {"of": "{ID}", "due": "2026-12-31T10:00:00Z"},
    "approval": {"member": "ug-ura:akello", "approval": "AgMEBQ=="},
}


def test_every_content_type_has_minimal_fields_here() -> None:
    assert set(MINIMAL) == set(content_schemas.CONTENT_TYPES)


def test_graded_types_come_from_the_schemas() -> None:
    assert {t for t in content_schemas.CONTENT_TYPES if content_schemas.graded(t)} == {
        "seizure",
        "alert",
        "request",
    }


def fields_for(content_type: str, earlier: bytes) -> dict[str, Any]:
    return {k: earlier.hex() if v == "{ID}" else v for k, v in MINIMAL[content_type].items()}


async def open_case(net: Network) -> tuple[Client, bytes, bytes]:
    alice = await net.device("ke-kra", "alice")
    case_id = await alice.create_case(title="Op", handling="H1", tlp="RED")
    first = await alice.post_note(case_id, "the update the others answer")
    return alice, case_id, first.update_id


@pytest.mark.parametrize("content_type", sorted(MINIMAL))
async def test_the_library_posts_each_type_with_its_defaults(net: Network, content_type: str) -> None:
    alice, case_id, earlier = await open_case(net)
    posted = await alice.post_typed(case_id, content_type, fields_for(content_type, earlier))
    [event] = [e for e in await alice.history(case_id) if e.seq == posted.seq]
    assert event.content_type == content_type and event.content is not None
    markings = event.content["markings"]
    assert (markings["handling"], markings["tlp"]) == ("H1", "RED")  # the case's policy
    assert ("source_reliability" in markings) == content_schemas.graded(content_type)
    assert event.content["lang"] == "en"


async def test_an_unknown_type_is_the_callers_mistake(net: Network) -> None:
    alice, case_id, _ = await open_case(net)
    with pytest.raises(UsageError, match="not a content type"):
        await alice.post_typed(case_id, "memo", {"text": "x"})


def as_cli_fields(fields: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in fields.items():
        item = f"{name}={value}" if isinstance(value, str) else f"{name}:={json.dumps(value)}"
        args += ["--field", item]
    return args


@pytest.mark.parametrize("content_type", sorted(MINIMAL))
async def test_the_cli_posts_each_type_with_its_defaults(net: Network, content_type: str) -> None:
    alice, case_id, earlier = await open_case(net)
    home, profile = cli_home(alice)
    fields = as_cli_fields(fields_for(content_type, earlier))
    code, out, err = await cli(
        home, "--json", "--profile", profile, "post", case_id.hex(), "--type", content_type, *fields
    )
    assert code == EXIT_OK, err
    seq = json.loads(out)["seq"]
    await alice.sync(case_id)  # the library process sees what the CLI process posted
    [event] = [e for e in await alice.history(case_id) if e.seq == seq]
    assert event.content_type == content_type and event.content is not None
    assert ("source_reliability" in event.content["markings"]) == content_schemas.graded(content_type)


async def test_the_cli_refuses_an_unknown_type_as_usage(net: Network) -> None:
    alice, case_id, _ = await open_case(net)
    home, profile = cli_home(alice)
    code, _, err = await cli(home, "--profile", profile, "post", case_id.hex(), "--type", "memo")
    assert code == EXIT_USAGE and "Traceback" not in err
