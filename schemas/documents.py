"""The content types' JSON Schema documents, read once per process.

Both the validator (``content``) and the forms built from the schemas
(``forms``, ``explain``) read them; they live apart from the validator so that
explaining a refused document does not import the validator back.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping
from typing import Any, Final

from caseline.schemas.errors import ContentError

CONTENT_TYPES: Final = frozenset(
    {
        "note",
        "seizure",
        "alert",
        "request",
        "reply",
        "status",
        "ack",
        "release",
        "release-request",
        "reminder",
        "approval",
    }
)


@functools.cache
def schema_files() -> dict[str, dict[str, Any]]:
    """The schema documents by name (``markings`` holds shared definitions); callers must not change them."""
    folder = importlib.resources.files("caseline.schemas") / "content_types"
    return {
        item.name.removesuffix(".schema.json"): json.loads(item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".schema.json")
    }


def load_schema(content_type: str) -> Mapping[str, Any]:
    if content_type not in CONTENT_TYPES:
        raise ContentError("unknown content type")
    return schema_files()[content_type]
