"""``caseline-witness``: the witness operator's command line.

    caseline-witness --data-dir D init --name NAME
    caseline-witness --data-dir D fingerprint | vkey
    caseline-witness --data-dir D log add VKEY | log list
    caseline-witness --data-dir D serve [--host H] [--port P]

The data directory holds ``witness.key`` (JSON: name, instance id, Ed25519 seed; mode
0600) and ``state.sqlite3``, both stamped with the same random instance id.  A key
without its own state is a witness that forgot what it cosigned: every command but
``init`` then refuses with exit code 6, and the operator must retire the key.
Expected failures print one line on stderr and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from caseline.crypto.keys import witness_fingerprint
from caseline.crypto.note import ALG_COSIGNATURE_V1, check_key_name, vkey
from caseline.crypto.primitives import SEED_SIZE, ed25519_keypair_from_seed
from caseline.schemas.errors import EXIT_USAGE, CaselineError
from caseline.witness.app import WitnessIdentity, create_app
from caseline.witness.store import StateLost, WitnessStore

PROG: Final = "caseline-witness"
EXIT_FAILED: Final = 1
EXIT_STATE_LOST: Final = 6
STATE_LOST: Final = "witness state is missing or not this witness's: retire this witness and enrol a new one"


class CliError(Exception):
    """An expected failure: one line on stderr and this exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WitnessKey:
    name: str
    instance: str
    public_key: bytes
    secret_key: bytes

    def __repr__(self) -> str:
        return f"<WitnessKey {self.name}>"


def key_path(data_dir: Path) -> Path:
    return data_dir / "witness.key"


def state_path(data_dir: Path) -> Path:
    return data_dir / "state.sqlite3"


def load_key(data_dir: Path) -> WitnessKey:
    path = key_path(data_dir)
    if not path.exists():
        raise CliError(f"no witness key in {data_dir}; run '{PROG} init' first")
    if path.stat().st_mode & 0o077:
        raise CliError(f"{path} is readable by others; chmod 600 it")
    try:
        data = json.loads(path.read_text())
        seed = bytes.fromhex(data["seed"])
        name, instance = check_key_name(data["name"]), str(data["instance"])
        if len(seed) != SEED_SIZE:
            raise ValueError
    except (ValueError, KeyError, TypeError, CaselineError) as exc:
        raise CliError(f"{path} is not a witness key") from exc
    public_key, secret_key = ed25519_keypair_from_seed(seed)
    return WitnessKey(name, instance, public_key, secret_key)


def open_state(data_dir: Path, key: WitnessKey) -> WitnessStore:
    try:
        return WitnessStore.open(state_path(data_dir), key.instance)
    except StateLost as exc:
        raise CliError(STATE_LOST, EXIT_STATE_LOST) from exc


def cmd_init(data_dir: Path, args: argparse.Namespace) -> None:
    check_key_name(args.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if key_path(data_dir).exists() or state_path(data_dir).exists():
        raise CliError(f"{data_dir} already holds a witness; refusing to overwrite it")
    instance = secrets.token_hex(16)
    WitnessStore.create(state_path(data_dir), instance).close()
    fd = os.open(key_path(data_dir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"name": args.name, "instance": instance, "seed": secrets.token_bytes(SEED_SIZE).hex()}, fh)
    key = load_key(data_dir)
    print(f"initialised witness {key.name} in {data_dir}")
    print(f"fingerprint: {witness_fingerprint(key.name, key.public_key)}")


def cmd_fingerprint(data_dir: Path, args: argparse.Namespace) -> None:
    key = load_key(data_dir)
    open_state(data_dir, key).close()
    print(witness_fingerprint(key.name, key.public_key))


def cmd_vkey(data_dir: Path, args: argparse.Namespace) -> None:
    key = load_key(data_dir)
    open_state(data_dir, key).close()
    print(vkey(key.name, ALG_COSIGNATURE_V1, key.public_key))


def cmd_log(data_dir: Path, args: argparse.Namespace) -> None:
    store = open_state(data_dir, load_key(data_dir))
    try:
        if args.log_cmd == "add":
            try:
                print(f"added log {store.add_log(args.vkey)}")
            except sqlite3.IntegrityError as exc:
                raise CliError("that log is known already") from exc
        else:
            for origin, log_vkey in store.logs():
                print(f"{origin}\t{log_vkey}")
    finally:
        store.close()


def cmd_serve(data_dir: Path, args: argparse.Namespace) -> None:
    key = load_key(data_dir)
    store = open_state(data_dir, key)
    app = create_app(store, WitnessIdentity(key.name, key.secret_key))
    print(f"caseline witness {key.name} on http://{args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=lambda _m: print("ready", flush=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run a tlog witness for caseline logs.")
    parser.add_argument("--data-dir", type=Path, default=Path(".caseline-witness"))
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="make the witness key and its state database")
    init.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example.org/w1")
    sub.add_parser("fingerprint", help="the key's fingerprint, to read aloud to agencies")
    sub.add_parser("vkey", help="the cosigner vkey (signature type 0x04)")
    logs = sub.add_parser("log", help="the logs this witness cosigns")
    lsub = logs.add_subparsers(dest="log_cmd", required=True)
    lsub.add_parser("add", help="trust a log's Ed25519 note key; its name is the origin").add_argument("vkey")
    lsub.add_parser("list")
    serve = sub.add_parser("serve", help="answer add-checkpoint and monitoring requests")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8444)
    return parser


COMMANDS: Final = {
    "init": cmd_init,
    "fingerprint": cmd_fingerprint,
    "vkey": cmd_vkey,
    "log": cmd_log,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args.data_dir, args)
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except CaselineError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error, StateLost) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
