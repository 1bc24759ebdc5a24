"""RFC 9162 Merkle trees: the broker's append-only tree, its proofs, and their verifiers.

Theory of operation
-------------------
The witnessed log (DESIGN.md, "Next shape") is one RFC 9162 §2.1 tree over every
accepted entry.  Hashing is domain-separated so that a leaf can never pass for an
interior node: ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) =
SHA-256(0x01 || l || r)``, and the empty tree's root is ``SHA-256("")``.

``Tree`` keeps, for each level ``k``, the hashes of the *complete, aligned*
subtrees of ``2**k`` leaves in one ``bytearray`` (32 bytes a node, about 64 bytes
a leaf in all).  Those are exactly the nodes that never change once written, so
appending only ever adds bytes, and rolling back a failed write is a truncation
of every level.  Any node the RFC's recursive definition needs for a tree of
``size`` leaves is either one of those stored nodes (an O(1) slice) or lies on
that tree's right edge, whose hash folds at most ``log2(size)`` stored nodes.
That is why the broker can serve proofs for *any* past size, not only the
current one, without keeping old trees.

The verifiers follow the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2.  They
take everything from untrusted data, so they check lengths and ranges first and
raise ``IntegrityError``; they never return a bool (a caller cannot forget to
look).  Proof *generation* is called by the broker with parameters it has
already validated, so a bad argument there is a programming error: ``ValueError``.

Hashes are public (they are what a log publishes), so comparisons need not be
constant-time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from caseline.schemas.errors import IntegrityError

HASH_SIZE: Final = 32
EMPTY_ROOT: Final[bytes] = hashlib.sha256(b"").digest()
#: The most hashes any proof may hold (tlog-witness caps consistency proofs at 63).
MAX_PROOF: Final = 63

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf's bytes, prefixed so that it cannot equal a node's."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node from its children's hashes."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH straight from RFC 9162's recursive definition, for tests and small trees.

    Deliberately the naive recursion, so that it is an independent check of
    ``Tree``'s stored-node arithmetic.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


class Tree:
    """Complete aligned subtrees per level in bytearrays (64 bytes per leaf in all).

    Level ``k`` holds node ``j`` (the hash of leaves ``j*2**k`` to
    ``(j+1)*2**k - 1``) at bytes ``32*j`` to ``32*j + 31``, and has exactly
    ``size >> k`` nodes.  Not thread-safe: the broker's single writer owns it.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @property
    def size(self) -> int:
        """How many leaves the tree holds."""
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Add one leaf hash and return its index; O(1) hashes amortised, O(log n) at worst.

        Every complete subtree the new leaf closes is hashed now and stored for good.
        """
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        levels = self._levels
        index = self._size
        levels[0] += leaf_hash
        i, k, h = index, 0, leaf_hash
        while i & 1:
            level = levels[k]
            h = hashlib.sha256(_NODE_PREFIX + level[(i - 1) * HASH_SIZE : i * HASH_SIZE] + h).digest()
            k += 1
            if k == len(levels):
                levels.append(bytearray())
            levels[k] += h
            i >>= 1
        self._size = index + 1
        return index

    def truncate(self, size: int) -> None:
        """Forget every leaf from ``size`` on: the rollback after a failed write."""
        if not 0 <= size <= self._size:
            raise ValueError(f"cannot truncate a tree of {self._size} leaves to {size}")
        for k, level in enumerate(self._levels):
            del level[(size >> k) * HASH_SIZE :]
        while len(self._levels) > 1 and not self._levels[-1]:
            self._levels.pop()
        self._size = size

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree of the first ``size`` leaves (default: all of them)."""
        if size is None:
            size = self._size
        self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._range(0, size)

    def leaf(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        if not 0 <= index < self._size:
            raise ValueError(f"no leaf {index} in a tree of {self._size}")
        return self._node(0, index)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), the deepest sibling first."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"no leaf {index} in a tree of {size}")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """``inclusion_proof(i, size)`` for every ``i`` of ``indices``, the same hashes.

        The leaves of one group commit are neighbours, so their paths share most
        of their siblings (the right-edge ranges above all, the dearest to hash):
        each distinct sibling range is hashed once for the whole batch.
        """
        self._check_size(size)
        memo: dict[tuple[int, int], bytes] = {}
        proofs: list[list[bytes]] = []
        for index in indices:
            if not 0 <= index < size:
                raise ValueError(f"no leaf {index} in a tree of {size}")
            path: list[bytes] = []
            lo, hi = 0, size
            while hi - lo > 1:
                k = _split(hi - lo)
                if index < lo + k:
                    a, b = lo + k, hi
                    hi = lo + k
                else:
                    a, b = lo, lo + k
                    lo += k
                h = memo.get((a, b))
                if h is None:
                    h = memo[a, b] = self._range(a, b)
                path.append(h)
            path.reverse()
            proofs.append(path)
        return proofs

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(old, D[0:new]); empty when ``old`` is 0 or equals ``new``.

        The RFC leaves old = 0 undefined; every tree extends the empty one, so
        its proof is empty (as tlog-witness expects).
        """
        self._check_size(new)
        if not 0 <= old <= new:
            raise ValueError(f"no consistency proof from {old} to {new}")
        path: list[bytes] = []
        if old in (0, new):
            return path
        lo, hi = 0, new
        whole_old_tree = True  # the RFC's flag b: the old tree's root is known to the verifier
        while True:
            n, m = hi - lo, old - lo
            if m == n:
                if not whole_old_tree:
                    path.append(self._range(lo, hi))
                break
            k = _split(n)
            if m <= k:
                path.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range(lo, lo + k))
                lo += k
                whole_old_tree = False
        path.reverse()
        return path

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"no tree of {size} leaves: the tree holds {self._size}")

    def _node(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range the RFC's recursion produces (``lo`` aligned, hi > lo).

        Such a range splits into complete aligned subtrees of decreasing size (the
        set bits of ``hi - lo``); the RFC's hash folds them from the right.
        """
        width = hi - lo
        parts: list[bytes] = []
        for k in range(width.bit_length() - 1, -1, -1):
            if width >> k & 1:
                parts.append(self._node(k, lo >> k))
                lo += 1 << k
        acc = parts.pop()
        while parts:
            acc = node_hash(parts.pop(), acc)
        return acc


# --------------------------------------------------------------------------- verification


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise IntegrityError(f"{what} is not a 32-byte hash")


def _check_proof(proof: Sequence[bytes], expected: int, what: str) -> None:
    if len(proof) > MAX_PROOF:
        raise IntegrityError(f"{what} proof has {len(proof)} hashes, more than {MAX_PROOF}")
    if len(proof) != expected:
        raise IntegrityError(f"{what} proof has {len(proof)} hashes, not {expected}")
    for p in proof:
        _check_hash(p, f"a {what} proof element")


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in PATH(index, D[size]).

    One per level below the point where the paths to ``index`` and to the last
    leaf part, plus one per left sibling on the shared path above it.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` makes of leaf ``index`` in a tree of ``size`` (RFC 9162 §2.1.3.2).

    Raises ``IntegrityError`` when the arguments cannot describe any tree; the
    caller still has to compare the result with a root it trusts.
    """
    if not 0 <= index < size:
        raise IntegrityError(f"leaf index {index} is not inside a tree of {size}")
    _check_hash(leaf_hash, "the leaf hash")
    _check_proof(proof, _inclusion_length(index, size), "inclusion")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:  # unreachable with the length checked above; kept as the RFC's guard
            raise IntegrityError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("inclusion proof is too short")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves whose root is ``root``."""
    _check_hash(root, "the root")
    if root_from_inclusion(leaf_hash, index, size, proof) != root:
        raise IntegrityError(f"inclusion proof for leaf {index} does not lead to the tree of {size}'s root")


def _consistency_length(old: int, new: int) -> int:
    """Hashes in PROOF(old, D[new]) for 0 < old < new."""
    shift = (old & -old).bit_length() - 1  # the old tree's last complete subtree sits at this level
    index = (old - 1) >> shift
    return _inclusion_length(index, ((new - 1) >> shift) + 1) + (1 if index else 0)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` leaves and root ``new_root`` extends the older one.

    RFC 9162 §2.1.4.2.  An empty old tree is extended by every tree (the proof
    must then be empty); equal sizes need an empty proof and equal roots.
    """
    if not 0 <= old_size <= new_size:
        raise IntegrityError(f"a tree of {new_size} leaves cannot extend one of {old_size}")
    _check_hash(old_root, "the old root")
    _check_hash(new_root, "the new root")
    if old_size in (0, new_size):
        _check_proof(proof, 0, "consistency")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise IntegrityError("the empty tree's root is SHA-256 of nothing")
        if old_size == new_size and old_root != new_root:
            raise IntegrityError(f"two different roots for the tree of {old_size} leaves")
        return
    _check_proof(proof, _consistency_length(old_size, new_size), "consistency")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is one complete subtree: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable with the length checked above; kept as the RFC's guard
            raise IntegrityError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("consistency proof is too short")
    if fr != old_root:
        raise IntegrityError(f"consistency proof does not lead to the tree of {old_size}'s root")
    if sr != new_root:
        raise IntegrityError(f"consistency proof does not lead to the tree of {new_size}'s root")
