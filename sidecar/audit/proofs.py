"""RFC 9162 inclusion (§2.1.3) and consistency (§2.1.4) proofs from a log file in one streaming pass, and their JSON."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.audit.files import read_lines
from sidecar.audit.merkle import (
    CompactTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)


class ProofError(ValueError):
    """A proof cannot be made (the log is shorter than asked) or does not verify."""


def _ranges(build: Callable[[Callable[[int, int], bytes]], list[bytes]]) -> list[tuple[int, int]]:
    wanted: list[tuple[int, int]] = []

    def record(lo: int, hi: int) -> bytes:
        wanted.append((lo, hi))
        return b""

    build(record)
    return wanted


def subtree_hashes(
    path: Path, ranges: list[tuple[int, int]]
) -> tuple[dict[tuple[int, int], bytes], dict[int, bytes], int]:
    """MTH of each (disjoint) range of leaves, and the leaf hash of each single-leaf range
    start, read in one pass with one compact tree per range: memory is O(log n) whatever the
    log's length. Returns (hashes by range, leaf hashes by index, lines read)."""
    order = sorted(ranges)
    hashes: dict[tuple[int, int], bytes] = {}
    leaves: dict[int, bytes] = {}
    position = 0
    tree = CompactTree()
    lines = 0
    with path.open("rb", buffering=1024 * 1024) as handle:
        for raw in read_lines(handle):
            lines += 1
            while position < len(order) and raw.index >= order[position][1]:
                position += 1
                tree = CompactTree()
            if position >= len(order):
                continue
            lo, hi = order[position]
            if raw.index < lo:
                continue
            leaf = raw.leaf if raw.leaf is not None else leaf_hash(raw.data)
            tree.append(leaf)
            if hi - lo == 1:
                leaves[lo] = leaf
            if raw.index == hi - 1:
                hashes[(lo, hi)] = tree.root()
    return hashes, leaves, lines


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 9162 §2.1.3: leaf `index` (its hash `leaf`) is in the tree of `size` leaves."""

    index: int
    size: int
    leaf: bytes
    path: tuple[bytes, ...]

    def verify(self, root: bytes) -> bool:
        return verify_inclusion(self.index, self.size, self.leaf, self.path, root)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "inclusion",
            "leaf_index": self.index,
            "tree_size": self.size,
            "leaf_hash": _b64(self.leaf),
            "inclusion_path": [_b64(h) for h in self.path],
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4: the tree of `new_size` leaves extends the tree of `old_size`."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]

    def verify(self, old_root: bytes, new_root: bytes) -> bool:
        return verify_consistency(self.old_size, self.new_size, old_root, new_root, self.path)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "consistency",
            "first": self.old_size,
            "second": self.new_size,
            "consistency_path": [_b64(h) for h in self.path],
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prove_inclusion(path: Path, index: int, size: int) -> InclusionProof:
    """The inclusion proof of record `index` in the log's first `size` records."""
    if not 0 <= index < size:
        raise ProofError(f"record {index} is not among the first {size}")
    wanted = _ranges(lambda f: inclusion_proof(index, size, f))
    hashes, leaves, lines = subtree_hashes(path, [*wanted, (index, index + 1)])
    if lines < size:
        raise ProofError(f"the log holds {lines} records, fewer than the tree size {size}")
    proof = inclusion_proof(index, size, lambda lo, hi: hashes[(lo, hi)])
    return InclusionProof(index, size, leaves[index], tuple(proof))


def prove_consistency(path: Path, old_size: int, new_size: int) -> ConsistencyProof:
    """The consistency proof from the log's first `old_size` records to its first `new_size`."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to {new_size}")
    wanted = _ranges(lambda f: consistency_proof(old_size, new_size, f))
    hashes, _, lines = subtree_hashes(path, wanted)
    if lines < new_size:
        raise ProofError(f"the log holds {lines} records, fewer than the tree size {new_size}")
    proof = consistency_proof(old_size, new_size, lambda lo, hi: hashes[(lo, hi)])
    return ConsistencyProof(old_size, new_size, tuple(proof))
