"""Evidence bundles of witnessed cases: the witnesses, not the broker alone, vouch for the history.

Everything runs in the pure world: the broker issues log receipts, and the
test plays each agency's witness by cosigning checkpoints with its key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from caseline.crypto import note, tlog
from caseline.crypto.caselog import CaseView, sign_receipt
from caseline.crypto.evidence import export_evidence, verify_evidence
from caseline.crypto.keys import fingerprint
from caseline.schemas.errors import (
    BadSignatureError,
    CaselineError,
    IntegrityError,
    MalformedError,
    NotMemberError,
    NotPermittedError,
)
from caseline.schemas.wire import (
    EvidenceBundle,
    LogReceipt,
    Witnessing,
    decode_signed,
    encode_signed,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.world import Broker, Device, World, commit_change, open_case, post
from tests.support.world import note as note_content
from tests.test_tlog import Witnesses

RULE = Witnessing(rule="each-agency", alarm_after=60_000)


def cosigned(ws: Witnesses, receipt: bytes, agencies: list[str], at: int) -> bytes:
    """The receipt with its checkpoint cosigned by one witness of each agency given (seconds)."""
    r = LogReceipt.decode(receipt)
    checkpoint = r.checkpoint
    for agency in agencies:
        checkpoint = ws.cosign(checkpoint, agency, at)
    return dataclasses.replace(r, checkpoint=checkpoint).encode()


def fields(signed: bytes) -> dict[str, Any]:
    tbs, _ = decode_signed(signed)
    bundle = EvidenceBundle.decode(tbs)
    return {f: getattr(bundle, f) for f in bundle.__dataclass_fields__}


def resign(values: dict[str, Any], device: Device) -> bytes:
    tbs = EvidenceBundle(**values).encode()
    return encode_signed(tbs, device.keys.sign("evidence", tbs))


class Scene:
    """A witnessed case between KRA and TRA: genesis, three updates, carol joins, one more."""

    def __init__(self, seed: str = "witnessed-evidence") -> None:
        self.world = w = World(seed)
        w.agency("ke-kra")
        w.agency("tz-tra")
        self.ws = Witnesses(w, ["ke-kra", "tz-tra"])
        self.alice = w.device("ke-kra", "alice")
        self.bob = w.device("tz-tra", "bob")
        self.carol = w.device("ke-kra", "carol")
        self.broker, _, _ = open_case(w, self.alice, [(self.bob, "member")], witnessing=RULE)
        self.va = CaseView(trust=self.ws.trust(), me=self.alice.keys)
        self.vb = CaseView(trust=self.ws.trust(), me=self.bob.keys)
        for text in ("seizure of 40 kg at Namanga", "reply from TRA", "third"):
            view = self.va if text != "reply from TRA" else self.vb
            self.broker.feed(view)
            post(w, view, self.broker, note_content(text))
        self.broker.feed(self.va)
        self.broker.append(
            "commit",
            commit_change(
                w,
                self.va,
                self.alice,
                [(self.alice, "owner"), (self.bob, "member"), (self.carol, "member")],
            ),
        )
        self.broker.feed(self.va)
        post(w, self.va, self.broker, note_content("after carol joined"))
        self.broker.feed(self.va)
        self.broker.feed(self.vb)
        self.pins = {a: fingerprint(a, r.public_key) for a, r in w.roots.items()}
        self.at = w.now // 1000

    def receipt(self, seq: int, agencies: tuple[str, ...] = ("ke-kra", "tz-tra")) -> bytes:
        return cosigned(self.ws, self.broker.receipts[seq], list(agencies), self.at)

    def bundle(self, seqs: list[int], *, upto: int | None = None, **kw: Any) -> bytes:
        count = self.va.count if upto is None else upto
        return export_evidence(
            self.va,
            exporter=self.alice.keys,
            envelopes={s: self.broker.entries[s][1] for s in seqs},
            receipt=kw.get("receipt") or self.receipt(count - 1),
            now=self.world.now,
            upto=upto,
        )


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


def test_a_witnessed_bundle_verifies_and_names_its_checkpoint_and_witnesses(scene: Scene) -> None:
    report = verify_evidence(scene.bundle([1, 2, 5]), pinned=scene.pins)
    assert [r.seq for r in report.records] == [1, 2, 5]
    assert report.witnessed and report.witnessed_at == scene.at * 1000
    assert report.checkpoint is not None
    assert report.checkpoint.origin == tlog.log_origin(scene.world.server_key.public_key)
    assert report.checkpoint.size == 6 and report.checkpoint.root == scene.broker.tree.root(6)
    assert [(v.agency_id, v.name, v.time) for v in report.witnesses] == [
        ("ke-kra", "witness.ke-kra.example", scene.at * 1000),
        ("tz-tra", "witness.tz-tra.example", scene.at * 1000),
    ]
    bundle = EvidenceBundle.decode(decode_signed(scene.bundle([1]))[0])
    assert bundle.version == 2 and bundle.receipt == b"" and len(bundle.witness_lists or ()) == 2


def test_a_bundle_may_end_at_the_last_final_entry(scene: Scene) -> None:
    """Entries after the last witnessed one are left out: the log, commits and certificates."""
    report = verify_evidence(scene.bundle([1, 2], upto=4), pinned=scene.pins)
    assert report.log_length == 4 and len(report.states) == 1 and report.checkpoint is not None
    assert report.checkpoint.size == 4
    values = fields(scene.bundle([1], upto=4))
    assert len(values["commits"]) == 1 and len(values["entry_hashes"]) == 4
    assert scene.carol.cert not in values["certs"]


def test_disclosing_past_the_bundles_end_is_refused(scene: Scene) -> None:
    with pytest.raises(NotPermittedError):
        scene.bundle([1, 5], upto=4)


def test_a_tampered_cosignature_fails(scene: Scene) -> None:
    values = fields(scene.bundle([1]))
    receipt = LogReceipt.decode(values["log_receipt"])
    parsed = note.Note.parse(receipt.checkpoint)
    last = parsed.signatures[-1]
    flipped = bytes([last.signature[0] ^ 1]) + last.signature[1:]
    tampered = note.Note(
        text=parsed.text, signatures=(*parsed.signatures[:-1], dataclasses.replace(last, signature=flipped))
    ).encode()
    values["log_receipt"] = dataclasses.replace(receipt, checkpoint=tampered).encode()
    with pytest.raises(BadSignatureError):
        verify_evidence(resign(values, scene.alice), pinned=scene.pins)


@pytest.mark.parametrize("present", [("ke-kra",), ("tz-tra",), ()])
def test_a_missing_agencys_cosignature_fails(scene: Scene, present: tuple[str, ...]) -> None:
    bundle = scene.bundle([1], receipt=scene.receipt(5, present) if present else scene.broker.receipts[5])
    with pytest.raises(IntegrityError, match="witness quorum"):
        verify_evidence(bundle, pinned=scene.pins)


def test_a_witness_list_dropped_from_the_bundle_fails(scene: Scene) -> None:
    values = fields(scene.bundle([1]))
    values["witness_lists"] = values["witness_lists"][:1]
    with pytest.raises(IntegrityError, match="witness quorum"):
        verify_evidence(resign(values, scene.alice), pinned=scene.pins)


def test_two_witness_lists_of_one_agency_are_refused(scene: Scene) -> None:
    values = fields(scene.bundle([1]))
    values["witness_lists"] = (*values["witness_lists"], values["witness_lists"][0])
    with pytest.raises(MalformedError):
        verify_evidence(resign(values, scene.alice), pinned=scene.pins)


def test_a_witnessed_case_cannot_be_downgraded_to_a_version_1_bundle(scene: Scene) -> None:
    values = fields(scene.bundle([1]))
    values.update(witness_lists=None, log_receipt=None, receipt=scene.broker.receipts[5])
    with pytest.raises(IntegrityError, match="witnessed checkpoint"):
        verify_evidence(resign(values, scene.alice), pinned=scene.pins)


def test_the_exporter_refuses_a_broker_only_receipt_in_a_witnessed_case(scene: Scene) -> None:
    v1 = sign_receipt(
        scene.world.server_key,
        case_id=scene.broker.case_id,
        seq=5,
        entry_hash=scene.va.entry_hashes[5],
        head=scene.va.heads[6],
        time=scene.world.now,
    )
    with pytest.raises(CaselineError, match="witnessed checkpoint"):
        scene.bundle([1], receipt=v1)


# --------------------------------------------------------------------------- the exporter's membership


def test_an_outsider_cannot_re_sign_a_genuine_bundle_as_its_exporter(scene: Scene) -> None:
    """Issue 12's finding: a device never in the case, with a valid certificate from a
    pinned agency, swaps itself in as exporter and signs; the verifier must refuse."""
    mallory = scene.world.device("ke-kra", "mallory")
    values = fields(scene.bundle([1, 2]))
    values["exporter"] = mallory.id
    values["certs"] = (*values["certs"], mallory.cert)
    forged = resign(values, mallory)
    scene.world.trust().verify_cert(mallory.cert, at=scene.world.now)  # its certificate is fine
    with pytest.raises(NotMemberError):
        verify_evidence(forged, pinned=scene.pins)


def test_a_device_removed_before_the_bundles_end_cannot_export_it() -> None:
    w = World("removed-exporter")
    w.agency("ke-kra")
    alice, bob = w.device("ke-kra", "alice"), w.device("ke-kra", "bob")
    broker, _, _ = open_case(w, alice, [(bob, "member")])
    va = CaseView(trust=w.trust(), me=alice.keys)
    vb = CaseView(trust=w.trust(), me=bob.keys)
    broker.feed(va)
    post(w, va, broker, note_content("before"))
    broker.feed(va)
    broker.append("commit", commit_change(w, va, alice, [(alice, "owner")]))
    broker.feed(va)
    broker.feed(vb)
    pins = {"ke-kra": fingerprint("ke-kra", w.roots["ke-kra"].public_key)}
    with pytest.raises(NotMemberError):  # our own exporter refuses
        export_evidence(vb, exporter=bob.keys, envelopes={}, receipt=broker.receipts[-1], now=w.now)
    bundle = export_evidence(va, exporter=alice.keys, envelopes={}, receipt=broker.receipts[-1], now=w.now)
    values = fields(bundle)
    values["exporter"] = bob.id
    with pytest.raises(NotMemberError):
        verify_evidence(resign(values, bob), pinned=pins)
    # up to before the removal, bob was a member and may export that much
    upto = export_evidence(vb, exporter=bob.keys, envelopes={}, receipt=broker.receipts[1], now=w.now, upto=2)
    assert verify_evidence(upto, pinned=pins).exporter.user_id == "bob"


# --------------------------------------------------------------------------- forks and old bundles


def test_bundles_from_two_branches_of_a_fork_name_different_checkpoints() -> None:
    """A broker forks the case after entry 1 and shows each member one branch.

    Even if both branches got cosigned (here: witnesses that were fooled or
    collude), each bundle prints its checkpoint, so the two can be told apart.
    """
    s = Scene("fork")
    fork = Broker(s.world, s.broker.case_id)
    for kind, body in s.broker.entries[:2]:
        fork.append(kind, body)
    ours = CaseView(trust=s.ws.trust(), me=s.alice.keys)
    s.broker.feed(ours, stop=2)
    theirs = CaseView(trust=s.ws.trust(), me=s.bob.keys)
    fork.feed(theirs)
    post(s.world, ours, s.broker, note_content("branch A"))
    post(s.world, theirs, fork, note_content("branch B"))
    reports = []
    for view, me, broker in ((ours, s.alice, s.broker), (theirs, s.bob, fork)):
        broker.feed(view, stop=3)
        signed = export_evidence(
            view,
            exporter=me.keys,
            envelopes={2: broker.entries[2][1]},
            receipt=cosigned(s.ws, broker.receipts[2], ["ke-kra", "tz-tra"], s.at),
            now=s.world.now,
            upto=3,
        )
        reports.append(verify_evidence(signed, pinned=s.pins))
    a, b = reports
    assert a.checkpoint is not None and b.checkpoint is not None
    assert a.checkpoint.origin == b.checkpoint.origin
    assert a.checkpoint.root != b.checkpoint.root
    assert a.head != b.head


def test_a_version_1_bundle_still_verifies_and_says_it_is_unwitnessed() -> None:
    w = World("v1-bundle")
    w.agency("ke-kra")
    w.agency("tz-tra")
    alice, bob = w.device("ke-kra", "alice"), w.device("tz-tra", "bob")
    broker, _, _ = open_case(w, alice, [(bob, "member")])
    va = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(va)
    post(w, va, broker, note_content("recorded before the upgrade"))
    broker.feed(va)
    v1_receipt = sign_receipt(
        w.server_key,
        case_id=broker.case_id,
        seq=1,
        entry_hash=va.entry_hashes[1],
        head=va.heads[2],
        time=w.now,
    )
    signed = export_evidence(
        va, exporter=alice.keys, envelopes={1: broker.entries[1][1]}, receipt=v1_receipt, now=w.now
    )
    bundle = EvidenceBundle.decode(decode_signed(signed)[0])
    assert bundle.version == 1 and bundle.log_receipt is None
    pins = {a: fingerprint(a, r.public_key) for a, r in w.roots.items()}
    report = verify_evidence(signed, pinned=pins)
    assert not report.witnessed and report.checkpoint is None and report.witnesses == ()
    assert [r.seq for r in report.records] == [1]


def test_an_unwitnessed_case_gets_a_version_2_bundle_with_the_brokers_checkpoint_only() -> None:
    w = World("v2-unwitnessed")
    w.agency("ke-kra")
    alice = w.device("ke-kra", "alice")
    broker, _, _ = open_case(w, alice, [])
    va = CaseView(trust=w.trust(), me=alice.keys)
    broker.feed(va)
    post(w, va, broker, note_content("one agency, no witnesses"))
    broker.feed(va)
    signed = export_evidence(
        va, exporter=alice.keys, envelopes={1: broker.entries[1][1]}, receipt=broker.receipts[1], now=w.now
    )
    report = verify_evidence(signed, pinned={"ke-kra": fingerprint("ke-kra", w.roots["ke-kra"].public_key)})
    assert not report.witnessed and report.witnessed_at is None
    assert report.checkpoint is not None and report.checkpoint.size == 2


def test_a_witness_list_of_an_unpinned_agency_is_ignored(scene: Scene) -> None:
    """A list signed by a root the verifier never pinned is skipped, not fatal."""
    stranger = World("stranger")
    stranger.agency("zz-other")
    values = fields(scene.bundle([1]))
    other = Witnesses(stranger, ["zz-other"])
    values["witness_lists"] = (*values["witness_lists"], other.lists["zz-other"])
    report = verify_evidence(resign(values, scene.alice), pinned=scene.pins)
    assert {v.agency_id for v in report.witnesses} == {"ke-kra", "tz-tra"}


# --------------------------------------------------------------------------- the command line


def test_evidence_verify_prints_the_checkpoint_and_its_witnesses(scene: Scene, tmp_path: Path) -> None:
    bundle = tmp_path / "case.evidence"
    bundle.write_bytes(scene.bundle([1, 2]))
    pins = [f"--pin={a}={fp}" for a, fp in scene.pins.items()]
    env = {**os.environ, "CASELINE_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "caseline.client.cli", *args, "evidence", "verify", str(bundle), *pins],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    root = scene.broker.tree.root(6).hex()
    text = run()
    assert text.returncode == 0, text.stderr
    assert "checkpoint of the broker's log at size 6, its origin and root:" in text.stdout
    assert f"  {root}" in text.stdout.splitlines()  # on a line of its own, whole, to compare
    assert (
        "witness.ke-kra.example (ke-kra)" in text.stdout and "witness.tz-tra.example (tz-tra)" in text.stdout
    )
    assert "UNWITNESSED" not in text.stdout
    shown = json.loads(run("--json").stdout)
    assert shown["witnessed"] is True and shown["checkpoint"]["root"] == root
    assert shown["checkpoint"]["origin"] == tlog.log_origin(scene.world.server_key.public_key)
    assert [w["agency"] for w in shown["witnesses"]] == ["ke-kra", "tz-tra"]
    assert shown["witnessed_at"]


def test_the_watch_counts_an_honest_witnessed_entry_as_final(scene: Scene) -> None:
    """Where finality receipts come from: a leaf binds the head *after* its entry."""
    receipt = LogReceipt.decode(scene.receipt(5))
    watch = tlog.LogWatch(scene.world.server_key.public_key, witnessed=receipt.checkpoint)
    found = watch.finality(
        state_rule=RULE,
        agencies=frozenset({"ke-kra", "tz-tra"}),
        witnesses={a: (w,) for a, w in scene.ws.listed.items()},
        heads=scene.va.heads,
        entry_hashes=scene.va.entry_hashes,
        case_id=scene.broker.case_id,
        leaf=receipt.leaf,
        index=receipt.index,
        inclusion=receipt.proof,
    )
    assert found is not None and found.final == 6


_SIGNED: dict[str, Any] = {}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_flipping_any_byte_of_a_witnessed_bundle_breaks_it(data: st.DataObject) -> None:
    if "bundle" not in _SIGNED:
        _SIGNED["scene"] = Scene("flip")
        _SIGNED["bundle"] = _SIGNED["scene"].bundle([1, 2])
    blob = bytearray(_SIGNED["bundle"])
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CaselineError):
        verify_evidence(bytes(blob), pinned=_SIGNED["scene"].pins)
