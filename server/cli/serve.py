"""``caseline-server serve``: the broker, until SIGINT or SIGTERM.

Two lines go to stdout for whoever started it (the URL, then "caseline broker
ready" once it listens: scripts and tests wait for that line); everything else
is a log line on stderr, JSON by default (``logs.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import ssl

import click
from aiohttp import web
from caseline.crypto.keys import SigningKey
from caseline.schemas.errors import UsageError
from caseline.server.app import create_app, make_runner
from caseline.server.cli.root import cli, global_options, initialised
from caseline.server.config import ServerConfig
from caseline.server.datadir import exclusive, load_server_key
from caseline.server.edge import raise_descriptor_limit
from caseline.server.keys import BROKER
from caseline.server.log_throttle import throttle_refused_access, throttle_repeated_errors
from caseline.server.logs import FORMATS, configure_logging
from caseline.server.sqlite_store import SqliteStore

#: The chaos checker's fault switch (``Broker.ack_before_commit``); for its test only.
ACK_BEFORE_COMMIT_ENV = "CASELINE_TEST_ACK_BEFORE_COMMIT"
log = logging.getLogger("caseline.server")


@cli.command()
@click.option("--host", help="Address to listen on [default: 127.0.0.1, or host in the TOML].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on [default: 8443].")
@click.option(
    "--insecure-http",
    is_flag=True,
    default=None,
    help="Serve plain HTTP beyond loopback (behind a TLS-terminating proxy only).",
)
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="json",
    show_default=True,
    help="Logs on stderr: JSON lines for a collector, or text for a person.",
)
@global_options
def serve(host: str | None, port: int | None, insecure_http: bool | None, log_format: str) -> int:
    """Run the broker until Ctrl-C or SIGTERM.

    Beyond loopback it needs TLS (tls_cert and tls_key in the TOML).  Logs go
    to stderr, one JSON object a line, with an access line per request: its
    route's template, status, duration, size and source, never a path, token
    or content.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline serve
      caseline-server serve --config /etc/caseline/broker.toml
      caseline-server serve --host 127.0.0.1 --port 18020 --log-format text
    """
    config = initialised(host=host, port=port, insecure_http=insecure_http)
    try:
        config.check_listen()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    key = load_server_key(config.key_path)
    context = None
    if config.tls_cert is not None and config.tls_key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot load tls_cert {config.tls_cert} and tls_key {config.tls_key}: {exc}"
            ) from None
    with exclusive(config.data_dir):  # one broker per data directory, and no restore under it
        _run(config, key, context, log_format)
    return 0


def _run(config: ServerConfig, key: SigningKey, context: ssl.SSLContext | None, log_format: str) -> None:
    """The broker's whole life, inside the data directory's lock."""
    configure_logging(log_format)
    store = SqliteStore(config.db_path, max_bytes=config.db_max_bytes, create=False)
    app = create_app(config, server_key=key, store=store)
    if os.environ.get(ACK_BEFORE_COMMIT_ENV) == "1":
        log.warning(
            "TEST FAULT ON (%s): updates are acknowledged before they are on disk; never use this"
            " outside the chaos checker's own test",
            ACK_BEFORE_COMMIT_ENV,
        )
        app[BROKER].ack_before_commit = True
    url = f"{'https' if context else 'http'}://{config.host}:{config.port}"
    click.echo(f"caseline broker on {url} (data: {config.data_dir})")
    _descriptors(config)
    throttle_repeated_errors(config.accept_error_log_interval)
    throttle_refused_access(config.refused_access_log_interval)
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):  # SIGTERM, SIGINT: a clean stop
        asyncio.run(_serve(app, config, context, url))
    log.info("stopped", extra={"event": "stopped"})


def _descriptors(config: ServerConfig) -> None:
    """Raise the soft descriptor limit to the hard one (unless configured not to); log it once."""
    if config.raise_descriptor_limit:
        soft, hard = raise_descriptor_limit()
    else:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.info(
        "descriptor limit %d (hard limit %d)",
        soft,
        hard,
        extra={"event": "descriptors", "soft": soft, "hard": hard},
    )


async def _serve(
    app: web.Application, config: ServerConfig, context: ssl.SSLContext | None, url: str
) -> None:
    """Serve until SIGINT or SIGTERM, through ``make_runner`` (connection limits, parser errors)."""
    runner = make_runner(app, config, handle_signals=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            reason = (exc.strerror or "refused").rpartition("] ")[2]
            raise UsageError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
        log.info("listening on %s", url, extra={"event": "listening", "url": url})
        click.echo("caseline broker ready")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
