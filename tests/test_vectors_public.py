"""Public test vectors run through the exact wrappers the protocol uses.

Sources (read from ``../shared/vectors/``, never copied into the repository):
Project Wycheproof for Ed25519, X25519, ChaCha20-Poly1305, XChaCha20-Poly1305,
HKDF-SHA256 and ML-KEM-768; draft-ietf-hpke-pq for HPKE with X-Wing.  Invalid
vectors must be rejected; "acceptable" ones may go either way unless our policy
says otherwise (an all-zero X25519 result is always refused).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from caseline.crypto import primitives as P
from caseline.schemas.errors import BadSignatureError, DecryptionError, UnsupportedError
from cryptography.hazmat.primitives.asymmetric import mlkem

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
if not VECTORS.is_dir():
    pytest.skip(f"public vectors not found at {VECTORS}", allow_module_level=True)


def cases(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads((VECTORS / "wycheproof" / name).read_text())
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def ids(prefix: str, items: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    return [f"{prefix}-{t['tcId']}" for _, t in items]


ED25519 = cases("ed25519_test.json")
X25519 = cases("x25519_test.json")
CHACHA = cases("chacha20_poly1305_test.json")
XCHACHA = cases("xchacha20_poly1305_test.json")
HKDF = cases("hkdf_sha256_test.json")
MLKEM = cases("mlkem_768_test.json")
HPKE = json.loads((VECTORS / "hpke" / "hpke_pq_mlkem768_x25519.json").read_text())


def test_every_file_contributes_vectors() -> None:
    counts = {
        "ed25519": len(ED25519),
        "x25519": len(X25519),
        "chacha": len(CHACHA),
        "xchacha": len(XCHACHA),
        "hkdf": len(HKDF),
        "mlkem": len(MLKEM),
        "hpke": len(HPKE),
    }
    assert counts == {
        "ed25519": 151,
        "x25519": 518,
        "chacha": 325,
        "xchacha": 315,
        "hkdf": 86,
        "mlkem": 193,
        "hpke": 2,
    }


@pytest.mark.parametrize(("group", "test"), ED25519, ids=ids("ed25519", ED25519))
def test_ed25519_verify(group: dict[str, Any], test: dict[str, Any]) -> None:
    pk = bytes.fromhex(group["publicKey"]["pk"])
    msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    if test["result"] == "valid":
        P.ed25519_verify(pk, msg, sig)
    else:
        with pytest.raises(BadSignatureError):
            P.ed25519_verify(pk, msg, sig)


@pytest.mark.parametrize(("group", "test"), X25519, ids=ids("x25519", X25519))
def test_x25519(group: dict[str, Any], test: dict[str, Any]) -> None:
    private, public = bytes.fromhex(test["private"]), bytes.fromhex(test["public"])
    shared = bytes.fromhex(test["shared"])
    if shared == bytes(32):  # our policy: a contributory-less result is refused
        with pytest.raises(DecryptionError):
            P.x25519_shared(private, public)
    elif test["result"] in ("valid", "acceptable"):
        assert P.x25519_shared(private, public) == shared
    else:
        with pytest.raises(DecryptionError):
            P.x25519_shared(private, public)


def _aead(test: dict[str, Any], seal: Any, open_: Any, nonce_size: int) -> None:
    key, iv = bytes.fromhex(test["key"]), bytes.fromhex(test["iv"])
    aad, msg = bytes.fromhex(test["aad"]), bytes.fromhex(test["msg"])
    sealed = bytes.fromhex(test["ct"]) + bytes.fromhex(test["tag"])
    if test["result"] == "valid":
        assert seal(key, iv, msg, aad) == sealed
        assert open_(key, iv, sealed, aad) == msg
    else:
        with pytest.raises(DecryptionError):
            open_(key, iv, sealed, aad)
    assert len(iv) == nonce_size or test["result"] == "invalid"


@pytest.mark.parametrize(("group", "test"), CHACHA, ids=ids("chacha", CHACHA))
def test_chacha20_poly1305(group: dict[str, Any], test: dict[str, Any]) -> None:
    _aead(test, P.chacha_seal, P.chacha_open, 12)


@pytest.mark.parametrize(("group", "test"), XCHACHA, ids=ids("xchacha", XCHACHA))
def test_xchacha20_poly1305(group: dict[str, Any], test: dict[str, Any]) -> None:
    _aead(test, P.xchacha_seal, P.xchacha_open, 24)


@pytest.mark.parametrize(("group", "test"), HKDF, ids=ids("hkdf", HKDF))
def test_hkdf_sha256(group: dict[str, Any], test: dict[str, Any]) -> None:
    args = {
        "ikm": bytes.fromhex(test["ikm"]),
        "salt": bytes.fromhex(test["salt"]),
        "info": bytes.fromhex(test["info"]),
        "length": test["size"],
    }
    if test["result"] == "valid":
        assert P.hkdf_sha256(**args) == bytes.fromhex(test["okm"])
    else:
        with pytest.raises(ValueError):  # noqa: PT011 - the library's error for an oversize output
            P.hkdf_sha256(**args)


VALID_MLKEM = [(g, t) for g, t in MLKEM if t.get("seed") and t.get("ek")]


@pytest.mark.parametrize(("group", "test"), VALID_MLKEM, ids=ids("mlkem", VALID_MLKEM))
def test_mlkem_768_key_derivation(group: dict[str, Any], test: dict[str, Any]) -> None:
    """The ML-KEM half of X-Wing: seed → encapsulation key, as the library computes it."""
    key = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(test["seed"]))
    assert key.public_key().public_bytes_raw() == bytes.fromhex(test["ek"])


@pytest.mark.parametrize("vector", HPKE, ids=[f"hpke-{i}" for i in range(len(HPKE))])
def test_xwing_key_encoding_and_hpke_key_schedule(vector: dict[str, Any]) -> None:
    seed = bytes.fromhex(vector["skRm"])
    assert P.xwing_public_from_seed(seed) == bytes.fromhex(vector["pkRm"])
    assert vector["kem_id"] == 0x647A
    if (vector["kdf_id"], vector["aead_id"]) != (1, 3):
        pytest.skip("key encoding checked; the key schedule is for another KDF/AEAD than our suite's")
    key, nonce = bytes.fromhex(vector["key"]), bytes.fromhex(vector["base_nonce"])
    first = vector["encryptions"][0]
    pt = bytes.fromhex(first["pt"])
    # The vector's own first encryption opens under its key and nonce ...
    assert P.chacha_open(key, nonce, bytes.fromhex(first["ct"]), bytes.fromhex(first["aad"])) == pt
    # ... and our single-shot HPKE reproduces that key schedule from enc and the seed.
    ct0 = P.chacha_seal(key, nonce, pt, b"")
    info = bytes.fromhex(vector["info"])
    assert P.hpke_open(seed, bytes.fromhex(vector["enc"]) + ct0, info) == pt
    with pytest.raises(DecryptionError):
        P.hpke_open(seed, bytes.fromhex(vector["enc"]) + ct0, info + b"x")


def test_hpke_fails_closed_without_the_hybrid_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our policy, not the library's: no suite, no wraps — never an X25519-only fallback."""
    monkeypatch.setattr(P, "_SUITE", None)
    with pytest.raises(UnsupportedError):
        P.require_hybrid_hpke()
    with pytest.raises(UnsupportedError):
        P.hpke_seal(bytes(1216), b"secret", b"info")
    with pytest.raises(UnsupportedError):
        P.hpke_open(bytes(32), b"ct", b"info")
