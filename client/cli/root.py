"""The ``caseline`` group: help, ``--version``, ``completion``, and ``main`` with its exit policy.

click is run with ``standalone_mode=False`` so that every way out — a parse
error, Ctrl-C, a failed command — goes through one policy (``exits``) and
ends in one of the documented exit codes, as one line, never a traceback.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Final

import click
from caseline.client.cli import admin, attachments, forms, officer, releases, stats, workflow
from caseline.client.cli.exits import report
from caseline.client.cli.output import printable
from caseline.client.cli.settings import Settings, global_options
from caseline.schemas.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

PROG: Final = "caseline"
COMPLETE_VAR: Final = "_CASELINE_COMPLETE"
SHELLS: Final = ("bash", "zsh", "fish")
CONTEXT: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Commands(click.Group):
    """A group that suggests the nearest command for a mistyped one, as it does for options."""

    group_class = type  # subgroups are Commands too

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's first sentence, wrapped — click would cut it at the width with "..."."""
        listed = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        rows = [(name, c.get_short_help_str(limit=300)) for name, c in listed if c and not c.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            typed = args[0] if args else ""
            near = difflib.get_close_matches(typed, self.list_commands(ctx), n=3, cutoff=0.5)
            if not near or typed.startswith("-"):
                raise
            raise click.UsageError(f"no command {typed!r}; did you mean {' or '.join(near)}?", ctx) from None


class Notices(logging.Formatter):
    """The library's notices on stderr, one line each: a notice may quote what a broker sent."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), lines=False)


def version() -> str:
    """``caseline <package version> (protocol <version>)``."""
    from caseline.schemas.codec import MAX_WIRE_VERSION  # noqa: PLC0415 - only for --version

    try:
        package = metadata.version("caseline")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return f"{PROG} {package} (protocol {MAX_WIRE_VERSION})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version())
        ctx.exit(EXIT_OK)


@click.group(PROG, cls=Commands, context_settings=CONTEXT)
@click.option(
    "--version", "-V", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
    help="Print the version of caseline and of its protocol, and exit.",
)  # fmt: skip
@global_options
def cli() -> None:
    """End-to-end-encrypted case threads between agencies.

    Options such as --json and --profile work before or after the command.

    \b
    Examples:
      caseline init --agency ke-kra --user alice --server https://broker.example:8443
      caseline case list
      caseline --profile alice post 3f2a9c --type note --field text="container flagged"
      caseline case show 3f2a9c --json
    """


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> int:
    """Print the shell completion script for bash, zsh or fish.

    \b
    Examples:
      bash:  echo 'eval "$(caseline completion bash)"' >> ~/.bashrc
      zsh:   echo 'eval "$(caseline completion zsh)"' >> ~/.zshrc
      fish:  caseline completion fish > ~/.config/fish/completions/caseline.fish
    """
    from click.shell_completion import get_completion_class  # noqa: PLC0415 - only here

    complete = get_completion_class(shell)
    if complete is None:  # pragma: no cover - SHELLS are click's own
        raise click.BadParameter(f"no completion for {shell}")
    click.echo(complete(cli, {}, PROG, COMPLETE_VAR).source())
    return EXIT_OK


officer.register(cli)
attachments.register(cli)
admin.register(cli)
forms.register(cli)
releases.register(cli)
workflow.register(cli)
stats.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; Ctrl-C at any point — parsing, the command, the error report — is 130."""
    state = Settings()
    try:
        return _main(argv, state)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None, state: Settings) -> int:
    log = logging.getLogger("caseline.client")
    if not log.handlers:  # once per process, however often main is called
        notices = logging.StreamHandler(sys.stderr)
        notices.setFormatter(Notices("caseline: %(message)s"))
        log.addHandler(notices)
        log.setLevel(logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args, prog_name=PROG, complete_var=COMPLETE_VAR, standalone_mode=False, obj=state)
    except (KeyboardInterrupt, click.Abort):
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help is the answer
        print(exc.format_message(), file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        return report(exc, as_json=state.as_json)
    return code if isinstance(code, int) else EXIT_OK
