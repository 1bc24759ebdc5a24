"""Evidence bundles verify offline from pinned fingerprints alone, and nothing else passes."""

from __future__ import annotations

import pytest
from caseline.crypto.caselog import CaseView
from caseline.crypto.evidence import export_evidence, verify_evidence
from caseline.crypto.keys import fingerprint
from caseline.schemas.errors import CaselineError, DecryptionError, UntrustedError
from caseline.schemas.wire import Disclosed, EvidenceBundle, decode_signed, encode_signed
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.world import World, commit_change, note, open_case, post


class Scene:
    def __init__(self) -> None:
        self.world = w = World("evidence")
        w.agency("ke-kra")
        w.agency("tz-tra")
        self.alice = w.device("ke-kra", "alice")
        self.bob = w.device("tz-tra", "bob")
        self.broker, _, _ = open_case(w, self.alice, [(self.bob, "member")])
        self.va = CaseView(trust=w.trust(), me=self.alice.keys)
        self.vb = CaseView(trust=w.trust(), me=self.bob.keys)
        for text in ("seizure of 40 kg at Namanga", "reply from TRA", "third"):
            view = self.va if text != "reply from TRA" else self.vb
            self.broker.feed(view)
            post(w, view, self.broker, note(text))
        carol = w.device("ke-kra", "carol")
        self.broker.feed(self.va)
        self.broker.append(
            "commit",
            commit_change(
                w,
                self.va,
                self.alice,
                [(self.alice, "owner"), (self.bob, "member"), (carol, "member")],
            ),
        )
        self.broker.feed(self.va)
        post(w, self.va, self.broker, note("after carol joined"))
        self.broker.feed(self.va)
        self.pins = {a: fingerprint(a, r.public_key) for a, r in w.roots.items()}

    def bundle(self, seqs: list[int]) -> bytes:
        return export_evidence(
            self.va,
            exporter=self.alice.keys,
            envelopes={s: self.broker.entries[s][1] for s in seqs},
            receipt=self.broker.receipts[-1],
            now=self.world.now,
        )


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


def test_bundle_verifies_with_fingerprints_only(scene: Scene) -> None:
    report = verify_evidence(scene.bundle([1, 2, 5]), pinned=scene.pins)
    assert [r.seq for r in report.records] == [1, 2, 5]
    assert [r.author.user_id for r in report.records] == ["alice", "bob", "alice"]
    assert report.records[0].update.record.content == note("seizure of 40 kg at Namanga")
    assert report.log_length == 6 and len(report.states) == 2


def test_bundle_needs_the_right_fingerprint(scene: Scene) -> None:
    wrong = dict(scene.pins)
    wrong["ke-kra"] = "00000 00000 00000 00000 00000 00000"
    with pytest.raises(UntrustedError):
        verify_evidence(scene.bundle([1]), pinned=wrong)
    with pytest.raises(UntrustedError):
        verify_evidence(scene.bundle([1]), pinned={})


def test_a_partners_root_alone_does_not_vouch_for_the_exporter(scene: Scene) -> None:
    """With only TRA pinned, KRA-signed certificates (exporter, genesis owner) are untrusted."""
    with pytest.raises(UntrustedError):
        verify_evidence(scene.bundle([2]), pinned={"tz-tra": scene.pins["tz-tra"]})


def test_disclosed_key_opens_its_own_update_only(scene: Scene) -> None:
    tbs, _ = decode_signed(scene.bundle([1]))
    bundle = EvidenceBundle.decode(tbs)
    swapped = Disclosed(seq=1, envelope=bundle.disclosed[0].envelope, message_key=scene.va.message_key(3))
    forged = EvidenceBundle(
        **{**{f: getattr(bundle, f) for f in bundle.__dataclass_fields__}, "disclosed": (swapped,)}
    )
    ftbs = forged.encode()
    with pytest.raises(DecryptionError):
        verify_evidence(encode_signed(ftbs, scene.alice.keys.sign("evidence", ftbs)), pinned=scene.pins)


def test_hiding_a_commit_from_the_bundle_is_detected(scene: Scene) -> None:
    tbs, _ = decode_signed(scene.bundle([5]))
    bundle = EvidenceBundle.decode(tbs)
    fields = {f: getattr(bundle, f) for f in bundle.__dataclass_fields__}
    fields["commits"] = bundle.commits[:1]
    ftbs = EvidenceBundle(**fields).encode()
    with pytest.raises(CaselineError):
        verify_evidence(encode_signed(ftbs, scene.alice.keys.sign("evidence", ftbs)), pinned=scene.pins)


_BUNDLE: dict[str, bytes] = {}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipping_any_byte_breaks_the_bundle(data: st.DataObject) -> None:
    if "b" not in _BUNDLE:
        _BUNDLE["s"] = Scene()  # type: ignore[assignment]
        _BUNDLE["b"] = _BUNDLE["s"].bundle([1, 2])  # type: ignore[attr-defined]
    scene: Scene = _BUNDLE["s"]  # type: ignore[assignment]
    blob = bytearray(_BUNDLE["b"])
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CaselineError):
        verify_evidence(bytes(blob), pinned=scene.pins)
