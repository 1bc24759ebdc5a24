"""The operator's data-directory commands: init, key, token, agency, audit, log, backup, restore, gc."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import click
from caseline.crypto import note, tlog
from caseline.crypto.keys import SigningKey, fingerprint
from caseline.schemas.errors import EXIT_UNTRUSTED, CaselineError, UnknownError, UsageError
from caseline.schemas.wire import AGENCY_ID
from caseline.server import audit_verify, backups
from caseline.server.blob_service import Blobs, Collected
from caseline.server.cli.root import cli, global_options, initialised, settings, wants_json
from caseline.server.config import ServerConfig
from caseline.server.datadir import (
    create_private,
    exclusive,
    load_server_key,
    make_private_dir,
    mint_operator_token,
)
from caseline.server.file_blobs import BLOBS_DIR, FileBlobStore
from caseline.server.metrics import Metrics
from caseline.server.sqlite_store import SqliteStore
from caseline.server.store import AgencyRow

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")


def broker_key_code(public_key: bytes) -> str:
    """The 30-digit code an officer's ``caseline login`` shows for this broker's key."""
    return fingerprint("broker", public_key)


def log_vkey(key: SigningKey) -> str:
    return note.vkey(tlog.log_origin(key.public_key), note.ALG_ED25519, key.public_key)


@cli.command(short_help="Create the data directory: key, operator token, database.")
@global_options
def init() -> int:
    """Create the data directory, the broker's key, an operator token and the database.

    The key signs every receipt; officers pin it at their first login, so it
    must never change.  The operator token (for GET /metrics) is printed once;
    `caseline-server token` makes a new one.  Running init again on an
    initialised directory changes nothing.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline init
    """
    config = settings()
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise UsageError(f"{config.data_dir} is a file; give init the path of a directory to make")
    make_private_dir(config.data_dir)
    with exclusive(config.data_dir):  # never under a running broker (restore's rule)
        if config.key_path.exists():
            key = load_server_key(config.key_path)
            click.echo(f"already initialised: {config.data_dir}")
        else:
            create_private(config.key_path, SigningKey.generate(secrets.token_bytes).seed)
            key = load_server_key(config.key_path)
            token = mint_operator_token(config)  # a new key, a new token
            click.echo(f"initialised {config.data_dir}")
            click.echo(f"operator token (for /metrics; shown once): {token}")
        if not config.db_path.exists():
            # Owner-only from the start: it holds token hashes, devices and the audit log (SQLite gives
            # its WAL and shared-memory files the database file's mode).  An empty file is an empty database.
            create_private(config.db_path, b"")
        asyncio.run(_open_and_close(SqliteStore(config.db_path)))  # applies the schema
    click.echo(f"broker key code: {broker_key_code(key.public_key)}")
    click.echo(f"server receipt key: {key.public_key.hex()}")
    click.echo(f"log key for witnesses: {log_vkey(key)}")
    return 0


async def _open_and_close(store: SqliteStore) -> None:
    await store.open()
    await store.close()


@cli.command(short_help="Print the broker key's 30-digit code, and the key in hex.")
@global_options
@_JSON
def key(as_json: bool) -> int:
    """Print the broker key's 30-digit code, to read to officers, and the key in hex.

    An officer's `caseline login` shows the same code and asks them to compare
    it with the operator's, by phone or in person; `caseline login
    --server-key CODE` checks it for them.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline key
      caseline-server key --json
    """
    config = initialised()
    public = load_server_key(config.key_path).public_key
    if wants_json(as_json):
        click.echo(json.dumps({"code": broker_key_code(public), "key": public.hex()}))
    else:
        click.echo(f"broker key code: {broker_key_code(public)}")
        click.echo(f"broker key (hex): {public.hex()}")
    return 0


@cli.command(short_help="Make a new operator token for /metrics.")
@global_options
def token() -> int:
    """Make a new operator token for GET /metrics; the old one stops working at once.

    Only the token's hash is kept, so a lost token cannot be shown again: make
    a new one and give it to the metrics collector.  A running broker accepts
    the new token without a restart.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline token
    """
    config = initialised()
    click.echo(f"operator token (for /metrics; shown once): {mint_operator_token(config)}")
    return 0


@cli.group()
def agency() -> None:
    """Register the partner agencies' root keys, and list them.

    Examples:

    \b
      caseline-server agency add ke-kra --name "Kenya Revenue Authority" --country KE --root-key HEX
      caseline-server agency list
      caseline-server agency show ke-kra --json
    """


@agency.command("add", short_help="Register an agency's root key; read its fingerprint back.")
@click.argument("agency_id", metavar="AGENCY")
@click.option("--name", required=True, help="The agency's full name, e.g. 'Kenya Revenue Authority'.")
@click.option("--country", required=True, help="Its ISO 3166-1 alpha-2 country code, e.g. KE.")
@click.option("--root-key", required=True, help="Its root public key: 64 hex digits, from the agency.")
@global_options
def agency_add(agency_id: str, name: str, country: str, root_key: str) -> int:
    """Register AGENCY's root key, then read its fingerprint back to the agency by phone.

    Every certificate the agency issues chains to this key: a wrong key here
    lets someone else speak for the agency.  So the command prints the key's
    30-digit fingerprint: read it to the agency's administrator, who compares
    it with the one their `caseline agency init` printed.

    Examples:

    \b
      caseline-server agency add ke-kra --name "Kenya Revenue Authority" --country KE \\
          --root-key 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29
    """
    agency_id = _agency_id(agency_id)
    try:
        root = bytes.fromhex(root_key)
    except ValueError:
        root = b""
    if len(root) != 32:
        raise UsageError("--root-key must be 64 hex digits (32 bytes)")
    if not (len(country) == 2 and country.isalpha() and country.isupper()):
        raise UsageError("--country must be an ISO 3166-1 alpha-2 code such as KE")
    name = name.strip()
    if not name or not name.isprintable():
        raise UsageError("--name must be the agency's full name, e.g. 'Kenya Revenue Authority'")
    config = initialised()
    return asyncio.run(
        _agency_add(config, AgencyRow(agency_id, name, country, root, int(time.time() * 1000)))
    )


async def _agency_add(config: ServerConfig, row: AgencyRow) -> int:
    store = await _open(config)
    try:
        if await store.get_agency(row.agency_id) is not None:
            raise UsageError(
                f"agency {row.agency_id} already exists; `caseline-server agency show {row.agency_id}`"
                " shows its key and fingerprint"
            )
        # One root key speaks for one agency: the same key under a second id would let that
        # agency's administrator certify devices in both names.
        for other in await store.list_agencies():
            if other.root_key == row.root_key:
                raise UsageError(f"that root key is already registered for {other.agency_id}")
        await store.add_agency(row)
        await store.append_audit("agency-added", f"agency={row.agency_id}", time=row.created_at)
    finally:
        await store.close()
    click.echo(f"added {row.agency_id} ({row.name}, {row.country})")
    click.echo(
        f"fingerprint — read it back to the agency over the phone: {fingerprint(row.agency_id, row.root_key)}"
    )
    return 0


@agency.command("list", short_help="List the registered agencies and their fingerprints.")
@global_options
@_JSON
def agency_list(as_json: bool) -> int:
    """List the registered agencies: id, country, name and root-key fingerprint.

    One agency a line, tab-separated: the fingerprint is the 30-digit code to
    read back to an agency's administrator by phone.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline agency list
      caseline-server agency list --json
    """
    rows = asyncio.run(_agencies(initialised()))
    _print_agencies(rows, wants_json(as_json))
    return 0


@agency.command("show", short_help="Show one registered agency and its fingerprint.")
@click.argument("agency_id", metavar="AGENCY")
@global_options
@_JSON
def agency_show(agency_id: str, as_json: bool) -> int:
    """Show one registered agency: id, country, name and root-key fingerprint.

    Examples:

    \b
      caseline-server agency show ke-kra
      caseline-server agency show ke-kra --json
    """
    rows = [r for r in asyncio.run(_agencies(initialised())) if r.agency_id == agency_id]
    if not rows:
        raise UnknownError(
            f"no agency {agency_id!r} is registered; `caseline-server agency list` shows those that are"
        )
    _print_agencies(rows, wants_json(as_json))
    return 0


def _agency_id(text: str) -> str:
    try:
        return AGENCY_ID.check(text, "agency id")
    except CaselineError:
        raise UsageError(
            f"{text!r} is not an agency id: lower-case letters, digits, '.' and '-', e.g. ke-kra"
        ) from None


async def _open(config: ServerConfig) -> SqliteStore:
    store = SqliteStore(config.db_path, create=False)
    await store.open()
    return store


async def _agencies(config: ServerConfig) -> list[AgencyRow]:
    store = await _open(config)
    try:
        return await store.list_agencies()
    finally:
        await store.close()


def _print_agencies(rows: list[AgencyRow], as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "agency": r.agency_id,
                        "name": r.name,
                        "country": r.country,
                        "fingerprint": fingerprint(r.agency_id, r.root_key),
                        "root_key": r.root_key.hex(),
                    }
                    for r in rows
                ]
            )
        )
        return
    if not rows:
        click.echo(
            "no agencies registered yet: caseline-server agency add AGENCY --name NAME --country CC"
            " --root-key HEX"
        )
    for r in rows:
        click.echo(f"{r.agency_id}\t{r.country}\t{r.name}\t{fingerprint(r.agency_id, r.root_key)}")


@cli.group()
def audit() -> None:
    """Check the broker's hash-chained audit log of security events.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline audit verify
    """


@audit.command("verify", short_help="Check the audit log's chain against the broker log.")
@global_options
def audit_verify_command() -> int:
    """Check the audit log's hash chain, each row against the broker log, and that log's checkpoint.

    Exit 0: intact.  Exit 3: a row was altered, removed or reordered, or the
    broker log does not match its signed checkpoint; each break is named on
    stderr.  Safe while the broker serves.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline audit verify
    """
    return asyncio.run(verify_audit(initialised()))


async def verify_audit(config: ServerConfig) -> int:
    """``audit verify``: print the verdict, return the exit code (0, or 3 when broken)."""
    key = load_server_key(config.key_path)
    store = await _open(config)
    try:
        verdict = await audit_verify.verify(store, key.public_key)
    finally:
        await store.close()
    for line in verdict.broken:
        click.echo(f"audit log BROKEN: {line}", err=True)
    for line in verdict.notes:
        click.echo(f"note: {line}")
    if verdict.broken:
        return EXIT_UNTRUSTED
    leaves = f"broker log of {verdict.leaves} leaves matches its checkpoint"
    click.echo(f"audit log intact: {verdict.events} events; {leaves}")
    return 0


@cli.group()
def log() -> None:
    """The broker log's origin and key, for the agencies' witnesses.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline log vkey
    """


@log.command("vkey", short_help="Print the broker log's origin and verifier key.")
@global_options
def log_vkey_command() -> int:
    """Print the broker log's origin and verifier key: `caseline-witness log add` takes the vkey.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline log vkey
    """
    key = load_server_key(initialised().key_path)
    click.echo(f"origin: {tlog.log_origin(key.public_key)}")
    click.echo(f"vkey: {log_vkey(key)}")
    return 0


@cli.command(short_help="Write an online backup of the database to DEST.")
@click.argument("dest", metavar="DEST", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@global_options
def backup(dest: Path, force: bool) -> int:
    """Write an online backup of the database to DEST, owner-only (0600).

    Consistent while the broker serves (SQLite's backup API).  The backup holds
    the database, and the attachment blobs it names in the folder DEST.blobs
    beside it (copied after the database; uploads in progress are not kept).
    Keep the data directory's server.key safe apart from it; `caseline-server
    restore` needs both.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline backup /backups/broker-$(date +%F).sqlite3
      caseline-server backup --force /backups/broker-latest.sqlite3
    """
    config = initialised()
    blobs = backups.backup(config.db_path, dest, force=force)
    click.echo(f"backup written to {dest} (mode 0600)")
    click.echo(f"{blobs.copied} attachment blobs copied to {backups.blobs_beside(dest)}")
    if blobs.missing:
        click.echo(f"{blobs.missing} blobs were deleted by garbage collection while copying (unreferenced)")
    return 0


@cli.command(short_help="Restore a backup into the data directory, ready to serve.")
@click.argument("source", metavar="BACKUP", type=click.Path(path_type=Path))
@click.option(
    "--server-key-file",
    type=click.Path(path_type=Path),
    help="The broker's server.key (owner-only), when the data directory has none: backups do not hold it.",
)
@click.option("--force", is_flag=True, help="Replace the data directory's database (stop its broker first).")
@global_options
def restore(source: Path, server_key_file: Path | None, force: bool) -> int:
    """Restore BACKUP (made by `caseline-server backup`) into the data directory, ready to serve.

    The backup is checked first (an SQLite database of a caseline broker, and
    its audit log and broker log verify with the server key); nothing changes
    if it does not.  The key comes from the data directory, or from
    --server-key-file, which is copied in.  A data directory without an
    operator token gets a new one, printed once.

    Members' clients see a restored, shorter log as a rollback of what they
    verified and raise the split-view alarm: see the README's "Restoring a
    backup".

    Examples:

    \b
      caseline-server --data-dir restored restore /backups/broker.sqlite3 \\
          --server-key-file /secure/caseline/server.key
      caseline-server --data-dir restored audit verify
      caseline-server --data-dir restored serve
    """
    config = settings()
    done = backups.restore(source, config, server_key_file=server_key_file, force=force)
    click.echo(f"restored {source} into {config.data_dir}: {done.events} audit events verified")
    for line in done.notes:
        click.echo(f"note: {line}")
    if done.key_installed:
        click.echo(f"server key copied into {config.key_path}")
    if done.operator_token is not None:
        click.echo(f"operator token (for /metrics; shown once): {done.operator_token}")
    else:
        click.echo("kept the directory's operator token (`caseline-server token` makes a new one)")
    return 0


@cli.command(short_help="Run one garbage-collection pass over uploads and blobs now.")
@global_options
def gc() -> int:
    """Delete stale uploads and unreferenced attachment blobs now, and say what was freed.

    A serving broker does this every `blob_gc_interval_seconds` on its own; this
    is for a stopped one (it refuses to run beside a serving broker).  Deleted:
    uploads not completed within `upload_grace_seconds`, and blobs no accepted,
    unpurged update has referenced for `blob_grace_seconds`.  Sizes and counts
    go to the audit log; nothing names a file.

    Examples:

    \b
      caseline-server --data-dir /var/lib/caseline gc
    """
    config = initialised()
    with exclusive(config.data_dir):
        collected = asyncio.run(_gc(config))
    click.echo(
        f"deleted {collected.uploads} stale uploads ({collected.upload_bytes} bytes received)"
        f" and {collected.blobs} unreferenced blobs ({collected.blob_bytes} bytes)"
    )
    return 0


async def _gc(config: ServerConfig) -> Collected:
    store = await _open(config)
    try:

        async def audit(event: str, detail: str) -> None:
            await store.append_audit(event, detail, time=int(time.time() * 1000))

        blobs = Blobs(
            store=store,
            files=FileBlobStore(config.data_dir / BLOBS_DIR),
            limits=config.limits,
            clock=lambda: int(time.time() * 1000),
            metrics=Metrics(),
            audit=audit,
        )
        await blobs.recover()
        return await blobs.collect()
    finally:
        await store.close()
