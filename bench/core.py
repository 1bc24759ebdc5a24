"""Micro-benchmarks of the pure protocol core: ``make bench`` (``python -m bench.core``).

Method
------
Every figure is µs per operation.  An operation runs ``loops`` times inside one
timed repeat (``time.perf_counter_ns``); there are ``REPEATS`` repeats, after one
untimed warm-up call that fills the caches (compiled content schemas, labels).
The figure is the median over the repeats, with the min–max spread beside it.
The garbage collector stays on (a client pays for it too) but is run before each
repeat so that one repeat does not pay for another's garbage.

Everything a real client would already hold — keys, certificates, verified
rosters, cases, sealed updates, nonces — is built before the clock starts, with
the deterministic ``tests.support.world.World``; the timed code is the real core.

A target that is missed is profiled with cProfile and its top functions by own
time are printed and stored.  Results go to ``bench/results/core.json`` together
with the machine and library versions they were measured on.
"""

from __future__ import annotations

import cProfile
import dataclasses
import datetime
import functools
import gc
import itertools
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from caseline.crypto import primitives as P
from caseline.crypto.caselog import CaseView, verify_receipt
from caseline.crypto.certs import TrustStore, VerifiedCert
from caseline.crypto.commits import CaseState, create_commit, verify_commit, wrap_info
from caseline.crypto.ratchet import chain_step
from caseline.crypto.updates import OpenedUpdate, open_update, verify_envelope
from caseline.schemas.content import validate_content
from caseline.schemas.wire import CommitMessage, Envelope, LogPosition, decode_signed

from tests.support.world import Broker, Device, World, note, open_case, post

PROJECT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = PROJECT / "bench" / "results"
REPEATS: Final = 7
UPDATE_BYTES: Final = 1024
CASE_ENTRIES: Final = 1000
PROFILE_TOP: Final = 5
AGENCIES: Final = ("ke-kra", "tz-tra", "ug-ura")

Op = Callable[[], object]


# --------------------------------------------------------------------------- measuring


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """One benchmark line: µs per operation for each repeat, and its target if it has one."""

    name: str
    group: str
    loops: int
    runs_us: tuple[float, ...]
    target_us: float | None = None
    note: str = ""

    @property
    def median_us(self) -> float:
        return statistics.median(self.runs_us)

    @property
    def verdict(self) -> str:
        if self.target_us is None:
            return ""
        return "PASS" if self.median_us <= self.target_us else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "loops": self.loops,
            "repeats": len(self.runs_us),
            "median_us": round(self.median_us, 2),
            "min_us": round(min(self.runs_us), 2),
            "max_us": round(max(self.runs_us), 2),
            "runs_us": [round(r, 2) for r in self.runs_us],
            "target_us": self.target_us,
            "verdict": self.verdict or None,
            "note": self.note or None,
        }


def time_loops(op: Op, *, loops: int, repeats: int = REPEATS) -> tuple[float, ...]:
    """µs per call of ``op`` for each of ``repeats`` timed loops of ``loops`` calls."""
    op()  # warm-up: compiled schemas, cached labels, first-touch allocations
    runs: list[float] = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(loops):
            op()
        runs.append((time.perf_counter_ns() - start) / loops / 1000)
    return tuple(runs)


def profile_top(op: Op, *, loops: int, top: int = PROFILE_TOP) -> list[dict[str, Any]]:
    """The ``top`` functions by own time (tottime) over ``loops`` calls, per call of ``op``."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(loops):
        op()
    profiler.disable()
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": _where(file, line, func),
            "calls_per_op": round(calls / loops, 2),
            "tottime_us_per_op": round(tottime / loops * 1e6, 1),
            "cumtime_us_per_op": round(cumtime / loops * 1e6, 1),
        }
        for (file, line, func), (_, calls, tottime, cumtime, _) in rows
    ]


def _where(file: str, line: int, func: str) -> str:
    """``folder/module.py:line(function)``, short enough to read; built-ins by name."""
    if file == "~":
        return func
    path = Path(file)
    if path.is_relative_to(PROJECT):
        path = path.relative_to(PROJECT)
    return f"{'/'.join(path.parts[-2:])}:{line}({func})"


class Bench:
    """Runs and prints benchmark lines, profiling the ones that miss their target."""

    def __init__(self) -> None:
        self.results: dict[str, Result] = {}
        self.profiles: dict[str, list[dict[str, Any]]] = {}
        self._missed: list[tuple[str, Op, int]] = []
        self._group = ""

    def group(self, title: str) -> None:
        self._group = title
        print(f"\n{title}")

    def run(self, name: str, op: Op, *, loops: int, target_us: float | None = None, note: str = "") -> Result:
        result = Result(name, self._group, loops, time_loops(op, loops=loops), target_us, note)
        self.add(result, op)
        return result

    def add(self, result: Result, op: Op | None = None) -> None:
        self.results[result.name] = result
        print(_line(result), flush=True)
        if result.verdict == "MISS" and op is not None:
            self._missed.append((result.name, op, result.loops))

    def profile_misses(self) -> None:
        if not self._missed:
            return
        print(f"\nProfile of each missed target (cProfile, top {PROFILE_TOP} by own time, µs per operation;")
        print("the profiler's own overhead inflates these figures — compare them with each other):")
        for name, op, loops in self._missed:
            rows = profile_top(op, loops=loops)
            self.profiles[name] = rows
            print(f"  {name}")
            print(f"    {'tottime':>9} {'cumtime':>9} {'calls':>7}  function")
            for row in rows:
                print(
                    f"    {row['tottime_us_per_op']:>9,.1f} {row['cumtime_us_per_op']:>9,.1f}"
                    f" {row['calls_per_op']:>7g}  {row['function']}"
                )


HEADER: Final = f"  {'operation':<50} {'loops':>5} {'median µs':>12} {'min–max µs':>23}  target"


def _line(r: Result) -> str:
    spread = f"{min(r.runs_us):,.1f}–{max(r.runs_us):,.1f}"
    target = "" if r.target_us is None else f"≤ {r.target_us:,.0f} µs  {r.verdict}"
    tail = f"  ({r.note})" if r.note else ""
    return f"  {r.name:<50} {r.loops:>5} {r.median_us:>12,.1f} {spread:>23}  {target}{tail}".rstrip()


# --------------------------------------------------------------------------- fixtures


def padded_note(size: int, label: str = "") -> bytes:
    """A valid ``note`` whose JSON is exactly ``size`` bytes."""
    head = f"{label} " if label else ""
    filler = "Consignment inspected at the border post; seals intact, manifest matches. "
    text = head + filler * (size // len(filler) + 1)
    empty = len(note(""))
    content = note(text[: size - empty])
    assert len(content) == size, len(content)
    return content


def make_world() -> World:
    world = World("bench-core")
    for agency in AGENCIES:
        world.agency(agency)
    return world


def fed_view(world: World, broker: Broker, device: Device, trust: TrustStore | None = None) -> CaseView:
    view = CaseView(trust=trust or world.trust(), me=device.keys)
    broker.feed(view)
    return view


def bench_updates(bench: Bench, world: World) -> None:
    """Items 1–3: one 1 KiB update sealed, opened, and a receipt verified; and their parts."""
    alice = world.device("ke-kra", "alice")
    bob = world.device("tz-tra", "bob")
    broker, _, _ = open_case(world, alice, [(bob, "member")])
    sender = fed_view(world, broker, alice)
    receiver = fed_view(world, broker, bob)
    content = padded_note(UPDATE_BYTES)
    nonces = itertools.cycle([world.rng(P.AEAD_NONCE_SIZE) for _ in range(512)])

    def seal() -> object:
        return sender.seal(content_type="note", content=content, now=world.now, nonce=next(nonces))

    sealed = sender.seal(content_type="note", content=content, now=world.now, nonce=world.rng(24))
    receipt = broker.append("update", sealed.envelope)
    state = receiver.state
    assert state is not None
    message_key = sealed.message_key

    def open_verify() -> OpenedUpdate:
        envelope, _ = verify_envelope(sealed.envelope, state)
        return open_update(envelope, state=state, message_key=message_key)

    assert open_verify().record.content == content
    receipt_key = state.policy.receipt_key

    bench.group("Updates (1 KiB note)")
    bench.run(
        "seal+sign 1 KiB update (CaseView.seal)",
        seal,
        loops=300,
        target_us=150,
        note="validate, sign record, ratchet, encrypt, sign envelope",
    )
    bench.run(
        "open+verify 1 KiB update",
        open_verify,
        loops=300,
        target_us=250,
        note="envelope sig, decrypt, record sig, validate",
    )
    bench.run("verify a receipt", lambda: verify_receipt(receipt, receipt_key), loops=1000)

    # Parts of the two above, to read their figures against.
    tbs = sealed.record.encode()
    seed = alice.keys.signing.seed
    sign_public, sign_secret = P.ed25519_keypair_from_seed(seed)
    signature = P.sign_labeled(sign_secret, "update", tbs)
    env_tbs, _ = decode_signed(sealed.envelope)
    chain_key = world.rng(32)
    bench.group("Parts (extra lines, no targets)")
    bench.run(
        f"Ed25519 sign, labelled ({len(tbs):,} B record)",
        lambda: P.sign_labeled(sign_secret, "update", tbs),
        loops=1000,
    )
    bench.run(
        f"Ed25519 verify, labelled ({len(tbs):,} B record)",
        lambda: P.verify_labeled(sign_public, "update", tbs, signature),
        loops=1000,
    )
    bench.run(
        f"strict codec decode of an Envelope ({len(env_tbs):,} B)",
        lambda: Envelope.decode(env_tbs),
        loops=2000,
    )
    bench.run(
        "validate 1 KiB note content (strict JSON + schema)",
        lambda: validate_content("note", content),
        loops=2000,
    )
    bench.run("ratchet chain step (HKDF-SHA256, 64 B out)", lambda: chain_step(chain_key, 7), loops=2000)

    # X-Wing HPKE of a 32-byte secret, with the info string an epoch wrap really uses.
    info = wrap_info(commit=state.commit, recipient=bob.id, recipient_kem=bob.keys.kem_public)
    secret = world.rng(32)
    wrapped = P.hpke_seal(bob.keys.kem_public, secret, info)
    assert P.hpke_open(bob.keys.kem_seed, wrapped, info) == secret
    bench.run(
        "X-Wing HPKE wrap (seal) of a 32 B secret",
        lambda: P.hpke_seal(bob.keys.kem_public, secret, info),
        loops=300,
    )
    bench.run(
        "X-Wing HPKE unwrap (open) of a 32 B secret",
        lambda: P.hpke_open(bob.keys.kem_seed, wrapped, info),
        loops=300,
        note="includes deriving the key pair from its seed",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class CommitCase:
    """A case in some state, and the next commit to create and verify against it."""

    world: World
    owner: Device
    prev: CaseState
    log: LogPosition
    roster: tuple[tuple[VerifiedCert, str], ...]
    trust: TrustStore

    def create(self) -> bytes:
        body, _ = create_commit(
            prev=self.prev,
            case_id=self.prev.case_id,
            committer=self.owner.keys,
            roster=self.roster,
            policy=self.prev.policy,
            log=self.log,
            info=None,
            now=self.world.now,
            rng=self.world.rng,
        )
        return body

    def verify(self, body: bytes) -> CaseState:
        """What a member does with the bytes: strict decode, then ``verify_commit``."""
        return verify_commit(self.prev, CommitMessage.decode(body), trust=self.trust, now=self.world.now)

    def verify_cold(self, body: bytes) -> CaseState:
        """A member that meets these certificates for the first time (an empty trust store cache)."""
        fresh = self.world.trust()
        return verify_commit(self.prev, CommitMessage.decode(body), trust=fresh, now=self.world.now)

    def create_verify(self) -> CaseState:
        return self.verify(self.create())


def commit_case(world: World, devices: int, *, joining: int) -> CommitCase:
    """A case of ``devices - joining`` members whose next commit brings the roster to ``devices``."""
    owner = world.device("ke-kra", f"owner-{devices}-{joining}")
    others = [
        world.device(AGENCIES[i % len(AGENCIES)], f"officer-{devices}-{joining}-{i}")
        for i in range(devices - 1)
    ]
    staying, joiners = others[: devices - 1 - joining], others[devices - 1 - joining :]
    broker, _, _ = open_case(world, owner, [(d, "member") for d in staying])
    trust = world.trust()
    view = fed_view(world, broker, owner, trust)
    assert view.state is not None
    roster = [(trust.verify_cert(owner.cert, at=world.now), "owner")]
    roster += [(trust.verify_cert(d.cert, at=world.now), "member") for d in staying + joiners]
    return CommitCase(world, owner, view.state, view.position(), tuple(roster), trust)


def bench_commits(bench: Bench, world: World) -> None:
    """Item 4: membership commits for 10 and 50 devices, created and verified."""
    bench.group("Membership commits (create_commit; strict decode + verify_commit)")
    for devices, joining, loops in ((10, 9, 20), (50, 49, 5), (50, 1, 5)):
        c = commit_case(world, devices, joining=joining)
        body = c.create()
        assert len(c.verify(body).members) == devices
        all_new = joining == devices - 1
        what = f"{devices} devices, all new" if all_new else f"{devices} devices, {joining} joining"
        if all_new:
            bench.run(f"commit for {what}: create", c.create, loops=loops, note=f"{len(body):,} B")
            bench.run(
                f"commit for {what}: verify",
                functools.partial(c.verify, body),
                loops=loops,
                note="certificates already checked by this trust store",
            )
            bench.run(
                f"commit for {what}: verify, first sight",
                functools.partial(c.verify_cold, body),
                loops=loops,
                note="every certificate checked from scratch",
            )
        bench.run(
            f"commit for {what}: create+verify",
            c.create_verify,
            loops=loops,
            target_us=15_000.0 if (devices, joining) == (50, 49) else None,
            note=f"{len(c.roster)} wraps; the committer checked the certificates when it chose them",
        )


def bench_case(bench: Bench, world: World) -> None:
    """Item 5: a fresh CaseView verifies a 1,000-entry case from its genesis."""
    posting = [
        world.device("ke-kra", "case-alice"),
        world.device("tz-tra", "case-bob"),
        world.device("ug-ura", "case-dave"),
        world.device("ke-kra", "case-erin"),
    ]
    reader = world.device("tz-tra", "case-carol")
    broker, _, _ = open_case(world, posting[0], [(d, "member") for d in [*posting[1:], reader]])
    trust = world.trust()
    authors = [CaseView(trust=trust, me=d.keys) for d in posting]
    for i in range(CASE_ENTRIES - 1):
        author = authors[world.rng(1)[0] % len(authors)]  # deterministic, irregular turns
        broker.feed(author)
        post(world, author, broker, padded_note(UPDATE_BYTES, f"update {i:04d}"))
    entries = list(broker.entries)
    last = len(entries) - 1
    last_receipt = broker.receipts[last]
    assert len(entries) == CASE_ENTRIES

    def verify_case() -> CaseView:
        view = CaseView(trust=trust, me=reader.keys)
        for seq, (kind, body) in enumerate(entries):
            view.apply(
                seq=seq, kind=kind, body=body, now=world.now, receipt=last_receipt if seq == last else None
            )
        return view

    view = verify_case()
    assert view.count == CASE_ENTRIES
    assert view.head == broker.head
    bench.group("Case history")
    result = bench.run(
        f"verify a {CASE_ENTRIES:,}-entry case from genesis",
        verify_case,
        loops=1,
        target_us=500_000,
        note=f"genesis + {CASE_ENTRIES - 1} 1 KiB notes from 4 senders, one receipt",
    )
    per_entry = tuple(r / CASE_ENTRIES for r in result.runs_us)
    print(f"  {'':<50} {'':>5} {statistics.median(per_entry):>12,.1f}  µs per entry")


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
    }


def libraries() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("cryptography", "pynacl", "msgpack", "fastjsonschema"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    try:
        from cryptography.hazmat.backends.openssl import backend

        out["openssl"] = backend.openssl_version_text()
    except (ImportError, AttributeError):
        out["openssl"] = None
    return out


def write_json(bench: Bench, started: float, argv: Sequence[str]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "bench.core",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "libraries": libraries(),
        "method": {
            "unit": "µs per operation",
            "statistic": "median over repeats of (timed loop / loops); min and max across repeats",
            "repeats": REPEATS,
            "timer": "time.perf_counter_ns",
            "gc": "enabled while timing, collected before each repeat",
            "argv": list(argv),
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
        "results": {name: r.as_json() for name, r in bench.results.items()},
        "profiles_of_missed_targets": bench.profiles,
    }
    path = RESULTS / "core.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main() -> None:
    started = time.perf_counter()
    info = machine()
    libs = libraries()
    print(f"caseline core micro-benchmarks — {info['python']}, {info['cpu_count']} CPUs ({info['cpu']})")
    print(
        f"cryptography {libs['cryptography']}, pynacl {libs['pynacl']}, msgpack {libs['msgpack']}; "
        f"µs per operation: median of {REPEATS} repeats, min–max across them"
    )
    print(HEADER)
    bench = Bench()
    world = make_world()
    bench_updates(bench, world)
    bench_commits(bench, world)
    bench_case(bench, world)
    bench.profile_misses()
    missed = [name for name, r in bench.results.items() if r.verdict == "MISS"]
    targets = sum(1 for r in bench.results.values() if r.target_us is not None)
    print(
        f"\nTargets: {targets - len(missed)} of {targets} met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    path = write_json(bench, started, sys.argv)
    print(
        f"Wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path} "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
