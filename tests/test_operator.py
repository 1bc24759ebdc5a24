"""The operator's surface: CLI, configuration, TLS rule, audit log, metrics, health."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from caseline.crypto.keys import AgencyRootKey, fingerprint
from caseline.server.cli import main
from caseline.server.config import ServerConfig, load_config
from caseline.server.core import token_hash
from caseline.server.keys import CONFIG

from tests.conftest import Deployment


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_agency_add_list_show_and_audit_verify(tmp_path: Path) -> None:
    assert run(tmp_path, "init").returncode == 0
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0
    root = AgencyRootKey("ke-kra", os.urandom(32))
    out = run(
        tmp_path,
        "agency",
        "add",
        "ke-kra",
        "--name",
        "Kenya Revenue Authority",
        "--country",
        "KE",
        "--root-key",
        root.public_key.hex(),
    )
    assert out.returncode == 0, out.stderr
    assert root.fingerprint in out.stdout
    again = run(
        tmp_path,
        "agency",
        "add",
        "ke-kra",
        "--name",
        "x",
        "--country",
        "KE",
        "--root-key",
        root.public_key.hex(),
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    listed = run(tmp_path, "agency", "list").stdout
    assert fingerprint("ke-kra", root.public_key) in listed
    assert run(tmp_path, "agency", "show", "nope").returncode == 2
    verify = run(tmp_path, "audit", "verify")
    assert verify.returncode == 0
    assert "intact: 1 events" in verify.stdout


def test_bad_agency_input_is_a_one_line_error(tmp_path: Path) -> None:
    run(tmp_path, "init")
    for args in (["--root-key", "abcd"], ["--root-key", "zz" * 32]):
        out = run(tmp_path, "agency", "add", "ke-kra", "--name", "K", "--country", "KE", *args)
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1
    out = run(tmp_path, "agency", "add", "KE KRA!", "--name", "K", "--country", "KE", "--root-key", "00" * 32)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_tampered_audit_log_is_detected(tmp_path: Path) -> None:
    run(tmp_path, "init")
    for agency in ("ke-kra", "tz-tra"):
        run(
            tmp_path,
            "agency",
            "add",
            agency,
            "--name",
            agency,
            "--country",
            "KE",
            "--root-key",
            os.urandom(32).hex(),
        )
    db = sqlite3.connect(tmp_path / "broker.sqlite3")
    with db:
        db.execute("UPDATE audit SET detail = 'agency=evil' WHERE seq = 0")
    db.close()
    out = run(tmp_path, "audit", "verify")
    assert out.returncode == 3
    assert "altered" in out.stderr
    db = sqlite3.connect(tmp_path / "broker.sqlite3")
    with db:
        db.execute("DELETE FROM audit WHERE seq = 0")
    db.close()
    assert run(tmp_path, "audit", "verify").returncode == 3


def test_plain_http_beyond_loopback_needs_insecure_http(tmp_path: Path) -> None:
    ServerConfig(host="127.0.0.1").check_listen()
    ServerConfig(host="::1").check_listen()
    with pytest.raises(ValueError, match="insecure-http"):
        ServerConfig(host="0.0.0.0").check_listen()  # noqa: S104 - that is the point
    ServerConfig(host="0.0.0.0", insecure_http=True).check_listen()  # noqa: S104
    ServerConfig(host="10.1.2.3", tls_cert=Path("c"), tls_key=Path("k")).check_listen()
    run(tmp_path, "init")
    out = run(tmp_path, "serve", "--host", "0.0.0.0", "--port", "1")  # noqa: S104
    assert out.returncode == 2
    assert "refusing plain HTTP" in out.stderr


def test_config_file_and_environment_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[server]\nport = 9000\nname = "KRA broker"\n[limits]\nmax_members = 10\n')
    config = load_config(toml, env={"CASELINE_PORT": "9100"})
    assert (config.port, config.name, config.limits.max_members) == (9100, "KRA broker", 10)
    toml.write_text("[server]\nprot = 1\n")
    with pytest.raises(ValueError, match="unknown"):
        load_config(toml, env={})
    assert main(["--config", str(toml), "init"]) == 2


async def test_health_and_metrics(deployment: Deployment) -> None:
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    await alice.say(case_id)
    r = await deployment.client.get("/healthz")
    assert (await r.json())["status"] == "ok"
    deployment.app[CONFIG].operator_token_path.write_bytes(token_hash("operator-secret"))
    r = await deployment.client.get("/metrics", headers={"Authorization": "Bearer operator-secret"})
    text = await r.text()
    assert r.status == 200
    assert "caseline_updates_total 1.0" in text
    assert 'caseline_logins_total{outcome="success"} 1.0' in text
    assert "caseline_request_seconds_bucket" in text
    # Every limit in force is on /metrics, under its configuration name.
    limits = deployment.app[CONFIG].limits
    assert f'caseline_limit{{name="max_body_bytes"}} {float(limits.max_body_bytes)}' in text
    assert f'caseline_limit{{name="session_ttl"}} {float(deployment.app[CONFIG].session_ttl)}' in text
    r = await deployment.client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert r.status == 401


async def test_logs_carry_no_content_or_tokens(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    alice = await deployment.officer("ke-kra", "alice")
    case_id = await alice.create_case([])
    await alice.say(case_id, "SECRET-SEIZURE-DETAIL")
    text = caplog.text
    assert "SECRET-SEIZURE-DETAIL" not in text
    assert alice.token not in text


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_serves_tls_with_a_configured_certificate(tmp_path: Path) -> None:
    import asyncio
    import ssl

    import aiohttp

    from tests.support.process import free_port

    run(tmp_path, "init")
    cert, key = _self_signed(tmp_path)
    port = free_port()
    config = tmp_path / "broker.toml"
    config.write_text(f'[server]\nport = {port}\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "caseline.server.cli",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path),
        "serve",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert first.startswith(b"caseline broker on https://")
        await asyncio.wait_for(proc.stdout.readline(), timeout=30)  # "ready"
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://localhost:{port}/healthz", ssl=context) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://localhost:{port}/healthz") as r:
                    await r.read()
    finally:
        proc.kill()
        await proc.wait()


async def test_security_events_reach_the_audit_log(deployment: Deployment) -> None:
    from caseline.server.keys import STORE

    alice = await deployment.officer("ke-kra", "alice")
    eve = await deployment.officer("ke-kra", "eve")
    case_id = await alice.create_case([])
    r = await eve.client.get(f"/v1/cases/{case_id.hex()}/entries", headers=eve.headers())
    assert r.status == 404
    r = await eve.client.get("/v1/cases")
    assert r.status == 401
    # Failed authentications are summed per source and written by the flush (issue 14).
    from caseline.server.app import flush_rejections

    assert await flush_rejections(deployment.app) == 1
    events = [(row.event, row.detail) for row in await deployment.app[STORE].audit_rows()]
    kinds = [e for e, _ in events]
    assert kinds.count("device-registered") == 2
    assert kinds.count("login") == 2
    assert "case-created" in kinds
    assert (
        "rejected",
        "source=127.0.0.1 count=2 reasons=unauthorized:1,unknown-case:1"
        " routes=/v1/cases/{case_id}/entries,/v1/cases",
    ) in events
