"""The README's operator table lists every limit the broker has, with the default the code has.

An operator sizes a deployment from that table; a setting added without a row,
or a default changed without its row, would mislead them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from caseline.server.config import ServerConfig
from caseline.server.core import Limits

README = Path(__file__).resolve().parent.parent / "README.md"
#: ServerConfig settings that are limits, and so belong in the table.
SERVER_LIMITS = (
    "header_timeout",
    "unread_body_linger",
    "idle_timeout",
    "handshake_timeout",
    "max_frame_bytes",
    "session_ttl",
    "audit_flush_interval",
    "audit_retention_days",
    "accept_error_log_interval",
    "raise_descriptor_limit",
)


def _rows() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", README.read_text(), flags=re.M)
    return dict(rows)


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_limit_is_in_the_readme_with_its_default() -> None:
    rows = _rows()
    expected = {f.name: _shown(f.default) for f in dataclasses.fields(Limits)}
    expected |= {
        f.name: _shown(f.default) for f in dataclasses.fields(ServerConfig) if f.name in SERVER_LIMITS
    }
    missing = sorted(set(expected) - set(rows))
    assert not missing, f"README's limits table lacks {missing}"
    wrong = {name: (rows[name], value) for name, value in expected.items() if rows[name] != value}
    assert not wrong, f"README's defaults differ from the code's (README, code): {wrong}"
