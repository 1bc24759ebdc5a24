"""Fuzz the strict msgpack codec: ``unpack``, ``decode_signed`` and every struct's decoder.

Input: one selector byte (which parser, modulo the number of targets), then the
bytes to parse.  Besides "only our errors escape", a successful decode must
re-encode to exactly the input: the codec claims one encoding per value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports(include=["caseline"]):
    from caseline.schemas import api, codec, errors, wire  # noqa: F401

from fuzz.harness import main, split, struct_types


def _unpack(data: bytes) -> None:
    codec.unpack(data)


def _decode_signed(data: bytes) -> None:
    tbs, sig = wire.decode_signed(data)
    if wire.encode_signed(tbs, sig) != data:
        raise AssertionError("decode_signed accepted a non-canonical pair")


def _struct(cls: type[Any]) -> Callable[[bytes], None]:
    if cls.TAG:

        def top(data: bytes) -> None:
            obj = cls.decode(data)
            if obj.encode() != data:
                raise AssertionError(f"{cls.__name__} accepted bytes it does not re-encode to")

        return top

    def nested(data: bytes) -> None:
        fields = codec.unpack(data)
        if not isinstance(fields, list):
            raise errors.MalformedError("not an array")
        obj = cls.from_fields(fields)
        if codec.pack(obj.to_fields()) != data:
            raise AssertionError(f"{cls.__name__} accepted fields it does not re-encode to")

    return nested


TYPES = struct_types()
TARGETS: list[Callable[[bytes], None]] = [_unpack, _decode_signed, *(_struct(cls) for cls in TYPES)]


def selector(cls: type[Any]) -> int:
    """The selector byte that aims an input at ``cls`` (used by the seed generator)."""
    return 2 + TYPES.index(cls)


def test_one_input(data: bytes) -> None:
    which, body = split(data)
    with contextlib.suppress(errors.CaselineError):
        TARGETS[which % len(TARGETS)](body)


if __name__ == "__main__":
    main(test_one_input)
