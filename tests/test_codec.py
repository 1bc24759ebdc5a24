"""The strict codec: one canonical encoding, everything else refused."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import CaselineError, MalformedError, UnsupportedError
from caseline.schemas.wire import (
    DeviceCert,
    Envelope,
    LogPosition,
    Receipt,
    UpdateRecord,
    decode_signed,
)
from hypothesis import given, settings
from hypothesis import strategies as st

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=30,
)


@given(values)
def test_round_trip_is_byte_exact(value: object) -> None:
    data = pack(value)
    assert pack(unpack(data)) == data


@given(values, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_refused(value: object, tail: bytes) -> None:
    with pytest.raises(MalformedError):
        unpack(pack(value) + tail)


@settings(max_examples=500)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_malformed(data: bytes) -> None:
    """The h11 fuzzing invariant: parse, or raise our error — never anything else."""
    for decoder in (unpack, Envelope.decode, UpdateRecord.decode, DeviceCert.decode, decode_signed):
        with contextlib.suppress(CaselineError):
            decoder(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xcd\x00\x05", "non-minimal integer"),
        (b"\xd9\x01a", "str8 for a one-byte string"),
        (b"\xc5\x00\x01a", "bin16 for a one-byte bin"),
        (b"\xdc\x00\x01\x01", "array16 for one item"),
        (b"\x81\xa1a\x01", "a map"),
        (b"\x82\xa1a\x01\xa1a\x02", "a map with a duplicate key"),
        (b"\xcb" + bytes(8), "a float"),
        (b"\xd4\x01\x00", "an ext type"),
        (b"\xa2\xff\xfe", "invalid UTF-8"),
        (b"\xa3\xed\xa0\x80", "a lone surrogate"),
        (b"\xdb\xff\xff\xff\xff", "a huge declared length"),
        (b"\xdd\xff\xff\xff\xff", "a huge declared array"),
        (b"", "nothing"),
        (b"\x92\x01", "a truncated array"),
    ],
)
def test_non_canonical_or_hostile_encodings_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedError):
        unpack(data)


def test_size_limit_is_checked_before_decoding() -> None:
    with pytest.raises(MalformedError, match="exceeds"):
        unpack(pack(b"x" * 100), max_size=50)


def test_struct_rejects_wrong_field_count_tag_and_version() -> None:
    pos = LogPosition(count=1, head=bytes(32))
    receipt = Receipt(case_id=bytes(16), seq=1, entry_hash=bytes(32), head=bytes(32), time=5)
    data = receipt.encode()
    obj = msgpack.unpackb(data)
    with pytest.raises(MalformedError):
        Receipt.decode(msgpack.packb([*obj, 1], use_bin_type=True))  # an unknown extra field
    with pytest.raises(MalformedError):
        Receipt.decode(msgpack.packb(obj[:-1], use_bin_type=True))  # a missing field
    with pytest.raises(MalformedError):
        Envelope.decode(data)  # right bytes, wrong type
    with pytest.raises(UnsupportedError):
        Receipt.decode(msgpack.packb([2, *obj[1:]], use_bin_type=True))
    assert pos.to_fields() == [1, bytes(32)]


@pytest.mark.parametrize(
    "bad",
    [
        {"seq": -1},
        {"seq": True},
        {"seq": 2**63},
        {"case_id": bytes(15)},
        {"head": "not bytes"},
    ],
)
def test_field_kinds_are_enforced(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "case_id": bytes(16),
        "seq": 1,
        "entry_hash": bytes(32),
        "head": bytes(32),
        "time": 5,
    }
    fields.update(bad)
    with pytest.raises(MalformedError):
        Receipt(**fields)  # type: ignore[arg-type]


def test_signed_pair_shape() -> None:
    with pytest.raises(MalformedError):
        decode_signed(pack([b"tbs", bytes(63)]))
    with pytest.raises(MalformedError):
        decode_signed(pack([b"tbs", bytes(64), b""]))
    assert decode_signed(pack([b"tbs", bytes(64)])) == (b"tbs", bytes(64))
