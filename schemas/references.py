"""Which fields of a content type name other updates of the case (replies, acks, refs).

Read from the JSON Schemas themselves — every property whose schema is the
shared ``update_id`` or ``refs`` definition — so that a field added to a form
is checked by every client without a second list to keep in step.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from caseline.schemas import content as content_schemas

_UPDATE_ID = "#/definitions/update_id"
_REFS = "#/definitions/refs"


@functools.cache
def reference_fields(content_type: str) -> tuple[tuple[str, bool], ...]:
    """``(field, is_list)`` for each top-level field of the type that names updates."""
    if content_type not in content_schemas.CONTENT_TYPES:
        return ()
    found = []
    for name, prop in sorted(content_schemas.load_schema(content_type).get("properties", {}).items()):
        ref = str(prop.get("$ref", "")) if isinstance(prop, Mapping) else ""
        if ref.endswith(_UPDATE_ID):
            found.append((name, False))
        elif ref.endswith(_REFS):
            found.append((name, True))
    return tuple(found)


def referenced_updates(content_type: str, content: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, update id as hex)`` for every update the content refers to, in field order.

    Values that are not strings are left to the schema check, which refuses them.
    """
    out: list[tuple[str, str]] = []
    for name, is_list in reference_fields(content_type):
        value = content.get(name)
        for item in value if is_list and isinstance(value, list) else [value]:
            if isinstance(item, str):
                out.append((name, item))
    return out
