"""What a failure means for the person: its exit code (the table in the package
docstring) and one line saying what happened and what to do.

Everything that escapes a command comes through ``classify``: caseline's own
errors carry their family's code and hint; click's parse errors are the
caller's mistake (2); a network failure that slipped past the transport is
temporary (5); a Python-internal name never reaches the screen.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NamedTuple

import click
from caseline.client.cli.output import printable
from caseline.schemas.errors import (
    EXIT_BUG,
    EXIT_TEMPORARY,
    EXIT_UNTRUSTED,
    EXIT_USAGE,
    BrokerRefusal,
    CaselineError,
    MalformedError,
)

NOT_CASELINE: str = "the broker sent something that is not a caseline message"


class Failure(NamedTuple):
    code: int
    name: str
    reason: str
    hint: str


def _network(exc: BaseException) -> str | None:
    """Words for a network failure, if ``exc`` is one (aiohttp is loaded by then, if at all)."""
    aiohttp = sys.modules.get("aiohttp")
    if isinstance(exc, TimeoutError):
        return "the broker did not answer in time"
    if aiohttp is None or not isinstance(exc, aiohttp.ClientError):
        return None
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot reach the broker at {exc.host}:{exc.port}: {exc.strerror or 'connection refused'}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "the connection to the broker closed before it answered"
    return "the broker's answer did not arrive whole"


def classify(exc: BaseException) -> Failure:
    """The exit code, error name, one-line reason and hint for anything a command raised."""
    if isinstance(exc, CaselineError):
        reason = str(exc)
        if isinstance(exc, MalformedError) and ("(tag " in reason or "msgpack" in reason):
            reason = NOT_CASELINE
        if isinstance(exc, BrokerRefusal) and exc.status:
            reason = f"the broker refused ({exc.status} {exc.problem}): {reason}"
        return Failure(exc.exit_code, exc.code, reason, exc.hint)
    if isinstance(exc, click.UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "caseline"
        return Failure(EXIT_USAGE, "usage", exc.format_message(), f"see `{where} --help`; nothing was sent")
    if isinstance(exc, click.ClickException):
        return Failure(EXIT_USAGE, "usage", exc.format_message(), "see `caseline --help`; nothing was sent")
    network = _network(exc)
    if network is not None:
        return Failure(
            EXIT_TEMPORARY, "unavailable", network, "temporary: run the same command again"
        )  # fmt: skip
    if isinstance(exc, OSError):  # a file named on the command line
        reason = exc.strerror or "cannot use this file"
        return Failure(
            EXIT_USAGE,
            "usage",
            f"{exc.filename}: {reason}" if exc.filename else reason,
            "check the file's name and permissions; nothing was sent",
        )
    if isinstance(exc, UnicodeError):
        return Failure(
            EXIT_UNTRUSTED, "malformed", "a file or answer is not valid UTF-8 text", "check the file"
        )
    return Failure(
        EXIT_BUG,
        "bug",
        "an unexpected failure (a bug; run with CASELINE_DEBUG=1 and report it)",
        "please report this with the command you ran",
    )


def report(exc: BaseException, *, as_json: bool) -> int:
    """Print one line for a person (the reason and what to do), or one JSON object for a script."""
    if os.environ.get("CASELINE_DEBUG") and classify(exc).code == EXIT_BUG:
        raise exc
    failure = classify(exc)
    # The reason may quote a broker's problem detail or a file's name: one line, no control characters.
    reason, hint = printable(failure.reason, lines=False), printable(failure.hint, lines=False)
    if as_json:
        print(
            json.dumps({"error": failure.name, "message": reason, "exit": failure.code}),
            file=sys.stderr,
        )
    else:
        print(f"caseline: {reason}", file=sys.stderr)
        print(f"hint: {hint}", file=sys.stderr)
    return failure.code
