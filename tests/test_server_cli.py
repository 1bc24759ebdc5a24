"""The operator's ``caseline-server`` as an operator types it (issue 13, items 6 and 10–15).

Every command runs as a real subprocess; the broker is a real ``serve`` process
on a free loopback port, or a real aiohttp server for the key-code login.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from caseline.client.client import Client
from caseline.crypto.keys import AgencyRootKey, fingerprint
from caseline.schemas.codec import PROTOCOL_VERSION
from caseline.schemas.errors import UntrustedError, UsageError
from caseline.server.log_throttle import RefusalFilter

from tests.support.agencies import PASSPHRASE, start_network
from tests.support.process import Server, free_port

REPO = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make") or "make"
CASE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BEARER_SECRET = "SECRET-bearer-token-value-1234567890"


def server(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caseline.server.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """What the operator sees of a refusal: exactly one line on stderr, no Python in it."""
    assert out.stderr.count("\n") == 1, out.stderr
    for internal in ("Traceback", "Error:", "DatabaseError", "OperationalError", "ValueError", "KeyError"):
        assert internal not in out.stderr, out.stderr
    return out.stderr


def init(data: Path) -> str:
    out = server("--data-dir", data, "init")
    assert out.returncode == 0, out.stderr
    return out.stdout


def add_agency(data: Path, agency_id: str = "ke-kra") -> AgencyRootKey:
    root = AgencyRootKey(agency_id, os.urandom(32))
    out = server(
        "--data-dir", data, "agency", "add", agency_id, "--name", "Kenya Revenue Authority",
        "--country", "KE", "--root-key", root.public_key.hex(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return root


# ------------------------------------------------------------- item 11: the data directory

#: Every command that uses a data directory, with what it needs besides (``backup``'s DEST).
USING_A_DATA_DIR: list[list[str]] = [
    ["agency", "list"],
    ["agency", "show", "ke-kra"],
    ["agency", "add", "ke-kra", "--name", "K", "--country", "KE", "--root-key", "00" * 32],
    ["audit", "verify"],
    ["backup", "BACKUP"],
    ["serve", "--port", "1"],
    ["key"],
    ["token"],
    ["log", "vkey"],
]


@pytest.mark.parametrize("command", USING_A_DATA_DIR, ids=lambda c: " ".join(c[:2]))
def test_every_command_refuses_a_missing_empty_or_mistyped_data_dir(
    tmp_path: Path, command: list[str]
) -> None:
    args = [str(tmp_path / "backup.sqlite3") if a == "BACKUP" else a for a in command]
    missing = tmp_path / "missing"
    out = server("--data-dir", missing, *args)
    assert out.returncode == 2
    assert f"no data directory at {missing}" in one_line(out)
    assert f"caseline-server --data-dir {missing} init" in out.stderr
    assert not missing.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    out = server(*args, "--data-dir", empty)  # the option after the command, too
    assert out.returncode == 2
    assert f"{empty} is not an initialised data directory" in one_line(out)
    assert list(empty.iterdir()) == []  # no database made on the way

    real = tmp_path / "broker"
    init(real)
    typo = tmp_path / "borker"
    out = server("--data-dir", typo, *args)
    assert out.returncode == 2
    assert str(typo) in one_line(out)
    assert not typo.exists()
    assert not (tmp_path / "backup.sqlite3").exists()


def test_backup_into_a_missing_folder_names_it(tmp_path: Path) -> None:
    init(tmp_path / "broker")
    out = server("--data-dir", tmp_path / "broker", "backup", "/missing/dir/f")
    assert out.returncode == 2
    assert "the folder /missing/dir does not exist" in one_line(out)


def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = server("--data-dir", tmp_path / "file", "agency", "list")
    assert out.returncode == 2
    assert "is not a directory" in one_line(out)


# ------------------------------------------------------------------------- item 12: config


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        ("[server]\nprot = 18020\n", "unknown setting 'prot' in {F} (did you mean 'port'?)"),
        ("[limits]\nmax_member = 3\n", "unknown setting 'max_member' in {F} (did you mean 'max_members'?)"),
        ("[sever]\nport = 1\n", "unknown setting 'sever' in {F} (did you mean 'server'?)"),
        ("port = 18020\n", "unknown setting 'port' in {F} (it belongs in the [server] table)"),
        ('[server]\nport = "18020"\n', "setting 'port' in [server] of {F} must be a whole number"),
        ("[server]\ninsecure_http = 1\n", "setting 'insecure_http' in [server] of {F} must be true or false"),
        ("[server]\nport = \n", "{F} is not valid TOML"),
        (
            "[limits]\nmax_members = -5\n",
            "setting 'max_members' in [limits] of {F} must be a finite number, 0 or more",
        ),
        (
            "[limits]\nbody_min_rate = nan\n",
            "setting 'body_min_rate' in [limits] of {F} must be a finite number",
        ),
    ],
)
def test_a_mistyped_setting_is_refused_before_or_after_the_command(
    tmp_path: Path, toml: str, said: str
) -> None:
    data = tmp_path / "broker"
    init(data)
    config = tmp_path / "broker.toml"
    config.write_text(toml)
    runs: list[list[str | Path]] = [
        ["--config", config, "--data-dir", data, "serve"],
        ["--data-dir", data, "serve", "--config", config],
        ["agency", "list", "--config", config, "--data-dir", data],
    ]
    for args in runs:
        out = server(*args)
        assert out.returncode == 2, out
        assert said.format(F=config) in one_line(out)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    out = server("--data-dir", tmp_path, "serve", "--config", tmp_path / "nope.toml")
    assert out.returncode == 2
    assert f"no configuration file at {tmp_path / 'nope.toml'}" in one_line(out)


def test_make_run_takes_host_port_and_data() -> None:
    def serve_line(*variables: str) -> str:
        out = subprocess.run(
            [MAKE, "-n", "-C", str(REPO), "run", *variables],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={k: v for k, v in os.environ.items() if k not in {"HOST", "PORT", "DATA"}}
            | {"HOST": "myhost"},
        )
        return next(line for line in out.stdout.splitlines() if " serve " in line)

    assert serve_line("PORT=18020", "HOST=127.0.0.2", "DATA=/tmp/x").endswith(
        "caseline-server --data-dir /tmp/x serve --host 127.0.0.2 --port 18020"
    )
    # As today with no variables; the shell's own $HOST (a host name) does not move the broker.
    assert serve_line().endswith(
        "caseline-server --data-dir .caseline-server serve --host 127.0.0.1 --port 8443"
    )


# ---------------------------------------------------------------- item 13: JSON-lines logs


async def _wait_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while True:  # wait for the event: the broker says it is listening
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line, "the broker exited during start-up"
        if b"caseline broker ready" in line:
            return


async def start_serving(tmp_path: Path, settings: str = "") -> tuple[asyncio.subprocess.Process, str]:
    """``serve --config`` on a fresh data directory and a free port, once it says it is ready."""
    data = tmp_path / "broker"
    init(data)
    port = free_port()
    config = tmp_path / "broker.toml"
    config.write_text(f"[server]\nport = {port}\n{settings}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "caseline.server.cli", "--data-dir", str(data),
        "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await _wait_ready(proc)
    return proc, f"http://127.0.0.1:{port}"


async def test_logs_are_json_lines_with_an_access_line_per_request_and_no_secret(tmp_path: Path) -> None:
    proc, base = await start_serving(tmp_path)
    try:
        secret = {"Authorization": f"Bearer {BEARER_SECRET}"}
        async with aiohttp.ClientSession() as session:
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", "/healthz", {}),
                ("GET", f"/v1/cases/{CASE_ID}/entries?after=0&token={BEARER_SECRET}", {"headers": secret}),
                ("POST", f"/v1/cases/{CASE_ID}/updates", {"headers": secret, "data": b"BODY-SECRET" * 10}),
                ("GET", "/metrics", {"headers": secret}),
                ("GET", f"/no/such/{CASE_ID}", {}),
            ]
            for method, path, kw in requests:
                async with session.request(method, base + path, **kw) as r:
                    await r.read()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0
    text = err.decode()
    for secret_text in (BEARER_SECRET, "BODY-SECRET", CASE_ID, "token="):
        assert secret_text not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys()
        assert line["ts"].endswith("Z") and "T" in line["ts"]
    access = [line for line in lines if line.get("event") == "access"]
    assert [(a["method"], a["route"], a["status"]) for a in access] == [
        ("GET", "/healthz", 200),
        ("GET", "/v1/cases/{case_id}/entries", 401),
        ("POST", "/v1/cases/{case_id}/updates", 401),
        ("GET", "/metrics", 401),
        ("GET", "unmatched", 404),
    ]
    for a in access:
        assert a["source"] == "127.0.0.1"
        assert a["duration_ms"] >= 0 and a["bytes"] > 0
        assert len(a["request_id"]) == 16
    assert len({a["request_id"] for a in access}) == len(access)
    assert any(line.get("event") == "listening" for line in lines)


@pytest.mark.parametrize("interval", [60, 0])
async def test_a_flood_of_refused_requests_writes_one_access_line_per_interval(
    tmp_path: Path, interval: int
) -> None:
    """A junk flood from one address must not become a log line per request (issue 14's disk filling).

    With folding off (interval 0) every refusal is a line: the test's own red run.
    """
    proc, base = await start_serving(tmp_path, f"refused_access_log_interval = {interval}\n")
    try:
        async with aiohttp.ClientSession() as session:
            for path in ["/metrics"] * 40 + ["/healthz"] * 5:
                async with session.get(base + path, headers={"Authorization": "Bearer junk"}) as r:
                    await r.read()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    access = [a for a in map(json.loads, err.decode().splitlines()) if a.get("event") == "access"]
    refused = [a for a in access if a["status"] == 401]
    assert len(refused) == (1 if interval else 40)
    assert len([a for a in access if a["status"] == 200]) == 5  # answers below 400 are never folded


def test_a_folded_run_is_counted_on_the_next_line() -> None:
    now = [0.0]
    folder = RefusalFilter(10.0, clock=lambda: now[0])

    def line(status: int, source: str = "10.0.0.1") -> logging.LogRecord:
        return logging.makeLogRecord(
            {"msg": "access", "status": status, "source": source, "route": "/metrics"}
        )

    assert folder.filter(line(401))
    assert not any(folder.filter(line(401)) for _ in range(7))
    assert folder.filter(line(401, source="10.0.0.2"))  # another source is its own run
    assert folder.filter(line(200))
    now[0] = 10.5
    record = line(401)
    assert folder.filter(record)
    assert getattr(record, "folded", None) == 7


async def test_log_format_text_is_for_a_person(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    init(data)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "caseline.server.cli", "--data-dir", str(data), "serve"),
        *("--port", str(port), "--log-format", "text"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_ready(proc)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert "INFO    GET /healthz 200 event=access method=GET route=/healthz status=200" in err.decode()


# ------------------------------------------------------- item 14: restore, and a new token


async def _metrics(port: int, token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status


def _token(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("operator token")).rsplit(" ", 1)[1]


async def test_restore_brings_back_a_broker_that_serves_with_a_new_operator_token(tmp_path: Path) -> None:
    old = tmp_path / "old"
    init(old)
    root = add_agency(old)
    port = free_port()
    broker = Server(old, port)
    await broker.start()  # the broker seals the audit rows into its log, under a checkpoint
    await broker.stop()
    backup = tmp_path / "backup.sqlite3"
    assert server("--data-dir", old, "backup", backup).returncode == 0

    new = tmp_path / "new"
    out = server("--data-dir", new, "restore", backup)  # backups do not hold the key
    assert out.returncode == 2
    assert "--server-key-file" in one_line(out)
    assert not new.exists()

    stranger = tmp_path / "stranger.key"
    stranger.write_bytes(os.urandom(32))
    stranger.chmod(0o600)
    out = server("restore", backup, "--data-dir", new, "--server-key-file", stranger)
    assert out.returncode == 3  # the checkpoint in the backup was not signed with that key
    assert "does not verify with this server key" in one_line(out)
    assert not (new / "broker.sqlite3").exists() and not (new / "server.key").exists()

    out = server("restore", backup, "--data-dir", new, "--server-key-file", old / "server.key")
    assert out.returncode == 0, out.stderr
    token = _token(out.stdout)
    assert "could not be checked" not in out.stdout  # the served broker's checkpoint checked the key
    assert (new / "server.key").read_bytes() == (old / "server.key").read_bytes()
    for name in ("server.key", "broker.sqlite3", "operator.token.sha256"):
        assert (new / name).stat().st_mode & 0o077 == 0

    again = server("--data-dir", new, "restore", backup)
    assert again.returncode == 2
    assert "--force" in one_line(again)
    assert server("--data-dir", new, "restore", "--force", backup).returncode == 0

    assert server("--data-dir", new, "audit", "verify").returncode == 0
    listed = server("--data-dir", new, "agency", "list").stdout
    assert root.fingerprint in listed
    restored = Server(new, port)
    await restored.start()
    try:
        assert await _metrics(port, token) == 200
        # A lost token: the operator makes a new one, and the old one stops working at once.
        minted = server("--data-dir", new, "token")
        assert minted.returncode == 0
        assert await _metrics(port, token) == 401
        assert await _metrics(port, _token(minted.stdout)) == 200
    finally:
        await restored.stop()


async def test_a_running_broker_holds_its_data_dir_against_restore_init_and_a_second_serve(
    tmp_path: Path,
) -> None:
    data = tmp_path / "d"
    token = _token(init(data))
    add_agency(data)
    db = data / "broker.sqlite3"
    backup = tmp_path / "backup.sqlite3"
    port = free_port()
    broker = Server(data, port)
    await broker.start()
    try:
        assert server("--data-dir", data, "backup", backup).returncode == 0
        before = db.stat().st_ino
        for refused in (
            ["restore", "--force", backup],
            ["init"],
            ["serve", "--port", str(free_port())],  # a second broker on the same database
        ):
            out = server("--data-dir", data, *refused)
            assert out.returncode == 2, (refused, out.stderr)
            assert f"the broker is running on {data}" in one_line(out)
            assert "stop it first" in out.stderr
        assert db.stat().st_ino == before  # not renamed over
        assert Path(f"{db}-wal").exists()  # the running broker's write-ahead log was left alone
        assert await _metrics(port, token) == 200  # and it still serves
    finally:
        await broker.stop()
    out = server("--data-dir", data, "restore", "--force", backup)
    assert out.returncode == 0, out.stderr
    assert db.stat().st_ino != before
    assert (data / "serve.lock").stat().st_mode & 0o777 == 0o600


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    out = server("--data-dir", tmp_path / "d", "restore", junk)
    assert out.returncode == 2
    assert "is not a caseline backup" in one_line(out)
    out = server("--data-dir", tmp_path / "d", "restore", tmp_path / "nope")
    assert out.returncode == 2
    assert "no backup at" in one_line(out)


# ------------------------------------------------------------------ item 10: broker key code


async def _device(net: Any, user: str) -> tuple[Client, bytes]:
    admin = net.admins["ke-kra"]
    client = await Client.create(
        net.root / user,
        agency_id="ke-kra",
        user_id=user,
        server_url=net.url,
        passphrase=PASSPHRASE,
        kdf="interactive",
    )
    net.clients.append(client)
    cert = await admin.issue(await client.enrolment_request(), role="officer")
    await net.publish("ke-kra")
    await client.trust_add("ke-kra", admin.fingerprint)
    return client, cert


async def test_login_checks_the_code_the_operator_prints(aiohttp_server: Any, tmp_path: Path) -> None:
    net = await start_network(aiohttp_server, tmp_path)
    try:
        await net.agency("ke-kra", "Kenya Revenue Authority", "KE")
        data = net.root / "broker"
        key_file = data / "server.key"
        key_file.write_bytes(net.server_key.seed)
        key_file.chmod(0o600)
        out = server("--data-dir", data, "key", "--json")
        assert out.returncode == 0, out.stderr
        printed = json.loads(out.stdout)
        assert printed["key"] == net.server_key.public_key.hex()
        code = printed["code"]
        assert code == fingerprint("broker", net.server_key.public_key)  # what `caseline login` shows
        text = server("--data-dir", data, "key").stdout
        assert f"broker key code: {code}" in text

        alice, cert = await _device(net, "alice")
        ident = await alice.login(cert=cert, server_key_code=code.replace(" ", "-"))  # typed any way
        assert ident.server_key == net.server_key.public_key
        assert fingerprint("broker", ident.server_key) == code

        bob, cert = await _device(net, "bob")
        wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
        with pytest.raises(UntrustedError, match="key code"):
            await bob.login(cert=cert, server_key_code=wrong)
        assert await bob.store.get("server-key") is None  # nothing pinned
        with pytest.raises(UsageError, match="30 digits"):
            await bob.login(cert=cert, server_key_code="12345")
        assert await bob.store.get("server-key") is None
    finally:
        await net.close()


# ---------------------------------------------------------- items 6 and 15: help, version


def test_version_names_the_protocol() -> None:
    out = server("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("caseline-server ") and f"(protocol {PROTOCOL_VERSION})" in out.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    out = server("completion", shell)
    assert out.returncode == 0
    assert "_CASELINE_SERVER_COMPLETE" in out.stdout


def test_completion_completes_commands() -> None:
    env = {
        **os.environ,
        "_CASELINE_SERVER_COMPLETE": "bash_complete",
        "COMP_WORDS": "caseline-server ag",
        "COMP_CWORD": "1",
    }
    out = server(env=env)
    assert "agency" in out.stdout


COMMANDS = [
    [], ["init"], ["key"], ["token"], ["serve"], ["backup"], ["restore"], ["agency"], ["agency", "add"],
    ["agency", "list"], ["agency", "show"], ["audit"], ["audit", "verify"], ["log"], ["log", "vkey"],
    ["completion"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_and_option_has_help_and_examples(command: list[str]) -> None:
    from caseline.server.cli import cli

    out = server(*command, "--help")
    assert out.returncode == 0
    assert "Examples:" in out.stdout
    assert "\n    caseline-server " in out.stdout.split("Examples:")[1]
    found: Any = cli
    for name in command:
        found = found.commands[name]
    for param in found.params:
        if param.param_type_name == "option":
            assert param.help, f"{param.name} has no help"
    if hasattr(found, "commands"):
        for name, sub in found.commands.items():
            assert sub.help, f"{name} has no help"


def test_usage_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    out = server("serv")
    assert out.returncode == 2
    assert "no command 'serv' (did you mean 'serve'?)" in one_line(out)
    out = server("--data-dir", tmp_path, "serve", "--prot", "1")
    assert out.returncode == 2
    assert "--port" in one_line(out)
    out = server("agency", "add", "KE KRA!", "--name", "K", "--country", "KE", "--root-key", "00" * 32)
    assert out.returncode == 2
    assert "not an agency id" in one_line(out)


def test_an_unexpected_failure_is_one_line_unless_debugging(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    init(data)
    (data / "broker.sqlite3").write_bytes(b"this is not a database" * 200)
    out = server("--data-dir", data, "agency", "list")
    assert out.returncode == 1
    assert "run with CASELINE_DEBUG=1" in one_line(out)
    debug = server("--data-dir", data, "agency", "list", env={**os.environ, "CASELINE_DEBUG": "1"})
    assert "Traceback" in debug.stderr
    (tmp_path / "file").write_text("x")
    out = server("--data-dir", tmp_path / "file", "init")
    assert out.returncode == 2
    assert "is a file" in one_line(out)


def test_serve_failing_to_listen_says_so_in_a_json_line(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    init(data)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = server("--data-dir", data, "serve", "--port", str(taken.getsockname()[1]))
    assert out.returncode == 2
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    fatal = [line for line in lines if line.get("event") == "fatal"]
    assert len(fatal) == 1 and fatal[0]["message"].startswith("cannot listen on 127.0.0.1:")
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------- what a new-user walk found


def test_json_before_the_command_and_an_empty_list_that_says_so(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    init(data)
    empty = server("--data-dir", data, "agency", "list")
    assert empty.returncode == 0 and "no agencies registered yet" in empty.stdout
    root = add_agency(data)
    before = server("--json", "--data-dir", data, "agency", "list")
    after = server("--data-dir", data, "agency", "list", "--json")
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)[0]["root_key"] == root.public_key.hex()
    assert json.loads(server("--json", "--data-dir", data, "key").stdout)["code"].count(" ") == 5


def test_an_agency_needs_a_name_and_a_root_key_of_its_own(tmp_path: Path) -> None:
    """One root key speaks for one agency: the same key under a second id would certify in both names."""
    data = tmp_path / "broker"
    init(data)
    root = add_agency(data)
    add = (
        "--data-dir",
        data,
        "agency",
        "add",
        "ug-ura",
        "--country",
        "UG",
        "--root-key",
        root.public_key.hex(),
    )
    nameless = server(*add, "--name", " ")
    assert nameless.returncode == 2 and "--name must be the agency's full name" in one_line(nameless)
    again = server(*add, "--name", "Uganda Revenue Authority")
    assert again.returncode == 2 and "already registered for ke-kra" in one_line(again)
    assert [
        a["agency"] for a in json.loads(server("--data-dir", data, "agency", "list", "--json").stdout)
    ] == ["ke-kra"]


def test_the_officers_cli_takes_dash_capital_v_too() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "caseline.client.cli", "-V"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("caseline ") and "(protocol " in done.stdout
