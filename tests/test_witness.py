"""The witness on loopback against c2sp.org/tlog-witness: every status, the race, restarts, equivocation."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from caseline.crypto.merkle import EMPTY_ROOT, Tree, leaf_hash
from caseline.crypto.note import (
    ALG_ED25519,
    Checkpoint,
    Note,
    b64,
    log_origin,
    parse_signature_lines,
    sign_note,
    verify_cosignature,
    verify_note,
    vkey,
)
from caseline.crypto.primitives import ed25519_keypair_from_seed
from caseline.witness import core
from caseline.witness.app import WitnessIdentity, create_app
from caseline.witness.store import WitnessStore, origin_hash

ClientFactory = Callable[[Application], Awaitable[TestClient]]
NOW = 1_700_000_000
WITNESS_NAME = "witness.example/w1"
WIT_PK, WIT_SK = ed25519_keypair_from_seed(bytes([9]) * 32)


class Log:
    """A log that signs checkpoints over a real Merkle tree."""

    def __init__(self, seed: int = 1, leaves: int = 20) -> None:
        self.public_key, self.secret_key = ed25519_keypair_from_seed(bytes([seed]) * 32)
        self.origin = log_origin(self.public_key)
        self.vkey = vkey(self.origin, ALG_ED25519, self.public_key)
        self.tree = Tree()
        for i in range(leaves):
            self.tree.append(leaf_hash(b"leaf %d" % i))

    def note(self, size: int, root: bytes | None = None) -> bytes:
        text = Checkpoint(self.origin, size, self.tree.root(size) if root is None else root).body()
        return Note(text, (sign_note(text, name=self.origin, secret_key=self.secret_key),)).encode()

    def request(
        self, old: int, size: int, *, root: bytes | None = None, proof: list[bytes] | None = None
    ) -> bytes:
        if proof is None:
            proof = self.tree.consistency_proof(old, size) if 0 < old < size else []
        lines = b"".join(b64(h).encode() + b"\n" for h in proof)
        return b"old %d\n" % old + lines + b"\n" + self.note(size, root)


class Witness:
    def __init__(self, client: TestClient, store: WitnessStore) -> None:
        self.client, self.store = client, store

    async def add(self, body: bytes) -> tuple[int, bytes, str]:
        async with self.client.post("/add-checkpoint", data=body) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")

    async def get(self, origin: str, what: str) -> tuple[int, bytes, str]:
        async with self.client.get(f"/{origin_hash(origin)}/{what}") as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def start(aiohttp_client: ClientFactory, tmp_path: Path, log: Log) -> Callable[[], Awaitable[Witness]]:
    """Start (or restart) a witness on the same state file."""
    path = tmp_path / "state.sqlite3"

    async def go() -> Witness:
        if path.exists():
            store = WitnessStore.open(path, "instance-1")
        else:
            store = WitnessStore.create(path, "instance-1")
            store.add_log(log.vkey)
        app = create_app(store, WitnessIdentity(WITNESS_NAME, WIT_SK), clock=lambda: NOW)
        return Witness(await aiohttp_client(app), store)

    return go


@pytest.fixture
async def witness(start: Callable[[], Awaitable[Witness]]) -> Witness:
    return await start()


async def test_first_checkpoint_is_cosigned_and_served_to_monitors(witness: Witness, log: Log) -> None:
    assert (await witness.get(log.origin, "checkpoint"))[0] == 404
    status, body, _ = await witness.add(log.request(0, 5))
    assert status == 200
    (cosig,) = parse_signature_lines(body)
    text = Checkpoint(log.origin, 5, log.tree.root(5)).body()
    assert verify_cosignature(text, cosig, name=WITNESS_NAME, public_key=WIT_PK) == NOW
    status, served, _ = await witness.get(log.origin, "checkpoint")
    assert status == 200
    note = Note.parse(served)
    assert note.text == text
    verify_note(note, name=log.origin, public_key=log.public_key)
    assert verify_cosignature(text, note.signatures[-1], name=WITNESS_NAME, public_key=WIT_PK) == NOW
    # A client may append the answer to its checkpoint and verify the whole note.
    assert Note.parse(log.note(5) + body).signatures[-1] == cosig


async def test_consistent_growth_and_resubmission(witness: Witness, log: Log) -> None:
    assert (await witness.add(log.request(0, 3)))[0] == 200
    assert (await witness.add(log.request(3, 7)))[0] == 200
    assert (await witness.add(log.request(7, 7)))[0] == 200  # same checkpoint again
    assert (await witness.add(log.request(7, 16)))[0] == 200


async def test_empty_tree(witness: Witness, log: Log) -> None:
    assert (await witness.add(log.request(0, 0, root=bytes(32))))[0] == 422
    assert (await witness.add(log.request(0, 0, root=EMPTY_ROOT)))[0] == 200
    assert (await witness.add(log.request(0, 4)))[0] == 200


async def test_unknown_origin_is_404(witness: Witness) -> None:
    assert (await witness.add(Log(seed=2).request(0, 5)))[0] == 404


async def test_unknown_signer_or_bad_signature_is_403(witness: Witness, log: Log) -> None:
    impostor = Log(seed=3)
    text = Checkpoint(log.origin, 5, log.tree.root(5)).body()
    foreign = sign_note(text, name=log.origin, secret_key=impostor.secret_key)  # same name, other key id
    assert (await witness.add(b"old 0\n\n" + Note(text, (foreign,)).encode()))[0] == 403
    good = Note.parse(log.note(5))
    forged = Note(Checkpoint(log.origin, 5, bytes(32)).body(), good.signatures)
    assert (await witness.add(b"old 0\n\n" + forged.encode()))[0] == 403
    # An unknown signer beside the log's own is ignored.
    assert (await witness.add(b"old 0\n\n" + Note(text, (foreign, *good.signatures)).encode()))[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        b"old 0\n",
        b"old 01\n\n",
        b"old -1\n\n",
        b"0\n\n",
        b"old 0\nnot base64\n\n",
    ],
)
async def test_malformed_request_is_400(witness: Witness, log: Log, body: bytes) -> None:
    status, _, _ = await witness.add(body + log.note(5) if body.endswith(b"\n\n") else body)
    assert status == 400


async def test_old_larger_than_size_is_400_and_too_many_proof_lines(witness: Witness, log: Log) -> None:
    assert (await witness.add(log.request(6, 5, proof=[])))[0] == 400
    assert (await witness.add(log.request(1, 20, proof=[bytes(32)] * 64)))[0] == 400
    async with witness.client.post("/add-checkpoint", data=b"x" * (core.MAX_BODY + 1)) as resp:
        assert resp.status == 413


async def test_stale_old_size_is_409_with_the_stored_size(witness: Witness, log: Log) -> None:
    assert (await witness.add(log.request(0, 5)))[0] == 200
    status, body, content_type = await witness.add(log.request(0, 8))
    assert (status, body, content_type) == (409, b"5\n", "text/x.tlog.size")
    assert (await witness.add(log.request(3, 8)))[0:2] == (409, b"5\n")


async def test_inconsistent_checkpoints_are_422(witness: Witness, log: Log) -> None:
    assert (await witness.add(log.request(0, 5, proof=[bytes(32)])))[0] == 422  # proof from 0
    assert (await witness.add(log.request(0, 5)))[0] == 200
    wrong = log.tree.consistency_proof(5, 9)
    wrong[0] = bytes(32)
    assert (await witness.add(log.request(5, 9, proof=wrong)))[0] == 422
    assert (await witness.add(log.request(5, 9, root=bytes(32))))[0] == 422
    assert (await witness.add(log.request(5, 9, proof=[])))[0] == 422
    assert (await witness.get(log.origin, "equivocation"))[0] == 404  # not an equivocation: new sizes


async def test_equivocation_is_refused_recorded_and_served(witness: Witness, log: Log) -> None:
    status, body, content_type = await witness.get(log.origin, "equivocation")
    assert (status, content_type) == (404, "application/problem+json")
    assert (await witness.add(log.request(0, 5)))[0] == 200
    assert (await witness.add(log.request(5, 8)))[0] == 200
    fork = log.request(8, 5, root=bytes(32), proof=[])
    assert (await witness.add(fork))[0] == 400  # old > size, but validly signed: recorded
    assert (await witness.add(log.request(8, 8, root=bytes(range(32)))))[0] == 422  # same size, other root
    status, body, _ = await witness.get(log.origin, "equivocation")
    assert status == 200
    header, rest = body.split(b"\n", 1)
    assert header == b"caseline-witness/equivocation"
    notes = []
    for _ in range(2):
        length_line, rest = rest.split(b"\n", 1)
        length = int(length_line.removeprefix(b"note "))
        notes.append(Note.parse(rest[:length]))
        rest = rest[length:]
    assert rest == b""
    a, b = (Checkpoint.parse(n.text) for n in notes)
    assert a.size == b.size == 5 and a.root != b.root
    for n in notes:
        verify_note(n, name=log.origin, public_key=log.public_key)
    # The latest cosigned checkpoint is untouched.
    assert Checkpoint.parse(Note.parse((await witness.get(log.origin, "checkpoint"))[1]).text).size == 8


async def test_concurrent_requests_never_roll_the_size_back(witness: Witness, log: Log) -> None:
    assert (await witness.add(log.request(0, 4)))[0] == 200
    results = await asyncio.gather(*(witness.add(log.request(4, n)) for n in range(5, 20)))
    winners = [n for n, (status, _, _) in zip(range(5, 20), results, strict=True) if status == 200]
    assert len(winners) == 1
    assert {body for status, body, _ in results if status != 200} == {b"%d\n" % winners[0]}
    served = Note.parse((await witness.get(log.origin, "checkpoint"))[1])
    assert Checkpoint.parse(served.text).size == winners[0]


async def test_restart_keeps_refusing_smaller_or_inconsistent(
    start: Callable[[], Awaitable[Witness]], log: Log
) -> None:
    first = await start()
    assert (await first.add(log.request(0, 9)))[0] == 200
    await first.client.close()
    again = await start()
    assert (await again.add(log.request(0, 3)))[0:2] == (409, b"9\n")
    assert (await again.add(log.request(9, 3, proof=[])))[0] == 400
    assert (await again.add(log.request(9, 12, root=bytes(32))))[0] == 422
    assert (await again.add(log.request(9, 12)))[0] == 200


async def test_healthz_and_unknown_monitoring_paths(witness: Witness) -> None:
    async with witness.client.get("/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"ok": True}
    async with witness.client.get(f"/{hashlib.sha256(b'nobody').hexdigest()}/checkpoint") as resp:
        assert resp.status == 404
    async with witness.client.get("/not-a-hash/checkpoint") as resp:
        assert resp.status == 404


def test_core_never_cosigns_against_its_history(log: Log) -> None:
    """Pure core: even a view whose history disagrees with its latest root cannot get a cosignature."""
    request = core.parse_request(log.request(5, 5))
    view = core.LogView(log.public_key, 5, log.tree.root(5), (bytes(32), log.note(5, bytes(32))))
    outcome = core.decide(request, view, name=WITNESS_NAME, secret_key=WIT_SK, now=NOW)
    assert (outcome.status, outcome.cosigned) == (422, None)
    assert outcome.equivocation == (log.note(5, bytes(32)), log.note(5))
    fine = core.decide(
        request, dataclasses.replace(view, earlier=None), name=WITNESS_NAME, secret_key=WIT_SK, now=NOW
    )
    assert fine.status == 200 and fine.cosigned is not None
    assert core.decide(request, None, name=WITNESS_NAME, secret_key=WIT_SK, now=NOW).status == 404
