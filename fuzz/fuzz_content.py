"""Fuzz case-update content: the strict JSON parser and the compiled JSON Schemas.

Content is what officers read and courts see, and it is parsed after every
decryption.  Input: a selector byte (which content type), then the JSON bytes.
Besides "only our errors escape", anything ``validate_content`` accepts must
also be valid to the reference validator (jsonschema, the one the test suite
compares against): our fast path may be stricter, never laxer.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["caseline"]):
    from caseline.schemas import content, errors

from fuzz.harness import main, split
from tests.support.content import second_validator

KINDS = sorted(content.CONTENT_TYPES)
REFERENCE = {kind: second_validator(kind) for kind in KINDS}
# fastjsonschema compiles each schema into Python source and execs it, outside the
# import hook: instrument what exists now so its branches guide the fuzzer too.
for _kind in KINDS:
    content._validator(_kind)
atheris.instrument_all()


def schema_tokens() -> list[bytes]:
    """Property names and enum values of every schema, quoted as they appear in JSON."""
    found: set[str] = set()
    stack: list[object] = [content.load_schema(kind) for kind in KINDS]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(k for k in item.get("properties", {}) if isinstance(k, str))
            found.update(v for v in item.get("enum", []) if isinstance(v, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return [f'"{t}"'.encode() for t in found] + [b"null", b"true", b"false", b"\\u0000", b"1e999", b"-0"]


def test_one_input(data: bytes) -> None:
    which, body = split(data)
    kind = KINDS[which % len(KINDS)]
    try:
        obj = content.validate_content(kind, body)
    except errors.CaselineError:
        return
    if not REFERENCE[kind].is_valid(obj):
        raise AssertionError(f"{kind}: accepted content the reference validator rejects")


if __name__ == "__main__":
    main(test_one_input, tokens=schema_tokens())
