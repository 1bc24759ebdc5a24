"""Fuzz device certificates and revocation lists against a trust store with pinned roots.

Input: a mode byte, then the bytes.  Mode (modulo 4):

0. ``TrustStore.verify_cert`` on the bytes as a signed certificate.
1. The bytes are a certificate's ``tbs``; the harness signs them with the pinned
   root of the agency they name, so the fuzzer gets past the signature into the
   shape, KEM-key and validity checks (what a compromised or buggy agency
   issuing tool could produce).
2. ``TrustStore.add_revocation_list`` on the bytes as a signed list.
3. The bytes are a revocation list's ``tbs``, signed by the pinned root it names,
   then adopted, then used to check a real certificate.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["caseline"]):
    from caseline.crypto import certs
    from caseline.schemas import errors, wire

from fuzz.harness import main, split
from fuzz.scenario import build

SCENE = build()
ROOTS = SCENE.world.roots
NOW = SCENE.now


def _sign_as_agency(tbs: bytes, cls: type[wire.DeviceCert] | type[wire.RevocationList], label: str) -> bytes:
    try:
        agency = cls.decode(tbs).agency_id
    except errors.CaselineError:
        agency = "ke-kra"
    root = ROOTS.get(agency, ROOTS["ke-kra"])
    return wire.encode_signed(tbs, root.sign(label, tbs))


def _trust() -> certs.TrustStore:
    """A fresh store per input, so every run is reproducible from its input alone."""
    return certs.TrustStore({a: r.public_key for a, r in ROOTS.items()})


def test_one_input(data: bytes) -> None:
    mode, body = split(data)
    mode %= 4
    trust = _trust()
    try:
        if mode == 0:
            trust.verify_cert(body, at=NOW)
        elif mode == 1:
            signed = _sign_as_agency(body, wire.DeviceCert, certs.CERT_LABEL)
            trust.verify_cert(signed, at=NOW)
        elif mode == 2:
            trust.add_revocation_list(body)
            trust.verify_cert(SCENE.bob.cert, at=NOW)
        else:
            trust.add_revocation_list(SCENE.crl)
            signed = _sign_as_agency(body, wire.RevocationList, certs.CRL_LABEL)
            trust.add_revocation_list(signed)
            trust.verify_cert(SCENE.bob.cert, at=NOW)
    except errors.CaselineError:
        pass


if __name__ == "__main__":
    main(test_one_input)
