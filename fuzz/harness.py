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
from pathlib import Path
from typing import Any


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


def main(test_one_input: Callable[[bytes], None], *, tokens: list[bytes] | None = None) -> None:
    """Run libFuzzer; ``tokens`` become a dictionary it splices into inputs."""
    import atheris

    argv = list(sys.argv)
    if tokens:
        folder = Path(__file__).parent / "corpus"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{Path(argv[0]).stem}.dict"
        path.write_text("".join(f'"{_escape(t)}"\n' for t in sorted(set(tokens))))
        argv.append(f"-dict={path}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in token)
