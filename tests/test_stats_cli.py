"""``caseline stats`` as a process, over requests answered and refused through real clients and a broker."""

from __future__ import annotations

import csv
import io
import json
import subprocess  # nosec B404 - this interpreter on a fixed snippet
import sys
from pathlib import Path
from typing import Any

from caseline.client.cli.stats import duration_text
from caseline.client.client import Client
from caseline.schemas.errors import EXIT_OK, EXIT_USAGE
from PIL import Image

from tests.support.agencies import Network
from tests.support.clirun import cli, cli_home

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def request(client: Client, case_id: bytes, category: str, to: str) -> bytes:
    posted = await client.post_typed(
        case_id, "request", {"subject": "Vehicle records for KBX 123A", "category": category, "to": [to]}
    )
    return posted.update_id


async def answer(client: Client, case_id: bytes, of: bytes) -> None:
    await client.sync(case_id)
    await client.post_typed(
        case_id, "reply", {"in_reply_to": of.hex(), "text": "Owner is ACME Ltd", "outcome": "answered"}
    )


async def refuse(client: Client, case_id: bytes, of: bytes, ground: str) -> None:
    await client.sync(case_id)
    await client.post_typed(case_id, "ack", {"of": of.hex(), "state": "refused", "ground": ground})


async def exchange(net: Network) -> tuple[Client, Client, bytes]:
    """KRA asks TRA three times (one answered, one refused, one open); TRA asks KRA once, answered."""
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op Tembo", members=[("tz-tra", "juma")], witnessed=False)
    await juma.sync(case_id)
    first = await request(alice, case_id, "urgent-indirect", "tz-tra")
    second = await request(alice, case_id, "urgent-indirect", "tz-tra")
    await request(alice, case_id, "other", "tz-tra")
    await answer(juma, case_id, first)
    await refuse(juma, case_id, second, "not-available")
    theirs = await request(juma, case_id, "other", "ke-kra")
    await answer(alice, case_id, theirs)
    return alice, juma, case_id


def figure(doc: dict[str, Any], partner: str, category: str, direction: str) -> dict[str, Any]:
    (found,) = [
        f
        for f in doc["figures"]
        if (f["partner"], f["category"], f["direction"]) == (partner, category, direction)
    ]
    return found


async def test_stats_as_json_csv_table_and_chart(net: Network, tmp_path: Path) -> None:
    alice, _juma, _case = await exchange(net)
    home, profile = cli_home(alice)

    code, out, err = await cli(home, "--profile", profile, "stats", "--format", "json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["agency"] == "ke-kra"
    sent = figure(doc, "tz-tra", "all", "sent")
    assert (sent["requests"], sent["answered"], sent["refused"], sent["open"]) == (3, 1, 1, 1)
    assert sent["refusals"] == {"not-available": 1}
    assert sent["median_seconds"] is not None and sent["p90_seconds"] >= sent["median_seconds"]
    assert sent["on_time"] == 1.0  # the answer came within the 3 days; the open one is not due yet
    assert figure(doc, "tz-tra", "urgent-indirect", "sent")["requests"] == 2
    received = figure(doc, "tz-tra", "other", "received")
    assert (received["requests"], received["answered"]) == (1, 1)

    code, text, err = await cli(home, "--profile", profile, "stats", "--format", "csv")
    assert code == EXIT_OK, err
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(doc["figures"])
    for row, f in zip(rows, doc["figures"], strict=True):
        assert (row["partner"], row["direction"], row["category"]) == (
            f["partner"],
            f["direction"],
            f["category"],
        )
        for column in ("requests", "answered", "refused", "open", "overdue"):
            assert int(row[column]) == f[column]
        for column in ("median_seconds", "p90_seconds", "on_time", "within_article5"):
            assert (row[column] == "") == (f[column] is None)
            if f[column] is not None:
                assert float(row[column]) == f[column]
        assert int(row["refused_not-available"]) == f["refusals"].get("not-available", 0)
    assert text.endswith("\r\n")  # RFC 4180 line ends

    chart = tmp_path / "reciprocity.png"
    code, table, err = await cli(home, "--profile", profile, "stats", "--offline", "--chart", str(chart))
    assert code == EXIT_OK, err
    assert "tz-tra answers ke-kra" in table and "ke-kra answers tz-tra" in table
    assert "refused 1: not-available 1" in table
    data = chart.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(chart) as image:
        image.verify()
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400


async def test_partner_and_date_filters_and_output_file(net: Network, tmp_path: Path) -> None:
    alice, _juma, _case = await exchange(net)
    home, profile = cli_home(alice)
    out_file = tmp_path / "figures.json"
    code, out, err = await cli(
        home, "--profile", profile, "stats", "--partner", "ug-ura", "--json", "-o", str(out_file)
    )
    assert code == EXIT_OK, err
    assert out == ""
    assert json.loads(out_file.read_text())["figures"] == []  # no requests with that agency
    code, out, err = await cli(home, "--profile", profile, "stats", "--json", "--since", "2999-01-01")
    assert code == EXIT_OK, err
    assert json.loads(out)["figures"] == []
    code, out, err = await cli(
        home, "--profile", profile, "stats", "--json", "--partner", "tz-tra", "--until", "2999-01-01"
    )
    assert code == EXIT_OK, err
    assert figure(json.loads(out), "tz-tra", "all", "sent")["requests"] == 3


async def test_offline_reads_what_the_device_holds(net: Network) -> None:
    alice, juma = await net.device("ke-kra", "alice"), await net.device("tz-tra", "juma")
    case_id = await alice.create_case(title="Op Tembo", members=[("tz-tra", "juma")], witnessed=False)
    await juma.sync(case_id)
    asked = await request(alice, case_id, "urgent-direct", "tz-tra")
    await answer(juma, case_id, asked)  # alice's device has not fetched the answer yet
    home, profile = cli_home(alice)
    code, out, err = await cli(home, "--profile", profile, "stats", "--json", "--offline")
    assert code == EXIT_OK, err
    assert figure(json.loads(out), "tz-tra", "all", "sent")["open"] == 1
    code, out, err = await cli(home, "--profile", profile, "stats", "--json")
    assert code == EXIT_OK, err
    assert figure(json.loads(out), "tz-tra", "all", "sent")["answered"] == 1


def test_start_up_loads_no_matplotlib() -> None:
    """Every command pays for what the CLI imports at start-up; the chart's library is for --chart only."""
    code = (
        "import sys\n"
        "from caseline.client.cli import main\n"
        "assert main(['stats', '--help']) == 0\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    done = subprocess.run(  # nosec B603 - this interpreter on a fixed snippet
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_durations_read_at_a_glance() -> None:
    assert [duration_text(s) for s in (None, 40, 720, 5 * 3600 + 720, 2 * 86400 + 4 * 3600 + 59)] == [
        "-",
        "40s",
        "12m",
        "5h 12m",
        "2d 4h",
    ]


async def test_a_caller_mistake_is_exit_2_and_said_plainly(net: Network, tmp_path: Path) -> None:
    alice = await net.device("ke-kra", "alice")
    home, profile = cli_home(alice)
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me")
    for args in (
        ("--since", "2026-02-01", "--until", "2026-01-01"),
        ("--since", "last tuesday"),
        ("--chart", str(tmp_path / "chart.jpg")),
        ("--format", "csv", "-o", str(taken)),
        ("-o", str(tmp_path / "table.txt")),
    ):
        code, _out, err = await cli(home, "--profile", profile, "stats", *args)
        assert code == EXIT_USAGE, (args, err)
        assert "Traceback" not in err and err.startswith("caseline: "), err
    assert taken.read_text() == "keep me"
