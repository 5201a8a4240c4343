"""The writer's keys, checkpoints and receipts: rotation without stopping, the keyring it keeps, a
checkpoint after every flush, receipts an auditor turns into inclusion proofs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from chartgate import keys
from sidecar.audit.files import LogFiles
from sidecar.audit.keyring import Keyring, entry_from_public_key
from sidecar.audit.log import AuditLog, AuditLogCorrupt
from sidecar.audit.merkle import leaf_hash
from sidecar.audit.note import parse_signed_checkpoint
from sidecar.audit.proofs import prove_inclusion
from sidecar.audit.verify import verify_log
from tests.audit.helpers import sample_body, write_log


def test_rotation_under_concurrent_appends_never_signs_with_a_retired_key(
    tmp_path: Path, signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    errors: list[BaseException] = []
    with AuditLog(path, signing_key) as log:
        start = threading.Barrier(5)

        def writer(index: int) -> None:
            try:
                start.wait()
                for n in range(150):
                    log.append("policy.decision", {"thread": index, "n": n})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        start.wait()
        rotation = log.rotate(other_key)  # while the others append
        for thread in threads:
            thread.join()
    assert not errors
    assert rotation.kid == signing_key.kid  # the old key signs its own handover
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    at = rotation.seq
    assert {r["kid"] for r in records[: at + 1]} == {signing_key.kid}
    assert {r["kid"] for r in records[at + 1 :]} <= {other_key.kid}
    ring = Keyring.load(LogFiles(path).keyring)
    assert ring.keys[signing_key.kid].retired_at == rotation.ts
    assert ring.keys[other_key.kid].not_before == rotation.ts
    result = verify_log(path, ring)
    assert result.ok, result.faults
    assert result.kids == (signing_key.kid, other_key.kid)
    # The last checkpoint is signed by the new key.
    checkpoint = parse_signed_checkpoint(LogFiles(path).checkpoint.read_bytes())
    assert checkpoint.signed_by(checkpoint.origin, other_key.public_key) is True


def test_opening_with_a_retired_key_is_refused(
    tmp_path: Path, signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key) as log:
        log.append("policy.decision", sample_body(0))
        log.rotate(other_key)
    with pytest.raises(AuditLogCorrupt, match="retired"):
        AuditLog(path, signing_key)


def test_a_checkpoint_is_published_after_every_flush(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key, origin="chartgate.example/audit/a") as log:
        for n in range(3):
            log.append("policy.decision", sample_body(n))
            published = parse_signed_checkpoint(LogFiles(path).checkpoint.read_bytes())
            assert published.size == n + 1
            assert published.origin == "chartgate.example/audit/a"
        assert log.origin == "chartgate.example/audit/a"
    with pytest.raises(AuditLogCorrupt, match="a new origin is a new log"):
        AuditLog(path, signing_key, origin="chartgate.example/audit/b")


def test_receipts_prove_inclusion(tmp_path: Path, signing_key: keys.SigningKey) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, signing_key, checkpoint_every=3600) as log:
        records = [log.append("policy.decision", sample_body(n)) for n in range(9)]
        receipt = log.receipt(records[4])
        later = log.receipt(8)
    checkpoint = parse_signed_checkpoint(receipt.checkpoint)
    assert receipt.index == 4
    assert checkpoint.size >= 5
    assert receipt.leaf_hash == leaf_hash(records[4].line).hex()
    assert checkpoint.signed_by(receipt.origin, signing_key.public_key) is True
    proof = prove_inclusion(path, receipt.index, checkpoint.size)
    assert proof.leaf.hex() == receipt.leaf_hash
    assert proof.verify(checkpoint.root)
    assert later.size == 9
    with pytest.raises(ValueError, match="no record"):
        AuditLog(path, signing_key).receipt(99)


def test_a_log_from_before_keyrings_is_continued_with_its_key_window(
    tmp_path: Path, signing_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path, signing_key, 3)
    LogFiles(path).keyring.unlink()
    LogFiles(path).checkpoint.unlink()
    with AuditLog(path, signing_key) as log:
        log.append("policy.decision", sample_body(3))
    ring = Keyring.load(LogFiles(path).keyring)
    assert ring.keys[signing_key.kid].not_before == json.loads(lines[0])["ts"]
    assert verify_log(path, ring).ok


def test_a_tail_signed_by_an_unknown_key_needs_it_trusted(
    tmp_path: Path, signing_key: keys.SigningKey, other_key: keys.SigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, signing_key, 2)
    LogFiles(path).keyring.unlink()
    LogFiles(path).checkpoint.unlink()
    with pytest.raises(AuditLogCorrupt, match="not in the keyring"):
        AuditLog(path, other_key)
    trusted = entry_from_public_key(signing_key.public_key, signing_key.kid)
    with AuditLog(path, other_key, trusted=[trusted]) as log:
        assert log.append("policy.decision", sample_body(9)).seq == 3  # after the rotation record
