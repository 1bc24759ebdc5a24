"""The options every command takes, wherever they are typed, and the passphrase they lead to.

``caseline --json case list`` and ``caseline case list --json`` mean the
same: each command repeats the global options (``global_options``), and a
value given after the subcommand overrides the one given before it.  The
values live in one ``Settings`` object that the error report reads too, so a
failure is reported as JSON whenever ``--json`` was typed anywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from caseline.client.cli.files import read_passphrase_file
from caseline.client.profile import home_dir, profile_dir
from caseline.schemas.errors import UsageError

if TYPE_CHECKING:
    from caseline.client.admin import AgencyAdmin
    from caseline.client.client import Client

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclasses.dataclass
class Settings:
    """The global options' values, merged from before and after the subcommand."""

    as_json: bool = False
    profile: str | None = None
    home: str | None = None
    passphrase_file: str | None = None
    timeout: float = 30.0

    def directory(self) -> Path:
        return profile_dir(self.profile, home=Path(self.home) if self.home else home_dir())

    def passphrase(self, *, new: bool = False, what: str = "device") -> str | None:
        """The passphrase from a file, the environment or a prompt — asked before the event loop.

        A prompt inside the loop blocks it, and Ctrl-C there does nothing until
        Enter: asyncio only notes the signal for a loop that is not running code.
        """
        if self.passphrase_file:
            return read_passphrase_file(Path(self.passphrase_file))
        if os.environ.get("CASELINE_PASSPHRASE"):
            return os.environ["CASELINE_PASSPHRASE"]
        if not sys.stdin.isatty():
            return None
        first = getpass.getpass(f"Passphrase for this {what}: ")
        if new and getpass.getpass("Again: ") != first:
            raise UsageError("the passphrases differ")
        return first

    def unlock(self) -> str | None:
        """The device passphrase, only if the profile is locked with one (bots use a key file)."""
        from caseline.client.store import LocalStore  # noqa: PLC0415 - with the client

        return self.passphrase() if LocalStore.locked(self.directory()) else None

    async def client(self, secret: str | None) -> Client:
        from caseline.client.client import Client  # noqa: PLC0415 - see the package docstring

        return await Client.open(self.directory(), passphrase=secret, timeout=self.timeout)

    async def admin(self, secret: str | None) -> AgencyAdmin:
        from caseline.client.admin import AgencyAdmin  # noqa: PLC0415 - administrators only

        return await AgencyAdmin.open(self.directory(), passphrase=secret)


def settings() -> Settings:
    """The one ``Settings`` of this run (``main`` passes it as the context's object)."""
    return click.get_current_context().ensure_object(Settings)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _setter(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return  # not typed here: keep what was typed before the subcommand
        setattr(ctx.ensure_object(Settings), name, value)

    return store


def global_options(f: F) -> F:
    """Add ``--json``, ``--profile``, ``--home``, ``--passphrase-file`` and ``--timeout`` to a command."""
    options = [
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            default=False,
            expose_value=False,
            callback=_setter("as_json"),
            help="Print one JSON document for scripts (errors too, on stderr).",
        ),
        click.option(
            "--profile",
            metavar="NAME",
            expose_value=False,
            callback=_setter("profile"),
            help="Profile to use (default: $CASELINE_PROFILE or 'default').",
        ),
        click.option(
            "--home",
            metavar="DIR",
            expose_value=False,
            callback=_setter("home"),
            help="Data directory (default: $CASELINE_HOME or the XDG data directory).",
        ),
        click.option(
            "--passphrase-file",
            metavar="FILE",
            expose_value=False,
            callback=_setter("passphrase_file"),
            help="Read the passphrase from this owner-only file (else $CASELINE_PASSPHRASE or a prompt).",
        ),
        click.option(
            "--timeout",
            type=float,
            metavar="SECONDS",
            expose_value=False,
            callback=_setter("timeout"),
            help="Seconds to wait for the broker (default: 30).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def command(group: click.Group, name: str) -> Callable[[Callable[..., int]], click.Command]:
    """Register a command on ``group`` with the global options it repeats; every area's module uses it."""

    def register(f: Callable[..., int]) -> click.Command:
        return group.command(name)(global_options(f))

    return register
