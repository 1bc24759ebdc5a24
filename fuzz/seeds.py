"""Write each harness's seed corpus from real objects: ``python -m fuzz.seeds fuzz/corpus``.

Seeds are generated, not committed: every run derives them from the same
deterministic scenario the harnesses use, so they always match the current wire
format.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from caseline.crypto.auth import make_challenge
from caseline.crypto.certs import make_enrolment_request
from caseline.schemas import api, wire
from caseline.schemas.codec import Struct, pack, unpack

from fuzz.harness import struct_types
from fuzz.scenario import Scenario, build
from tests.support.world import commit_change


def _objects(scene: Scenario) -> list[Struct]:
    """At least one real instance of every wire and API struct."""
    w = scene.world
    found: list[Struct] = []
    for cert in scene.certs():
        found.append(wire.DeviceCert.decode(wire.decode_signed(cert)[0]))
    crl = wire.RevocationList.decode(wire.decode_signed(scene.crl)[0])
    found += [crl, *crl.entries]
    for kind, body in scene.broker.entries:
        if kind == "commit":
            message = wire.CommitMessage.decode(body)
            commit = wire.Commit.decode(message.tbs)
            found += [message, *message.wraps, commit, commit.policy, commit.log, *commit.roster]
        else:
            found.append(wire.Envelope.decode(wire.decode_signed(body)[0]))
    for receipt in scene.broker.receipts:
        found.append(wire.Receipt.decode(wire.decode_signed(receipt)[0]))
    record = wire.UpdateRecord.decode(scene.next_record)
    share_record = wire.UpdateRecord.decode(scene.share_record)
    share = wire.HistoryShare.decode(share_record.content)
    found += [record, *record.seen, share_record, share, *share.keys]
    found.append(wire.CaseInfo(title="Operation Kilimanjaro", reference="KE-2026-0042"))
    found.append(wire.Term(device_id=scene.alice.id, expires=w.now))
    found.append(
        wire.Approval(
            case_id=scene.broker.case_id, prev_commit=scene.genesis_state.commit_hash,
            device_id=scene.alice.id, cert_hash=bytes(32), role="member", expires=0, approver=scene.alice.id,
        )
    )  # fmt: skip
    request = make_enrolment_request(scene.alice.keys, agency_id="ke-kra", user_id="alice", now=w.now)
    found.append(wire.EnrolmentRequest.decode(wire.decode_signed(request)[0]))
    found.append(
        wire.AuthChallenge.decode(
            make_challenge(w.server_key, scene.alice.id, now=w.now, rng=w.rng, nonce_key=bytes(32))
        )
    )
    root = wire.RootKey(agency_id="ke-kra", public_key=w.roots["ke-kra"].public_key)
    logged = wire.LoggedCommit(seq=0, signed=scene.genesis_state.signed_commit)
    disclosed = wire.Disclosed(seq=1, envelope=scene.broker.entries[1][1], message_key=bytes(32))
    found += [root, logged, disclosed]
    found.append(
        wire.EvidenceBundle(
            case_id=scene.broker.case_id,
            exporter=scene.alice.id,
            time=w.now,
            roots=(root,),
            certs=tuple(scene.certs()),
            revocations=(scene.crl,),
            commits=(logged,),
            entry_hashes=(bytes(32),),
            receipt=scene.broker.receipts[-1],
            disclosed=(disclosed,),
        )
    )
    entry = api.Entry(seq=0, kind="commit", body=scene.genesis, receipt=scene.broker.receipts[0])
    summary = api.CaseSummary(
        case_id=scene.broker.case_id, epoch=1, count=6, head=scene.broker.head, role="member"
    )
    info = api.AgencyInfo(
        agency_id="ke-kra", name="KRA", country="KE", root_key=bytes(32), fingerprint="12345 " * 5 + "1"
    )
    cursor = api.Cursor(case_id=scene.broker.case_id, after=3)
    found += [
        api.ChallengeRequest(device_id=scene.alice.id),
        api.Session(token="A" * 43, expires_at=w.now),
        entry,
        api.EntryPage(case_id=scene.broker.case_id, entries=(entry,), count=6),
        summary,
        api.CaseList(cases=(summary,)),
        api.Directory(agency_id="ke-kra", user_id="alice", certs=(scene.alice.cert,), revocations=scene.crl),
        info,
        api.ServerInfo(server_key=bytes(32), name="broker"),
        api.AgencyList(agencies=(info,)),
        cursor,
        api.Subscribe(cursors=(cursor,)),
        api.Delivery(case_id=scene.broker.case_id, entry=entry),
        api.Notice(kind="joined", case_id=scene.broker.case_id, detail=""),
        api.PostUpdate(request_id=7, case_id=scene.broker.case_id, envelope=scene.next_envelope),
        api.PostResult(request_id=7, status=201, receipt=scene.broker.receipts[-1], problem="", detail=""),
    ]
    missing = {cls.__name__ for cls in struct_types()} - {type(o).__name__ for o in found}
    if missing:  # a struct added since: still fuzzed through its selector, only unseeded
        print(f"warning: no seed for {sorted(missing)}: add one in fuzz/seeds.py", file=sys.stderr)
    return found


def _encoded(obj: Struct) -> bytes:
    return obj.encode() if obj.TAG else pack(obj.to_fields())


def seeds(scene: Scenario) -> dict[str, list[bytes]]:
    from fuzz.fuzz_codec import selector  # imports atheris: only the fuzz extra has it

    objs = _objects(scene)
    codec = [bytes([selector(type(o))]) + _encoded(o) for o in objs]
    codec += [b"\x00" + _encoded(o) for o in objs[:8]]  # raw unpack
    codec += [b"\x01" + c for c in scene.certs()] + [b"\x01" + scene.crl]  # decode_signed
    assert all(unpack(c[1:]) is not None for c in codec)
    cert_tbs = [wire.decode_signed(c)[0] for c in scene.certs()]
    certs = [b"\x00" + c for c in scene.certs()] + [b"\x01" + t for t in cert_tbs]
    certs += [b"\x02" + scene.crl, b"\x03" + wire.decode_signed(scene.crl)[0]]
    genesis = wire.CommitMessage.decode(scene.genesis)
    commit1 = wire.CommitMessage.decode(scene.commit1)
    commits = [b"\x00" + scene.genesis, b"\x01" + scene.commit1, b"\x02" + genesis.tbs, b"\x03" + commit1.tbs]
    envelopes = [
        b"\x00" + scene.next_envelope,
        b"\x01" + wire.decode_signed(scene.next_envelope)[0],
        b"\x02" + scene.next_record,
        b"\x02" + scene.share_record,
        b"\x03" + scene.next_receipt,
        b"\x04" + pack([1, scene.alice.id, 1]),
        b"\x05" + commit_change(scene.world, scene.bob_view(), scene.alice, [(scene.alice, "owner")]),
    ]
    from tests.support.content import EXAMPLES

    kinds = sorted(EXAMPLES)
    contents = [bytes([kinds.index(k)]) + json.dumps(obj).encode() for k, obj in EXAMPLES.items()]
    return {"codec": codec, "certs": certs, "commits": commits, "envelopes": envelopes, "content": contents}


def write(root: Path) -> None:
    scene = build(root / "scenario.msgpack")
    for name, items in seeds(scene).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            (folder / f"seed-{hashlib.sha256(item).hexdigest()[:16]}").write_bytes(item)
        print(f"{name}: {len(items)} seeds in {folder}")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"))
