"""RFC 9162 §2.1: tree hashes against the RFC 6962 test vectors and the recursive definition; every
inclusion and consistency proof of small trees verifies, and altered ones do not."""

from __future__ import annotations

import hashlib

import pytest

from sidecar.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    consistency_proof,
    inclusion_proof,
    largest_power_of_two_below,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency test tree (RFC 6962 reference code): leaf data and the root of
# the tree of the first n leaves.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def mth(data: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, literally: the recursive definition over leaf data."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def leaves(n: int) -> list[bytes]:
    return [f"record {i}".encode() for i in range(n)]


def subtree_of(data: list[bytes]):  # type: ignore[no-untyped-def]
    return lambda lo, hi: mth(data[lo:hi])


def test_ct_vectors() -> None:
    tree = CompactTree()
    assert tree.root() == EMPTY_ROOT
    for leaf, expected in zip(CT_LEAVES, CT_ROOTS, strict=True):
        tree.append(leaf_hash(leaf))
        assert tree.root().hex() == expected


def test_compact_tree_equals_the_recursive_definition() -> None:
    data = leaves(70)
    tree = CompactTree()
    for n in range(71):
        assert tree.root() == mth(data[:n]), n
        assert len(tree.nodes) == n.bit_count()
        if n < 70:
            tree.append(leaf_hash(data[n]))


def test_aligned_subtrees_and_compact_ranges_join() -> None:
    data = leaves(45)
    hashes = [leaf_hash(d) for d in data]
    joined = CompactTree()
    joined.append_subtree(mth(data[:32]), 32)
    joined.append_subtree(mth(data[32:40]), 8)
    rest = CompactTree()
    for h in hashes[40:]:
        rest.append(h)
    joined.extend_nodes(rest.nodes, rest.size)
    assert joined.root() == root_of(hashes) == mth(data)
    with pytest.raises(ValueError, match="cannot be appended"):
        joined.append_subtree(mth(data[:4]), 4)  # 45 is not a multiple of 4


def test_largest_power_of_two_below() -> None:
    assert [largest_power_of_two_below(n) for n in (2, 3, 4, 5, 8, 9, 1025)] == [
        1,
        2,
        2,
        4,
        4,
        8,
        1024,
    ]


@pytest.mark.parametrize("size", range(1, 34))
def test_every_inclusion_proof_verifies(size: int) -> None:
    data = leaves(size)
    root = mth(data)
    for index in range(size):
        path = inclusion_proof(index, size, subtree_of(data))
        leaf = leaf_hash(data[index])
        assert verify_inclusion(index, size, leaf, path, root), (index, size)
        # The wrong leaf, index, root or path does not verify.
        assert not verify_inclusion(index, size, leaf_hash(b"other"), path, root)
        if size > 1:
            assert not verify_inclusion(index, size, leaf, path, leaf)
            assert not verify_inclusion((index + 1) % size, size, leaf, path, root)
            bent = [*path]
            bent[0] = node_hash(bent[0], bent[0])
            assert not verify_inclusion(index, size, leaf, bent, root)
            assert not verify_inclusion(index, size, leaf, path[:-1], root)
        assert not verify_inclusion(index, size, leaf, [*path, root], root)
    assert not verify_inclusion(size, size, leaf_hash(b"x"), [], root)


@pytest.mark.parametrize("new", range(1, 34))
def test_every_consistency_proof_verifies(new: int) -> None:
    data = leaves(new)
    new_root = mth(data)
    for old in range(1, new + 1):
        old_root = mth(data[:old])
        path = consistency_proof(old, new, subtree_of(data))
        assert verify_consistency(old, new, old_root, new_root, path), (old, new)
        if old < new:
            # Another history of the first `old` records is not consistent.
            forked = mth([b"forged", *data[1:old]])
            assert not verify_consistency(old, new, forked, new_root, path)
            assert not verify_consistency(old, new, old_root, forked, path)
            assert not verify_consistency(old, new, old_root, new_root, path[:-1])
            assert not verify_consistency(old, new, old_root, new_root, [])
    assert verify_consistency(0, new, EMPTY_ROOT, new_root, [])
    assert not verify_consistency(new, new - 1, new_root, new_root, [])


def test_proofs_refuse_impossible_ranges() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(3, 3, subtree_of(leaves(3)))
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(0, 3, subtree_of(leaves(3)))
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(4, 3, subtree_of(leaves(3)))
