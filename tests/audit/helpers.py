"""Helpers for the audit log tests: sidecar-like bodies and writing real log files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from chartgate import keys
from sidecar.audit.log import AuditLog


def sample_body(n: int) -> dict[str, Any]:
    """The kind of body the sidecar writes: identifiers and hashes only."""
    return {
        "proposal_id": f"prop-{n:04d}",
        "patient": "demo-patient-1",
        "tenant": "demo-tenant",
        "payload_sha256": hashlib.sha256(f"payload {n}".encode()).hexdigest(),
        "allow": n % 2 == 0,
        "reasons": [{"code": "needs_approval", "rule": "tier.approval"}],
    }


def write_log(path: Path, key: keys.SigningKey, count: int) -> list[bytes]:
    """Append `count` records and return the file's lines (without newlines)."""
    with AuditLog(path, key) as log:
        for n in range(count):
            log.append("policy.decision", sample_body(n))
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
