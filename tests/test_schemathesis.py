"""Schemathesis against ``schemas/openapi.json``: the broker as its description promises.

A real broker process on loopback is driven by Schemathesis from the OpenAPI
document alone, with msgpack bodies, an enrolled device's session token, and
both valid-looking and deliberately invalid data.  The checks: no 5xx, only
documented status codes and media types, no operation that ignores its
authentication, invalid data refused, and nothing stored by a refused call.

Byte strings are ``string`` with ``contentEncoding: msgpack-bin`` in the
document.  For generation they become ``"b:" + hex`` strings of the documented
size, which the serializer turns back into msgpack ``bin``; everything else is
encoded as msgpack as generated, so type confusion is part of the test.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import schemathesis
from caseline.crypto.keys import SigningKey
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    status_code_conformance,
)

from bench.load import Broker
from tests.support.broker import Officer
from tests.support.process import UrlClient
from tests.support.world import World

SPEC = Path(__file__).parents[1] / "schemas" / "openapi.json"
BIN = "b:"
#: Routes whose answers are not msgpack objects or that stream: described, but driven elsewhere.
STREAMED = {"/v1/stream"}


def for_generation(node: Any) -> Any:
    """Rewrite msgpack-bin strings as ``b:<hex>`` patterns Hypothesis can generate."""
    if isinstance(node, list):
        return [for_generation(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("contentEncoding") == "msgpack-bin":
        size = node.get("x-bytes")
        hex_digits = f"{{{2 * size}}}" if size else "*"
        out = {k: v for k, v in node.items() if k not in ("contentEncoding", "maxLength", "minLength")}
        return {**out, "pattern": f"^{BIN}[0-9a-f]{hex_digits}$"}
    return {k: for_generation(v) for k, v in node.items()}


def to_wire(value: Any) -> Any:
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return float(value)  # beyond msgpack's integers: still the wrong type, which is the point
    if isinstance(value, str) and value.startswith(BIN):
        try:
            return bytes.fromhex(value[len(BIN) :])
        except ValueError:
            return value
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


@schemathesis.serializer("application/msgpack")
def msgpack_body(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    packed: bytes = msgpack.packb(to_wire(value), use_bin_type=True)
    return packed


@schemathesis.serializer("application/offset+octet-stream")
def upload_part(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """A PATCH body is raw bytes: whatever was generated, as bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


def readable(value: Any) -> Any:
    """Bytes in an answer become hex, the form ids take in paths (what the links expect)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [readable(v) for v in value]
    if isinstance(value, dict):
        return {k: readable(v) for k, v in value.items()}
    return value


@schemathesis.deserializer("application/msgpack")
def msgpack_answer(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return readable(msgpack.unpackb(response.content, raw=False))


schema = schemathesis.openapi.from_dict(for_generation(copy.deepcopy(json.loads(SPEC.read_text()))))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=25, with_security_parameters=True
)


class Deployment:
    """A broker process with one enrolled device and one case, and the operator's token."""

    def __init__(self, root: Path) -> None:
        self.broker = Broker(root / "broker")
        self.broker.data.mkdir(mode=0o700)
        init = subprocess.run(
            [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(self.broker.data), "init"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.operator_token = init.stdout.split("shown once): ", 1)[1].split()[0]
        self.world = World("schemathesis")
        for agency_id in ("ke-kra", "tz-tra"):
            key = self.world.agency(agency_id).public_key.hex()
            self.broker.cli(
                "agency", "add", agency_id, "--name", agency_id, "--country", "KE", "--root-key", key
            )
        self.broker.start()
        self.base = f"http://127.0.0.1:{self.broker.port}"
        self.token, self.case_id = asyncio.run(self._enrol())

    async def _enrol(self) -> tuple[str, bytes]:
        server_key = SigningKey((self.broker.data / "server.key").read_bytes())
        self.world.server_key = server_key
        async with aiohttp.ClientSession() as session:
            client = UrlClient(session, self.base)
            self.alice = self.world.device("ke-kra", "alice")
            alice = await Officer(client, self.world, self.alice, server_key).enrol()
            bob = await Officer(client, self.world, self.world.device("tz-tra", "bob"), server_key).enrol()
            case_id = await alice.create_case([(bob.device, "member")])
            await alice.say(case_id, "a real update, so that reads find something")
            return alice.token, case_id

    def log_in_again(self) -> None:
        """After a generated logout really ended the session, so that the next calls go deep."""

        async def login() -> str:
            async with aiohttp.ClientSession() as session:
                alice = Officer(UrlClient(session, self.base), self.world, self.alice, self.world.server_key)
                await alice.login()
                return alice.token

        self.token = asyncio.run(login())

    def rows(self) -> dict[str, int]:
        """Row counts of every table that holds broker state (the audit log aside).

        A refused request may write an audit row, and every audit row gets a leaf
        of the broker log and a checkpoint in the next group commit (at a moment of
        its own): those two tables are left out, ``entries`` counts what posts add.
        """
        with sqlite3.connect(f"file:{self.broker.data / 'broker.sqlite3'}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            count = 'SELECT count(*) FROM "{}"'  # table names from sqlite_master, not from input
            skip = {"audit", "log_leaves", "checkpoints"}
            return {t: db.execute(count.format(t)).fetchone()[0] for t in tables if t not in skip}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("schemathesis"))
    try:
        yield d
    finally:
        d.broker.stop()


@schema.auth()
class SessionOrOperator:
    """The device's session token, or the operator's for the operator's routes."""

    deployment: Deployment | None = None

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str | None:
        d = SessionOrOperator.deployment
        if d is None:
            return None
        return d.operator_token if case.operation.path == "/metrics" else d.token

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
]


@schema.exclude(path_regex="^/v1/stream$").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_the_broker_keeps_the_promises_of_its_description(
    case: schemathesis.Case, deployment: Deployment
) -> None:
    SessionOrOperator.deployment = deployment
    before = deployment.rows()
    response = case.call_and_validate(base_url=deployment.base, checks=CHECKS, timeout=30)
    if response.status_code >= 400:
        assert deployment.rows() == before, f"{case.method} {case.path} was refused but changed storage"
    elif case.path == "/v1/auth/logout":
        deployment.log_in_again()


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """The stateful phase: list my cases, then follow the document's links into one of them."""

    deployment: Deployment

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"base_url": self.deployment.base, "timeout": 30}

    def validate_response(
        self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS)


def test_linked_operations_keep_the_promises_too(deployment: Deployment) -> None:
    SessionOrOperator.deployment = deployment
    Workflow.deployment = deployment
    before = deployment.rows()
    Workflow.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
    after = deployment.rows()
    assert after == before, "generated calls stored something: none of them is signed by a member"
