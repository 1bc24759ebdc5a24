"""What every harness shares: the property, the type registry and the atheris entry point.

The property: on any input, a parser or verifier either succeeds or raises a
subclass of ``caseline.schemas.errors.CaselineError``.  Anything else escaping
(IndexError, TypeError, ValueError, RecursionError, MemoryError, ...) is a
finding: libFuzzer stops, writes the input to ``fuzz/findings/`` and prints the
traceback.  Hangs are caught with libFuzzer's ``-timeout`` and memory blow-ups
with ``-rss_limit_mb`` (set by ``make fuzz``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

MODES = 256


def struct_types() -> list[type[Any]]:
    """Every wire and API struct, top-level (with a TAG) or nested, in a stable order."""
    from caseline.schemas import api, wire
    from caseline.schemas.codec import Struct

    found: dict[str, type[Any]] = {}
    for module in (wire, api):
        for name, value in sorted(vars(module).items()):
            if isinstance(value, type) and issubclass(value, Struct) and value is not Struct:
                found.setdefault(f"{value.__module__}.{name}", value)
    return [found[k] for k in sorted(found)]


def split(data: bytes) -> tuple[int, bytes]:
    """The first byte picks a mode or a target; the rest is the input."""
    if not data:
        return 0, b""
    return data[0], data[1:]


def main(test_one_input: Callable[[bytes], None]) -> None:
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
