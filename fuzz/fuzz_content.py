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
from tests.test_content_schemas import _second_validator

KINDS = sorted(content.CONTENT_TYPES)
REFERENCE = {kind: _second_validator(kind) for kind in KINDS}


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
    main(test_one_input)
