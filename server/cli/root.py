"""The ``caseline-server`` command group: global options, version, and the settings they make.

``--data-dir`` and ``--config`` are accepted before the subcommand and after
it (``caseline-server serve --config F`` as the README shows, and
``caseline-server --config F serve``): each command carries them too, and the
value given last wins.  Commands ask ``settings()`` for the ``ServerConfig``
those options, the TOML file and the environment make.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from caseline.schemas.codec import PROTOCOL_VERSION
from caseline.server.config import ServerConfig, load_config
from caseline.server.datadir import require_initialised

PROG: Final = "caseline-server"
CONTEXT: Final = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_META: Final = "caseline.server.cli."
#: The commands in the order an operator meets them in ``--help``.
ORDER: Final = ("init", "serve", "key", "token", "agency", "audit", "log", "backup", "restore", "completion")

F = TypeVar("F", bound=Callable[..., Any])


def version() -> str:
    try:
        number = importlib.metadata.version("caseline")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that was never installed
        number = "unknown"
    return f"{PROG} {number} (protocol {PROTOCOL_VERSION})"


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    if value is not None and param.name is not None:
        ctx.find_root().meta[_META + param.name] = value
    return value


_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    expose_value=False,
    callback=_remember,
    help="The broker's data directory: key, database, operator token [default: .caseline-server,"
    " or CASELINE_DATA_DIR, or data_dir in the TOML].",
)
_CONFIG = click.option(
    "--config",
    type=click.Path(path_type=Path),
    expose_value=False,
    callback=_remember,
    help="A TOML settings file ([server] and [limits] tables); an unknown or mistyped key is refused.",
)


def wants_json(flag: bool) -> bool:
    """``--json`` on the command, or before it (``caseline-server --json agency list``)."""
    return flag or bool(click.get_current_context().find_root().meta.get(_META + "json"))


_ROOT_JSON = click.option(
    "--json",
    is_flag=True,
    default=None,
    expose_value=False,
    callback=_remember,
    help="Print JSON for scripts (key, agency list, agency show); also accepted after the command.",
)


def global_options(f: F) -> F:
    """``--data-dir`` and ``--config`` on a command, so they may follow its name."""
    return _DATA_DIR(_CONFIG(f))


def settings(**overrides: Any) -> ServerConfig:
    """The configuration: defaults, ``--config``'s TOML, ``CASELINE_*``, then the options given."""
    meta = click.get_current_context().find_root().meta
    return load_config(meta.get(_META + "config"), data_dir=meta.get(_META + "data_dir"), **overrides)


def initialised(**overrides: Any) -> ServerConfig:
    """``settings()`` for a command that uses a data directory: one ``init`` (or ``restore``) made."""
    config = settings(**overrides)
    require_initialised(config)
    return config


class Group(click.Group):
    """Subcommands in the order they were added, and a "did you mean" for a mistyped one."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's first sentence, wrapped — click would cut it at the width with "..."."""
        listed = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        rows = [(name, c.get_short_help_str(limit=300)) for name, c in listed if c and not c.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        first = [name for name in ORDER if name in self.commands]
        return first + [name for name in self.commands if name not in ORDER]

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, list(self.commands), n=1)
            hint = (
                f" (did you mean {close[0]!r}?)"
                if close
                else f"; the commands are: {', '.join(self.commands)}"
            )
            raise click.UsageError(f"no command {name!r}{hint}", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=Group, context_settings=CONTEXT, no_args_is_help=True)
@click.version_option(
    version(), "--version", "-V", message="%(version)s", help="Print the version and protocol."
)
@global_options
@_ROOT_JSON
def cli() -> None:
    """Run and administer a caseline broker.

    The operator's commands: initialise a data directory, register the
    partner agencies' root keys, serve, and check, back up and restore the
    broker's data.  Logs go to stderr as JSON lines.

    Exit codes: 0 done; 1 a bug; 2 a mistake in the command, its settings or
    its data directory; 3 data that failed verification (a broken audit log,
    a backup that does not match the key).

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline init
      caseline-server --data-dir /var/lib/caseline agency add ke-kra \\
          --name "Kenya Revenue Authority" --country KE --root-key HEX
      caseline-server --data-dir /var/lib/caseline serve --config broker.toml
      caseline-server completion bash > ~/.local/share/bash-completion/completions/caseline-server
    """
