"""Proofs from a log file match the in-memory ones and verify against the checkpoints the log published."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chartgate import keys
from sidecar.audit.files import LogFiles
from sidecar.audit.log import AuditLog
from sidecar.audit.merkle import consistency_proof, inclusion_proof, leaf_hash, root_of
from sidecar.audit.note import parse_signed_checkpoint
from sidecar.audit.proofs import ProofError, prove_consistency, prove_inclusion
from tests.audit.helpers import sample_body


def test_file_proofs_equal_in_memory_proofs(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        for n in range(37):
            log.append("policy.decision", sample_body(n), durable=n % 5 == 0)
    hashes = [leaf_hash(line) for line in path.read_bytes().splitlines()]

    def subtree(lo: int, hi: int) -> bytes:
        return root_of(hashes[lo:hi])

    for size in (1, 2, 7, 16, 37):
        for index in range(size):
            proof = prove_inclusion(path, index, size)
            assert list(proof.path) == inclusion_proof(index, size, subtree)
            assert proof.verify(root_of(hashes[:size]))
    for old in (1, 3, 8, 20, 37):
        proof = prove_consistency(path, old, 37)
        assert list(proof.path) == consistency_proof(old, 37, subtree)
        assert proof.verify(root_of(hashes[:old]), root_of(hashes))


def test_consistency_between_two_published_checkpoints(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        for n in range(10):
            log.append("policy.decision", sample_body(n))
    old = parse_signed_checkpoint(LogFiles(path).checkpoint.read_bytes())
    shutil.copytree(tmp_path, tmp_path.parent / "before", dirs_exist_ok=True)
    with AuditLog(path, signing_key) as log:
        for n in range(10, 25):
            log.append("policy.decision", sample_body(n))
    new = parse_signed_checkpoint(LogFiles(path).checkpoint.read_bytes())
    proof = prove_consistency(path, old.size, new.size)
    assert proof.verify(old.root, new.root)
    assert proof.to_json()["first"] == 10
    # A rewritten history under the old checkpoint is not consistent with it.
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    rewritten = prove_consistency(path, old.size, new.size)
    assert not rewritten.verify(old.root, new.root)


def test_proofs_beyond_the_log_are_refused(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        log.append("policy.decision", sample_body(0))
    with pytest.raises(ProofError, match="fewer than the tree size"):
        prove_inclusion(path, 0, 5)
    with pytest.raises(ProofError, match="fewer than the tree size"):
        prove_consistency(path, 1, 5)
    with pytest.raises(ProofError, match="not among"):
        prove_inclusion(path, 3, 2)
