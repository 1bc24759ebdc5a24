"""The Merkle tree's costs: ``python -m bench.merkle`` (prints a table, writes nothing).

Method
------
(a) ``Tree.append`` rate: a 10^6-leaf tree from leaf hashes computed beforehand,
    so that only the append (and the interior hashes it closes) is timed.
(b) ``inclusion_proof`` rate on that tree: random leaves of the full size, for
    ``--seconds / 4``.
(c) A tree of ``--size`` leaves (default 10^7, built with ``Tree.append`` from
    ``leaf_hash(i)``; its build time is printed).  One consistency proof from
    ``size - 12345`` to ``size`` and one inclusion proof are verified over and
    over for ``--seconds`` each, every verification timed alone; the median and
    the 99th percentile are printed.  Verification cost depends only on the
    proof's length (about log2 of the size), never on the tree.

Every figure is printed with the command and the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable

from caseline.crypto import merkle as M

OLD_GAP = 12345


def _timed(call: Callable[[], object], seconds: float) -> list[float]:
    """Microseconds of each call, repeated until ``seconds`` have passed."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    stop = clock() + int(seconds * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        samples.append((end - start) / 1000)
        if end >= stop:
            return samples


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def _leaf(i: int) -> bytes:
    return M.leaf_hash(i.to_bytes(8, "big"))


def _append_and_prove(small: int, seconds: float, rng: random.Random) -> list[tuple[str, str]]:
    """(a) and (b): the append rate and the inclusion proof rate of one ``small``-leaf tree."""
    hashes = [_leaf(i) for i in range(small)]
    tree = M.Tree()
    start = time.perf_counter()
    for h in hashes:
        tree.append(h)
    elapsed = time.perf_counter() - start
    samples = _timed(lambda: tree.inclusion_proof(rng.randrange(small), small), seconds)
    median = statistics.median(samples)
    return [
        (f"Tree.append, {small:,} leaves", f"{small / elapsed:,.0f} leaves/s"),
        (f"inclusion_proof, tree of {small:,}", f"{1e6 / median:,.0f} proofs/s (median {median:.1f} µs)"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.merkle", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="leaves of the big tree (default 10^7)")
    parser.add_argument("--small", type=int, default=1_000_000, help="leaves of the append/proof tree")
    parser.add_argument("--seconds", type=float, default=10.0, help="time spent verifying each proof")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    rows: list[tuple[str, str]] = []

    rows += _append_and_prove(args.small, args.seconds / 4, rng)
    big = M.Tree()
    start = time.perf_counter()
    for i in range(args.size):
        big.append(_leaf(i))
    build = time.perf_counter() - start
    rate = args.size / build
    rows.append((f"build with append, {args.size:,} leaves", f"{build:.1f} s ({rate:,.0f} leaves/s)"))

    old, new = args.size - OLD_GAP, args.size
    proof = big.consistency_proof(old, new)
    old_root, new_root = big.root(old), big.root(new)
    M.verify_consistency(old, new, old_root, new_root, proof)
    samples = _timed(lambda: M.verify_consistency(old, new, old_root, new_root, proof), args.seconds)
    rows.append(
        (
            f"verify_consistency {old:,} → {new:,} ({len(proof)} hashes)",
            f"median {statistics.median(samples):.1f} µs, p99 {_p99(samples):.1f} µs, n={len(samples):,}",
        )
    )

    index = rng.randrange(new)
    leaf, inclusion = big.leaf(index), big.inclusion_proof(index, new)
    samples = _timed(lambda: M.verify_inclusion(leaf, index, new, inclusion, new_root), args.seconds)
    rows.append(
        (
            f"verify_inclusion leaf {index:,} of {new:,} ({len(inclusion)} hashes)",
            f"median {statistics.median(samples):.1f} µs, p99 {_p99(samples):.1f} µs, n={len(samples):,}",
        )
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS of this process", f"{rss:,.0f} MiB"))

    width = max(len(name) for name, _ in rows)
    print(f"command: {sys.executable} -m bench.merkle {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
