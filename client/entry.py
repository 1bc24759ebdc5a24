"""The ``caseline`` command's entry point, kept free of heavy imports.

Loading the CLI takes a noticeable moment (aiohttp, rich, the crypto stack),
and an officer who presses Ctrl-C in that moment must get the same clean exit
130 as at any later point, not a traceback from deep inside an import.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from caseline.schemas.errors import EXIT_INTERRUPTED  # light: no I/O library behind it


def main() -> NoReturn:
    try:
        from caseline.client.cli import main as cli_main  # noqa: PLC0415 - after Ctrl-C is handled

        code = cli_main()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)
