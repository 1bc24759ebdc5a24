"""The OpenAPI description is current and describes every route the broker serves."""

from __future__ import annotations

import json
from pathlib import Path

from caseline.crypto.keys import SigningKey
from caseline.schemas import openapi
from caseline.server.app import create_app
from caseline.server.config import ServerConfig


def test_openapi_file_is_current() -> None:
    assert openapi.PATH.read_text() == openapi.render(), "run: python -m caseline.schemas.openapi"


def test_every_route_is_described(tmp_path: Path) -> None:
    doc = json.loads(openapi.PATH.read_text())
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    app = create_app(ServerConfig(data_dir=tmp_path), server_key=SigningKey(bytes(32)))
    served = {
        (r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource
    }
    assert served - described == set(), "routes missing from schemas/openapi.json"
    assert described - served == set(), "schemas/openapi.json describes routes that do not exist"


def test_every_reference_resolves() -> None:
    text = openapi.PATH.read_text()
    doc = json.loads(text)
    schemas = doc["components"]["schemas"]
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref
