"""``caseline-witness`` as a real subprocess: init, keys, logs, serving, and refusing lost state."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from caseline.crypto.note import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    parse_signature_lines,
    parse_vkey,
    verify_cosignature,
)
from caseline.witness.cli import STATE_LOST, main

from tests.test_witness import Log

NAME = "witness.example/w1"


def cli(data: Path, *args: str, real: bool = False) -> tuple[int, str, str]:
    """Run the command in-process, or as a real subprocess when ``real``."""
    if real:
        done = subprocess.run(
            [sys.executable, "-m", "caseline.witness.cli", "--data-dir", str(data), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--data-dir", str(data), *args])
    return code, out.getvalue(), err.getvalue()


def ok(data: Path, *args: str) -> str:
    code, out, err = cli(data, *args)
    assert code == 0, err
    return out


def refused(data: Path, code: int, *args: str, real: bool = False) -> str:
    got, out, err = cli(data, *args, real=real)
    assert got == code, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "w"
    ok(d, "init", "--name", NAME)
    return d


def test_init_makes_a_private_key_and_refuses_to_overwrite(data: Path) -> None:
    key = data / "witness.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"(\d{5} ){5}\d{5}\n", ok(data, "fingerprint"))
    secret = key.read_text()
    assert "seed" in secret and secret not in ok(data, "vkey")
    assert "already" in refused(data, 1, "init", "--name", NAME)
    assert "name" in refused(data.parent / "x", 2, "init", "--name", "has space")


def test_vkey_is_a_cosignature_vkey(data: Path) -> None:
    name, alg, public_key = parse_vkey(ok(data, "vkey").strip())
    assert (name, alg, len(public_key)) == (NAME, ALG_COSIGNATURE_V1, 32)


def test_log_add_and_list(data: Path) -> None:
    log = Log()
    assert log.origin in ok(data, "log", "add", log.vkey)
    assert "known already" in refused(data, 1, "log", "add", log.vkey)
    refused(data, 2, "log", "add", "not-a-vkey")
    refused(data, 2, "log", "add", ok(data, "vkey").strip())  # a cosigner key is no log key
    assert ok(data, "log", "list") == f"{log.origin}\t{log.vkey}\n"


def test_lost_or_foreign_state_refuses_to_start(data: Path, tmp_path: Path) -> None:
    state = data / "state.sqlite3"
    other = tmp_path / "other"
    ok(other, "init", "--name", NAME)
    shutil.copy(other / "state.sqlite3", state)  # another witness's state
    assert STATE_LOST in refused(data, 6, "serve", "--port", "1", real=True)
    state.write_bytes(b"")  # emptied
    assert STATE_LOST in refused(data, 6, "serve", "--port", "1", real=True)
    state.unlink()  # deleted
    assert STATE_LOST in refused(data, 6, "serve", "--port", "1", real=True)
    assert STATE_LOST in refused(data, 6, "log", "list")
    assert not state.exists()  # refusing never recreates it


def test_missing_key_is_one_line(tmp_path: Path) -> None:
    assert "init" in refused(tmp_path / "none", 1, "vkey")


def test_serve_cosigns_over_http(data: Path) -> None:
    log = Log()
    ok(data, "log", "add", log.vkey)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "caseline.witness.cli", "--data-dir", str(data), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the server says it listens (or exits)
            if line.strip() == "ready":
                break
        url = f"http://127.0.0.1:{port}/add-checkpoint"
        with urllib.request.urlopen(urllib.request.Request(url, data=log.request(0, 5)), timeout=10) as resp:
            sigs = parse_signature_lines(resp.read())
        _, _, public_key = parse_vkey(ok(data, "vkey").strip())
        text = Checkpoint(log.origin, 5, log.tree.root(5)).body()
        verify_cosignature(text, sigs[0], name=NAME, public_key=public_key)
        with pytest.raises(urllib.error.HTTPError) as conflict:
            urllib.request.urlopen(urllib.request.Request(url, data=log.request(0, 6)), timeout=10)
        assert conflict.value.code == 409 and conflict.value.read() == b"5\n"
        assert conflict.value.headers["Content-Type"] == "text/x.tlog.size"
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
