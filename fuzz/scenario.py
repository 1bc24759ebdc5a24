"""One real, deterministic case that every harness fuzzes against, and the seeds it yields.

It is built with the test suite's own world (``tests.support.world``): two agencies,
an owner, a member, a genesis, updates, a membership commit that adds a third
device, more updates and a history share.  Nothing here stands in for the code
under test; the harnesses feed mutated bytes to the real parsers and verifiers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

from caseline.crypto.caselog import (
    DAY_MS,
    KIND_COMMIT,
    KIND_UPDATE,
    CaseView,
    entry_hash,
    next_head,
    sign_receipt,
)
from caseline.crypto.certs import TrustStore, VerifiedCert
from caseline.crypto.commits import CaseState, verify_commit
from caseline.crypto.updates import HISTORY_SHARE
from caseline.schemas import wire
from caseline.schemas.codec import pack, unpack
from caseline.schemas.wire import CommitMessage, UpdateRecord

from tests.support.world import Broker, Device, World, commit_change, note, open_case, post


@dataclasses.dataclass
class Scenario:
    world: World
    alice: Device  # ke-kra, owner
    bob: Device  # tz-tra, member
    carol: Device  # ke-kra, added at epoch 1
    broker: Broker
    genesis: bytes  # CommitMessage bytes of epoch 0
    genesis_state: CaseState
    commit1: bytes  # CommitMessage bytes of epoch 1
    next_envelope: bytes  # alice's next signed envelope, not yet in the log
    next_record: bytes  # the signed record (tbs) inside it
    share_record: bytes  # a history-share record tbs that alice could post next
    crl: bytes  # a signed revocation list of tz-tra
    next_receipt: bytes  # the broker's receipt for next_envelope at the next position
    old_receipt: bytes  # the same, dated beyond retention: what a purged entry carries

    @property
    def now(self) -> int:
        return self.world.now

    def trust(self) -> TrustStore:
        return self.world.trust()

    def bob_view(self) -> CaseView:
        """Bob's fully synced view of the case: the state the envelope harness attacks."""
        view = CaseView(trust=self.trust(), me=self.bob.keys)
        self.broker.feed(view)
        return view

    def devices(self) -> dict[bytes, Device]:
        return {d.id: d for d in (self.alice, self.bob, self.carol)}

    def certs(self) -> list[bytes]:
        return [self.alice.cert, self.bob.cert, self.carol.cert]

    def verified(self, device: Device) -> VerifiedCert:
        return self.world.verified(device)


#: Where the log is kept between runs.  HPKE sealing is randomised (ML-KEM
#: encapsulation reads the OS RNG), so a case is built once and reused by the
#: seed generator and by every harness, whose seeds must match its commits.
LOG_FILE: Final = Path(__file__).parent / "corpus" / "scenario.msgpack"


def build(log_file: Path = LOG_FILE) -> Scenario:
    w = World("caseline-fuzz")
    w.agency("ke-kra")
    w.agency("tz-tra")
    alice = w.device("ke-kra", "alice")
    bob = w.device("tz-tra", "bob")
    carol = w.device("ke-kra", "carol")
    lost = w.device("tz-tra", "lost")
    crl = w.revoke(lost, at=w.now - 10)
    if log_file.exists():
        entries = [(str(k), bytes(b)) for k, b in unpack(log_file.read_bytes())]
        case_id = wire.Commit.decode(wire.CommitMessage.decode(entries[0][1]).tbs).case_id
        broker = Broker(w, case_id)
        for kind, body in entries:
            broker.append(kind, body)
        genesis_state = verify_commit(None, CommitMessage.decode(entries[0][1]), trust=w.trust(), now=w.now)
        va = CaseView(trust=w.trust(), me=alice.keys)
        broker.feed(va)
    else:
        broker, genesis_state, va = _new_case(w, alice, bob, carol)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_bytes(pack([[k, b] for k, b in broker.entries]))
    genesis = broker.entries[0][1]
    commit1 = broker.entries[3][1]
    # Alice's next update and a history share, sealed but not posted: seeds for the envelope harness.
    sealed = va.seal(content_type="note", content=note("next"), now=w.now, nonce=bytes(range(24)))
    share_content = va.history_share(recipients=[bob.id], seqs=[4])
    share = UpdateRecord(
        **{
            **{f.name: getattr(sealed.record, f.name) for f in dataclasses.fields(sealed.record)},
            "content_type": HISTORY_SHARE,
            "content": share_content,
        }
    ).encode()
    next_record = sealed.record.encode()  # canonical: exactly the signed tbs
    seq, eh = len(broker.entries), entry_hash(KIND_UPDATE, sealed.envelope)
    head = next_head(broker.head, seq, eh)

    def receipt(time: int) -> bytes:
        return sign_receipt(
            w.server_key, case_id=broker.case_id, seq=seq, entry_hash=eh, head=head, time=time
        )

    assert [k for k, _ in broker.entries] == [KIND_COMMIT, KIND_UPDATE, KIND_UPDATE] * 2
    return Scenario(
        world=w,
        alice=alice,
        bob=bob,
        carol=carol,
        broker=broker,
        genesis=genesis,
        genesis_state=genesis_state,
        commit1=commit1,
        next_envelope=sealed.envelope,
        next_record=next_record,
        share_record=share,
        crl=crl,
        next_receipt=receipt(w.now),
        old_receipt=receipt(w.now - 400 * DAY_MS),
    )


def _new_case(w: World, alice: Device, bob: Device, carol: Device) -> tuple[Broker, CaseState, CaseView]:
    broker, genesis_state, _ = open_case(w, alice, [(bob, "member")])
    va = CaseView(trust=w.trust(), me=alice.keys)
    vb = CaseView(trust=w.trust(), me=bob.keys)
    broker.feed(va)
    broker.feed(vb)
    post(w, va, broker, note("first"))
    broker.feed(vb)
    post(w, vb, broker, note("reply from bob"))
    broker.feed(va)
    commit1 = commit_change(w, va, alice, [(alice, "owner"), (bob, "member"), (carol, "member")])
    broker.append(KIND_COMMIT, commit1)
    broker.feed(va)
    broker.feed(vb)
    post(w, va, broker, note("after the commit"))
    broker.feed(vb)
    post(w, vb, broker, note("bob again"))
    broker.feed(va)
    return broker, genesis_state, va
