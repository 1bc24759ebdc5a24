"""Public test vectors run through the exact wrappers the protocol uses.

Sources, read from ``../shared/vectors/`` (see its README) and never copied into the
repository: Project Wycheproof for Ed25519, X25519, ChaCha20-Poly1305,
XChaCha20-Poly1305, HKDF-SHA256 and ML-KEM-768; draft-ietf-hpke-pq for HPKE with
the hybrid KEM MLKEM768-X25519 (X-Wing).

Wycheproof's ``result`` is ``valid`` (must be accepted and match), ``invalid``
(must be rejected with our typed error) or ``acceptable`` (either, unless our
policy decides: an all-zero X25519 result is always refused).  Every test id is
``<file>-<tcId>`` so that a failure names its vector.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from caseline.crypto import primitives as P
from caseline.schemas.errors import BadSignatureError, DecryptionError, UnsupportedError
from cryptography.hazmat.primitives.asymmetric import mlkem

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
if not (VECTORS / "wycheproof").is_dir() or not (VECTORS / "hpke").is_dir():
    pytest.skip(
        f"public test vectors not found at {VECTORS} (they live outside the repository)",
        allow_module_level=True,
    )

Json = dict[str, Any]
Case = tuple[Json, Json]  # (test group, test)
Aead = Callable[[bytes, bytes, bytes, bytes], bytes]  # (key, nonce, text, aad) -> text


def _load(relative: str) -> Any:
    return json.loads((VECTORS / relative).read_text(encoding="utf-8"))


def _wycheproof(name: str, schema: str) -> tuple[list[Case], int]:
    """All (group, test) pairs of one Wycheproof file, and the count the file declares."""
    data = _load(f"wycheproof/{name}")
    assert data["schema"] == schema, f"{name}: unexpected schema {data['schema']}"
    return [(g, t) for g in data["testGroups"] for t in g["tests"]], data["numberOfTests"]


def _params(prefix: str, cases: list[Case]) -> list[Any]:
    return [pytest.param(g, t, id=f"{prefix}-{t['tcId']}") for g, t in cases]


def _hex(test: Json, field: str) -> bytes:
    return bytes.fromhex(test[field])


ED25519, ED25519_DECLARED = _wycheproof("ed25519_test.json", "eddsa_verify_schema_v1.json")
X25519, X25519_DECLARED = _wycheproof("x25519_test.json", "xdh_comp_schema_v1.json")
CHACHA, CHACHA_DECLARED = _wycheproof("chacha20_poly1305_test.json", "aead_test_schema_v1.json")
XCHACHA, XCHACHA_DECLARED = _wycheproof("xchacha20_poly1305_test.json", "aead_test_schema_v1.json")
HKDF, HKDF_DECLARED = _wycheproof("hkdf_sha256_test.json", "hkdf_test_schema_v1.json")
MLKEM, MLKEM_DECLARED = _wycheproof("mlkem_768_test.json", "mlkem_test_schema.json")
HPKE: list[Json] = _load("hpke/hpke_pq_mlkem768_x25519.json")
HPKE_PARAMS = [
    pytest.param(v, id=f"hpke-{i}-kdf{v['kdf_id']}-aead{v['aead_id']}") for i, v in enumerate(HPKE)
]

HPKE_MODE_BASE = 0
HPKE_KEM_XWING = 0x647A  # MLKEM768-X25519
HPKE_KDF_HKDF_SHA256 = 1
HPKE_AEAD_CHACHA20_POLY1305 = 3


def test_every_file_contributes_vectors() -> None:
    """Each file yields tests, and exactly as many as its header declares."""
    loaded = {
        "ed25519": (len(ED25519), ED25519_DECLARED),
        "x25519": (len(X25519), X25519_DECLARED),
        "chacha20_poly1305": (len(CHACHA), CHACHA_DECLARED),
        "xchacha20_poly1305": (len(XCHACHA), XCHACHA_DECLARED),
        "hkdf_sha256": (len(HKDF), HKDF_DECLARED),
        "mlkem_768": (len(MLKEM), MLKEM_DECLARED),
        "hpke_pq": (len(HPKE), len(HPKE)),
    }
    for name, (count, declared) in loaded.items():
        assert count > 0, f"{name}: no vectors"
        assert count == declared, f"{name}: {count} tests loaded, {declared} declared"


# --------------------------------------------------------------------------- Ed25519


@pytest.mark.parametrize(("group", "test"), _params("ed25519", ED25519))
def test_ed25519_verify(group: Json, test: Json) -> None:
    pk, msg, sig = bytes.fromhex(group["publicKey"]["pk"]), _hex(test, "msg"), _hex(test, "sig")
    if test["result"] == "valid":
        P.ed25519_verify(pk, msg, sig)
    elif test["result"] == "invalid":
        with pytest.raises(BadSignatureError):
            P.ed25519_verify(pk, msg, sig)
    else:  # acceptable: either outcome, but only ever our typed error
        with contextlib.suppress(BadSignatureError):
            P.ed25519_verify(pk, msg, sig)


def _ed25519_signing_cases() -> list[Any]:
    """Vectors that carry a private key (Wycheproof v1 ``EddsaVerify`` carries none)."""
    found = []
    for group, test in ED25519:
        private = group.get("privateKey") or group.get("key") or {}
        seed = private.get("sk") if isinstance(private, dict) else None
        if seed and test["result"] == "valid":
            found.append(pytest.param(group, test, bytes.fromhex(seed), id=f"ed25519-sign-{test['tcId']}"))
    if not found:
        reason = "ed25519_test.json (EddsaVerify) carries public keys only: no seed to sign with"
        found.append(pytest.param({}, {}, b"", id="ed25519-sign", marks=pytest.mark.skip(reason=reason)))
    return found


@pytest.mark.parametrize(("group", "test", "seed"), _ed25519_signing_cases())
def test_ed25519_sign_is_deterministic(group: Json, test: Json, seed: bytes) -> None:
    """RFC 8032 signing: the seed gives the vector's key and exactly its signature."""
    pk, sk = P.ed25519_keypair_from_seed(seed)
    assert pk == bytes.fromhex(group["publicKey"]["pk"])
    assert P.ed25519_sign(sk, _hex(test, "msg")) == _hex(test, "sig")


# --------------------------------------------------------------------------- X25519


@pytest.mark.parametrize(("group", "test"), _params("x25519", X25519))
def test_x25519(group: Json, test: Json) -> None:
    private, public, shared = _hex(test, "private"), _hex(test, "public"), _hex(test, "shared")
    if shared == bytes(32):  # our policy: a non-contributory result is always refused
        with pytest.raises(DecryptionError):
            P.x25519_shared(private, public)
    elif test["result"] == "valid":
        assert P.x25519_shared(private, public) == shared
    elif test["result"] == "acceptable":
        try:
            result = P.x25519_shared(private, public)
        except DecryptionError:
            return
        assert result == shared
    else:
        with pytest.raises(DecryptionError):
            P.x25519_shared(private, public)


# --------------------------------------------------------------------------- AEAD


def _check_aead(test: Json, seal: Aead, open_: Aead) -> None:
    key, nonce, aad, msg = _hex(test, "key"), _hex(test, "iv"), _hex(test, "aad"), _hex(test, "msg")
    sealed = _hex(test, "ct") + _hex(test, "tag")
    if test["result"] == "valid":
        assert seal(key, nonce, msg, aad) == sealed
        assert open_(key, nonce, sealed, aad) == msg
        return
    with pytest.raises(DecryptionError):
        open_(key, nonce, sealed, aad)
    # Sealing may refuse the inputs (a wrong nonce size); if it accepts them it must
    # not produce the vector's forged ciphertext.
    try:
        honest = seal(key, nonce, msg, aad)
    except (TypeError, ValueError):
        return
    assert honest != sealed


@pytest.mark.parametrize(("group", "test"), _params("chacha20-poly1305", CHACHA))
def test_chacha20_poly1305(group: Json, test: Json) -> None:
    _check_aead(test, P.chacha_seal, P.chacha_open)


@pytest.mark.parametrize(("group", "test"), _params("xchacha20-poly1305", XCHACHA))
def test_xchacha20_poly1305(group: Json, test: Json) -> None:
    _check_aead(test, P.xchacha_seal, P.xchacha_open)


# --------------------------------------------------------------------------- HKDF


@pytest.mark.parametrize(("group", "test"), _params("hkdf-sha256", HKDF))
def test_hkdf_sha256(group: Json, test: Json) -> None:
    ikm, salt, info, size = _hex(test, "ikm"), _hex(test, "salt"), _hex(test, "info"), test["size"]
    if test["result"] == "valid":
        assert P.hkdf_sha256(ikm=ikm, salt=salt, info=info, length=size) == _hex(test, "okm")
    else:
        with pytest.raises(ValueError, match="larger than"):  # > 255 * 32 octets
            P.hkdf_sha256(ikm=ikm, salt=salt, info=info, length=size)


# --------------------------------------------------------------------------- ML-KEM-768


@pytest.mark.parametrize(("group", "test"), _params("mlkem-768", MLKEM))
def test_mlkem_768(group: Json, test: Json) -> None:
    """The ML-KEM half of X-Wing: seed → encapsulation key, and decapsulation."""
    assert group["parameterSet"] == "ML-KEM-768"
    seed = _hex(test, "seed")
    if len(seed) != 64:  # only ever in "invalid" vectors: a private seed of the wrong size
        assert test["result"] == "invalid"
        with pytest.raises(ValueError, match="64 bytes"):
            mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        return
    key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    assert key.public_key().public_bytes_raw() == _hex(test, "ek")
    if test["result"] == "valid":
        assert key.decapsulate(_hex(test, "c")) == _hex(test, "K")
    else:  # a ciphertext of the wrong size
        with pytest.raises(ValueError, match="ciphertext"):
            key.decapsulate(_hex(test, "c"))


# --------------------------------------------------------------------------- HPKE (X-Wing)


def _seq_nonce(base_nonce: bytes, seq: int) -> bytes:
    """RFC 9180 ``ComputeNonce``: base_nonce XOR I2OSP(seq, Nn)."""
    return bytes(a ^ b for a, b in zip(base_nonce, seq.to_bytes(len(base_nonce), "big"), strict=True))


@pytest.mark.parametrize("vector", HPKE_PARAMS)
def test_xwing_public_key_from_seed(vector: Json) -> None:
    """skRm is the 32-byte X-Wing seed; pkRm is ML-KEM-768 public || X25519 public."""
    assert vector["kem_id"] == HPKE_KEM_XWING
    public = P.xwing_public_from_seed(_hex(vector, "skRm"))
    assert len(public) == P.KEM_PUBLIC_SIZE
    assert public == _hex(vector, "pkRm")
    P.check_kem_public(public)


@pytest.mark.parametrize("vector", HPKE_PARAMS)
def test_hpke_vector_encryptions_open_with_raw_aead(vector: Json) -> None:
    """The vector's own sequence of encryptions, under its key and base_nonce."""
    if vector["aead_id"] != HPKE_AEAD_CHACHA20_POLY1305:
        pytest.skip(f"aead_id {vector['aead_id']} is not ChaCha20-Poly1305, the only AEAD we use")
    key, base_nonce = _hex(vector, "key"), _hex(vector, "base_nonce")
    assert vector["encryptions"], "vector has no encryptions"
    for seq, encryption in enumerate(vector["encryptions"]):
        nonce = _seq_nonce(base_nonce, seq)
        assert nonce == _hex(encryption, "nonce"), f"encryption {seq}: nonce is not base_nonce XOR seq"
        pt, aad, ct = _hex(encryption, "pt"), _hex(encryption, "aad"), _hex(encryption, "ct")
        assert P.chacha_open(key, nonce, ct, aad) == pt, f"encryption {seq}"
        assert P.chacha_seal(key, nonce, pt, aad) == ct, f"encryption {seq}"


@pytest.mark.parametrize("vector", HPKE_PARAMS)
def test_hpke_open_reproduces_key_schedule(vector: Json) -> None:
    """README method: ``hpke_open(seed, enc || Seal(key, base_nonce, pt, ""), info) == pt``.

    That shows our X-Wing decapsulation and the library's key schedule derive the
    vector's ``key`` and ``base_nonce`` from ``enc``, the seed and ``info``.
    """
    if vector["mode"] != HPKE_MODE_BASE:
        pytest.skip(f"mode {vector['mode']}: single-shot HPKE is base mode only")
    suite = (vector["kdf_id"], vector["aead_id"])
    if suite != (HPKE_KDF_HKDF_SHA256, HPKE_AEAD_CHACHA20_POLY1305):
        pytest.skip(
            f"kdf_id {suite[0]}, aead_id {suite[1]}: hpke_open is fixed to HKDF-SHA256 (1) and "
            "ChaCha20-Poly1305 (3); key encoding and AEAD are checked by the other tests"
        )
    seed, enc, info = _hex(vector, "skRm"), _hex(vector, "enc"), _hex(vector, "info")
    pt = _hex(vector["encryptions"][0], "pt")
    ct0 = P.chacha_seal(_hex(vector, "key"), _hex(vector, "base_nonce"), pt, b"")
    assert len(enc) == P.KEM_ENC_SIZE
    assert P.hpke_open(seed, enc + ct0, info) == pt
    # Any change to what the key schedule binds must fail, with our typed error.
    with pytest.raises(DecryptionError):
        P.hpke_open(seed, enc + ct0, info + b"x")
    with pytest.raises(DecryptionError):
        P.hpke_open(seed, bytes([enc[0] ^ 1]) + enc[1:] + ct0, info)
    with pytest.raises(DecryptionError):
        P.hpke_open(seed, enc[:-1] + bytes([enc[-1] ^ 1]) + ct0, info)
    # And our sealing to the vector's public key opens with the vector's seed.
    assert P.hpke_open(seed, P.hpke_seal(_hex(vector, "pkRm"), pt, info), info) == pt


def test_hpke_fails_closed_without_the_hybrid_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our policy, not the library's: no hybrid suite, no HPKE — never an X25519-only mode."""
    vector = HPKE[0]
    seed, public = _hex(vector, "skRm"), _hex(vector, "pkRm")
    sealed = P.hpke_seal(public, b"secret", b"info")  # works with the suite present
    monkeypatch.setattr(P, "_SUITE", None)
    with pytest.raises(UnsupportedError):
        P.require_hybrid_hpke()
    with pytest.raises(UnsupportedError):
        P.hpke_seal(public, b"secret", b"info")
    with pytest.raises(UnsupportedError):
        P.hpke_open(seed, sealed, b"info")


# --------------------------------------------------------------------------- sizes the libraries do not check


@pytest.mark.parametrize("length", [0, 1, 15])
@pytest.mark.parametrize(
    ("open_", "nonce_size"),
    [pytest.param(P.chacha_open, 12, id="chacha"), pytest.param(P.xchacha_open, 24, id="xchacha")],
)
def test_aead_open_rejects_ciphertext_shorter_than_tag(open_: Aead, nonce_size: int, length: int) -> None:
    """PyNaCl raised a bare ValueError here; a member could send such an envelope."""
    with pytest.raises(DecryptionError):
        open_(bytes(32), bytes(nonce_size), bytes(length), b"")


@pytest.mark.parametrize("which", ["private", "public"])
@pytest.mark.parametrize("change", [b"\x00", b""])
def test_x25519_rejects_inputs_of_the_wrong_size(which: str, change: bytes) -> None:
    """libsodium takes no lengths: longer inputs were cut short, shorter ones read past the end."""
    test = next(t for _, t in X25519 if t["result"] == "valid")
    private, public = _hex(test, "private"), _hex(test, "public")
    if which == "private":
        private = private + change if change else private[:31]
    else:
        public = public + change if change else public[:31]
    with pytest.raises(DecryptionError):
        P.x25519_shared(private, public)
