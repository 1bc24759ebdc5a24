"""``make demo``'s transcript can be copied and pasted, at 80 columns, and nothing in it is cut.

The demo runs once as a real process with ``COLUMNS=80`` and no terminal (as
``COLUMNS=80 make demo | less`` would), keeping its directory; then the
transcript is read as a newcomer would use it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess  # nosec B404 - the demo and the shell lines it printed
import sys
from pathlib import Path

import pytest
from caseline.client.demo import PHOTO, SCAN

BASH = shutil.which("bash") or "/bin/bash"


@pytest.fixture(scope="module")
def transcript(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("demo") / "kept"
    done = subprocess.run(  # nosec B603 - our own demo
        [sys.executable, "-m", "caseline.client.demo", "--keep", str(root)],
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout


def commands(text: str) -> list[str]:
    return [line[2:] for line in text.splitlines() if line.startswith("$ ")]


def panels(text: str) -> list[str]:
    """Each panel's text, lines joined: boxed on a terminal, or ``title:`` and indented lines in a pipe."""
    found: list[str] = []
    lines: list[str] | None = None
    indent = 0
    for line in text.splitlines():
        inner = line.strip()
        depth = len(line) - len(line.lstrip())
        if inner.startswith("╭"):
            lines = [inner.strip("╭─╮ ")]
        elif inner.startswith("╰") and lines is not None:
            found.append(" ".join(part for part in lines if part))
            lines = None
        elif lines is not None and (inner.startswith("│") or depth > indent):
            lines.append(inner.strip("│").strip())
        else:
            if lines is not None:  # a plain panel ends where its indentation does
                found.append(" ".join(part for part in lines if part))
                lines = None
            if inner.endswith(":") and not inner.startswith("$"):
                lines, indent = [inner.removesuffix(":")], depth
    if lines is not None:
        found.append(" ".join(part for part in lines if part))
    return found


def test_every_printed_command_is_one_complete_shell_line(transcript: tuple[Path, str]) -> None:
    _, text = transcript
    lines = commands(text)
    assert lines[0].startswith("cd ") and lines[1].startswith("export "), lines[:2]
    for line in lines:
        assert not line.rstrip().endswith("\\"), f"a command continued on the next line: {line}"
        checked = subprocess.run(  # nosec B603 - bash -n parses, runs nothing
            [BASH, "-n", "-c", line], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, f"not a complete shell command: {line}\n{checked.stderr}"
    assert not any(line.lstrip().startswith("|") for line in text.splitlines()), "a pipe split over lines"
    assert any(re.fullmatch(r"printf .+ \| caseline --profile bot post \w+ --type alert", c) for c in lines)


def test_the_forgery_is_shown_and_the_printed_lines_run_as_printed(transcript: tuple[Path, str]) -> None:
    """Paste the transcript's set-up lines, its forgery and both verifications: they run as shown."""
    root, text = transcript
    lines = commands(text)
    forge = next(c for c in lines if c.startswith("python -c ") and c.endswith(" forged.evidence"))
    verify = next(c for c in lines if c.startswith("caseline evidence verify kilimanjaro.evidence "))
    forged = next(c for c in lines if c.startswith("caseline evidence verify forged.evidence "))
    assert lines.index(forge) < lines.index(forged)
    (root / "forged.evidence").unlink()
    pasted = "\n".join([*lines[:2], forge, verify, f"{forged} && exit 99 || exit $?"])
    done = subprocess.run(  # nosec B603 - the demo's own printed lines
        [BASH, "-euc", pasted], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout
    assert (root / "forged.evidence").exists()


def test_no_id_is_cut_at_80_columns(transcript: tuple[Path, str]) -> None:
    """No id or text in a table is cut short with an ellipsis: an id must be typed back in full."""
    _, text = transcript
    cut = [line for line in text.splitlines() if "…" in line]
    assert not cut, "cut at 80 columns:\n" + "\n".join(cut)


def test_no_panel_is_cut_at_80_columns(transcript: tuple[Path, str]) -> None:
    """A panel's lines wrap: each sentence of the new-device panel arrives whole."""
    _, text = transcript
    devices = [p for p in panels(text) if p.startswith("new device")]
    assert len(devices) == 3
    for panel in devices:
        assert "(`caseline agency issue`)," in panel, panel
        assert "`caseline login --cert FILE`" in panel, panel


def test_the_export_for_court_carries_the_reports_files_and_catches_an_altered_one(
    transcript: tuple[Path, str],
) -> None:
    """Step 8 ends with an export folder: the photo and the scan verify offline; a changed bit fails."""
    root, text = transcript
    lines = commands(text)
    assert any(c.startswith("caseline evidence verify kilimanjaro-export --pin ") for c in lines)
    assert any(c.startswith("caseline evidence verify altered-export --pin ") for c in lines)
    assert "2 of 2 attachments verified" in text
    files = sorted(p.name for p in (root / "kilimanjaro-export" / "attachments").iterdir())
    assert [f.split("-", 2)[2] for f in files] == sorted([PHOTO, SCAN])
    for name in files:
        original = root / (PHOTO if name.endswith(PHOTO) else SCAN)
        assert (root / "kilimanjaro-export" / "attachments" / name).read_bytes() == original.read_bytes()


def outputs(text: str, prefix: str) -> list[str]:
    """What each command whose printed line starts with ``prefix`` printed, its indent removed."""
    found: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"$ {prefix}"):
            block = []
            for after in lines[i + 1 :]:
                if not after.startswith("  "):
                    break
                block.append(after[2:])
            found.append("\n".join(block))
    return found


def _ms(text: str) -> int:
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


def test_a_request_for_assistance_runs_to_a_released_answer_in_evidence(transcript: tuple[Path, str]) -> None:
    """Steps 9-12: KRA asks TRA (3 days), TRA acknowledges, extends once, answers, releases for evidence."""
    root, text = transcript
    asked, extended = (json.loads(o)["owed"] for o in outputs(text, "caseline --json --profile alice due"))
    (row,) = asked
    assert (row["from"], row["to"], row["category"], row["state"]) == (
        "ke-kra", ["tz-tra"], "urgent-indirect", "open"
    )  # fmt: skip
    assert _ms(row["deadline"]) - _ms(row["start"]) == 3 * 86_400_000  # Art. 5: 3 calendar days
    (moved,) = extended
    assert moved["request_id"] == row["request_id"] and moved["start"] == row["start"]
    assert (moved["state"], moved["extensions"], moved["extension_reason"]) == (
        "extended", 1, "judicial-authorisation"
    )  # fmt: skip
    assert _ms(moved["deadline"]) // 1000 == _ms(row["deadline"]) // 1000 + 2 * 86_400  # the new deadline

    # TRA's desk sees what it owes, then the extension, then nothing once it answered.
    first, second, last = outputs(text, "caseline --profile juma due")
    owes = f"#{row['seq']}  ke-kra -> tz-tra  urgent-indirect"
    assert owes in first and first.split(owes)[1].splitlines()[0].endswith("open")
    assert owes in second and "extended x1" in second
    assert "tz-tra owes (0)" in last
    assert "ke-kra owes (0)" in outputs(text, "caseline --profile alice due")[-1]

    # The answer goes into evidence with TRA's release, and verifies offline (the broker is gone).
    (exported,) = [o for o in outputs(text, "caseline --profile alice evidence export ") if "assistance" in o]
    release_seq = int(exported.split("disclosed too")[0].split("#")[-1])
    pins = re.findall(
        r"--pin '([^']+)'",
        next(c for c in commands(text) if c.startswith("caseline evidence verify assistance.evidence ")),
    )
    done = subprocess.run(  # nosec B603 - our own CLI, offline
        [sys.executable, "-m", "caseline.client.cli", "--json", "evidence", "verify", "assistance.evidence",
         *(arg for pin in pins for arg in ("--pin", pin))],
        cwd=root, env={**os.environ, "CASELINE_HOME": str(root / "empty-home")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (used,) = report["releases"]
    assert (used["release_seq"], used["purpose"], used["released_by"]) == (
        release_seq, "evidence", "tz-tra:juma.mussa"
    )  # fmt: skip
    answer = next(r for r in report["records"] if r["seq"] == used["seq"])
    assert answer["content_type"] == "reply" and answer["author"] == "tz-tra:juma.mussa"
    assert "tz-tra answers ke-kra" in outputs(text, "caseline --profile alice stats")[0]
