"""Micro-benchmarks of the protocol core: ``make bench`` (``python -m bench.core``).

Prints µs per operation, the median of repeated runs with the min-max spread,
and writes ``bench/results/core.json``.  Everything is prepared before the clock
starts; each timed loop runs the real core.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from caseline.crypto import primitives as P
from caseline.crypto.caselog import CaseView, verify_receipt
from caseline.crypto.commits import create_commit, verify_commit
from caseline.crypto.updates import SealedUpdate, open_update, verify_envelope
from caseline.schemas.wire import CommitMessage, Envelope, decode_signed

from tests.world import World, note, open_case, post

RESULTS = Path(__file__).with_name("results")
REPEATS = 7


def measure(fn: Callable[[], object], *, loops: int, repeats: int = REPEATS) -> dict[str, float]:
    """µs per call: median and spread over ``repeats`` timed loops of ``loops`` calls."""
    fn()  # warm caches
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter_ns() - start) / loops / 1000)
    return {"median_us": statistics.median(runs), "min_us": min(runs), "max_us": max(runs)}


def main() -> None:
    w = World("bench")
    w.agency("ke-kra")
    w.agency("tz-tra")
    alice = w.device("ke-kra", "alice")
    bob = w.device("tz-tra", "bob")
    broker, _, _ = open_case(w, alice, [(bob, "member")])
    va = CaseView(trust=w.trust(), me=alice.keys)
    vb = CaseView(trust=w.trust(), me=bob.keys)
    broker.feed(va)
    broker.feed(vb)
    text = "x" * (1024 - len(note("")))
    content = note(text)
    assert len(content) == 1024
    results: dict[str, Any] = {}
    targets = {
        "seal+sign 1 KiB update": 150.0,
        "open+verify 1 KiB update": 250.0,
        "commit for 50 devices (create)": 15_000.0,
        "verify 1,000-entry case from genesis": 500_000.0,
    }

    def seal() -> SealedUpdate:
        return va.seal(content_type="note", content=content, now=w.now, nonce=w.rng(24))

    results["seal+sign 1 KiB update"] = measure(seal, loops=500)

    sealed = seal()
    state = va.state
    assert state is not None

    def open_() -> object:
        env, _ = verify_envelope(sealed.envelope, state)
        return open_update(env, state=state, message_key=sealed.message_key)

    results["open+verify 1 KiB update"] = measure(open_, loops=500)
    receipt = broker.receipts[0]
    results["verify receipt"] = measure(lambda: verify_receipt(receipt, w.server_key.public_key), loops=1000)

    for n in (10, 50):
        devices = [w.device("tz-tra", f"m{i}") for i in range(n - 1)]
        trust = w.trust()
        roster = [(trust.verify_cert(alice.cert, at=w.now), "owner")]
        roster += [(trust.verify_cert(d.cert, at=w.now), "member") for d in devices]
        b2, _, _ = open_case(w, alice, [])
        v2 = CaseView(trust=trust, me=alice.keys)
        b2.feed(v2)
        assert v2.state is not None
        s = v2.state

        def make(s: Any = s, roster: Any = roster, v2: CaseView = v2) -> bytes:
            return create_commit(
                prev=s,
                case_id=s.case_id,
                committer=alice.keys,
                roster=roster,
                policy=s.policy,
                log=v2.position(),
                info=None,
                now=w.now,
                rng=w.rng,
            )[0]

        body = make()
        msg = CommitMessage.decode(body)
        results[f"commit for {n} devices (create)"] = measure(make, loops=3 if n == 50 else 10, repeats=5)
        results[f"commit for {n} devices (verify)"] = measure(
            functools.partial(verify_commit, s, msg, trust=trust, now=w.now), loops=5, repeats=5
        )

    # A 1,000-entry case: 999 updates from two senders after the genesis.
    big, _, _ = open_case(w, alice, [(bob, "member")])
    ba, bb = CaseView(trust=w.trust(), me=alice.keys), CaseView(trust=w.trust(), me=bob.keys)
    for i in range(999):
        author = ba if i % 2 == 0 else bb
        big.feed(author)
        post(w, author, big, note(f"update {i}"))
    entries = list(big.entries)
    last_receipt = big.receipts[-1]

    def verify_case() -> CaseView:
        view = CaseView(trust=w.trust(), me=bob.keys)
        for seq, (kind, body) in enumerate(entries):
            last = seq == len(entries) - 1
            view.apply(seq=seq, kind=kind, body=body, now=w.now, receipt=last_receipt if last else None)
        return view

    results["verify 1,000-entry case from genesis"] = measure(verify_case, loops=1, repeats=3)

    seed = w.rng(32)
    kem_pub = P.xwing_public_from_seed(seed)
    wrapped = P.hpke_seal(kem_pub, bytes(32), b"info")
    results["X-Wing HPKE wrap 32 B"] = measure(lambda: P.hpke_seal(kem_pub, bytes(32), b"info"), loops=200)
    results["X-Wing HPKE unwrap 32 B"] = measure(lambda: P.hpke_open(seed, wrapped, b"info"), loops=200)
    sk = alice.keys.signing
    sig = sk.sign("bench", content)
    results["Ed25519 sign (labelled, 1 KiB)"] = measure(lambda: sk.sign("bench", content), loops=1000)
    results["Ed25519 verify (labelled, 1 KiB)"] = measure(
        lambda: P.verify_labeled(sk.public_key, "bench", content, sig), loops=1000
    )
    tbs, _ = decode_signed(sealed.envelope)
    results["strict decode of an Envelope"] = measure(lambda: Envelope.decode(tbs), loops=2000)

    print(f"{'operation':44} {'median µs':>12} {'min-max µs':>22}  target")
    for name, r in results.items():
        target = targets.get(name)
        verdict = (
            "" if target is None else ("PASS" if r["median_us"] <= target else "MISS") + f" ≤ {target:,.0f}"
        )
        spread = f"{r['min_us']:,.1f}-{r['max_us']:,.1f}"
        print(f"{name:44} {r['median_us']:>12,.1f} {spread:>22}  {verdict}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "cryptography": version("cryptography"),
            "pynacl": version("pynacl"),
            "msgpack": version("msgpack"),
        },
        "results": results,
        "targets_us": targets,
    }
    (RESULTS / "core.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
