"""Our own known-answer vectors: the code must still produce and accept them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from caseline.crypto import merkle, note, tlog

from tests.vectors.generate import (
    PATH,
    V1_PATH,
    V2_PATH,
    V3_PATH,
    attachments,
    broker_log,
    check_membership,
    check_verify_only,
    check_voided,
    check_voided_commits,
    deterministic,
    main,
    membership_objects,
)


@pytest.fixture(
    scope="module",
    params=[PATH, V3_PATH, V2_PATH, V1_PATH],
    ids=["protocol-4", "protocol-3-frozen", "protocol-2-frozen", "protocol-1-frozen"],
)
def vectors(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Protocol 4's vectors, and protocols 1's to 3's as they wrote them: old histories must
    still verify."""
    return json.loads(request.param.read_text())


def test_deterministic_values_are_reproduced(vectors: dict[str, Any]) -> None:
    produced = {
        **deterministic(),
        "broker_log": broker_log(),
        "attachments": attachments(),
        "membership": membership_objects(),
    }
    assert {k: produced[k] for k in vectors["deterministic"]} == vectors["deterministic"]


def test_stored_case_still_verifies_and_opens(vectors: dict[str, Any]) -> None:
    check_verify_only(vectors["verify_only"])


@pytest.mark.parametrize("revocations", [False, True])
def test_an_update_sent_after_its_senders_revocation_is_voided(
    vectors: dict[str, Any], revocations: bool
) -> None:
    check_voided(vectors["voided"], revocations=revocations)


@pytest.mark.parametrize("revocations", [False, True])
@pytest.mark.parametrize("case", ["voided_member", "voided_commit"])
def test_a_commit_across_a_backdated_revocation_voids_and_the_case_goes_on(
    vectors: dict[str, Any], case: str, revocations: bool
) -> None:
    if case not in vectors:
        pytest.skip("protocols 1 and 2 wrote no voided commits: their verifiers refused them")
    check_voided_commits(vectors[case], revocations=revocations)


def test_membership_terms_and_approval_verify(vectors: dict[str, Any]) -> None:
    """PROTOCOL.md §5.5: a third agency admitted with an approval, members with terms."""
    if "membership" not in vectors:
        pytest.skip("protocols 1 to 3 had no membership terms")
    check_membership(vectors["membership"])


def test_make_vectors_reproduces_the_committed_file(tmp_path: Path) -> None:
    """With no protocol change, regenerating leaves the committed file byte for byte (issue 13, item 17)."""
    committed = PATH.read_bytes()
    for name in ("first.json", "second.json"):
        out = tmp_path / name
        main([], path=out, keep_from=PATH)
        assert out.read_bytes() == committed


def test_a_case_that_no_longer_verifies_stops_the_run_unless_fresh(tmp_path: Path) -> None:
    """An accidental break must not regenerate away the vectors that caught it; --fresh is deliberate."""
    stale = json.loads(PATH.read_text())
    stale["verify_only"]["update_id_1"] = "00" * 32
    source = tmp_path / "stale.json"
    source.write_text(json.dumps(stale))
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit, match="rerun with --fresh"):
        main([], path=out, keep_from=source)
    assert not out.exists()
    main(["--fresh"], path=out, keep_from=source)
    written = json.loads(out.read_text())
    check_verify_only(written["verify_only"])
    check_voided(written["voided"])
    check_voided_commits(written["voided_commit"])
    assert written["verify_only"]["update_id_1"] != "00" * 32


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
