"""Our own known-answer vectors: the code must still produce and accept them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from caseline.crypto import merkle, note, tlog
from caseline.crypto.caselog import Applied, CaseView
from caseline.crypto.certs import TrustStore
from caseline.crypto.evidence import verify_evidence
from caseline.crypto.keys import DeviceKeys

from tests.vectors.generate import PATH, V1_PATH, broker_log, deterministic


@pytest.fixture(scope="module", params=[PATH, V1_PATH], ids=["protocol-2", "protocol-1-frozen"])
def vectors(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Protocol 2's vectors, and protocol 1's as it wrote them: old histories must still verify."""
    return json.loads(request.param.read_text())


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


def test_deterministic_values_are_reproduced(vectors: dict[str, Any]) -> None:
    produced = {**deterministic(), "broker_log": broker_log()}
    assert {k: produced[k] for k in vectors["deterministic"]} == vectors["deterministic"]


def test_stored_case_still_verifies_and_opens(vectors: dict[str, Any]) -> None:
    v = vectors["verify_only"]
    view, applied = replay(v, "bob", TrustStore({a: bytes.fromhex(k) for a, k in v["roots"].items()}))
    opened = applied[1].opened
    assert opened is not None
    assert opened.update_id.hex() == v["update_id_1"]
    assert view.message_key(1).hex() == v["message_key_1"]
    report = verify_evidence(bytes.fromhex(v["evidence_bundle"]), pinned=v["fingerprints"])
    assert report.records[0].update.update_id.hex() == v["update_id_1"]


@pytest.mark.parametrize("revocations", [False, True])
def test_an_update_sent_after_its_senders_revocation_is_voided(
    vectors: dict[str, Any], revocations: bool
) -> None:
    v = vectors["voided"]
    trust = TrustStore({a: bytes.fromhex(k) for a, k in v["roots"].items()})
    if revocations:
        trust.add_revocation_list(bytes.fromhex(v["revocation_list"]))
    view, applied = replay(v, "alice", trust)
    voided = [a.seq for a in applied if a.voided_by is not None]
    opened = [a.seq for a in applied if a.opened is not None]
    assert voided == (v["voided_seqs"] if revocations else [])
    assert opened == (v["opened_seqs"] if revocations else v["opened_seqs"] + v["voided_seqs"])
    assert all(a.voided_by == bytes.fromhex(v["bob_device_id"]) for a in applied if a.voided_by)
    assert view.head.hex() == v["head"]  # voided or not, the chain is the same


def test_broker_log_vectors_verify_with_nothing_but_the_published_keys() -> None:
    """What a non-Python client checks, from the vector file alone (PROTOCOL.md §7.2, §7.5–7.6)."""
    v = json.loads(PATH.read_text())["deterministic"]["broker_log"]
    key = bytes.fromhex(v["receipt_key"])
    hashes = [bytes.fromhex(h) for h in v["leaf_hashes"]]
    assert [merkle.leaf_hash(bytes.fromhex(leaf)).hex() for leaf in v["leaves"]] == v["leaf_hashes"]
    roots = [bytes.fromhex(r) for r in v["roots"]]
    merkle.verify_inclusion(hashes[3], 3, 5, [bytes.fromhex(h) for h in v["inclusion_3_in_5"]], roots[5])
    merkle.verify_consistency(2, 5, roots[2], roots[5], [bytes.fromhex(h) for h in v["consistency_2_to_5"]])
    checkpoint, parsed = tlog.verify_checkpoint(v["checkpoint"].encode(), key)
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (v["origin"], 5, roots[5])
    receipt = tlog.verify_log_receipt(bytes.fromhex(v["log_receipt_3"]), key)
    assert receipt.leaf.encode().hex() == v["leaves"][3]
    name, alg, witness_key = note.parse_vkey(v["witness_vkey"])
    line = note.NoteSignature.parse_line(v["cosignature_line"].rstrip("\n"))
    assert alg == note.ALG_COSIGNATURE_V1
    assert note.verify_cosignature(parsed.text, line, name=name, public_key=witness_key) > 0
