"""``caseline-server``: the operator's command line.

    caseline-server init [--data-dir D]
    caseline-server agency add ID --name N --country CC --root-key HEX
    caseline-server agency list | show ID
    caseline-server serve [--host H] [--port P] [--insecure-http]
    caseline-server audit verify
    caseline-server backup [--force] DEST

Expected failures print one line and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import sqlite3
import ssl
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web
from caseline.crypto import note, tlog
from caseline.crypto.certs import TrustStore
from caseline.crypto.keys import SigningKey, fingerprint
from caseline.schemas.errors import CaselineError
from caseline.schemas.wire import AGENCY_ID
from caseline.server.app import create_app, make_runner
from caseline.server.config import ServerConfig, load_config
from caseline.server.core import token_hash
from caseline.server.core_log import check_audit_log, first_kept
from caseline.server.edge import raise_descriptor_limit
from caseline.server.keys import BROKER
from caseline.server.log_throttle import throttle_repeated_errors
from caseline.server.sqlite_store import SqliteStore, audit_hash
from caseline.server.store import AgencyRow

EXIT_USAGE = 2
EXIT_FAILED = 1
#: The chaos checker's fault switch (``Broker.ack_before_commit``); for its test only.
ACK_BEFORE_COMMIT_ENV = "CASELINE_TEST_ACK_BEFORE_COMMIT"


class JsonLogFormatter(logging.Formatter):
    """Structured logs: one JSON object a line, with no content or secrets in them."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry)


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def load_server_key(config: ServerConfig) -> SigningKey:
    seed = config.key_path.read_bytes()
    if len(seed) != 32:
        raise SystemExit(f"caseline-server: {config.key_path} is not a server key")
    mode = config.key_path.stat().st_mode & 0o077
    if mode:
        raise SystemExit(f"caseline-server: {config.key_path} is readable by others; chmod 600 it")
    return SigningKey(seed)


def cmd_init(config: ServerConfig, args: argparse.Namespace) -> int:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    if config.key_path.exists():
        key = load_server_key(config)
        print(f"already initialised: {config.data_dir}")
    else:
        create_private(config.key_path, secrets.token_bytes(32))
        key = load_server_key(config)
        token = secrets.token_urlsafe(32)
        config.operator_token_path.unlink(missing_ok=True)  # a new key, a new token
        create_private(config.operator_token_path, token_hash(token))
        print(f"initialised {config.data_dir}")
        print(f"operator token (for /metrics; shown once): {token}")
    asyncio.run(_touch_db(config))
    print(f"server receipt key: {key.public_key.hex()}")
    print(f"log key for witnesses: {_log_vkey(key)}")
    return 0


def _log_vkey(key: SigningKey) -> str:
    return note.vkey(tlog.log_origin(key.public_key), note.ALG_ED25519, key.public_key)


def cmd_log(config: ServerConfig, args: argparse.Namespace) -> int:
    """What a witness operator needs: ``caseline-witness log add`` takes this vkey."""
    key = load_server_key(config)
    print(f"origin: {tlog.log_origin(key.public_key)}")
    print(f"vkey: {_log_vkey(key)}")
    return 0


async def _touch_db(config: ServerConfig) -> None:
    """Create the database owner-only: it holds token hashes, devices and the audit log.

    An empty file is an empty SQLite database; SQLite gives its WAL and shared
    memory files the database file's mode.
    """
    if not config.db_path.exists():
        create_private(config.db_path, b"")
    store = SqliteStore(config.db_path)
    await store.open()
    await store.close()


def cmd_agency(config: ServerConfig, args: argparse.Namespace) -> int:
    return asyncio.run(_agency(config, args))


async def _agency(config: ServerConfig, args: argparse.Namespace) -> int:
    store = SqliteStore(config.db_path)
    await store.open()
    try:
        if args.agency_cmd == "add":
            agency_id = AGENCY_ID.check(args.agency_id, "agency id")
            try:
                root = bytes.fromhex(args.root_key)
            except ValueError:
                root = b""
            if len(root) != 32:
                print("caseline-server: --root-key must be 64 hex digits (32 bytes)", file=sys.stderr)
                return EXIT_USAGE
            if not (len(args.country) == 2 and args.country.isalpha() and args.country.isupper()):
                print(
                    "caseline-server: --country must be an ISO 3166-1 alpha-2 code such as KE",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            if await store.get_agency(agency_id) is not None:
                print(f"caseline-server: agency {agency_id} already exists", file=sys.stderr)
                return EXIT_FAILED
            now = int(time.time() * 1000)
            await store.add_agency(AgencyRow(agency_id, args.name, args.country, root, now))
            await store.append_audit("agency-added", f"agency={agency_id}", time=now)
            print(f"added {agency_id} ({args.name}, {args.country})")
            print(f"fingerprint — read it back to the agency over the phone: {fingerprint(agency_id, root)}")
            return 0
        rows = await store.list_agencies()
        if args.agency_cmd == "show":
            rows = [r for r in rows if r.agency_id == args.agency_id]
            if not rows:
                print(f"caseline-server: no agency {args.agency_id}", file=sys.stderr)
                return EXIT_FAILED
        for r in rows:
            print(f"{r.agency_id}\t{r.country}\t{r.name}\t{fingerprint(r.agency_id, r.root_key)}")
        return 0
    finally:
        await store.close()


def cmd_audit(config: ServerConfig, args: argparse.Namespace) -> int:
    return asyncio.run(_audit(config))


async def _audit(config: ServerConfig) -> int:
    """The hash chain, then each row against its leaf in the broker log, and that log against
    its newest checkpoint and the witnesses' cosignatures (``core_log.check_audit_log``)."""
    key = load_server_key(config)
    store = SqliteStore(config.db_path)
    await store.open()
    try:
        rows = await store.audit_rows()
        checkpoint = await store.latest_checkpoint()
        size = 0 if checkpoint is None else checkpoint[0]
        leaves = await store.log_leaves(0, size + 1)
        witnessed = await store.latest_witnessed()
        if witnessed is not None:
            cosigs = await store.cosignatures(witnessed[0])
            witnessed = (witnessed[0], witnessed[1] + "".join(c.line for c in cosigs).encode())
        trust = TrustStore()
        for agency in await store.list_agencies():
            trust.pin(agency.agency_id, agency.root_key)
        for signed in await store.all_witness_lists():
            trust.add_witness_list(signed)
        witnesses = {a: list(trust.witnesses(a)) for a in trust.roots}
    finally:
        await store.close()
    # Rows before it were deleted by audit retention, which says so in a sealed row (check_audit_log
    # checks that row against its leaf; an unsealed one excuses nothing).
    start = first_kept([r for r in rows if r.leaf_index is not None])
    prev = rows[0].prev_hash if start and rows and rows[0].seq == start else bytes(32)
    for expected_seq, row in enumerate(rows, start=start):
        if row.seq != expected_seq or row.prev_hash != prev:
            print(
                f"audit log BROKEN at row {expected_seq}: a row is missing or reordered",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if audit_hash(prev, row.seq, row.time, row.event, row.detail) != row.hash:
            print(f"audit log BROKEN at row {row.seq}: the row was altered", file=sys.stderr)
            return EXIT_FAILED
        prev = row.hash
    report = check_audit_log(
        rows, leaves, checkpoint, receipt_key=key.public_key, witnessed=witnessed, witnesses=witnesses
    )
    for line in report.broken:
        print(f"audit log BROKEN: {line}", file=sys.stderr)
    for line in report.notes:
        print(f"note: {line}")
    if report.broken:
        return EXIT_FAILED
    print(f"audit log intact: {len(rows)} events; broker log of {size} leaves matches its checkpoint")
    return 0


def cmd_backup(config: ServerConfig, args: argparse.Namespace) -> int:
    """An online backup through SQLite's backup API: consistent while the broker serves.

    The copy holds device certificates, session-token hashes, the audit log and
    every entry, so it is owner-only (0600) from its first byte whatever the
    umask: SQLite writes into a private temporary file in DEST's directory,
    which is then linked into place.  DEST appears only once complete, and an
    existing DEST is kept unless ``--force`` says to replace it.
    """
    dest = Path(args.dest)
    if dest.exists() and not args.force:
        return _refuse_overwrite(dest)
    if not config.db_path.exists():
        print(f"caseline-server: no database at {config.db_path}; nothing to back up", file=sys.stderr)
        return EXIT_FAILED
    tmp = private_temp_file(dest)
    try:
        src = sqlite3.connect(config.db_path)
        try:
            out = sqlite3.connect(tmp)
            with out:
                src.backup(out)
            out.close()
        finally:
            src.close()
        _fsync(tmp)
        if args.force:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)  # fails if DEST appeared meanwhile: never clobbers
    except sqlite3.Error as exc:
        print(f"caseline-server: backup failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except FileExistsError:
        return _refuse_overwrite(dest)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"backup written to {dest} (mode 0600)")
    return 0


def _refuse_overwrite(dest: Path) -> int:
    print(f"caseline-server: {dest} exists; refusing to overwrite it (--force replaces it)", file=sys.stderr)
    return EXIT_FAILED


def private_temp_file(beside: Path) -> Path:
    """An empty file only the owner may read or write, in ``beside``'s directory.

    ``mkstemp`` creates it with O_EXCL and mode 0600 (never wider, whatever the
    umask); the explicit ``fchmod`` also undoes a umask that would have left the
    owner unable to write.  SQLite gives its journal the database file's mode.
    """
    fd, name = tempfile.mkstemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return Path(name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path, data: bytes) -> None:
    """Write a new secret file, owner-only (0600) from the start: no window when others may read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def cmd_serve(config: ServerConfig, args: argparse.Namespace) -> int:
    _configure_logging()
    try:
        config.check_listen()
    except ValueError as exc:
        print(f"caseline-server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.key_path.exists():
        print("caseline-server: not initialised; run 'caseline-server init' first", file=sys.stderr)
        return EXIT_FAILED
    key = load_server_key(config)
    app = create_app(config, server_key=key)
    if os.environ.get(ACK_BEFORE_COMMIT_ENV) == "1":
        logging.getLogger("caseline.server").warning(
            "TEST FAULT ON (%s): updates are acknowledged before they are on disk; never use this"
            " outside the chaos checker's own test",
            ACK_BEFORE_COMMIT_ENV,
        )
        app[BROKER].ack_before_commit = True
    context = None
    if config.tls_cert is not None and config.tls_key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls_cert, config.tls_key)
    scheme = "https" if context else "http"
    print(
        f"caseline broker on {scheme}://{config.host}:{config.port} (data: {config.data_dir})",
        flush=True,
    )
    _descriptors(config)
    throttle_repeated_errors(config.accept_error_log_interval)
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):  # SIGTERM, SIGINT: a clean stop
        asyncio.run(_serve(app, config, context))
    return 0


def _descriptors(config: ServerConfig) -> None:
    """Raise the soft descriptor limit to the hard one (unless configured not to); log it once."""
    if config.raise_descriptor_limit:
        soft, hard = raise_descriptor_limit()
    else:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    logging.getLogger("caseline.server").info("descriptor limit %d (hard limit %d)", soft, hard)


async def _serve(app: web.Application, config: ServerConfig, context: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM, through ``make_runner`` (connection limits, parser errors)."""
    runner = make_runner(app, config, handle_signals=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        print("caseline broker ready", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caseline-server", description="Run and administer a caseline broker."
    )
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="data directory (default .caseline-server)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the data directory, server key and database")
    agency = sub.add_parser("agency", help="register and list agencies")
    asub = agency.add_subparsers(dest="agency_cmd", required=True)
    add = asub.add_parser("add", help="register an agency root key")
    add.add_argument("agency_id")
    add.add_argument("--name", required=True)
    add.add_argument("--country", required=True)
    add.add_argument("--root-key", required=True, help="the agency root public key, hex")
    asub.add_parser("list")
    show = asub.add_parser("show")
    show.add_argument("agency_id")
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--insecure-http", action="store_true", default=None)
    audit = sub.add_parser("audit", help="verify the hash-chained audit log")
    audit.add_argument("audit_cmd", choices=["verify"])
    log = sub.add_parser("log", help="the broker log's origin and key, for agencies' witnesses")
    log.add_argument("log_cmd", choices=["vkey"])
    backup = sub.add_parser("backup", help="online backup of the database")
    backup.add_argument("dest")
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    return parser


COMMANDS = {
    "init": cmd_init,
    "agency": cmd_agency,
    "serve": cmd_serve,
    "audit": cmd_audit,
    "backup": cmd_backup,
    "log": cmd_log,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(
            args.config,
            data_dir=args.data_dir,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            insecure_http=getattr(args, "insecure_http", None),
        )
        return COMMANDS[args.command](config, args)
    except (CaselineError, ValueError, OSError) as exc:
        print(f"caseline-server: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
