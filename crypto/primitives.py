"""The only module that touches cryptographic libraries: hazmat.

Everything above it speaks in labels and typed keys.  Each wrapper is thin on
purpose so that the public test vectors (Wycheproof, RFC 9180, hpke-pq) run
through exactly the code the protocol uses.

Domain separation follows MLS's ``SignWithLabel``: every signature, hash and KDF
input starts with ``lp(b"caseline/v1 " + label)``, where ``lp`` is a 4-byte
big-endian length prefix.  Two uses with different labels can therefore never
produce the same input, whatever their payloads are.

Failure is uniform and typed: a bad signature raises ``BadSignatureError``, a
failed open raises ``DecryptionError``; nothing returns a bool.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from typing import Final

import nacl.bindings
import nacl.exceptions
from caseline.schemas.errors import BadSignatureError, DecryptionError, UnsupportedError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_PREFIX: Final = b"caseline/v1 "
SIGNATURE_SIZE: Final = 64
SIGN_PUBLIC_SIZE: Final = 32
SEED_SIZE: Final = 32
HASH_SIZE: Final = 32
AEAD_KEY_SIZE: Final = 32
AEAD_NONCE_SIZE: Final = 24  # XChaCha20-Poly1305
AEAD_TAG_SIZE: Final = 16
MLKEM768_PUBLIC_SIZE: Final = 1184
X25519_PUBLIC_SIZE: Final = 32
KEM_PUBLIC_SIZE: Final = MLKEM768_PUBLIC_SIZE + X25519_PUBLIC_SIZE  # X-Wing layout, 1216
KEM_ENC_SIZE: Final = 1088 + 32  # ML-KEM-768 ciphertext || X25519 ephemeral


def lp(data: bytes) -> bytes:
    """Length-prefix ``data`` so that concatenations are unambiguous."""
    if len(data) > 0xFFFFFFFF:
        raise ValueError("field too long to length-prefix")
    return struct.pack(">I", len(data)) + data


def u64(value: int) -> bytes:
    """Encode a non-negative integer as 8 big-endian bytes."""
    return struct.pack(">Q", value)


@functools.lru_cache(maxsize=256)
def label(name: str) -> bytes:
    """The length-prefixed domain-separation label for one use (cached: labels are few)."""
    return lp(PROTOCOL_PREFIX + name.encode("ascii"))


# --------------------------------------------------------------------------- hashing


def hash_labeled(name: str, *parts: bytes) -> bytes:
    """SHA-256 over a label and length-prefixed parts."""
    h = hashlib.sha256(label("hash " + name))
    for part in parts:
        h.update(lp(part))
    return h.digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets or MACs without leaking where they differ."""
    return hmac.compare_digest(a, b)


def mac_labeled(key: bytes, name: str, *parts: bytes) -> bytes:
    """HMAC-SHA256 under ``key`` over a label and length-prefixed parts (stdlib ``hmac``)."""
    h = hmac.new(key, label("mac " + name), hashlib.sha256)
    for part in parts:
        h.update(lp(part))
    return h.digest()


# --------------------------------------------------------------------------- HKDF


def hkdf_sha256(*, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256; raises ``ValueError`` for an impossible length."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def kdf_labeled(name: str, *, secret: bytes, salt: bytes, context: tuple[bytes, ...] = ()) -> bytes:
    """A 32-byte key for one labelled use, bound to its context fields."""
    info = label("kdf " + name) + b"".join(lp(c) for c in context)
    return hkdf_sha256(ikm=secret, salt=salt, info=info, length=32)


# --------------------------------------------------------------------------- Ed25519


def ed25519_keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """Return ``(public_key, libsodium secret key)`` for a 32-byte seed."""
    if len(seed) != SEED_SIZE:
        raise ValueError("Ed25519 seed must be 32 bytes")
    pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    return pk, sk


def ed25519_sign(secret_key: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature (RFC 8032) with a libsodium secret key."""
    signed = nacl.bindings.crypto_sign(message, secret_key)
    return bytes(signed[:SIGNATURE_SIZE])


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify a detached signature; libsodium rejects non-canonical S and small-order keys."""
    if len(public_key) != SIGN_PUBLIC_SIZE or len(signature) != SIGNATURE_SIZE:
        raise BadSignatureError("signature or key has the wrong size")
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise BadSignatureError("signature does not verify") from exc


def sign_labeled(secret_key: bytes, name: str, tbs: bytes) -> bytes:
    """Sign ``tbs`` for one labelled use (MLS ``SignWithLabel``)."""
    return ed25519_sign(secret_key, label("sign " + name) + lp(tbs))


def verify_labeled(public_key: bytes, name: str, tbs: bytes, signature: bytes) -> None:
    """Verify a labelled signature; a signature made for another label fails."""
    ed25519_verify(public_key, label("sign " + name) + lp(tbs), signature)


# --------------------------------------------------------------------------- X25519


def x25519_shared(private: bytes, public: bytes) -> bytes:
    """Raw X25519; raises ``DecryptionError`` on a wrong size or an all-zero (low-order) result.

    libsodium takes pointers, not lengths: a longer input would be cut short and a
    shorter one read past its end, so the sizes are checked here.
    """
    if len(private) != X25519_PUBLIC_SIZE or len(public) != X25519_PUBLIC_SIZE:
        raise DecryptionError("X25519 key has the wrong size")
    try:
        return nacl.bindings.crypto_scalarmult(private, public)
    except nacl.exceptions.RuntimeError as exc:
        raise DecryptionError("X25519 produced an all-zero shared secret") from exc


# --------------------------------------------------------------------------- AEAD


def xchacha_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 (24-byte nonce: random nonces are safe)."""
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def xchacha_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Open XChaCha20-Poly1305; any failure is one ``DecryptionError``."""
    if len(key) != AEAD_KEY_SIZE or len(nonce) != AEAD_NONCE_SIZE:
        raise DecryptionError("AEAD key or nonce has the wrong size")
    if len(ciphertext) < AEAD_TAG_SIZE:
        raise DecryptionError("ciphertext is shorter than the AEAD tag")
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, TypeError) as exc:
        raise DecryptionError("AEAD authentication failed") from exc


def chacha_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """IETF ChaCha20-Poly1305 (12-byte nonce), as HPKE uses it."""
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def chacha_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Open IETF ChaCha20-Poly1305; any failure is one ``DecryptionError``."""
    if len(key) != AEAD_KEY_SIZE or len(nonce) != 12:
        raise DecryptionError("AEAD key or nonce has the wrong size")
    if len(ciphertext) < AEAD_TAG_SIZE:
        raise DecryptionError("ciphertext is shorter than the AEAD tag")
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, TypeError) as exc:
        raise DecryptionError("AEAD authentication failed") from exc


# --------------------------------------------------------------------------- HPKE / X-Wing

try:  # Fail closed: without the hybrid KEM there is no caseline, never an X25519-only mode.
    from cryptography.hazmat.primitives import hpke as _hpke

    _SUITE = _hpke.Suite(_hpke.KEM.MLKEM768_X25519, _hpke.KDF.HKDF_SHA256, _hpke.AEAD.CHACHA20_POLY1305)
    _HPKE_ERROR: str | None = None
except (ImportError, AttributeError) as _exc:  # pragma: no cover - depends on the wheel
    _hpke = None  # type: ignore[assignment]
    _SUITE = None  # type: ignore[assignment]
    _HPKE_ERROR = f"hybrid HPKE MLKEM768_X25519 unavailable: {type(_exc).__name__}"


def require_hybrid_hpke() -> None:
    """Raise ``UnsupportedError`` unless the post-quantum hybrid suite is present."""
    if _SUITE is None:
        raise UnsupportedError(_HPKE_ERROR or "hybrid HPKE unavailable")


def xwing_expand_seed(seed: bytes) -> tuple[bytes, bytes]:
    """Split a 32-byte X-Wing seed into (ML-KEM-768 64-byte seed, X25519 private key)."""
    if len(seed) != SEED_SIZE:
        raise ValueError("X-Wing seed must be 32 bytes")
    expanded = hashlib.shake_256(seed).digest(96)
    return expanded[:64], expanded[64:]


def _xwing_private(seed: bytes) -> _hpke.MLKEM768X25519PrivateKey:
    require_hybrid_hpke()
    mlkem_seed, x_priv = xwing_expand_seed(seed)
    return _hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed),
        x25519.X25519PrivateKey.from_private_bytes(x_priv),
    )


def xwing_public_from_seed(seed: bytes) -> bytes:
    """The 1216-byte X-Wing public key: ML-KEM-768 public key || X25519 public key."""
    mlkem_seed, x_priv = xwing_expand_seed(seed)
    mlkem_pub = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).public_key()
    x_pub = x25519.X25519PrivateKey.from_private_bytes(x_priv).public_key()
    return mlkem_pub.public_bytes_raw() + x_pub.public_bytes_raw()


def _xwing_public(public: bytes) -> _hpke.MLKEM768X25519PublicKey:
    require_hybrid_hpke()
    if len(public) != KEM_PUBLIC_SIZE:
        raise DecryptionError("KEM public key must be 1216 bytes")
    try:
        return _hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:MLKEM768_PUBLIC_SIZE]),
            x25519.X25519PublicKey.from_public_bytes(public[MLKEM768_PUBLIC_SIZE:]),
        )
    except ValueError as exc:
        raise DecryptionError("KEM public key is not valid") from exc


def check_kem_public(public: bytes) -> None:
    """Reject an unusable KEM public key: wrong size, bad ML-KEM part, low-order X25519."""
    _xwing_public(public)
    # A low-order X25519 point would make the classical half contribute nothing.
    probe = bytes(31) + b"\x09"  # any valid scalar works; RFC 7748 clamps it
    x25519_shared(probe, public[MLKEM768_PUBLIC_SIZE:])


def hpke_seal(recipient_public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """Single-shot HPKE base mode to an X-Wing public key; returns ``enc || ct``."""
    suite = _SUITE
    if suite is None:
        raise UnsupportedError(_HPKE_ERROR or "hybrid HPKE unavailable")
    return suite.encrypt(plaintext, _xwing_public(recipient_public), info=info)


def hpke_open(seed: bytes, ciphertext: bytes, info: bytes) -> bytes:
    """Open a single-shot HPKE message with the recipient's X-Wing seed."""
    suite = _SUITE
    if suite is None:
        raise UnsupportedError(_HPKE_ERROR or "hybrid HPKE unavailable")
    try:
        return suite.decrypt(ciphertext, _xwing_private(seed), info=info)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("HPKE open failed") from exc
