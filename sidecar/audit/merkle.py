"""RFC 9162 §2.1 Merkle tree: hashing, a compact tree, inclusion (§2.1.3) and consistency (§2.1.4) proofs.

Leaves are audit record lines (the canonical bytes, without the newline); leaf `i` is the record
with `seq` i. Definitions used throughout (RFC 9162 §2.1.1):

    MTH({})    = SHA-256()
    MTH({d0})  = SHA-256(0x00 || d0)
    MTH(D[n])  = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])),  k the largest power of 2 < n

Proof generation (§2.1.3.1 PATH, §2.1.4.1 SUBPROOF) takes a `subtree(lo, hi) -> MTH(D[lo:hi])`
callback so the same code serves an in-memory list (tests) and a log file read once in a stream
(`sidecar.audit.proofs`); verification (§2.1.3.2, §2.1.4.2) follows the RFC's steps literally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty list (RFC 9162 §2.1.1)."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k of RFC 9162 §2.1.1: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_nodes(nodes: Sequence[bytes]) -> bytes:
    """The root of a tree given its compact range: the roots of its perfect subtrees, left to
    right, largest first (the binary digits of its size). Folding right to left reproduces the
    RFC's split at the largest power of two."""
    if not nodes:
        return EMPTY_ROOT
    root = nodes[-1]
    for left in reversed(nodes[:-1]):
        root = node_hash(left, root)
    return root


class CompactTree:
    """The right edge of a growing tree: O(log n) hashes, whatever n is.

    Appending a leaf merges equal-sized perfect subtrees like a binary counter, so `root()` at
    any size is the RFC 9162 MTH of the leaves appended so far. The writer keeps one per log
    (checkpoints without keeping leaves) and the verifier one per pass (memory flat in the log)."""

    __slots__ = ("_nodes", "_size")

    def __init__(self, nodes: Iterable[bytes] = (), size: int = 0) -> None:
        self._nodes = list(nodes)
        self._size = size
        if len(self._nodes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} nodes")

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (see leaf_hash)."""
        node = leaf
        size = self._size
        nodes = self._nodes
        while size & 1:
            node = _sha256(b"\x01" + nodes.pop() + node).digest()
            size >>= 1
        nodes.append(node)
        self._size += 1

    def append_subtree(self, root: bytes, size: int) -> None:
        """Add a perfect subtree of `size` leaves (a power of two) whose MTH is `root`; the tree's
        size must be a multiple of `size` (the subtree is aligned, as chunks of a log are)."""
        if size <= 0 or size & (size - 1) or self._size % size:
            raise ValueError(f"a subtree of {size} leaves cannot be appended at {self._size}")
        node = root
        level = self._size // size
        nodes = self._nodes
        while level & 1:
            node = node_hash(nodes.pop(), node)
            level >>= 1
        nodes.append(node)
        self._size += size

    def extend_nodes(self, nodes: Sequence[bytes], size: int) -> None:
        """Append a compact range of `size` leaves that starts at this tree's (aligned) size."""
        remaining = size
        for node in nodes:
            part = 1 << (remaining.bit_length() - 1)
            self.append_subtree(node, part)
            remaining -= part
        if remaining:
            raise ValueError("the compact range does not match its size")

    def root(self) -> bytes:
        return root_from_nodes(self._nodes)

    def copy(self) -> CompactTree:
        return CompactTree(self._nodes, self._size)


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of a list of leaf hashes."""
    tree = CompactTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root()


SubtreeHash = Callable[[int, int], bytes]
"""subtree(lo, hi) -> MTH(D[lo:hi]), for the ranges a proof needs."""


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1: the sibling subtree hashes from the leaf up."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
    # Collected from the root down; PATH lists the leaf's sibling first.
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1, for 0 < m <= n (empty when
    m == n: the roots must then simply be equal)."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while True:
        if m == hi - lo:
            if not complete:
                proof.append(subtree(lo, hi))
            break
        k = largest_power_of_two_below(hi - lo)
        if m <= k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def _lsb(n: int) -> int:
    return n & 1


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step: does `path` prove leaf hash `leaf` at `index` in the
    tree of `size` leaves whose root is `root`?"""
    if index >= size or index < 0:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step: does `path` prove the tree of `new_size` (root
    `new_root`) extends the tree of `old_size` (root `old_root`)? Equal sizes need equal roots
    and an empty path; size 0 is consistent with everything."""
    if old_size == 0:
        return not path
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not path and old_root == new_root
    if not path:
        return False
    proof = list(path)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
