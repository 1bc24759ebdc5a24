"""C2SP signed notes, checkpoints and cosignatures: round trips, strictness, the spec's examples."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from caseline.crypto import note as N
from caseline.crypto.primitives import ed25519_keypair_from_seed
from caseline.schemas.errors import BadSignatureError, MalformedError, UnsupportedError

# c2sp.org/signed-note, "Verifier keys / Example": a vkey and a note it verifies.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n— example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()
# c2sp.org/tlog-cosignature: a checkpoint with a log signature and a witness cosignature.
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2"
    "oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()

LOG_PK, LOG_SK = ed25519_keypair_from_seed(bytes([1]) * 32)
WIT_PK, WIT_SK = ed25519_keypair_from_seed(bytes([2]) * 32)
ORIGIN = N.log_origin(LOG_PK)
CP = N.Checkpoint(ORIGIN, 5, bytes(range(32)))


def signed(text: bytes) -> N.Note:
    return N.Note(text, (N.sign_note(text, name=ORIGIN, secret_key=LOG_SK),))


def test_spec_vkey_and_note_verify() -> None:
    name, alg, public_key = N.parse_vkey(SPEC_VKEY)
    assert (name, alg) == ("example.com/foo", N.ALG_ED25519)
    assert N.vkey(name, alg, public_key) == SPEC_VKEY
    note = N.Note.parse(SPEC_NOTE)
    assert note.text == b"This is an example message.\n"
    assert note.encode() == SPEC_NOTE
    N.verify_note(note, name=name, public_key=public_key)
    N.verify_note_signature(note.text, note.signatures[0], name=name, public_key=public_key)
    altered = N.Note(b"This is an example message!\n", note.signatures)
    with pytest.raises(BadSignatureError):
        N.verify_note(altered, name=name, public_key=public_key)


def test_spec_cosigned_checkpoint_parses() -> None:
    note = N.Note.parse(SPEC_COSIGNED)
    cp = N.Checkpoint.parse(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.body() == note.text
    assert note.encode() == SPEC_COSIGNED
    cosig = note.signatures[1]
    assert cosig.name == "witness.example.com/w1"
    assert len(cosig.signature) == 72  # timestamp || Ed25519 signature
    assert int.from_bytes(cosig.signature[:8], "big") == 1679315147  # the spec's "time" line


def test_key_id_is_the_recommended_hash() -> None:
    import hashlib

    expected = hashlib.sha256(b"a.example/k\n\x04" + WIT_PK).digest()[:4]
    assert N.key_id("a.example/k", N.ALG_COSIGNATURE_V1, WIT_PK) == expected
    assert N.key_id("a.example/k", N.ALG_ED25519, WIT_PK) != expected


def test_checkpoint_round_trip_with_extensions() -> None:
    cp = dataclasses.replace(CP, extensions=("ext one", "ext two"))
    body = cp.body()
    assert body == f"{ORIGIN}\n5\n{base64.b64encode(bytes(range(32))).decode()}\next one\next two\n".encode()
    assert N.Checkpoint.parse(body) == cp
    assert N.Checkpoint.parse(N.Checkpoint(ORIGIN, 0, bytes(32)).body()).size == 0


ROOT = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"o\n1\n{ROOT}",  # no final newline
        "o\n1\n",  # two lines
        f"\n1\n{ROOT}\n",  # empty origin
        f"o\n01\n{ROOT}\n",  # leading zero
        f"o\n+1\n{ROOT}\n",
        f"o\n-1\n{ROOT}\n",
        f"o\n1 \n{ROOT}\n",
        f"o\n{2**63}\n{ROOT}\n",  # beyond uint63
        f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n",  # short root
        f"o\n1\n{ROOT[:-1]}\n",  # bad padding
        f"o\n1\n{ROOT}\n\n",  # empty extension line
        f"o\n1\n{ROOT}\next\tension\n",  # control character
    ],
)
def test_checkpoint_strictness(text: str) -> None:
    with pytest.raises(MalformedError):
        N.Checkpoint.parse(text.encode())


def test_checkpoint_body_refuses_bad_fields() -> None:
    for bad in (
        N.Checkpoint("o\nx", 1, bytes(32)),
        N.Checkpoint("o", -1, bytes(32)),
        N.Checkpoint("o", 1, b"x"),
    ):
        with pytest.raises(MalformedError):
            bad.body()


def test_note_round_trip_and_multiple_signatures() -> None:
    text = CP.body()
    note = N.Note(text, (N.sign_note(text, name=ORIGIN, secret_key=LOG_SK),))
    cosig = N.cosign(text, name="w.example/1", secret_key=WIT_SK, timestamp=1_700_000_000)
    both = N.Note(text, (*note.signatures, cosig))
    parsed = N.Note.parse(both.encode())
    assert parsed == both
    N.verify_note(parsed, name=ORIGIN, public_key=LOG_PK)  # the cosignature is ignored
    assert (
        N.verify_cosignature(text, parsed.signatures[1], name="w.example/1", public_key=WIT_PK)
        == 1_700_000_000
    )


def test_note_text_may_hold_blank_lines() -> None:
    text = b"first\n\nthird\n"
    note = signed(text)
    assert N.Note.parse(note.encode()).text == text


SIG_LINE = signed(b"x\n").signatures[0].line().decode()


@pytest.mark.parametrize(
    "data",
    [
        b"x\n" + SIG_LINE.encode(),  # no blank line
        b"x\n\n",  # no signature
        b"x\n\n" + SIG_LINE.encode()[:-1],  # last line unterminated
        b"x\n\n" + SIG_LINE.replace("\u2014", "-").encode(),  # hyphen for em dash
        b"x\n\n" + SIG_LINE.replace("\u2014 ", "\u2014").encode(),
        b"x\n\n" + SIG_LINE.replace(" ", "  ", 2).encode(),  # two spaces
        b"x\n\n" + SIG_LINE.replace("=\n", "\n").encode(),  # unpadded base64
        b"x\n\n" + SIG_LINE.replace(ORIGIN, "a+b").encode(),  # plus in a key name
        b"x\n\n" + SIG_LINE.replace(ORIGIN, "a\u00a0b").encode(),  # Unicode space in a key name
        "x\n\n\u2014 k AAAAAA==\n".encode(),  # key id but no signature
        b"x\r\n\n" + SIG_LINE.encode(),  # carriage return
        b"\x00x\n\n" + SIG_LINE.encode(),  # NUL
        b"\xffx\n\n" + SIG_LINE.encode(),  # not UTF-8
        b"x\n\n" + SIG_LINE.encode() + b"\n",  # trailing blank line
    ],
)
def test_note_strictness(data: bytes) -> None:
    with pytest.raises(MalformedError):
        N.Note.parse(data)


def test_note_limits() -> None:
    text = b"x\n"
    line = signed(text).signatures[0].line()
    assert (
        len(N.Note.parse(text + b"\n" + line * N.MAX_SIGNATURES, max_size=1 << 20).signatures)
        == N.MAX_SIGNATURES
    )
    with pytest.raises(MalformedError, match="signatures"):
        N.Note.parse(text + b"\n" + line * (N.MAX_SIGNATURES + 1), max_size=1 << 20)
    with pytest.raises(MalformedError, match="at most"):
        N.Note.parse(text + b"\n" + line, max_size=10)


def test_sign_note_refuses_bad_text_or_name() -> None:
    with pytest.raises(MalformedError):
        N.sign_note(b"no newline", name=ORIGIN, secret_key=LOG_SK)
    with pytest.raises(MalformedError):
        N.sign_note(b"x\n", name="has space", secret_key=LOG_SK)


def test_tampering_wrong_name_wrong_key_id() -> None:
    note = signed(CP.body())
    sig = note.signatures[0]
    tampered = N.Note(dataclasses.replace(CP, size=6).body(), note.signatures)
    with pytest.raises(BadSignatureError):
        N.verify_note(tampered, name=ORIGIN, public_key=LOG_PK)
    flipped = dataclasses.replace(sig, signature=bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    with pytest.raises(BadSignatureError):
        N.verify_note(N.Note(note.text, (flipped,)), name=ORIGIN, public_key=LOG_PK)
    with pytest.raises(BadSignatureError):
        N.verify_note_signature(
            note.text, dataclasses.replace(sig, name="other"), name=ORIGIN, public_key=LOG_PK
        )
    with pytest.raises(BadSignatureError):
        N.verify_note_signature(
            note.text, dataclasses.replace(sig, key_id=b"\0" * 4), name=ORIGIN, public_key=LOG_PK
        )
    # A note whose only line is from another key (same name, other id) carries no signature of ours.
    with pytest.raises(BadSignatureError, match="no signature"):
        N.verify_note(
            N.Note(note.text, (dataclasses.replace(sig, key_id=b"\0" * 4),)), name=ORIGIN, public_key=LOG_PK
        )
    # A matching line that fails spoils the note even next to a good one.
    with pytest.raises(BadSignatureError):
        N.verify_note(N.Note(note.text, (sig, flipped)), name=ORIGIN, public_key=LOG_PK)


def test_cosignature_message_and_failures() -> None:
    text = CP.body()
    cosig = N.cosign(text, name="w.example/1", secret_key=WIT_SK, timestamp=1679315147)
    assert cosig.key_id == N.key_id("w.example/1", N.ALG_COSIGNATURE_V1, WIT_PK)
    from caseline.crypto.primitives import ed25519_verify

    ed25519_verify(WIT_PK, b"cosignature/v1\ntime 1679315147\n" + text, cosig.signature[8:])
    assert cosig.signature[:8] == (1679315147).to_bytes(8, "big")
    with pytest.raises(BadSignatureError):
        N.verify_cosignature(
            dataclasses.replace(CP, size=6).body(), cosig, name="w.example/1", public_key=WIT_PK
        )
    later = dataclasses.replace(cosig, signature=(1679315148).to_bytes(8, "big") + cosig.signature[8:])
    with pytest.raises(BadSignatureError):
        N.verify_cosignature(text, later, name="w.example/1", public_key=WIT_PK)
    with pytest.raises(BadSignatureError):
        N.verify_cosignature(text, cosig, name="w.example/2", public_key=WIT_PK)
    with pytest.raises(BadSignatureError):  # a note signature is not a cosignature
        N.verify_cosignature(
            text,
            N.sign_note(text, name="w.example/1", secret_key=WIT_SK),
            name="w.example/1",
            public_key=WIT_PK,
        )
    with pytest.raises(ValueError, match="timestamp"):
        N.cosign(text, name="w.example/1", secret_key=WIT_SK, timestamp=0)
    with pytest.raises(MalformedError):
        N.cosign(b"not a checkpoint\n", name="w.example/1", secret_key=WIT_SK, timestamp=1)


@pytest.mark.parametrize(
    "text",
    [
        "example.com/foo+530d903a",
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # upper-case hex
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong key id
        "example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong name
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U",  # short key
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_vkey_strictness(text: str) -> None:
    with pytest.raises(MalformedError):
        N.parse_vkey(text)


def test_vkey_round_trip_and_unknown_type() -> None:
    for alg in (N.ALG_ED25519, N.ALG_COSIGNATURE_V1):
        assert N.parse_vkey(N.vkey("w.example/1", alg, WIT_PK)) == ("w.example/1", alg, WIT_PK)
    with pytest.raises(UnsupportedError):
        N.parse_vkey(N.vkey("w.example/1", 0x02, WIT_PK))
    plus = next(k for k in (bytes([i]) * 32 for i in range(256)) if "+" in N.b64(b"\x04" + k))
    assert N.parse_vkey(N.vkey("w.example/1", 4, plus)) == ("w.example/1", 4, plus)  # '+' in the base64


def test_log_origin_is_fixed_by_the_key() -> None:
    assert N.log_origin(LOG_PK) == "caseline.log/" + LOG_PK.hex()
    N.check_key_name(N.log_origin(LOG_PK))
