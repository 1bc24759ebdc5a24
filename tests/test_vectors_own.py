"""Our own known-answer vectors: the code must still produce and accept them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from caseline.crypto.caselog import Applied, CaseView
from caseline.crypto.certs import TrustStore
from caseline.crypto.evidence import verify_evidence
from caseline.crypto.keys import DeviceKeys

from tests.vectors.generate import PATH, deterministic


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    return json.loads(PATH.read_text())


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
    assert deterministic() == vectors["deterministic"]


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
