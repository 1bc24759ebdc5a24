"""Generate caseline's own known-answer vectors from fixed seeds.

Run ``make vectors`` (``python -m tests.vectors.generate``) after a deliberate
protocol change, and commit the result together with the PROTOCOL.md change.
``tests/test_vectors_own.py`` checks that the code still produces every
deterministic value, and still verifies the ``verify_only`` and the three voiding cases
(``voided``: an update; ``voided_member`` and ``voided_commit``: commits, §5.3).

Those two cases hold commits whose epoch secrets are HPKE-sealed (X-Wing), and
pyca's HPKE draws its encapsulation randomness inside the library with no way
to pass it in; caseline will not carry its own HPKE to make it seedable.  So the
generator keeps the committed cases as long as the current code still verifies
and opens them, stops when it no longer does, and writes fresh ones only with
``--fresh``: with no protocol change, ``make vectors`` leaves the tree clean.

Provenance: produced by this project's own code; the deterministic values rest
on RFC 8032 (Ed25519), RFC 5869 (HKDF-SHA256), SHA-256, XChaCha20-Poly1305 and
canonical msgpack, each of which is checked against public vectors in
``tests/test_vectors_public.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caseline.crypto import attachments as att
from caseline.crypto import merkle, tlog
from caseline.crypto import note as signed_note
from caseline.crypto import primitives as P
from caseline.crypto.caselog import KIND_COMMIT, Applied, CaseView, chain_heads, sign_receipt
from caseline.crypto.certs import (
    TrustStore,
    issue_device_cert,
    issue_revocation_list,
    issue_witness_list,
    make_enrolment_request,
)
from caseline.crypto.commits import (
    APPROVAL_LABEL,
    EACH_AGENCY_OWNER,
    VOID_ADDED,
    VOID_REVOKED,
    sign_approval,
    verify_approval,
)
from caseline.crypto.evidence import export_evidence, verify_evidence
from caseline.crypto.keys import AgencyRootKey, DeviceKeys, SigningKey, device_id_for
from caseline.crypto.ratchet import Chain, epoch_authenticator
from caseline.crypto.updates import seal_update
from caseline.schemas.codec import pack
from caseline.schemas.wire import (
    Approval,
    Commit,
    EntryLeaf,
    Envelope,
    LogPosition,
    Policy,
    Revocation,
    Term,
    UpdateRecord,
    Witness,
    Witnessing,
    encode_signed,
)

from tests.support.world import T0, YEAR, Broker, Device, World, commit_change, note, open_case, post

#: Protocol 4's vectors (``make vectors`` rewrites this file).  ``caseline_v1.json`` to
#: ``caseline_v3.json`` are frozen as protocols 1 to 3 wrote them: histories recorded
#: then must still verify.
PATH = Path(__file__).with_name("caseline_v4.json")
V3_PATH = Path(__file__).with_name("caseline_v3.json")
V2_PATH = Path(__file__).with_name("caseline_v2.json")
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


def membership_objects() -> dict[str, Any]:
    """PROTOCOL.md §5.5: a signed Approval and a version-3 Commit body, from fixed seeds."""
    owner = DeviceKeys(sign_seed=seed("juma sign"), kem_seed=seed("juma kem"))
    case_id = seed("case")[:16]
    approval = Approval(
        case_id=case_id,
        prev_commit=seed("previous commit"),
        device_id=seed("akello device")[:16],
        cert_hash=seed("akello cert"),
        role="member",
        expires=T0 + YEAR,
        approver=owner.device_id,
    )
    tbs = approval.encode()
    signed = encode_signed(tbs, owner.sign(APPROVAL_LABEL, tbs))
    commit = Commit(
        case_id=case_id,
        epoch=1,
        prev_commit=seed("previous commit"),
        committer=owner.device_id,
        time=T0,
        policy=Policy(
            retention_days=365, handling="H2", tlp="AMBER", history="shared", receipt_key=bytes(32)
        ),
        roster=(),
        certs=(),
        log=LogPosition(count=1, head=seed("head 1")),
        wraps_hash=bytes(32),
        sealed_info=b"",
        witnessing=Witnessing(rule="none", alarm_after=60_000),
        terms=(Term(device_id=approval.device_id, expires=T0 + YEAR),),
        admission=EACH_AGENCY_OWNER,
        approvals=(signed,),
    )
    return {
        "approver_sign_seed": seed("juma sign").hex(),
        "approval_tbs": tbs.hex(),
        "approval_signed": signed.hex(),
        "commit_v3_tbs": commit.encode().hex(),
    }


def sample_file(size: int) -> bytes:
    """A file anyone can rebuild: byte i is i mod 251."""
    return bytes(i % 251 for i in range(size))


def attachments() -> dict[str, Any]:
    """PROTOCOL.md §6.6: padding, the STREAM chunks, the blob address, and the v3 record form."""
    key = seed("attachment key")
    small, small_blob = att.seal_bytes(b"hello world", name="note.txt", media_type="text/plain", key=key)
    big_data = sample_file(70000)
    big, big_blob = att.seal_bytes(big_data, name="photo 1.jpg", media_type="image/jpeg", key=key)
    record = UpdateRecord(
        case_id=bytes(range(16)),
        epoch=1,
        sender=bytes(range(16, 32)),
        counter=0,
        prev_own=b"",
        seen=(),
        log=LogPosition(count=2, head=bytes(32)),
        commit_hash=bytes(range(32)),
        content_type="seizure",
        content=b'{"summary":"x"}',
        time=T0,
        witnessed=None,
        attachments=(small, big),
    )
    envelope = Envelope(
        case_id=record.case_id,
        epoch=1,
        sender=record.sender,
        counter=0,
        nonce=bytes(24),
        ciphertext=b"sealed record goes here",
        blobs=(small.address, big.address),
    )
    return {
        "sizes": {
            str(n): [att.padded_size(n), att.ciphertext_size(n)]
            for n in (0, 1, 4096, 4097, 65535, 65536, 65537, 70000, 1048577, 2**32 + 1)
        },
        "key": key.hex(),
        "small": {
            "plaintext": b"hello world".hex(),
            "ref": pack(small.to_fields()).hex(),
            "blob": small_blob.hex(),
        },
        "big": {
            "plaintext": "sample_file(70000): byte i is i mod 251",
            "ref_sha256": big.sha256.hex(),
            "address": big.address.hex(),
            "blob_size": len(big_blob),
            "blob_sha256": hashlib.sha256(big_blob).hexdigest(),
            "first_chunk_tag": big_blob[65536 : 65536 + 16].hex(),
            "last_chunk_tag": big_blob[-16:].hex(),
        },
        "record_v3": record.encode().hex(),
        "envelope_v2": envelope.encode().hex(),
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


def voided_member() -> dict[str, Any]:
    """PROTOCOL.md §5.3: a commit carrying a device revoked before its time is valid and voids it.

    Alice (owner) adds Carol at T + 60 s, carrying Bob; Bob's agency later revokes
    him from T + 59 s.  With the list, epoch 1 voids Bob (``revoked``) and the case
    goes on (Alice posts at entry 2); without it, nothing is voided.  Carol, who
    joined in epoch 1, replays the log from genesis.
    """
    w, alice, bob, broker = _two_agency_case("vectors-voided-member")
    carol = w.device("ke-kra", "carol")
    w.now += 60_000
    alice_view = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(alice_view)
    broker.append(
        KIND_COMMIT,
        commit_change(w, alice_view, alice, [(alice, "owner"), (bob, "member"), (carol, "member")]),
    )
    broker.feed(alice_view)
    post(w, alice_view, broker, note("Carol joins the Namanga team"))
    crl = w.revoke(bob, at=w.now - 1_000)
    return {
        "roots": {a: r.public_key.hex() for a, r in w.roots.items()},
        "now": w.now,
        "entries": [[kind, body.hex()] for kind, body in broker.entries],
        "receipts": [r.hex() for r in broker.receipts],
        "reader": "carol",
        "kem_seeds": {"carol": carol.keys.kem_seed.hex()},
        "sign_seeds": {"carol": carol.keys.signing.seed.hex()},
        "revocation_list": crl.hex(),
        "voided": {"1": {bob.id.hex(): VOID_REVOKED}},
        "tainted_epochs": [],
        "opened_seqs": [2],
        "head": broker.head.hex(),
    }


def voided_commit() -> dict[str, Any]:
    """PROTOCOL.md §5.3: a commit by a device revoked at its time keeps its place and grants nothing.

    Bob (owner) adds his second device as owner and raises Carol to owner at
    T + 60 s; his agency later revokes him from T + 59 s.  With the list, epoch 1
    is tainted, Bob is voided (``revoked``), his second device too
    (``added-by-voided-commit``) and Carol stays a ``member``; Alice's re-key at
    entry 2 ends the taint (she posts at entry 3).  Without it, nothing is voided or tainted.
    """
    w = World("vectors-voided-commit")
    w.agency("ke-kra")
    w.agency("tz-tra")
    alice, bob, carol = w.device("ke-kra", "alice"), w.device("tz-tra", "bob"), w.device("ke-kra", "carol")
    second = w.device("tz-tra", "bob")
    broker, _, _ = open_case(w, alice, [(bob, "owner"), (carol, "member")])
    w.now += 60_000
    bob_view = CaseView(trust=w.trust(), me=bob.keys)
    broker.feed(bob_view)
    roster = [(alice, "owner"), (bob, "owner"), (carol, "owner"), (second, "owner")]
    broker.append(KIND_COMMIT, commit_change(w, bob_view, bob, roster))
    crl = w.revoke(bob, at=w.now - 1_000)
    w.now += 60_000
    alice_view = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(alice_view)
    broker.append(KIND_COMMIT, commit_change(w, alice_view, alice, [(alice, "owner"), (carol, "member")]))
    broker.feed(alice_view)
    post(w, alice_view, broker, note("Re-keyed after the theft of Bob's phone"))
    return {
        "roots": {a: r.public_key.hex() for a, r in w.roots.items()},
        "now": w.now,
        "entries": [[kind, body.hex()] for kind, body in broker.entries],
        "receipts": [r.hex() for r in broker.receipts],
        "reader": "carol",
        "kem_seeds": {"carol": carol.keys.kem_seed.hex()},
        "sign_seeds": {"carol": carol.keys.signing.seed.hex()},
        "revocation_list": crl.hex(),
        "voided": {"1": {bob.id.hex(): VOID_REVOKED, second.id.hex(): VOID_ADDED}},
        "tainted_epochs": [1],
        "roles_epoch_1": {"carol": "member"},
        "opened_seqs": [3],
        "head": broker.head.hex(),
    }


def membership() -> dict[str, Any]:
    """PROTOCOL.md §5.5: a case requiring approval admits a third agency's device with a term.

    KRA's alice opens it with TRA's juma as owner (juma's term: half a year);
    juma approves URA's akello against genesis; alice's commit adds akello
    for a day, carrying juma's term and the approval.
    """
    w = World("vectors membership")
    for agency in ("ke-kra", "tz-tra", "ug-ura"):
        w.agency(agency)
    alice, juma, akello = (
        w.device("ke-kra", "alice"),
        w.device("tz-tra", "juma"),
        w.device("ug-ura", "akello"),
    )
    terms = {juma.id: w.now + YEAR // 2}
    broker, _, _ = open_case(w, alice, [(juma, "owner")], admission=EACH_AGENCY_OWNER, terms=terms)
    view = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(view)
    assert view.state is not None
    approval = sign_approval(
        juma.keys, view.state, device=w.verified(akello), role="member", expires=w.now + 86_400_000
    )
    terms[akello.id] = w.now + 86_400_000
    roster = [(alice, "owner"), (juma, "owner"), (akello, "member")]
    broker.append(KIND_COMMIT, commit_change(w, view, alice, roster, terms=terms, approvals=[approval]))
    return {
        "roots": {a: r.public_key.hex() for a, r in w.roots.items()},
        "now": w.now,
        "entries": [[kind, body.hex()] for kind, body in broker.entries],
        "receipts": [r.hex() for r in broker.receipts],
        "kem_seeds": {"alice": alice.keys.kem_seed.hex()},
        "sign_seeds": {"alice": alice.keys.signing.seed.hex()},
        "admission": EACH_AGENCY_OWNER,
        "terms_epoch_1": {d.hex(): t for d, t in terms.items()},
        "approval": approval.hex(),
        "approved_device": akello.id.hex(),
        "head": broker.head.hex(),
    }


def check_membership(v: dict[str, Any]) -> None:
    """The case verifies, with the stated rule, terms and approval; raise otherwise."""
    view, _ = replay(v, "alice", TrustStore({a: bytes.fromhex(k) for a, k in v["roots"].items()}))
    state = view.states[1]
    if state.admission != v["admission"]:
        raise AssertionError("another admission rule")
    if {t.device_id.hex(): t.expires for t in state.commit.terms or ()} != v["terms_epoch_1"]:
        raise AssertionError("other terms")
    if [a.hex() for a in state.commit.approvals or ()] != [v["approval"]]:
        raise AssertionError("another approval")
    if verify_approval(bytes.fromhex(v["approval"]), view.states[0]).device_id.hex() != v["approved_device"]:
        raise AssertionError("the approval is for another device")
    if view.head.hex() != v["head"]:
        raise AssertionError("the chain head differs")


def check_voided_commits(v: dict[str, Any], *, revocations: bool = True) -> None:
    """With the list, exactly the stated devices and epochs are voided and tainted; raise otherwise."""
    trust = TrustStore({a: bytes.fromhex(k) for a, k in v["roots"].items()})
    if revocations:
        trust.add_revocation_list(bytes.fromhex(v["revocation_list"]))
    view, applied = replay(v, v["reader"], trust)
    voided = {
        str(s.epoch): {d.hex(): why for d, why in s.voided.items()} for s in view.states.values() if s.voided
    }
    tainted = [s.epoch for s in view.states.values() if s.tainted]
    if (voided, tainted) != ((v["voided"], v["tainted_epochs"]) if revocations else ({}, [])):
        raise AssertionError(f"voided {voided}, tainted {tainted}")
    if revocations:
        for user, role in v.get("roles_epoch_1", {}).items():
            if [
                m.role
                for d, m in view.states[1].members.items()
                if view.states[1].certs[d].cert.user_id == user
            ] != [role]:
                raise AssertionError(f"{user} is not {role} in epoch 1")
    if [a.seq for a in applied if a.opened is not None] != v["opened_seqs"]:
        raise AssertionError("another update opened")
    if view.head.hex() != v["head"]:  # voided or not, the chain is the same
        raise AssertionError("the chain head differs")


def _secret(view: CaseView) -> bytes:
    secret = view._epoch_secret
    assert secret is not None
    return secret


def replay(v: dict[str, Any], user: str, trust: TrustStore) -> tuple[CaseView, list[Applied]]:
    """Feed a stored case log, entry by entry, to ``user``'s view."""
    me = DeviceKeys(
        sign_seed=bytes.fromhex(v["sign_seeds"][user]), kem_seed=bytes.fromhex(v["kem_seeds"][user])
    )
    view = CaseView(trust=trust, me=me)
    applied = [
        view.apply(seq=i, kind=kind, body=bytes.fromhex(body), now=v["now"], receipt=bytes.fromhex(r))
        for i, ((kind, body), r) in enumerate(zip(v["entries"], v["receipts"], strict=True))
    ]
    return view, applied


def check_verify_only(v: dict[str, Any]) -> None:
    """Bob opens Alice's update and the evidence bundle verifies; raise otherwise."""
    view, applied = replay(v, "bob", TrustStore({a: bytes.fromhex(k) for a, k in v["roots"].items()}))
    opened = applied[1].opened
    if opened is None or opened.update_id.hex() != v["update_id_1"]:
        raise AssertionError("the stored update does not open to its update id")
    if view.message_key(1).hex() != v["message_key_1"]:
        raise AssertionError("the stored update's message key differs")
    report = verify_evidence(bytes.fromhex(v["evidence_bundle"]), pinned=v["fingerprints"])
    if report.records[0].update.update_id.hex() != v["update_id_1"]:
        raise AssertionError("the evidence bundle holds another update")


def check_voided(v: dict[str, Any], *, revocations: bool = True) -> None:
    """With the revocation list the late update is voided, without it both open; raise otherwise."""
    trust = TrustStore({a: bytes.fromhex(k) for a, k in v["roots"].items()})
    if revocations:
        trust.add_revocation_list(bytes.fromhex(v["revocation_list"]))
    view, applied = replay(v, "alice", trust)
    voided = [a.seq for a in applied if a.voided_by is not None]
    opened = [a.seq for a in applied if a.opened is not None]
    if voided != (v["voided_seqs"] if revocations else []):
        raise AssertionError(f"voided {voided}")
    if opened != (v["opened_seqs"] if revocations else v["opened_seqs"] + v["voided_seqs"]):
        raise AssertionError(f"opened {opened}")
    if any(a.voided_by != bytes.fromhex(v["bob_device_id"]) for a in applied if a.voided_by):
        raise AssertionError("voided by another device")
    if view.head.hex() != v["head"]:  # voided or not, the chain is the same
        raise AssertionError("the chain head differs")


def _kept(
    previous: dict[str, Any], name: str, check: Callable[[dict[str, Any]], None], make: Callable[[], Any]
) -> Any:
    """The committed case ``name`` while the code still verifies it; a fresh one only when asked.

    A committed case that no longer verifies stops the run: either the code
    broke compatibility by accident (fix the code) or on purpose (rerun with
    ``--fresh``, change PROTOCOL.md and the version).  Regenerating it quietly
    would let an accident rewrite the vectors that should have caught it.
    """
    if name in previous:
        try:
            check(previous[name])
        except Exception as exc:
            raise SystemExit(
                f"{name}: the committed case no longer verifies ({exc!r}); if the protocol changed on"
                " purpose, rerun with --fresh"
            ) from exc
        return previous[name]
    return make()


def build(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The vector file's content; ``previous`` supplies the HPKE-bearing cases worth keeping."""
    previous = previous or {}
    return {
        "about": "caseline protocol 4 known-answer vectors; see PROTOCOL.md and tests/vectors/generate.py",
        "deterministic": {
            **deterministic(),
            "broker_log": broker_log(),
            "attachments": attachments(),
            "membership": membership_objects(),
        },
        "verify_only": _kept(previous, "verify_only", check_verify_only, verify_only),
        "voided": _kept(previous, "voided", check_voided, voided),
        "voided_member": _kept(previous, "voided_member", check_voided_commits, voided_member),
        "voided_commit": _kept(previous, "voided_commit", check_voided_commits, voided_commit),
        "membership": _kept(previous, "membership", check_membership, membership),
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None, *, path: Path = PATH, keep_from: Path = PATH) -> None:
    """Write the vectors to ``path``, keeping ``keep_from``'s cases unless ``--fresh`` is given."""
    fresh = "--fresh" in (sys.argv[1:] if argv is None else argv)
    previous = {} if fresh or not keep_from.exists() else json.loads(keep_from.read_text())
    path.write_text(render(build(previous)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
