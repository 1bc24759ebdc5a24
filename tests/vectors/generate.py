"""Generate caseline's own known-answer vectors from fixed seeds.

Run ``make vectors`` (``python -m tests.vectors.generate``) after a deliberate
protocol change, and commit the result together with the PROTOCOL.md change.
``tests/test_vectors_own.py`` checks that the code still produces every
deterministic value, and still verifies the ``verify_only`` objects (whose HPKE
wraps use fresh randomness inside the library and cannot be regenerated).

Provenance: produced by this project's own code; the deterministic values rest
on RFC 8032 (Ed25519), RFC 5869 (HKDF-SHA256), SHA-256, XChaCha20-Poly1305 and
canonical msgpack, each of which is checked against public vectors in
``tests/test_vectors_public.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caseline.crypto import merkle, tlog
from caseline.crypto import note as signed_note
from caseline.crypto import primitives as P
from caseline.crypto.caselog import KIND_COMMIT, CaseView, chain_heads, sign_receipt
from caseline.crypto.certs import (
    issue_device_cert,
    issue_revocation_list,
    issue_witness_list,
    make_enrolment_request,
)
from caseline.crypto.evidence import export_evidence
from caseline.crypto.keys import AgencyRootKey, DeviceKeys, SigningKey, device_id_for
from caseline.crypto.ratchet import Chain, epoch_authenticator
from caseline.crypto.updates import seal_update
from caseline.schemas.wire import EntryLeaf, LogPosition, Revocation, Witness

from tests.support.world import T0, YEAR, Broker, Device, World, note, open_case, post

#: Protocol 2's vectors (``make vectors`` rewrites this file).  ``caseline_v1.json`` is
#: frozen as protocol 1 wrote it: histories recorded then must still verify.
PATH = Path(__file__).with_name("caseline_v2.json")
V1_PATH = Path(__file__).with_name("caseline_v1.json")


def seed(name: str) -> bytes:
    """A fixed 32-byte seed named for its use, so vectors read like a story."""
    return P.hash_labeled("test-vector-seed", name.encode())


def deterministic() -> dict[str, Any]:
    """Every value here is a pure function of the fixed seeds."""
    root = AgencyRootKey("ke-kra", seed("root ke-kra"))
    device = DeviceKeys(sign_seed=seed("alice sign"), kem_seed=seed("alice kem"))
    cert = issue_device_cert(
        root,
        user_id="alice.wanjiru",
        role="officer",
        sign_key=device.sign_public,
        kem_key=device.kem_public,
        not_before=T0,
        not_after=T0 + YEAR,
        serial=42,
    )
    crl = issue_revocation_list(
        root,
        number=3,
        issued_at=T0 + 1000,
        entries=[
            Revocation(device_id=device.device_id, serial=42, revoked_at=T0 + 500, reason="device-lost")
        ],
    )
    case_id = seed("case")[:16]
    epoch_secret = seed("epoch secret")
    chain = Chain.start(epoch_secret=epoch_secret, case_id=case_id, epoch=3, device_id=device.device_id)
    chain_key_0 = chain.chain_key
    mks = [chain.take(i) for i in range(3)]
    server = SigningKey(seed("broker receipt key"))
    entry_hashes = [P.hash_labeled("entry", bytes([i])) for i in range(3)]
    heads = chain_heads(case_id, entry_hashes)
    receipt = sign_receipt(server, case_id=case_id, seq=2, entry_hash=entry_hashes[2], head=heads[3], time=T0)
    return {
        "labels": {
            "sign device-cert": P.label("sign device-cert").hex(),
            "hash commit": P.label("hash commit").hex(),
        },
        "hash_labeled('commit', b'abc')": P.hash_labeled("commit", b"abc").hex(),
        "agency_root": {
            "agency_id": "ke-kra",
            "seed": seed("root ke-kra").hex(),
            "public_key": root.public_key.hex(),
            "fingerprint": root.fingerprint,
        },
        "device": {
            "sign_seed": seed("alice sign").hex(),
            "kem_seed": seed("alice kem").hex(),
            "sign_public": device.sign_public.hex(),
            "kem_public_sha256": P.hash_labeled("kem-key", device.kem_public).hex(),
            "device_id": device_id_for(device.sign_public).hex(),
        },
        "device_cert": cert.hex(),
        "enrolment_request": make_enrolment_request(
            device, agency_id="ke-kra", user_id="alice.wanjiru", now=T0
        ).hex(),
        "revocation_list": crl.hex(),
        "key_schedule": {
            "case_id": case_id.hex(),
            "epoch": 3,
            "epoch_secret": epoch_secret.hex(),
            "sender": device.device_id.hex(),
            "chain_key_0": chain_key_0.hex(),
            "message_keys": [k.hex() for k in mks],
            "epoch_authenticator": epoch_authenticator(
                epoch_secret=epoch_secret, case_id=case_id, epoch=3, commit_hash=bytes(32)
            ),
        },
        "log": {
            "case_id": case_id.hex(),
            "entry_hashes": [h.hex() for h in entry_hashes],
            "heads": [h.hex() for h in heads],
            "receipt_key": server.public_key.hex(),
            "receipt": receipt.hex(),
        },
    }


def broker_log() -> dict[str, Any]:
    """PROTOCOL.md §4.7, §7.2, §7.5–7.7: leaves, tree, checkpoint, log receipt, witness list, cosignature."""
    server = SigningKey(seed("broker"))
    root = AgencyRootKey("ke-kra", seed("root ke-kra"))
    witness = SigningKey(seed("witness ke-kra"))
    case_id = seed("case")[:16]
    leaves = [
        EntryLeaf(case_id=case_id, seq=i, entry_hash=seed(f"entry {i}"), head=seed(f"head {i}"), time=T0 + i)
        for i in range(5)
    ]
    tree = merkle.Tree()
    for leaf in leaves:
        tree.append(merkle.leaf_hash(leaf.encode()))
    checkpoint = tlog.sign_checkpoint(server, size=5, root=tree.root(5))
    parsed = signed_note.Note.parse(checkpoint)
    witness_name = "witness.ke-kra.example"
    cosigned = signed_note.cosign(
        parsed.text, name=witness_name, secret_key=witness._secret, timestamp=T0 // 1000
    )
    listed = Witness(name=witness_name, public_key=witness.public_key, url="https://witness.kra.example")
    return {
        "receipt_key": server.public_key.hex(),
        "origin": tlog.log_origin(server.public_key),
        "leaves": [leaf.encode().hex() for leaf in leaves],
        "leaf_hashes": [merkle.leaf_hash(leaf.encode()).hex() for leaf in leaves],
        "roots": [tree.root(n).hex() for n in range(6)],
        "inclusion_3_in_5": [h.hex() for h in tree.inclusion_proof(3, 5)],
        "consistency_2_to_5": [h.hex() for h in tree.consistency_proof(2, 5)],
        "checkpoint": checkpoint.decode(),
        "log_receipt_3": tlog.make_receipt(
            leaves[3], index=3, checkpoint=checkpoint, proof=tree.inclusion_proof(3, 5)
        ).hex(),
        "witness_seed": seed("witness ke-kra").hex(),
        "witness_vkey": signed_note.vkey(witness_name, signed_note.ALG_COSIGNATURE_V1, witness.public_key),
        "cosignature_line": cosigned.line().decode(),
        "witness_list": issue_witness_list(root, number=1, issued_at=T0, witnesses=[listed]).hex(),
    }


def _two_agency_case(name: str) -> tuple[World, Device, Device, Broker]:
    """Alice (ke-kra, owner) opens a case with Bob (tz-tra)."""
    w = World(name)
    w.agency("ke-kra")
    w.agency("tz-tra")
    alice, bob = w.device("ke-kra", "alice"), w.device("tz-tra", "bob")
    broker, _, _ = open_case(w, alice, [(bob, "member")])
    return w, alice, bob, broker


def verify_only() -> dict[str, Any]:
    """A small real case (genesis, updates, a member change) and its evidence bundle."""
    w, alice, bob, broker = _two_agency_case("vectors")
    view = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(view)
    mk = Chain.start(epoch_secret=_secret(view), case_id=broker.case_id, epoch=0, device_id=alice.id).peek(0)
    sealed = seal_update(
        keys=alice.keys,
        state=view.state,  # type: ignore[arg-type]
        counter=0,
        message_key=mk,
        prev_own=b"",
        seen=(),
        log=LogPosition(count=1, head=view.head),
        content_type="note",
        content=note("Seizure of 40 kg of khat at Namanga OSBP"),
        now=w.now,
        nonce=seed("nonce")[:24],
    )
    broker.append("update", sealed.envelope)
    broker.feed(view)
    bundle = export_evidence(
        view,
        exporter=alice.keys,
        envelopes={1: sealed.envelope},
        receipt=broker.receipts[-1],
        now=w.now,
    )
    return {
        "roots": {a: r.public_key.hex() for a, r in w.roots.items()},
        "fingerprints": {a: r.fingerprint for a, r in w.roots.items()},
        "now": w.now,
        "entries": [[kind, body.hex()] for kind, body in broker.entries],
        "receipts": [r.hex() for r in broker.receipts],
        "kem_seeds": {"alice": alice.keys.kem_seed.hex(), "bob": bob.keys.kem_seed.hex()},
        "sign_seeds": {"alice": alice.keys.signing.seed.hex(), "bob": bob.keys.signing.seed.hex()},
        "message_key_1": mk.hex(),
        "update_id_1": sealed.update_id.hex(),
        "evidence_bundle": bundle.hex(),
        "first_kind": KIND_COMMIT,
    }


def voided() -> dict[str, Any]:
    """PROTOCOL.md §6.4: an update sent after its device's revocation is voided, not refused.

    Bob posts at T; his agency revokes him from T + 59 s; his stolen key posts at
    T + 60 s.  With the list applied, entry 2 must be voided (kept in the chain,
    content withheld) and entry 1 must still open; without it, both open.
    """
    w, alice, bob, broker = _two_agency_case("vectors-voided")
    bob_view = CaseView(trust=w.trust(), me=bob.keys)
    broker.feed(bob_view)
    post(w, bob_view, broker, note("Convoy left Malaba at 06:00"))
    broker.feed(bob_view)
    w.now += 60_000
    crl = w.revoke(bob, at=w.now - 1_000)
    post(w, bob_view, broker, note("Convoy cancelled, stand down"))
    return {
        "roots": {a: r.public_key.hex() for a, r in w.roots.items()},
        "now": w.now,
        "entries": [[kind, body.hex()] for kind, body in broker.entries],
        "receipts": [r.hex() for r in broker.receipts],
        "kem_seeds": {"alice": alice.keys.kem_seed.hex()},
        "sign_seeds": {"alice": alice.keys.signing.seed.hex()},
        "revocation_list": crl.hex(),
        "bob_device_id": bob.id.hex(),
        "opened_seqs": [1],
        "voided_seqs": [2],
        "head": broker.head.hex(),
    }


def _secret(view: CaseView) -> bytes:
    secret = view._epoch_secret
    assert secret is not None
    return secret


def main() -> None:
    data = {
        "about": "caseline protocol 2 known-answer vectors; see PROTOCOL.md and tests/vectors/generate.py",
        "deterministic": {**deterministic(), "broker_log": broker_log()},
        "verify_only": verify_only(),
        "voided": voided(),
    }
    PATH.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
