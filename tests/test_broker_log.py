"""The broker side of the witnessed log: receipts, checkpoints, routes, witness lists, the pusher,
the in-place upgrade, the rebuild at start-up and the audit log's anchoring in the log."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from caseline.crypto import merkle, note, tlog
from caseline.crypto.caselog import (
    KIND_COMMIT,
    KIND_UPDATE,
    CaseView,
    next_head,
    sign_receipt,
    signed_entry_hash,
)
from caseline.crypto.certs import TrustStore, issue_witness_list
from caseline.crypto.commits import create_commit, log_anchor
from caseline.crypto.keys import AgencyRootKey, SigningKey
from caseline.crypto.primitives import ed25519_keypair_from_seed
from caseline.schemas.api import ConsistencyProof, InclusionProof, LeafPage, WitnessedAnswer
from caseline.schemas.wire import (
    AuditLeaf,
    CommitMessage,
    Envelope,
    LogPosition,
    Receipt,
    Witness,
    decode_signed,
)
from caseline.server.app import create_app
from caseline.server.config import ServerConfig
from caseline.server.core import BrokerCore, Limits
from caseline.server.core_log import BrokerLog, LogDamaged, check_audit_log
from caseline.server.keys import BROKER, METRICS, STORE, WITNESSING
from caseline.server.service import Broker
from caseline.server.sqlite_store import SqliteStore, audit_hash
from caseline.server.store import AuditRow
from caseline.witness.app import WitnessIdentity
from caseline.witness.app import create_app as witness_app
from caseline.witness.store import WitnessStore

from tests.conftest import Deployment
from tests.support.broker import MSGPACK, Officer
from tests.support.olddb import make_old_db
from tests.support.world import World
from tests.support.world import note as note_content

MakeDeployment = Callable[..., Awaitable[Deployment]]


# --------------------------------------------------------------------------- helpers


def log_vkey(key: SigningKey) -> str:
    return note.vkey(tlog.log_origin(key.public_key), note.ALG_ED25519, key.public_key)


async def start_witness(
    aiohttp_server: Any, directory: Path, name: str, *, seed: int, server_key: SigningKey, now_s: int
) -> Witness:
    """A real ``caseline.witness`` app on loopback that knows this broker's log."""
    public, secret = ed25519_keypair_from_seed(bytes([seed]) * 32)
    directory.mkdir()
    store = WitnessStore.create(directory / "state.sqlite3", f"instance-{seed}")
    store.add_log(log_vkey(server_key))
    server = await aiohttp_server(witness_app(store, WitnessIdentity(name, secret), clock=lambda: now_s))
    return Witness(name=name, public_key=public, url=str(server.make_url("")).rstrip("/"))


async def put_witnesses(
    client: TestClient, root: AgencyRootKey, number: int, witnesses: list[Witness]
) -> int:
    signed = issue_witness_list(root, number=number, issued_at=1_700_000_000_000, witnesses=witnesses)
    r = await client.put(f"/v1/agencies/{root.agency_id}/witnesses", data=signed, headers=MSGPACK)
    return r.status


async def checkpoint_note(client: TestClient) -> bytes:
    r = await client.get("/v1/log/checkpoint")
    assert r.status == 200, await r.text()
    assert r.content_type == "text/plain"
    return await r.read()


async def two_officers(d: Deployment) -> tuple[Officer, Officer, bytes]:
    alice = await d.officer("ke-kra", "alice")
    bob = await d.officer("tz-tra", "bob")
    case_id = await alice.create_case([(bob.device, "member")])
    await bob.sync(case_id)
    return alice, bob, case_id


# --------------------------------------------------------------------------- receipts and checkpoints


def test_one_signature_per_batch_and_every_receipt_proves_its_leaf() -> None:
    """The sealing step alone: 100 entries, one checkpoint signature, 100 verifying receipts."""

    class Counting(SigningKey):
        signed = 0

        def sign_note(self, text: bytes, *, name: str) -> note.NoteSignature:
            Counting.signed += 1
            return super().sign_note(text, name=name)

    key = Counting(bytes(32))
    blog = BrokerLog(key)

    class Ref:
        def __init__(self, i: int) -> None:
            self.case_id, self.seq = bytes([i % 7]) * 16, i
            self.entry_hash, self.head = bytes([i % 251]) * 32, bytes([(i + 1) % 251]) * 32

    sealed = blog.seal([Ref(i) for i in range(100)], [], time=5)
    blog.commit(sealed)
    assert Counting.signed == 1
    assert len(sealed.receipts) == 100
    for i, receipt in enumerate(sealed.receipts):
        verified = tlog.verify_log_receipt(receipt, key.public_key)
        assert verified.index == i and verified.checkpoint.size == 100 and verified.seq == i
    # A failed write truncates the tree back; the next batch seals on the old size.
    failed = blog.seal([Ref(100)], [], time=6)
    blog.abort(failed)
    assert blog.tree.size == blog.size == 100
    again = blog.seal([Ref(100)], [], time=7)
    assert again.start == 100 and Counting.signed == 3


async def test_receipts_verify_against_checkpoints_one_per_group_commit(deployment: Deployment) -> None:
    d = deployment
    alice = await d.officer("ke-kra", "alice")
    others = [await d.officer("tz-tra", f"u{i}") for i in range(8)]
    case_id = await alice.create_case([(o.device, "member") for o in others])
    for o in others:
        await o.sync(case_id)
    broker = d.app[BROKER]
    batches = broker.batches
    envelopes = [(o, o.seal(case_id, f"from {i}")) for i, o in enumerate(others)]
    answers = await asyncio.gather(*(o.post(case_id, env) for o, env in envelopes))
    receipts = []
    for r in answers:
        assert r.status == 201
        receipts.append(await r.read())
    notes = set()
    for receipt in receipts:
        verified = tlog.verify_log_receipt(receipt, d.server_key.public_key)
        assert verified.case_id == case_id
        parsed = note.Note.parse(verified.note)
        assert len(parsed.signatures) == 1  # the broker's one signature for the whole batch
        notes.add(verified.note)
    assert len(notes) == broker.batches - batches  # one checkpoint per group commit
    # The members' own views accept the log receipts and the chain they name.
    view = await alice.sync(case_id)
    assert view.count == 1 + len(others)


async def test_log_routes_serve_verifying_proofs(deployment: Deployment) -> None:
    d = deployment
    alice, bob, case_id = await two_officers(d)
    first = tlog.verify_log_receipt(await alice.say(case_id, "one"), d.server_key.public_key)
    cp1 = note.Checkpoint.parse(note.Note.parse(await checkpoint_note(d.client)).text)
    second = tlog.verify_log_receipt(await bob.say(case_id, "two"), d.server_key.public_key)
    text = await checkpoint_note(d.client)
    cp2, _ = tlog.verify_checkpoint(text, d.server_key.public_key)
    assert cp2.size >= second.checkpoint.size > first.index
    # inclusion, anonymously
    r = await d.client.get(f"/v1/log/proof/inclusion?index={first.index}&size={cp2.size}")
    assert r.status == 200
    proof = InclusionProof.decode(await r.read())
    merkle.verify_inclusion(
        merkle.leaf_hash(first.leaf.encode()), first.index, cp2.size, proof.proof, cp2.root
    )
    # consistency between two checkpoints
    r = await d.client.get(f"/v1/log/proof/consistency?old={cp1.size}&new={cp2.size}")
    assert r.status == 200
    merkle.verify_consistency(
        cp1.size, cp2.size, cp1.root, cp2.root, ConsistencyProof.decode(await r.read()).proof
    )
    # leaves: devices only; they rebuild the root
    assert (await d.client.get(f"/v1/log/leaves?start=0&end={cp2.size}")).status == 401
    r = await d.client.get(f"/v1/log/leaves?start=0&end={cp2.size}", headers=alice.headers())
    assert r.status == 200
    page = LeafPage.decode(await r.read())
    assert merkle.root_of([merkle.leaf_hash(leaf) for leaf in page.leaves]) == cp2.root
    assert page.leaves[first.index] == first.leaf.encode()
    # the member's view of the log
    r = await d.client.get(
        f"/v1/log/witnessed?since={cp1.size}&case={case_id.hex()}", headers=alice.headers()
    )
    assert r.status == 200
    answer = WitnessedAnswer.decode(await r.read())
    latest, _ = tlog.verify_checkpoint(answer.latest, d.server_key.public_key)
    merkle.verify_consistency(cp1.size, latest.size, cp1.root, latest.root, answer.since_proof)
    assert answer.witnessed == b"" and answer.leaf == b""  # nobody witnesses this broker
    # a case needs a session and membership; a non-member is answered as for no such case
    assert (await d.client.get(f"/v1/log/witnessed?case={case_id.hex()}")).status == 401
    carol = await d.officer("ke-kra", "carol")
    assert (
        await d.client.get(f"/v1/log/witnessed?case={case_id.hex()}", headers=carol.headers())
    ).status == 404


@pytest.mark.parametrize(
    "query",
    [
        "/v1/log/proof/inclusion?index=0",
        "/v1/log/proof/inclusion?index=0&size=0",
        "/v1/log/proof/inclusion?index=5&size=5",
        "/v1/log/proof/inclusion?index=0&size=999999",
        "/v1/log/proof/inclusion?index=-1&size=2",
        "/v1/log/proof/inclusion?index=x&size=2",
        "/v1/log/proof/inclusion?index=0&size=99999999999999999999999",
        "/v1/log/proof/consistency?old=3&new=2",
        "/v1/log/proof/consistency?old=0&new=999999",
        "/v1/log/proof/consistency?new=2",
        "/v1/log/witnessed?since=abc",
        "/v1/log/witnessed?since=0&case=zz",
    ],
)
async def test_bad_log_parameters_are_400(deployment: Deployment, query: str) -> None:
    alice, _, _ = await two_officers(deployment)
    r = await deployment.client.get(query, headers=alice.headers() if "case=" in query else None)
    assert r.status == 400, await r.text()
    assert r.content_type == "application/problem+json"


@pytest.mark.parametrize("span", ["start=0&end=0", "start=3&end=2", "start=0&end=999999", "start=0&end=1025"])
async def test_bad_leaf_ranges_are_400(deployment: Deployment, span: str) -> None:
    alice, _, _ = await two_officers(deployment)
    r = await deployment.client.get(f"/v1/log/leaves?{span}", headers=alice.headers())
    assert r.status == 400


async def test_anonymous_log_readers_share_the_anonymous_rate_limit(make_deployment: MakeDeployment) -> None:
    d = await make_deployment(limits=Limits(anonymous_burst=3, anonymous_per_second=0.001))
    statuses = [(await d.client.get("/v1/log/checkpoint")).status for _ in range(6)]
    assert statuses[-1] == 429  # the empty log's 404s were charged too


# --------------------------------------------------------------------------- witness lists


async def test_witness_lists_are_verified_monotonic_and_served(deployment: Deployment) -> None:
    d = deployment
    root = d.world.roots["ke-kra"]
    w = Witness(name="ke-kra.example/w1", public_key=bytes(32), url="http://127.0.0.1:9/")
    assert (await d.client.get("/v1/agencies/ke-kra/witnesses")).status == 404
    assert await put_witnesses(d.client, root, 2, [w]) == 204
    r = await d.client.get("/v1/agencies/ke-kra/witnesses")
    assert r.status == 200
    assert TrustStore({"ke-kra": root.public_key}).add_witness_list(await r.read()).witnesses == (w,)
    assert await put_witnesses(d.client, root, 2, [w]) == 204  # the same list again
    assert await put_witnesses(d.client, root, 1, []) == 422  # a rollback
    other = Witness(name="ke-kra.example/w2", public_key=bytes(32), url="http://127.0.0.1:9/")
    assert await put_witnesses(d.client, root, 2, [other]) == 422  # same number, other content
    forged = AgencyRootKey("ke-kra", bytes([7]) * 32)
    assert await put_witnesses(d.client, forged, 3, []) == 422  # not signed by the registered root
    signed = issue_witness_list(root, number=5, issued_at=1, witnesses=[])
    r = await d.client.put("/v1/agencies/tz-tra/witnesses", data=signed, headers=MSGPACK)
    assert r.status == 400  # for another agency than the URL names
    r = await d.client.get("/v1/agencies/ke-kra/witnesses")
    assert TrustStore({"ke-kra": root.public_key}).add_witness_list(await r.read()).number == 2


# --------------------------------------------------------------------------- the pusher


async def test_pusher_collects_cosignatures_from_two_real_witnesses_and_survives_409(
    deployment: Deployment, aiohttp_server: Any, tmp_path: Path
) -> None:
    d = deployment
    now_s = d.world.now // 1000
    w1 = await start_witness(
        aiohttp_server, tmp_path / "w1", "ke-kra.example/w1", seed=11, server_key=d.server_key, now_s=now_s
    )
    w2 = await start_witness(
        aiohttp_server, tmp_path / "w2", "tz-tra.example/w1", seed=12, server_key=d.server_key, now_s=now_s
    )
    assert await put_witnesses(d.client, d.world.roots["ke-kra"], 1, [w1]) == 204
    assert await put_witnesses(d.client, d.world.roots["tz-tra"], 1, [w2]) == 204
    alice, _, case_id = await two_officers(d)
    await alice.say(case_id, "to be witnessed")
    pusher = d.app[WITNESSING]
    await pusher.wait_round()
    lists = {"ke-kra": [w1], "tz-tra": [w2]}
    text = await checkpoint_note(d.client)
    cp, parsed = tlog.verify_checkpoint(text, d.server_key.public_key)
    cosigned = tlog.collect_cosignatures(parsed.text, parsed.signatures, lists)
    assert {c.witness.name for c in cosigned} == {w1.name, w2.name}
    assert all(c.timestamp == now_s for c in cosigned)
    # /v1/log/witnessed: the same checkpoint, with the case's leaf proven into it.
    r = await d.client.get(f"/v1/log/witnessed?case={case_id.hex()}", headers=alice.headers())
    answer = WitnessedAnswer.decode(await r.read())
    w_cp, w_note = tlog.verify_checkpoint(answer.witnessed, d.server_key.public_key)
    assert len(tlog.collect_cosignatures(w_note.text, w_note.signatures, lists)) == 2
    merkle.verify_inclusion(
        merkle.leaf_hash(answer.leaf), answer.index, w_cp.size, answer.inclusion, w_cp.root
    )
    assert tlog.receipt_leaf((await alice.entries(case_id)).entries[-1].receipt).encode() == answer.leaf
    r = await d.client.get("/v1/log/witnessed", headers={"Accept": "text/plain"})
    assert r.status == 200 and (await r.read()).startswith(parsed.text)
    # The pusher forgets what w1 holds (as after losing its table): w1 answers 409 with its
    # size, and the pusher retries once with a proof from there.
    metrics = d.app[METRICS]
    pusher.known[w1.name] = 0
    await alice.say(case_id, "after the pusher forgot")
    await pusher.wait_round()
    cp2, parsed2 = tlog.verify_checkpoint(await checkpoint_note(d.client), d.server_key.public_key)
    assert cp2.size > cp.size
    assert {c.witness.name for c in tlog.collect_cosignatures(parsed2.text, parsed2.signatures, lists)} == {
        w1.name,
        w2.name,
    }
    assert metrics.witness_failures.labels(w1.name, "conflict")._value.get() == 0
    assert metrics.cosignatures.labels(w1.name)._value.get() >= 2


async def test_a_witness_ahead_of_the_broker_is_an_alarm_not_a_loop(
    deployment: Deployment, aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fork: someone with the broker's key showed the witness a longer tree first."""
    d = deployment
    w1 = await start_witness(
        aiohttp_server, tmp_path / "w1", "ke-kra.example/w1", seed=11, server_key=d.server_key, now_s=1
    )
    alice, _, case_id = await two_officers(d)
    blog = d.app[BROKER].log
    forked = merkle.Tree()
    for i in range(blog.size):
        forked.append(blog.tree.leaf(i))
    for i in range(5):
        forked.append(merkle.leaf_hash(b"forked %d" % i))
    fork_note = tlog.sign_checkpoint(d.server_key, size=forked.size, root=forked.root())
    async with d.client.session.post(w1.url + "/add-checkpoint", data=b"old 0\n\n" + fork_note) as r:
        assert r.status == 200
    assert await put_witnesses(d.client, d.world.roots["ke-kra"], 1, [w1]) == 204
    pusher = d.app[WITNESSING]
    await pusher.wait_round()
    metrics = d.app[METRICS]
    assert metrics.witness_failures.labels(w1.name, "ahead")._value.get() >= 1
    assert "restored from a backup or forked" in caplog.text
    assert await d.app[STORE].latest_witnessed() is None
    rounds = pusher.rounds
    await alice.say(case_id, "still posting")  # posting never waits on witnesses
    await pusher.wait_round()
    assert pusher.rounds >= rounds + 1


async def test_posting_does_not_wait_for_an_unreachable_witness(deployment: Deployment) -> None:
    d = deployment
    dead = Witness(name="ke-kra.example/dead", public_key=bytes(32), url="http://127.0.0.1:9")
    assert await put_witnesses(d.client, d.world.roots["ke-kra"], 1, [dead]) == 204
    alice, _, case_id = await two_officers(d)
    for i in range(3):
        await alice.say(case_id, f"update {i}")
    await d.app[WITNESSING].wait_round()
    assert d.app[METRICS].witness_failures.labels(dead.name, "error")._value.get() >= 1


# --------------------------------------------------------------------------- start-up and upgrade


async def _broker(path: Path, key: SigningKey, world: World) -> Broker:
    store = SqliteStore(path)
    await store.open()
    trust = TrustStore({a: r.public_key for a, r in world.roots.items()})
    broker = Broker(
        core=BrokerCore(server_key=key, trust=trust, limits=Limits()), store=store, clock=lambda: world.now
    )
    try:
        await broker.start()
    except BaseException:
        await store.close()  # a refused start must not leave the database thread behind
        raise
    return broker


async def _close(broker: Broker) -> None:
    await broker.stop()
    await broker.store.close()


async def test_restart_rebuilds_the_tree_and_refuses_a_damaged_log(
    deployment: Deployment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = deployment
    alice, _, case_id = await two_officers(d)
    for i in range(5):
        await alice.say(case_id, f"u{i}")
    root_before = d.app[BROKER].log.tree.root()
    size_before = d.app[BROKER].log.size
    await d.client.close()  # stops the broker; its last audit rows are sealed on the way out
    db = tmp_path / "broker.sqlite3"
    broker = await _broker(db, d.server_key, d.world)
    assert broker.log.size >= size_before
    assert broker.log.tree.root(size_before) == root_before
    assert broker.core.runtime(case_id).count == 6
    await _close(broker)
    # A leaf altered behind the broker's back: it refuses to serve, and says why.
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("UPDATE log_leaves SET leaf = X'00' WHERE idx = 1")
    raw.close()
    with pytest.raises(LogDamaged):
        await _broker(db, d.server_key, d.world)
    assert "REFUSING TO SERVE" in caplog.text
    # Another key's checkpoint, too.
    with pytest.raises(LogDamaged):
        await _broker(db, SigningKey(bytes([5]) * 32), d.world)


async def test_a_version_2_data_directory_is_upgraded_in_place(tmp_path: Path, aiohttp_client: Any) -> None:
    """Rows written by the previous schema with v1 receipts get leaves, one checkpoint, log receipts."""
    world = World(f"broker-{tmp_path.name}")
    root = world.agency("ke-kra")
    key = world.server_key
    alice = world.device("ke-kra", "alice")
    case_id = world.rng(16)
    trust = world.trust()
    genesis, _ = create_commit(
        prev=None,
        case_id=case_id,
        committer=alice.keys,
        roster=[(trust.verify_cert(alice.cert, at=world.now), "owner")],
        policy=world.policy(),
        log=LogPosition(count=0, head=log_anchor(case_id)),
        info=None,
        now=world.now,
        rng=world.rng,
    )
    rows: list[tuple[int, str, bytes, bytes, Any, int]] = []
    head = log_anchor(case_id)

    def v1(seq: int, kind: str, body: bytes, t: int) -> bytes:
        nonlocal head
        if kind == KIND_COMMIT:
            message = CommitMessage.decode(body)
            tbs, sig = message.tbs, message.signature
        else:
            tbs, sig = decode_signed(body)
        eh = signed_entry_hash(kind, tbs, sig)
        head = next_head(head, seq, eh)
        return sign_receipt(key, case_id=case_id, seq=seq, entry_hash=eh, head=head, time=t)

    receipt0 = v1(0, KIND_COMMIT, genesis, world.now)
    rows.append((0, KIND_COMMIT, genesis, receipt0, None, world.now))
    view = CaseView(trust=world.trust(), me=alice.keys)
    view.apply(seq=0, kind=KIND_COMMIT, body=genesis, now=world.now, receipt=receipt0)
    for seq in (1, 2):
        sealed = view.seal(
            content_type="note", content=note_content(f"old {seq}"), now=world.now, nonce=world.rng(24)
        )
        receipt = v1(seq, KIND_UPDATE, sealed.envelope, world.now + seq)
        view.apply(seq=seq, kind=KIND_UPDATE, body=sealed.envelope, now=world.now, receipt=receipt)
        env = Envelope.decode(decode_signed(sealed.envelope)[0])
        rows.append(
            (
                seq,
                KIND_UPDATE,
                sealed.envelope,
                receipt,
                (env.sender, env.epoch, env.counter),
                world.now + seq,
            )
        )
    db = make_old_db(tmp_path / "broker.sqlite3", upto=2)
    db.execute("INSERT INTO agencies VALUES ('ke-kra', 'KRA', 'KE', ?, ?)", (root.public_key, world.now))
    db.execute("INSERT INTO cases VALUES (?, 30, ?)", (case_id, world.now))
    for seq, kind, body, receipt, slot, t in rows:
        s = slot or (None, None, None)
        db.execute(
            "INSERT INTO entries (case_id, seq, kind, body, receipt, slot_sender, slot_epoch, slot_counter,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, seq, kind, body, receipt, *s, t),
        )
    prev = bytes(32)
    for seq, event in enumerate(["agency-added", "case-created"]):
        digest = audit_hash(prev, seq, world.now, event, "x")
        db.execute("INSERT INTO audit VALUES (?, ?, ?, 'x', ?, ?)", (seq, world.now, event, prev, digest))
        prev = digest
    db.close()

    app = create_app(ServerConfig(data_dir=tmp_path), server_key=key, clock=lambda: world.now)
    client = await aiohttp_client(app)
    blog = client.app[BROKER].log
    assert blog.size >= 5  # three entries and two audit rows under one checkpoint (then new audit rows)
    stored = await client.app[STORE].entries(case_id, after=0, limit=10)
    for (seq, _, _, old, _, _), row in zip(rows, stored, strict=True):
        verified = tlog.verify_log_receipt(row.receipt, key.public_key)
        was = Receipt.decode(decode_signed(old)[0])
        assert verified.seq == seq and verified.index == seq  # order: created_at, then case, then seq
        assert verified.time == was.time  # the v1 receipt's time is the leaf's
        assert verified.head == was.head and verified.entry_hash == was.entry_hash
    audit = await client.app[STORE].audit_rows()
    assert [r.leaf_index for r in audit[:2]] == [3, 4]
    assert AuditLeaf.decode((await client.app[STORE].log_leaves(3, 4))[0]).audit_hash == audit[0].hash
    # A member re-reads the upgraded case and checks every log receipt with the real core.
    officer = await Officer(client, world, alice, key).enrol()
    assert (await officer.sync(case_id)).count == 3
    await officer.say(case_id, "after the upgrade")
    await client.close()
    # The second start upgrades nothing and rebuilds the same tree.
    broker = await _broker(tmp_path / "broker.sqlite3", key, world)
    assert await broker.store.legacy_entries() == []
    assert broker.core.runtime(case_id).count == 4
    await _close(broker)


# --------------------------------------------------------------------------- audit log attacks


def audit_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caseline.server.cli", "--data-dir", str(data_dir), "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _used_data_dir(d: Deployment, tmp_path: Path) -> Path:
    """A real data directory after real traffic, the broker stopped, its key where the CLI reads it."""
    alice, bob, case_id = await two_officers(d)
    await alice.say(case_id, "one")
    await bob.say(case_id, "two")
    await d.client.close()
    key_path = tmp_path / "server.key"
    key_path.write_bytes(d.server_key.seed)
    os.chmod(key_path, 0o600)
    return tmp_path


def _rewrite_row_0_and_the_chain(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    with db:
        rows = db.execute("SELECT seq, time, event, detail FROM audit ORDER BY seq").fetchall()
        prev = bytes(32)
        for seq, t, event, original in rows:
            detail = "agency=innocent" if seq == 0 else original
            digest = audit_hash(prev, seq, t, event, detail)
            db.execute(
                "UPDATE audit SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (detail, prev, digest, seq),
            )
            prev = digest
    db.close()


async def test_audit_verify_passes_on_an_untouched_data_directory(
    deployment: Deployment, tmp_path: Path
) -> None:
    data = await _used_data_dir(deployment, tmp_path)
    out = audit_verify(data)
    assert out.returncode == 0, out.stderr
    assert "audit log intact" in out.stdout
    assert "only the broker's own signature" in out.stdout  # plainly unwitnessed


async def test_audit_verify_fails_when_the_last_row_is_deleted(
    deployment: Deployment, tmp_path: Path
) -> None:
    data = await _used_data_dir(deployment, tmp_path)
    db = sqlite3.connect(data / "broker.sqlite3")
    with db:
        db.execute("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    db.close()
    out = audit_verify(data)
    assert out.returncode == 3
    assert "was deleted" in out.stderr


async def test_audit_verify_fails_when_row_0_is_rewritten_and_the_chain_recomputed(
    deployment: Deployment, tmp_path: Path
) -> None:
    data = await _used_data_dir(deployment, tmp_path)
    _rewrite_row_0_and_the_chain(data / "broker.sqlite3")
    out = audit_verify(data)
    assert out.returncode == 3
    assert "differs from its leaf" in out.stderr


async def test_audit_verify_with_witnesses_catches_a_rewritten_log_under_the_brokers_key(
    deployment: Deployment, aiohttp_server: Any, tmp_path: Path
) -> None:
    """The operator holds the key: rewrite row 0, its leaf, re-sign the checkpoint. The witnesses'
    cosigned root still disagrees."""
    d = deployment
    w1 = await start_witness(
        aiohttp_server, tmp_path / "w1", "ke-kra.example/w1", seed=11, server_key=d.server_key, now_s=1
    )
    assert await put_witnesses(d.client, d.world.roots["ke-kra"], 1, [w1]) == 204
    alice, _, case_id = await two_officers(d)
    await alice.say(case_id, "one")
    await d.app[WITNESSING].wait_round()
    data = await _used_data_dir(d, tmp_path)
    assert audit_verify(data).returncode == 0
    db_path = data / "broker.sqlite3"
    _rewrite_row_0_and_the_chain(db_path)
    db = sqlite3.connect(db_path)
    with db:
        row = AuditRow(
            *db.execute(
                "SELECT seq, time, event, detail, prev_hash, hash, leaf_index FROM audit WHERE seq = 0"
            ).fetchone()
        )
        leaf = AuditLeaf(audit_seq=0, audit_hash=row.hash, time=row.time).encode()
        db.execute("UPDATE log_leaves SET leaf = ? WHERE idx = ?", (leaf, row.leaf_index))
        leaves = [bytes(r[0]) for r in db.execute("SELECT leaf FROM log_leaves ORDER BY idx")]
        root = merkle.root_of([merkle.leaf_hash(x) for x in leaves])
        forged = tlog.sign_checkpoint(d.server_key, size=len(leaves), root=root)
        db.execute("DELETE FROM cosignatures WHERE size = ?", (len(leaves),))
        db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (forged, len(leaves)))
    db.close()
    out = audit_verify(data)
    assert out.returncode == 3, out.stdout
    assert "disagree with the checkpoint" in out.stderr


def test_audit_report_says_plainly_when_the_tail_is_unwitnessed() -> None:
    key = SigningKey(bytes(32))
    blog = BrokerLog(key)
    rows = []
    prev = bytes(32)
    for seq in range(3):
        digest = audit_hash(prev, seq, 1, "e", "d")
        rows.append(AuditRow(seq, 1, "e", "d", prev, digest, seq))
        prev = digest
    first = blog.seal([], rows[:2], time=1)
    blog.commit(first)
    second = blog.seal([], rows[2:], time=1)
    blog.commit(second)
    public, secret = ed25519_keypair_from_seed(bytes([3]) * 32)
    w = Witness(name="w.example/1", public_key=public, url="http://127.0.0.1:1")
    text = note.Note.parse(first.checkpoint).text
    cosig = note.cosign(text, name=w.name, secret_key=secret, timestamp=9).line()
    leaves = [leaf for _, leaf in first.leaves + second.leaves]
    report = check_audit_log(
        rows,
        leaves,
        (3, second.checkpoint),
        receipt_key=key.public_key,
        witnessed=(2, first.checkpoint + cosig),
        witnesses={"ke-kra": [w]},
    )
    assert report.broken == []
    assert any(line.startswith("UNWITNESSED: leaves 2..2 (audit rows 2 on)") for line in report.notes)
    base64.b64decode(cosig.split()[-1])  # a real signature line went in
