"""Broker configuration: a TOML file, then ``CASELINE_*`` environment overrides.

Example ``caseline-server.toml``::

    [server]
    host = "127.0.0.1"
    port = 8443
    data_dir = "/var/lib/caseline"
    tls_cert = "/etc/caseline/tls.crt"
    tls_key = "/etc/caseline/tls.key"

    push_to_witnesses = true
    witness_timeout = 5.0

    [limits]
    max_members = 64
    updates_per_second = 50
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from caseline.schemas.api import is_loopback_host
from caseline.schemas.errors import UsageError
from caseline.server.core import Limits
from caseline.server.paging import check_paging
from caseline.server.sources import parse_networks


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path = Path(".caseline-server")
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    name: str = "caseline broker"
    #: Close a connection that has not sent a complete request within this many seconds.
    header_timeout: float = 5.0
    #: Close a WebSocket with no traffic (pongs included) for this long.
    idle_timeout: float = 120.0
    heartbeat: float = 30.0
    handshake_timeout: float = 10.0
    session_ttl: int = 3600
    max_frame_bytes: int = 256 * 1024
    db_max_bytes: int | None = None
    retention_interval: float = 3600.0
    #: Push each new checkpoint to the agencies' witnesses (C2SP tlog-witness) and keep their cosignatures.
    push_to_witnesses: bool = True
    #: Seconds a witness may take to answer one add-checkpoint request.
    witness_timeout: float = 5.0
    #: Reverse proxies (addresses or CIDR networks) whose ``forwarded_header`` names the real
    #: source of a request (``sources.py``).  Empty, the default: the TCP peer is the source.
    trusted_proxies: tuple[str, ...] = ()
    forwarded_header: str = "X-Forwarded-For"
    limits: Limits = dataclasses.field(default_factory=Limits)
    # -- Revocation and session expiry on open streams (issue 14, finding 1).
    #: Cut a revoked device off (its sessions deleted, its streams closed with 4003) when its
    #: revocation takes effect: by a timer at ``revoked_at`` when a list dates it in the future,
    #: re-armed from the stored lists at start-up.  False: only entries already past when a list
    #: is published are cut off (the old behaviour); kept as a switch to test the others alone.
    revocation_cutoff: bool = True
    #: A stream writes no delivery and accepts no post once the broker's clock reaches its
    #: device's ``revoked_at``; it closes with 4003 instead.  Independent of the timers above,
    #: which can be late.  False: a stream trusts the timers alone.
    stream_checks_revocation: bool = True
    #: Close a stream (4002, "session expired: log in again") when the session it was opened with
    #: expires, and write nothing to it and accept no post from it after.  False: a stream outlives
    #: its session (the old behaviour).
    stream_session_expiry: bool = True
    # --- authentication under hostile load (issue 14: findings 5) ---
    #: Seconds between the aggregated ``rejected`` audit rows: failed authentications (401s, failed
    #: logins, unknown-case answers) are summed per source and written as one row per source per interval
    #: (and at shutdown).  0: one audit row per failure, as before (a flood then writes a row each).
    audit_flush_interval: float = 60.0
    #: Days an audit row is kept; the retention loop deletes older rows (their broker-log leaves stay,
    #: and ``caseline-server audit verify`` checks what remains).  0: keep audit rows forever.
    audit_retention_days: int = 400

    # -- edge: descriptors, logs and unread bodies (issue 14, findings 3 and 8) --
    #: At start-up raise the soft descriptor limit (RLIMIT_NOFILE) to the hard one.
    raise_descriptor_limit: bool = True
    #: Log "socket.accept() out of system resource" and aiohttp's "Error handling request" (a request
    #: its parser refused) once per this many seconds each, with a count of the others.  0: every one.
    accept_error_log_interval: float = 10.0
    #: Seconds the broker drains a body its handler did not read before closing the connection.
    unread_body_linger: float = 2.0
    #: One JSON line per answered request on stderr (``logs.py``): method, route template, status,
    #: duration, bytes, source and a request id; never a path, token, query string or body.
    access_log: bool = True
    #: Access lines of refused answers (status 400 and up) are folded to one per source, route and
    #: status per this many seconds, the next carrying ``folded`` = how many were held back.  0: all.
    refused_access_log_interval: float = 10.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "broker.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.data_dir / "server.key"

    @property
    def operator_token_path(self) -> Path:
        return self.data_dir / "operator.token.sha256"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.log"

    def check_listen(self) -> None:
        """Refuse plain HTTP beyond loopback unless the operator insisted."""
        if self.tls_cert is not None and self.tls_key is not None:
            return
        if self.insecure_http or is_loopback_host(self.host):
            return
        raise ValueError(
            f"refusing plain HTTP on non-loopback address {self.host}: "
            "configure tls_cert and tls_key, or pass --insecure-http"
        )


class ConfigError(UsageError, ValueError):
    """A setting the broker cannot run with: the operator's to fix (exit 2), named in one line.

    Also a ``ValueError``, which is what a bad setting raised before the file was checked key by key.
    """


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "CASELINE_HOST": ("host", str),
    "CASELINE_PORT": ("port", int),
    "CASELINE_DATA_DIR": ("data_dir", Path),
    "CASELINE_TLS_CERT": ("tls_cert", Path),
    "CASELINE_TLS_KEY": ("tls_key", Path),
    "CASELINE_INSECURE_HTTP": ("insecure_http", lambda v: v.lower() in {"1", "true", "yes"}),
    "CASELINE_DB_MAX_BYTES": ("db_max_bytes", int),
    "CASELINE_PUSH_TO_WITNESSES": ("push_to_witnesses", lambda v: v.lower() in {"1", "true", "yes"}),
    "CASELINE_WITNESS_TIMEOUT": ("witness_timeout", float),
    "CASELINE_TRUSTED_PROXIES": ("trusted_proxies", lambda v: tuple(p for p in v.split(",") if p.strip())),
}


def load_config(
    path: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> ServerConfig:
    """Defaults, then the TOML file, then the environment, then explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if path is not None:
        server, table = read_toml(path)
        values.update(server)
        limits.update(table)
    for name, (field, convert) in _ENV.items():
        if name in env:
            try:
                values[field] = convert(env[name])
            except ValueError:
                raise ConfigError(f"{name}={env[name]!r} is not a valid {field}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    for field in ("data_dir", "tls_cert", "tls_key"):
        if isinstance(values.get(field), str):
            values[field] = Path(values[field])
    try:
        if "trusted_proxies" in values:
            values["trusted_proxies"] = tuple(values["trusted_proxies"])
            parse_networks(values["trusted_proxies"])  # a typo fails at start-up, not per request
        config = ServerConfig(**values, limits=Limits(**limits))
        check_paging(config.limits, max_frame_bytes=config.max_frame_bytes)  # a bad bound fails at start-up
    except ValueError as exc:
        raise ConfigError(f"{exc}{f' (in {path})' if path else ''}") from None
    return config


def read_toml(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``[server]`` and ``[limits]`` tables, every key known and of its field's type.

    A misspelt key must not be ignored: ``prot = 18020`` would serve on the
    default port with no word said.  So every key, at every level, is checked
    against the dataclass fields, with the nearest name suggested.
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {_reason(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    tables = {"server": _fields(ServerConfig) - {"limits"}, "limits": _fields(Limits)}
    for key, value in data.items():
        if key not in tables:
            home = next((t for t, names in tables.items() if key in names), None)
            where = f" (it belongs in the [{home}] table)" if home else _did_you_mean(key, tables)
            raise ConfigError(f"unknown setting {key!r} in {path}{where}")
        if not isinstance(value, dict):
            raise ConfigError(f"{key!r} in {path} must be a table: [{key}]")
    server, limits = data.get("server", {}), data.get("limits", {})
    _check_table(server, ServerConfig, tables["server"], path, "server")
    _check_table(limits, Limits, tables["limits"], path, "limits")
    return server, limits


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _did_you_mean(key: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a UTF-8 text file"


def _check_table(table: dict[str, Any], cls: type, names: set[str], path: Path, name: str) -> None:
    hints = typing.get_type_hints(cls)
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"unknown setting {key!r} in {path}{_did_you_mean(key, names)}")
        expected = _toml_type(hints[key])
        if expected is not None and not _fits(value, expected):
            raise ConfigError(f"setting {key!r} in [{name}] of {path} must be {_TYPE_WORDS[expected]}")
        # Every number here is a size, a count, a rate, a time or a port: none is negative, and a
        # NaN or an infinity would make every comparison with it false (a limit that never trips).
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value < math.inf:
            raise ConfigError(f"setting {key!r} in [{name}] of {path} must be a finite number, 0 or more")


#: What a TOML value of each field type may be, and how an error names it.
_TYPE_WORDS: Final = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    tuple: "a list of strings",
}


def _toml_type(hint: Any) -> type | None:
    """The TOML type a field takes: ``Path`` and ``X | None`` fields take what ``X`` does."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is Path or (args and args[0] is Path):
        return str
    if typing.get_origin(hint) is tuple:
        return tuple
    base = args[0] if args and typing.get_origin(hint) is not tuple else hint
    return base if base in _TYPE_WORDS else None


def _fits(value: Any, expected: type) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected is float:
        return isinstance(value, int | float)
    if expected is tuple:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, expected)
