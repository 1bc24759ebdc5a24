"""PROTOCOL.md §6.6: the STREAM construction, Padmé and the blob address, and the v3 record form.

Each attack on a blob (chunks moved, repeated, dropped, spliced, the last flag
moved, bytes flipped, padding or declared size or hash changed) is performed on
real ciphertext and must end in ``IntegrityError``, never in bytes accepted.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from caseline.crypto import attachments as att
from caseline.crypto import primitives as P
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import IntegrityError, InvalidValueError, MalformedError, UnsupportedError
from caseline.schemas.wire import (
    AttachmentRef,
    Envelope,
    LogPosition,
    LogRef,
    UpdateRecord,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

SEALED = att.CHUNK_SIZE + att.TAG_SIZE


def sealed(size: int, *, seed: int = 0) -> tuple[bytes, AttachmentRef, bytes]:
    data = bytes((i * 7 + seed) % 256 for i in range(size))
    ref, blob = att.seal_bytes(data, name="photo.jpg", media_type="image/jpeg", key=os.urandom(32))
    return data, ref, blob


def opened(ref: AttachmentRef, blob: bytes, *, piece: int = 10_000) -> bytes:
    opener = att.Opener(ref)
    out = bytearray()
    for i in range(0, len(blob), piece):
        out += opener.feed(blob[i : i + piece])
    return bytes(out + opener.finish())


@settings(max_examples=40, deadline=None)
@given(
    size=st.one_of(
        st.integers(0, 300),
        st.sampled_from([4095, 4096, 4097, 65535, 65536, 65537, 131072, 131073, 200_000]),
    ),
    piece=st.integers(1, 70_000),
)
def test_any_file_in_any_pieces_comes_back_whole(size: int, piece: int) -> None:
    data = os.urandom(size)
    sealer = att.Sealer(size, key=os.urandom(32))
    blob = bytearray()
    for i in range(0, size, piece):
        blob += sealer.feed(data[i : i + piece])
    blob += sealer.finish()
    assert len(blob) == att.ciphertext_size(size) == sealer.ciphertext_size
    ref = sealer.ref("f.bin", "application/octet-stream")
    assert ref.sha256 == hashlib.sha256(data).digest()
    assert ref.address == att.blob_address(bytes(blob))
    assert opened(ref, bytes(blob), piece=piece) == data


def test_padding_hides_the_size_in_buckets() -> None:
    # Every file of 4 KiB or less looks alike; above it, Padmé keeps the overhead under 12 %.
    assert {att.padded_size(n) for n in (0, 1, 100, 4096)} == {4096}
    for n in (4097, 10_000, 65_537, 1_000_000, 123_456_789, 2**32 + 1):
        p = att.padded_size(n)
        assert n <= p <= n * 1.12
    assert att.padded_size(1_000_000) == att.padded_size(1_000_001)
    with pytest.raises(InvalidValueError):
        att.padded_size(-1)


def test_a_blob_over_four_gibibytes_is_described_with_64_bit_lengths() -> None:
    size = 2**32 + 5
    assert att.ciphertext_size(size) > 2**32
    hasher = att.AddressHasher(att.ciphertext_size(size))
    assert hasher.length == att.ciphertext_size(size)
    assert att.chunk_nonce(2**40, last=True) == (2**40).to_bytes(11, "big") + b"\x01"


def chunks(blob: bytes) -> list[bytes]:
    return [blob[i : i + SEALED] for i in range(0, len(blob), SEALED)]


@pytest.mark.parametrize(
    "attack",
    [
        "swap two chunks",
        "repeat a chunk",
        "drop the last chunk",
        "drop a middle chunk",
        "cut mid-chunk",
        "extend",
        "flip a bit",
        "splice another blob's chunk",
        "another blob entirely",
    ],
)
def test_a_blob_tampered_with_is_refused(attack: str) -> None:
    data, ref, blob = sealed(200_000)
    _, _other_ref, other = sealed(200_000, seed=1)
    parts = chunks(blob)
    assert len(parts) == 4
    tampered = {
        "swap two chunks": lambda: b"".join([parts[1], parts[0], *parts[2:]]),
        "repeat a chunk": lambda: b"".join([parts[0], parts[0], *parts[1:]]),
        "drop the last chunk": lambda: b"".join(parts[:-1]),
        "drop a middle chunk": lambda: b"".join([parts[0], *parts[2:]]),
        "cut mid-chunk": lambda: blob[: len(blob) - 100],
        "extend": lambda: blob + b"\0" * 16,
        "flip a bit": lambda: blob[:70_000] + bytes([blob[70_000] ^ 1]) + blob[70_001:],
        "splice another blob's chunk": lambda: b"".join([parts[0], chunks(other)[1], *parts[2:]]),
        "another blob entirely": lambda: other,
    }[attack]()
    with pytest.raises(IntegrityError):
        opened(ref, tampered)
    assert opened(ref, blob) == data  # the untouched blob still opens


def test_the_last_flag_cannot_be_moved() -> None:
    """Re-sealing with the key (a member, not the broker) shows what the flag binds: a file cut
    short and re-flagged as ending early is refused against the reference of the whole file."""
    _data, ref, blob = sealed(200_000)
    aead = ChaCha20Poly1305(ref.key)
    first = aead.decrypt(att.chunk_nonce(0, last=False), chunks(blob)[0], att.AAD)
    early_end = aead.encrypt(att.chunk_nonce(0, last=True), first, att.AAD)
    with pytest.raises(IntegrityError):
        opened(ref, early_end + b"".join(chunks(blob)[1:]))
    never_last = aead.encrypt(
        att.chunk_nonce(3, last=False),
        aead.decrypt(att.chunk_nonce(3, last=True), chunks(blob)[3], att.AAD),
        att.AAD,
    )
    with pytest.raises(IntegrityError):
        opened(ref, b"".join(chunks(blob)[:3]) + never_last)


@pytest.mark.parametrize("lie", ["size", "sha256", "address", "padding"])
def test_a_sender_that_declares_a_false_size_or_hash_is_caught(lie: str) -> None:
    data, ref, blob = sealed(70_000)
    fields = {f: getattr(ref, f) for f in ("name", "media_type", "size", "sha256", "address", "key")}
    if lie == "size":
        fields["size"] = 69_999  # same padding bucket, same chunks: only the size differs
    elif lie == "sha256":
        fields["sha256"] = hashlib.sha256(b"something else").digest()
    elif lie == "address":
        fields["address"] = bytes(32)
    else:
        # A sender who hides bytes in the padding: re-seal with a non-zero tail.
        padded = data + b"\x01" + bytes(att.padded_size(70_000) - 70_001)
        aead = ChaCha20Poly1305(ref.key)
        blob = aead.encrypt(att.chunk_nonce(0, last=False), padded[:65536], att.AAD) + aead.encrypt(
            att.chunk_nonce(1, last=True), padded[65536:], att.AAD
        )
        fields["address"] = att.blob_address(blob)
    with pytest.raises(IntegrityError):
        opened(AttachmentRef(**fields), blob)


def test_a_sealer_refuses_a_file_that_changed_size_while_it_was_read() -> None:
    grew = att.Sealer(10, key=os.urandom(32))
    with pytest.raises(InvalidValueError):
        grew.feed(b"x" * 11)
    shrank = att.Sealer(10, key=os.urandom(32))
    shrank.feed(b"x" * 9)
    with pytest.raises(InvalidValueError):
        shrank.finish()


def test_the_same_key_and_bytes_seal_to_the_same_blob() -> None:
    """What a resumed upload relies on: re-encrypting under the journalled key rebuilds the hashes."""
    key = os.urandom(32)
    a = att.seal_bytes(b"x" * 100_000, name="a", media_type="text/plain", key=key)
    b = att.seal_bytes(b"x" * 100_000, name="a", media_type="text/plain", key=key)
    assert a == b
    assert att.seal_bytes(b"x" * 100_000, name="a", media_type="text/plain", key=os.urandom(32))[1] != a[1]


def test_the_address_is_the_labelled_hash_of_length_and_ciphertext() -> None:
    _, ref, blob = sealed(5000)
    expected = hashlib.sha256(P.label("hash blob") + len(blob).to_bytes(8, "big") + blob).digest()
    assert ref.address == expected


# --------------------------------------------------------------------------- the record's forms


def record(**over: object) -> UpdateRecord:
    fields: dict[str, object] = {
        "case_id": bytes(16),
        "epoch": 0,
        "sender": bytes(range(16)),
        "counter": 0,
        "prev_own": b"",
        "seen": (),
        "log": LogPosition(count=1, head=bytes(32)),
        "commit_hash": bytes(32),
        "content_type": "note",
        "content": b"{}",
        "time": 1,
    }
    fields.update(over)
    return UpdateRecord(**fields)  # type: ignore[arg-type]


REF = sealed(10)[1]


def test_a_record_without_files_keeps_its_earlier_form() -> None:
    assert record().version == 1
    assert record(witnessed=LogRef(size=1, root=bytes(32))).version == 2
    with_files = record(attachments=(REF,))
    assert with_files.version == 3
    # The unset version-2 field is nil in the version-3 form, and the bytes round-trip.
    obj = unpack(with_files.encode())
    assert obj[0] == 3 and obj[2 + 11] is None
    assert UpdateRecord.decode(with_files.encode()) == with_files
    both = record(witnessed=LogRef(size=1, root=bytes(32)), attachments=(REF,))
    assert UpdateRecord.decode(both.encode()) == both


@pytest.mark.parametrize(
    "mangle",
    ["empty attachments", "v3 with nil attachments", "v2 claimed for a v3 body", "nil version-1 field"],
)
def test_a_record_not_in_its_lowest_form_is_refused(mangle: str) -> None:
    obj = unpack(record(attachments=(REF,)).encode())
    if mangle == "empty attachments":
        obj[-1] = []
    elif mangle == "v3 with nil attachments":
        obj[-1] = None
    elif mangle == "v2 claimed for a v3 body":
        obj[0] = 2
    else:
        obj[2] = None
    with pytest.raises(MalformedError):
        UpdateRecord.decode(pack(obj))


def test_a_version_no_object_has_is_unsupported() -> None:
    obj = unpack(record().encode())
    obj[0] = 4
    with pytest.raises(UnsupportedError):
        UpdateRecord.decode(pack(obj))
    env = Envelope(case_id=bytes(16), epoch=0, sender=bytes(16), counter=0, nonce=bytes(24), ciphertext=b"x")
    obj = unpack(env.encode())
    obj[0] = 3
    with pytest.raises(UnsupportedError):
        Envelope.decode(pack(obj))


@pytest.mark.parametrize("name", ["", "a\nb", "tab\there", "del\x7f", "x" * 256])
def test_a_file_name_with_control_characters_or_none_at_all_is_malformed(name: str) -> None:
    with pytest.raises(MalformedError):
        AttachmentRef(**{**REF.__dict__, "name": name})
