"""Every test SECURITY.md names as the proof of a claim exists, so a claim cannot outlive its test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``test_file.py``, ``test_file.py::name``, or ``::name`` (of the file named last on the line).
REFERENCE = re.compile(r"`(test_\w+\.py)?(?:::(\w+))?`")


def test_every_test_security_md_cites_exists() -> None:
    missing = []
    for line in (ROOT / "SECURITY.md").read_text().splitlines():
        current = None
        for match in REFERENCE.finditer(line):
            file, name = match.groups()
            current = file or current
            if current is None or (file is None and name is None):
                continue
            path = ROOT / "tests" / current
            if not path.exists():
                missing.append(current)
            elif name and not re.search(rf"def {name}\b", path.read_text()):
                missing.append(f"{current}::{name}")
    assert not missing, f"SECURITY.md cites tests that do not exist: {missing}"
