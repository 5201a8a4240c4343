"""Offline verifier for the audit log: RFC 8785 canonical form, SHA-256 chain, RFC 8032 Ed25519 signatures."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc.errors import JoseError

from chartgate.keys import KeyFileError, load_public_keys
from sidecar.audit.records import (
    GENESIS_PREV,
    AuditRecord,
    RecordFormatError,
    parse_line,
    signature_valid,
)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of verifying one log file.

    records: how many records verified (all of them when ok; those before the bad one otherwise).
    first_bad_line: 1-based line number of the first bad record.
    first_bad_seq: that record's own seq, or when it cannot be read, the seq the chain expected
    at that line.
    problem: what is wrong, naming the line and seq, e.g.
    "line 5 (seq 4): bad signature: ...".
    kids: the key ids that signed the verified records, in order of first use.
    head_seq, head_sha256: the last verified record's seq and line hash; an auditor who keeps
    them can later tell whether the log was cut back below that point.
    """

    ok: bool
    records: int
    first_bad_seq: int | None
    first_bad_line: int | None
    problem: str | None
    kids: tuple[str, ...] = ()
    head_seq: int | None = None
    head_sha256: str | None = None


def verify_log(path: Path, public_keys: Mapping[str, Ed25519PublicKey]) -> VerifyResult:
    """Check every line of the log in order and stop at the first bad one.

    Per line: it ends with a newline (else torn), parses as a v1 record, is exactly its RFC 8785
    canonical form, names a known kid whose key verifies its signature, has the next seq, and its
    prev is the SHA-256 of the previous line. Signatures are checked before seq and chain, so an
    edited record is named itself rather than the record after it.

    Raises OSError if the file cannot be read. A log cut back by whole records at its end is
    still a valid log: detecting that needs a head (or checkpoint) kept from an earlier check."""
    kids: list[str] = []
    verified = 0
    prev_digest = GENESIS_PREV
    prev_seq: int | None = None
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            expected = verified  # seq starts at 0 and has no gaps, so it equals the count so far
            checked = _check_line(raw, line_no, expected, prev_seq, prev_digest, public_keys)
            if not isinstance(checked, AuditRecord):
                what, seq = checked
                named = f"seq {seq}" if seq is not None else f"expected seq {expected}"
                return VerifyResult(
                    ok=False,
                    records=verified,
                    first_bad_seq=seq if seq is not None else expected,
                    first_bad_line=line_no,
                    problem=f"line {line_no} ({named}): {what}",
                    kids=tuple(kids),
                    head_seq=prev_seq,
                    head_sha256=prev_digest if prev_seq is not None else None,
                )
            if checked.kid not in kids:
                kids.append(checked.kid)
            verified += 1
            prev_digest = checked.digest
            prev_seq = checked.seq
    return VerifyResult(
        ok=True,
        records=verified,
        first_bad_seq=None,
        first_bad_line=None,
        problem=None,
        kids=tuple(kids),
        head_seq=prev_seq,
        head_sha256=prev_digest if prev_seq is not None else None,
    )


def _check_line(
    raw: bytes,
    line_no: int,
    expected: int,
    prev_seq: int | None,
    prev_digest: str,
    public_keys: Mapping[str, Ed25519PublicKey],
) -> AuditRecord | tuple[str, int | None]:
    """The verified record, or what is wrong with the line and the record's seq if readable."""
    if not raw.endswith(b"\n"):
        return (
            f"torn last line: {len(raw)} bytes with no closing newline (a write cut off, "
            "e.g. by a crash; see docs/audit.md for recovery)",
            None,
        )
    try:
        record = parse_line(raw[:-1])
    except RecordFormatError as exc:
        return str(exc), exc.seq
    key = public_keys.get(record.kid)
    if key is None:
        known = ", ".join(sorted(public_keys)) or "none"
        return f"signed by unknown key id {record.kid!r} (known: {known})", record.seq
    if not signature_valid(record, key):
        return (
            f"bad signature: the record is not what key {record.kid!r} signed "
            "(edited record or signature)",
            record.seq,
        )
    after = f"line {line_no - 1} (seq {prev_seq})"
    if record.seq > expected:
        where = f"after {after}" if prev_seq is not None else "at the start of the log"
        missing = (
            f"seq {expected}" if record.seq == expected + 1 else f"seq {expected}..{record.seq - 1}"
        )
        return (
            f"seq gap: expected seq {expected} {where}; {missing} missing (deleted) "
            "or this record is out of order",
            record.seq,
        )
    if record.seq < expected:
        return (
            f"seq goes back: expected seq {expected} after {after}; records were reordered "
            "or this record was inserted",
            record.seq,
        )
    if record.prev != prev_digest:
        if prev_seq is None:
            return "broken chain link: the first record's prev must be 64 zeros", record.seq
        return (
            f"broken chain link: prev {record.prev[:16]}... is not the hash of {after}, "
            f"{prev_digest[:16]}...: a record before this one was edited, deleted or "
            "reordered, or this one was inserted",
            record.seq,
        )
    return record


def verify_command(log_path: Path, key_path: Path) -> int:
    """`chartgate audit verify LOG --key PUBKEY`: print a one-line result; return 0 if the log
    verifies, 1 if it does not, 2 if the key file or the log cannot be read."""
    try:
        public_keys = load_public_keys(key_path)
    except (KeyFileError, JoseError, ValueError, TypeError, KeyError) as exc:
        print(
            f"error: cannot load public key(s) from {key_path}: {exc} "
            "(expected an Ed25519 JWK or JWKS with kids)",
            file=sys.stderr,
        )
        return 2
    try:
        result = verify_log(log_path, public_keys)
    except OSError as exc:
        print(f"error: cannot read audit log {log_path}: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"FAILED at {result.problem}")
        return 1
    kids = ", ".join(result.kids) if result.kids else "(none: empty log)"
    head = (
        f"; head seq {result.head_seq} sha256 {result.head_sha256}"
        if result.head_seq is not None
        else ""
    )
    print(f"OK: {result.records} records verified, chain intact, signatures by kid(s) {kids}{head}")
    return 0
