"""``caseline-server``: the operator's command line, and its exit policy.

The commands live in ``operator.py`` (the data directory's) and ``serve.py``;
the group and its global options in ``root.py``.  This module turns whatever
they raise into one line on stderr and an exit code (``schemas/errors.py``):
a mistake in the command, its settings or its data directory is 2, data that
failed verification 3, and anything unexpected is a bug, 1, named as one.  No
traceback reaches the operator unless ``CASELINE_DEBUG=1`` asks for it.
"""

from __future__ import annotations

import logging
import os
import sqlite3

import click
from caseline.schemas.errors import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USAGE, CaselineError
from caseline.server.cli import operator, serve  # noqa: F401 - registers their commands on ``cli``
from caseline.server.cli.operator import verify_audit
from caseline.server.cli.root import PROG, cli
from caseline.server.cli.serve import ACK_BEFORE_COMMIT_ENV
from caseline.server.logs import logging_json
from click.shell_completion import get_completion_class

__all__ = ["ACK_BEFORE_COMMIT_ENV", "cli", "main", "verify_audit"]

SHELLS = ("bash", "zsh", "fish")
DEBUG_ENV = "CASELINE_DEBUG"
#: click 8.2's "no arguments, so here is the help" (8.1 printed it and exited 0 itself).
_NO_ARGS: tuple[type[click.UsageError], ...] = tuple(
    e for e in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if e is not None
)


@cli.command(short_help="Print the completion script for bash, zsh or fish.")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> int:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    Examples:

    \b
      caseline-server completion bash > ~/.local/share/bash-completion/completions/caseline-server
      caseline-server completion zsh > "${fpath[1]}/_caseline-server"
      caseline-server completion fish > ~/.config/fish/completions/caseline-server.fish
    """
    complete_var = f"_{PROG.replace('-', '_').upper()}_COMPLETE"
    completer = get_completion_class(shell)
    if completer is None:  # not with SHELLS, click's own
        raise click.UsageError(f"no completion for {shell}")
    click.echo(completer(cli, {}, PROG, complete_var).source())
    return 0


def _say(message: str) -> None:
    """One line on stderr: a JSON log line once ``serve`` made stderr a JSON log, else text."""
    if logging_json():
        logging.getLogger("caseline.server").error("%s", message, extra={"event": "fatal"})
    else:
        click.echo(f"{PROG}: {message}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code, never raise (unless ``CASELINE_DEBUG=1``)."""
    try:
        result = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except _NO_ARGS as exc:  # bare ``caseline-server``: the help, as a usage error
        click.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else PROG
        _say(f"{exc.format_message()} (see `{where} --help`)")
        return EXIT_USAGE
    except click.ClickException as exc:
        _say(exc.format_message())
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        _say("interrupted")
        return EXIT_INTERRUPTED
    except CaselineError as exc:
        _say(str(exc))
        return exc.exit_code
    except Exception as exc:  # the last line of defence: one line, no traceback
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        if isinstance(exc, sqlite3.Error):
            _say(f"the database could not be used ({exc}); run with {DEBUG_ENV}=1 for the details")
        elif isinstance(exc, OSError) and exc.strerror:
            where = f" {exc.filename}" if exc.filename else ""
            _say(f"cannot use{where}: {exc.strerror}; run with {DEBUG_ENV}=1 for the details")
        else:
            _say(f"unexpected failure (a bug): {exc or 'no detail'}; run with {DEBUG_ENV}=1 for the details")
        return EXIT_BUG
    return result if isinstance(result, int) else 0
