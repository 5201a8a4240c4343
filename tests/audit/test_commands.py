"""`chartgate audit ...` as the command line runs it (add_audit_parser + audit_command): exit codes and output."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from chartgate import keys
from sidecar.audit.commands import add_audit_parser, audit_command
from sidecar.audit.files import LogFiles
from sidecar.audit.log import AuditLog
from tests.audit.helpers import sample_body


def cli(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="chartgate")
    add_audit_parser(parser.add_subparsers(dest="command"))
    return audit_command(parser.parse_args(["audit", *map(str, argv)]))


@pytest.fixture
def log(tmp_path: Path, signing_key: keys.SigningKey) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    with AuditLog(path, signing_key) as writer:
        for n in range(10):
            writer.append("policy.decision", {**sample_body(n), "agent": f"agent-{n % 2}"})
    return path


def test_verify_with_keyring_or_legacy_key(
    log: Path, jwks_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("verify", log, "--keyring", LogFiles(log).keyring, "--quiet") == 0
    assert capsys.readouterr().out.startswith("OK: 10 records verified")
    assert cli("verify", log, "--key", jwks_path) == 0
    assert cli("verify", log.parent, "--key", jwks_path) == 0  # a directory: its logs
    assert cli("verify", log, "--key", log.parent / "missing.json") == 2
    assert "cannot load public key" in capsys.readouterr().err


def test_checkpoint_then_verify_against_it(
    tmp_path: Path, log: Path, signing_key: keys.SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = LogFiles(log).keyring
    held = tmp_path / "held.checkpoint"
    assert cli("checkpoint", log, "--keyring", ring, "--out", held) == 0
    out = capsys.readouterr().out
    assert held.read_text() in out
    with AuditLog(log, signing_key) as writer:
        writer.append("policy.decision", sample_body(10))
    assert cli("verify", log, "--keyring", ring, "--checkpoint", held) == 0
    assert "held checkpoint: size 10, consistent" in capsys.readouterr().out
    # Cut back below what the auditor holds: named, exit 1.
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:8]))
    LogFiles(log).checkpoint.unlink()
    assert cli("verify", log, "--keyring", ring, "--checkpoint", held) == 1
    assert "[truncated]" in capsys.readouterr().out
    assert cli("checkpoint", log, "--keyring", ring) == 1  # does not verify: nothing printed


def test_unusable_held_checkpoints_are_input_errors(
    tmp_path: Path, log: Path, other_key: keys.SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.checkpoint"
    garbage.write_text("not a checkpoint")
    assert cli("verify", log, "--keyring", LogFiles(log).keyring, "--checkpoint", garbage) == 2
    assert "held checkpoint" in capsys.readouterr().err
    # A checkpoint of this log's origin signed by a key the keyring does not hold.
    stranger = tmp_path / "stranger" / "audit.jsonl"
    origin = LogFiles(log).checkpoint.read_text().splitlines()[0]
    with AuditLog(stranger, other_key, origin=origin) as writer:
        writer.append("policy.decision", sample_body(0))
    held = LogFiles(stranger).checkpoint
    assert cli("verify", log, "--keyring", LogFiles(log).keyring, "--checkpoint", held) == 2
    assert "signed by no key of the keyring" in capsys.readouterr().err


def test_prove_inclusion_and_consistency(
    tmp_path: Path, log: Path, signing_key: keys.SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = LogFiles(log).keyring
    old = tmp_path / "old.checkpoint"
    shutil.copy(LogFiles(log).checkpoint, old)
    with AuditLog(log, signing_key) as writer:
        for n in range(10, 17):
            writer.append("policy.decision", sample_body(n))
        receipt = writer.receipt(12)
    assert cli("prove", "inclusion", log, "--seq", "3", "--keyring", ring) == 0
    out = capsys.readouterr().out
    proof = json.loads(out[: out.index("\n}") + 2])
    assert proof["leaf_index"] == 3
    assert proof["tree_size"] == 17
    assert "proof verifies" in out
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(
        json.dumps(
            {
                "index": receipt.index,
                "leaf_hash": receipt.leaf_hash,
                "checkpoint": receipt.checkpoint,
            }
        )
    )
    assert cli("prove", "inclusion", log, "--receipt", receipt_file) == 0
    assert cli("prove", "consistency", log, "--old", old, "--keyring", ring) == 0
    assert '"first": 10' in capsys.readouterr().out
    # A rewritten history does not prove consistent with what was held.
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    assert cli("prove", "consistency", log, "--old", old) == 1
    assert "FAILED" in capsys.readouterr().out
    assert cli("prove", "inclusion", log, "--seq", "99") == 2


def test_search_and_export(tmp_path: Path, log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("search", log, "--agent", "agent-1") == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(found) == 5
    assert {r["body"]["agent"] for r in found} == {"agent-1"}
    assert cli("search", log, "--since", "yesterday") == 2
    out = tmp_path / "export.ndjson"
    assert (
        cli("export", log, "--format", "fhir", "--out", out, "--keyring", LogFiles(log).keyring)
        == 0
    )
    resources = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(resources) == 10
    for resource in resources:
        AuditEvent.model_validate(resource)


def test_keys_show_and_merge(
    tmp_path: Path,
    log: Path,
    other_key: keys.SigningKey,
    signing_key: keys.SigningKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other_log = tmp_path / "replica" / "audit.jsonl"
    with AuditLog(other_log, other_key) as writer:
        writer.append("policy.decision", sample_body(0))
    merged = tmp_path / "all.json"
    assert cli("keys", "merge", merged, LogFiles(log).keyring, LogFiles(other_log).keyring) == 0
    assert cli("keys", "show", merged) == 0
    out = capsys.readouterr().out
    assert signing_key.kid in out
    assert other_key.kid in out
    # The auditor's set: both writers' logs with one keyring.
    assert cli("verify", log, other_log, "--keyring", merged) == 0
    assert cli("keys", "merge", merged, LogFiles(log).keyring, LogFiles(log).keyring) == 2
    assert "duplicate kid" in capsys.readouterr().err
