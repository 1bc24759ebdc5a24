"""C2SP signed notes, checkpoints and Ed25519 cosignatures (pure: no I/O, no clock).

Implements c2sp.org/signed-note (Ed25519, type 0x01), c2sp.org/tlog-checkpoint and
c2sp.org/tlog-cosignature (``cosignature/v1``, type 0x04) as published, so that any
witness or monitor of that ecosystem can check a caseline log, and ours theirs.
Parsing is strict: a note has exactly one accepted spelling, and whatever it refuses
raises ``MalformedError``; a signature that fails raises ``BadSignatureError``.

Why a raw Ed25519 signature over note text cannot be mistaken for any other caseline
signature, although the broker key makes both: every other caseline signature is over
``lp(b"caseline/v1 sign " + label) || ...``, whose first byte is the top byte of a
4-byte length (0x00 for any label), while a note text is UTF-8 with no control
character other than newline, so it never starts with 0x00.  Cosignatures (type 0x04)
sign ``cosignature/v1\\n`` followed by a checkpoint, and are made only by witness keys,
which sign nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from caseline.crypto.primitives import SIGN_PUBLIC_SIZE, ed25519_sign, ed25519_verify, u64
from caseline.schemas.errors import BadSignatureError, MalformedError, UnsupportedError

ALG_ED25519: Final = 0x01
ALG_COSIGNATURE_V1: Final = 0x04
MAX_SIGNATURES: Final = 100
MAX_NOTE_SIZE: Final = 16384
KEY_ID_SIZE: Final = 4
TIMESTAMP_SIZE: Final = 8
MAX_TIMESTAMP: Final = 2**63 - 1
ROOT_SIZE: Final = 32
#: Tree sizes above this are refused: no log holds 2^63 leaves, and sizes travel as uint64.
MAX_TREE_SIZE: Final = 2**63 - 1
DASH: Final = "\u2014 "
LOG_ORIGIN_PREFIX: Final = "caseline.log/"

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedError(f"{what} is not base64") from exc
    if b64(data) != text:
        raise MalformedError(f"{what} is not canonical base64")
    return data


def parse_decimal(text: str, what: str) -> int:
    """An ASCII decimal without leading zeroes, at most 2^63 - 1."""
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_TREE_SIZE:
        raise MalformedError(f"{what} is not a decimal number without leading zeroes")
    return int(text)


def check_key_name(name: str) -> str:
    """Key names are non-empty and carry no Unicode space and no plus."""
    if not name or "+" in name or any(ch.isspace() for ch in name) or _CONTROL.search(name):
        raise MalformedError("a key name must be non-empty, without spaces or plus signs")
    return name


def _decode_text(data: bytes) -> str:
    """Note bytes as text: valid UTF-8 with no control character but newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError("a note must be valid UTF-8") from exc
    if _CONTROL.search(text):
        raise MalformedError("a note may contain no control character other than newline")
    return text


def _check_note_text(text: bytes) -> str:
    decoded = _decode_text(text)
    if not decoded.endswith("\n"):
        raise MalformedError("a note text must end in a newline")
    return decoded


# --------------------------------------------------------------------------- keys


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """The 4-byte identifier C2SP recommends (and cosignature/v1 requires)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:KEY_ID_SIZE]


def vkey(name: str, alg: int, public_key: bytes) -> str:
    """A verifier key: ``name+hex(key id)+base64(alg || public key)``."""
    check_key_name(name)
    return f"{name}+{key_id(name, alg, public_key).hex()}+{b64(bytes([alg]) + public_key)}"


def parse_vkey(text: str) -> tuple[str, int, bytes]:
    """``(name, alg, public_key)`` of an Ed25519 (0x01) or cosignature/v1 (0x04) vkey."""
    parts = text.split("+", 2)  # the base64 key may hold plus signs; name and id may not
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise MalformedError("a vkey is name+keyid+key with an 8-digit lowercase hex key id")
    name = check_key_name(parts[0])
    material = b64decode_strict(parts[2], "vkey key")
    if not material:
        raise MalformedError("a vkey carries no key")
    alg, public_key = material[0], material[1:]
    if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
        raise UnsupportedError(f"vkey signature type 0x{alg:02x} is not supported")
    if len(public_key) != SIGN_PUBLIC_SIZE:
        raise MalformedError("an Ed25519 vkey carries a 32-byte key")
    if key_id(name, alg, public_key).hex() != parts[1]:
        raise MalformedError("the vkey's key id does not match its name and key")
    return name, alg, public_key


def log_origin(receipt_key: bytes) -> str:
    """A broker's log origin: fixed by its receipt key, so one key names one log."""
    return LOG_ORIGIN_PREFIX + receipt_key.hex()


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """The body of a tlog checkpoint: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
        text = "".join(line + "\n" for line in lines).encode()
        if Checkpoint.parse(text) != self:
            raise MalformedError("checkpoint fields do not form a valid checkpoint")
        return text

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        lines = _check_note_text(text)[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise MalformedError("a checkpoint is at least three non-empty lines")
        size = parse_decimal(lines[1], "checkpoint size")
        root = b64decode_strict(lines[2], "checkpoint root")
        if len(root) != ROOT_SIZE:
            raise MalformedError("a checkpoint root is 32 bytes")
        return cls(lines[0], size, root, tuple(lines[3:]))


# --------------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line; ``signature`` is what follows the key id."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> bytes:
        return f"{DASH}{self.name} {b64(self.key_id + self.signature)}\n".encode()

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """One signature line, without its newline."""
        if not line.startswith(DASH):
            raise MalformedError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(DASH) :].partition(" ")
        raw = b64decode_strict(encoded, "signature")
        if len(raw) <= KEY_ID_SIZE:
            raise MalformedError("a signature is a key id and at least one byte")
        return cls(check_key_name(name), raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def parse_signature_lines(data: bytes) -> tuple[NoteSignature, ...]:
    """Newline-terminated signature lines (a note's tail, or a witness's answer)."""
    text = _decode_text(data)
    if not text.endswith("\n"):
        raise MalformedError("signature lines end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedError(f"more than {MAX_SIGNATURES} signatures")
    return tuple(NoteSignature.parse_line(line) for line in lines)


@dataclass(frozen=True)
class Note:
    """A signed note: text (ending in a newline) and one or more signatures."""

    text: bytes
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        return self.text + b"\n" + b"".join(sig.line() for sig in self.signatures)

    @classmethod
    def parse(cls, data: bytes, *, max_size: int = MAX_NOTE_SIZE) -> Note:
        if len(data) > max_size:
            raise MalformedError(f"a note is at most {max_size} bytes")
        _decode_text(data)
        split = data.rfind(b"\n\n")
        if split < 0:
            raise MalformedError("a note has a blank line before its signatures")
        return cls(data[: split + 1], parse_signature_lines(data[split + 2 :]))


def sign_note(text: bytes, *, name: str, secret_key: bytes) -> NoteSignature:
    """An Ed25519 note signature; ``secret_key`` is libsodium's 64 bytes (seed || public)."""
    _check_note_text(text)
    public_key = secret_key[32:]
    return NoteSignature(
        check_key_name(name), key_id(name, ALG_ED25519, public_key), ed25519_sign(secret_key, text)
    )


def _check_signer(sig: NoteSignature, name: str, alg: int, public_key: bytes) -> None:
    if sig.name != name or sig.key_id != key_id(name, alg, public_key):
        raise BadSignatureError("the signature is not from the expected key")


def verify_note_signature(text: bytes, sig: NoteSignature, *, name: str, public_key: bytes) -> None:
    _check_signer(sig, name, ALG_ED25519, public_key)
    ed25519_verify(public_key, text, sig.signature)


def verify_note(note: Note, *, name: str, public_key: bytes) -> None:
    """Signed-note verification for one known Ed25519 key.

    Lines from other keys are ignored; every line naming this key must verify, and at
    least one must be there.
    """
    kid = key_id(name, ALG_ED25519, public_key)
    mine = [sig for sig in note.signatures if sig.name == name and sig.key_id == kid]
    if not mine:
        raise BadSignatureError("the note carries no signature by the expected key")
    for sig in mine:
        ed25519_verify(public_key, note.text, sig.signature)


# --------------------------------------------------------------------------- cosignatures


def _cosigned_message(checkpoint_text: bytes, timestamp: int) -> bytes:
    Checkpoint.parse(checkpoint_text)
    return b"cosignature/v1\ntime %d\n" % timestamp + checkpoint_text


def cosign(checkpoint_text: bytes, *, name: str, secret_key: bytes, timestamp: int) -> NoteSignature:
    """A cosignature/v1 line: the checkpoint as seen at ``timestamp`` (POSIX seconds)."""
    if not 0 < timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is between 1 and 2^63 - 1")
    signature = ed25519_sign(secret_key, _cosigned_message(checkpoint_text, timestamp))
    kid = key_id(check_key_name(name), ALG_COSIGNATURE_V1, secret_key[32:])
    return NoteSignature(name, kid, u64(timestamp) + signature)


def verify_cosignature(checkpoint_text: bytes, sig: NoteSignature, *, name: str, public_key: bytes) -> int:
    """Verify one cosignature/v1 and return its timestamp (POSIX seconds)."""
    _check_signer(sig, name, ALG_COSIGNATURE_V1, public_key)
    if len(sig.signature) != TIMESTAMP_SIZE + 64:
        raise BadSignatureError("a cosignature/v1 is a timestamp and a 64-byte signature")
    timestamp = int.from_bytes(sig.signature[:TIMESTAMP_SIZE], "big")
    if timestamp > MAX_TIMESTAMP:
        raise BadSignatureError("cosignature timestamp out of range")
    ed25519_verify(public_key, _cosigned_message(checkpoint_text, timestamp), sig.signature[TIMESTAMP_SIZE:])
    return timestamp
