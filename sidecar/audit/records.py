"""Audit record format v1: one RFC 8785 canonical JSON object per line, SHA-256 chained, RFC 8032 Ed25519 signed."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chartgate.canonical import (
    CanonicalizationError,
    canonicalize,
    sha256_hex,
)

FORMAT_VERSION = 1
GENESIS_PREV = "0" * 64
"""The `prev` of the record with seq 0: there is no line before it to hash."""

# Records carry identifiers and hashes. These caps are not a PHI detector (nothing can be); they
# make pasting a note, a payload or a document into an audit body fail loudly in development
# instead of quietly putting clinical text into a log that is exported to auditors.
MAX_STRING_CHARS = 1024
MAX_LINE_BYTES = 16 * 1024
# What the caller-supplied head may take: prev, seq, sig, ts and v with their names fit in 256.
MAX_HEAD_BYTES = MAX_LINE_BYTES - 256

# Nesting a record may have: the record object, its body, and 14 levels inside the body. Bounded
# on both sides (append refuses deeper bodies; the verifier names a deeper line a fault before
# parsing it), so a hostile line can never exhaust the parser's recursion.
MAX_BODY_DEPTH = 14
MAX_RECORD_DEPTH = MAX_BODY_DEPTH + 2

FIELDS = frozenset({"v", "seq", "ts", "kind", "prev", "kid", "body", "sig"})

_KIND_RE = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*")
_MAX_KIND_CHARS = 64
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
# An Ed25519 signature is 64 bytes: 86 base64url characters without padding.
_SIG_RE = re.compile(r"[A-Za-z0-9_-]{86}")
# 64 bytes in 86 base64url characters leave 4 unused bits in the last one, which must be zero:
# only A, Q, g and w spell it canonically (so a signature has one spelling; RFC 4648 §3.5).
_CANONICAL_SIG_RE = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")
# Integers JSON numbers (IEEE 754 doubles) carry exactly; RFC 8785 refuses the rest.
_INT_MAX = 2**53 - 1
_INT_MIN = -_INT_MAX


class RecordFormatError(ValueError):
    """A line is not a well-formed v1 audit record. `seq` is the record's own seq when it could be
    read, so a verifier can still name the record; `code` names the kind of fault (`oversized`,
    `too-deep`, `encoding`, `unparseable`, `wrong-fields`, `bad-field`, `not-canonical`)."""

    def __init__(self, message: str, seq: int | None = None, code: str = "unparseable") -> None:
        super().__init__(message)
        self.seq = seq
        self.code = code


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record as written: its fields, the exact line bytes (no newline) and their SHA-256,
    which is the next record's `prev`."""

    v: int
    seq: int
    ts: str
    kind: str
    prev: str
    kid: str
    body: Mapping[str, Any]
    sig: str
    line: bytes
    digest: str

    def signing_input(self) -> bytes:
        """The canonical bytes of this record without `sig`: what the signature covers.

        RFC 8785 serializes members independently in sorted key order, and `sig` sorts between
        `seq` and `ts`, so a canonical line always ends `,"sig":"S","ts":"T","v":1}`; dropping
        the `sig` member from the bytes gives exactly the canonical form without it, with no
        second canonicalization."""
        signed_tail = _tail(self.sig, self.ts)
        if not self.line.endswith(signed_tail):
            raise RecordFormatError("line does not end with the sig, ts and v members", self.seq)
        return self.line[: -len(signed_tail)] + _tail(None, self.ts)


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with microseconds, e.g. 2025-01-31T09:30:00.123456Z."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_kind(kind: str) -> None:
    """A kind is a short dotted lower-case name such as `policy.decision`."""
    if not isinstance(kind, str) or len(kind) > _MAX_KIND_CHARS or not _KIND_RE.fullmatch(kind):
        raise ValueError(
            f"audit kind {kind!r} must be a dotted lower-case name like 'policy.decision' "
            f"(at most {_MAX_KIND_CHARS} characters)"
        )


def _checked_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as a dict after checking it holds only JSON values (str, int, float, bool, None,
    list, dict with str keys), no string longer than MAX_STRING_CHARS and no integer beyond what
    JSON numbers carry exactly (2^53 - 1).

    Raises ValueError naming the offending path. Bytes, tuples, dataclasses, datetimes and so on
    are refused rather than converted: the caller decides what identifier or hash to record."""
    if not isinstance(body, Mapping):
        raise ValueError(f"audit body must be a mapping, not {type(body).__name__}")
    clean = dict(body)
    # The usual body (exact built-in types, short strings) passes the quick walk, which builds
    # no error paths; anything else takes the full walk, which decides and explains.
    if not _quickly_valid(clean, 1):
        _check_value(clean, "body", 1)
    return clean


def _quickly_valid(value: Any, depth: int) -> bool:
    """True only where _check_value(value, ...) accepts: the same conditions on exact types,
    without building the path of every member (False sends the value to the full walk)."""
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_STRING_CHARS
    # Loops, not all(genexpr): measured ~1 µs cheaper per record on the Propose path.
    if kind is dict:
        if depth > MAX_BODY_DEPTH:
            return False
        for key, item in value.items():  # noqa: SIM110
            if type(key) is not str or not _quickly_valid(item, depth + 1):
                return False
        return True
    if kind is list:
        if depth > MAX_BODY_DEPTH:
            return False
        for item in value:  # noqa: SIM110
            if not _quickly_valid(item, depth + 1):
                return False
        return True
    if value is None or kind is bool:
        return True
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if kind is float:
        return math.isfinite(value)
    return False


def _check_value(value: Any, path: str, depth: int) -> None:
    """Validate one value, raising ValueError that names its path."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"{path}: integer {value} is beyond 2^53 - 1, which JSON cannot carry")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: non-finite float {value!r} has no JSON form")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise ValueError(
                f"{path}: string of {len(value)} characters is longer than {MAX_STRING_CHARS}; "
                "audit records hold identifiers and hashes, never clinical text or payloads"
            )
        return
    if isinstance(value, list | dict) and depth > MAX_BODY_DEPTH:
        raise ValueError(
            f"{path}: nested deeper than {MAX_BODY_DEPTH} levels; audit bodies are flat records "
            "of identifiers"
        )
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: key {key!r} is not a string")
            _check_value(item, f"{path}[{key!r}]", depth + 1)
        return
    raise ValueError(
        f"{path}: {type(value).__name__} is not allowed in an audit body "
        "(only str, int, float, bool, None, list, dict: pass identifiers and hashes)"
    )


def encode_head(body: Mapping[str, Any], kid: str, kind: str) -> tuple[dict[str, Any], bytes]:
    """Check the body (see _checked_body) and canonicalize the caller-supplied part of a record
    (`body`, `kid`, `kind`: the members that sort before `prev`). Returns the checked body and
    those canonical bytes without the closing brace.

    This is the one canonicalization per record, and it needs nothing from the chain, so the
    appender runs it outside its lock (`canonicalize` takes the stdlib encoder's shortcut on
    the usual ids and hashes). The remaining members (`prev`, `seq`, `sig`, `ts`, `v`) are hex,
    an integer, base64url and a fixed-format ASCII timestamp, whose canonical form is the plain
    text, so they are appended as bytes. The verifier re-canonicalizes every line with the same
    `canonicalize` (for its speed, docs/audit.md): the stdlib shortcut is taken only where it
    provably equals RFC 8785, and tests hold it to `reference_canonicalize` on random documents;
    a verifier written elsewhere checks the bytes against RFC 8785 independently."""
    clean = _checked_body(body)
    try:
        whole = canonicalize({"body": clean, "kid": kid, "kind": kind})
    except (CanonicalizationError, UnicodeEncodeError) as exc:
        raise ValueError(f"audit record cannot be canonicalized: {exc}") from exc
    return clean, whole[:-1]


def _tail(sig: str | None, ts: str) -> bytes:
    signed = f',"sig":"{sig}"' if sig is not None else ""
    return f'{signed},"ts":"{ts}","v":{FORMAT_VERSION}}}'.encode("ascii")


def _middle(prev: str, seq: int) -> bytes:
    return f',"prev":"{prev}","seq":{seq}'.encode("ascii")


def seal(
    head: bytes,
    *,
    body: Mapping[str, Any],
    kind: str,
    kid: str,
    prev: str,
    seq: int,
    ts: str,
    key: Ed25519PrivateKey,
) -> AuditRecord:
    """Finish a record from its canonical head: chain it to `prev`, sign it, return it with the
    exact line bytes to write."""
    middle = _middle(prev, seq)
    signature = key.sign(head + middle + _tail(None, ts))
    sig = b64url_encode(signature)
    line = head + middle + _tail(sig, ts)
    return AuditRecord(
        v=FORMAT_VERSION,
        seq=seq,
        ts=ts,
        kind=kind,
        prev=prev,
        kid=kid,
        body=body,
        sig=sig,
        line=line,
        digest=sha256_hex(line),
    )


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 section 5), as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of b64url_encode: only the one canonical spelling of the bytes is accepted,
    so a signature cannot be altered in its unused low bits and still verify."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {exc}") from exc
    if b64url_encode(data) != text:
        raise ValueError("not the canonical base64url spelling")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_nesting_exceeds(data: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than `limit`, decided without parsing
    it (a parser recursing into hostile input is what this guards). Brackets inside strings do
    not count; the text need not be valid JSON. Linear: one step per quote, backslash or
    bracket, and none at all when the text has fewer brackets than the limit."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _SPECIAL_RE.finditer(data):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue  # this character is escaped by the backslash before it
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


_SPECIAL_RE = re.compile(rb'["\\\[\]{}]')


def parse_line(line: bytes) -> AuditRecord:
    """Parse one line (without its newline) into a record, checking every field's form and that the
    line is exactly the RFC 8785 canonical form of what it holds. Does not check the signature or
    the chain: that needs keys and the previous line (see sidecar.audit.verify).

    Bounded before parsing: a line longer than MAX_LINE_BYTES or nested deeper than
    MAX_RECORD_DEPTH is a fault, never a parse. The canonical form is checked with
    `chartgate.canonical.canonicalize`: the stdlib encoder where it provably gives the RFC 8785
    bytes (tests/test_canonical.py holds it to the `rfc8785` reference), the reference
    otherwise; it costs 6 µs a record where the reference alone costs 25 (docs/audit.md)."""
    if not line:
        raise RecordFormatError("unparseable line: empty")
    if len(line) > MAX_LINE_BYTES:
        raise RecordFormatError(
            f"line of {len(line)} bytes is longer than the {MAX_LINE_BYTES}-byte limit",
            code="oversized",
        )
    if json_nesting_exceeds(line, MAX_RECORD_DEPTH):
        raise RecordFormatError(
            f"JSON nested deeper than {MAX_RECORD_DEPTH} levels", code="too-deep"
        )
    try:
        value = json.loads(line, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise RecordFormatError(
            f"not UTF-8 ({exc.reason} at byte {exc.start})", code="encoding"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise RecordFormatError(f"unparseable line: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise RecordFormatError(f"unparseable line: a JSON {type(value).__name__}, not an object")
    raw_seq = value.get("seq")
    seq = raw_seq if isinstance(raw_seq, int) and not isinstance(raw_seq, bool) else None
    keys = set(value)
    if keys != FIELDS:
        missing = ", ".join(sorted(FIELDS - keys)) or "none"
        extra = ", ".join(sorted(keys - FIELDS))[:200] or "none"
        raise RecordFormatError(
            f"wrong fields (missing: {missing}; unexpected: {extra})", seq, "wrong-fields"
        )
    problem = _field_problem(value)
    if problem:
        raise RecordFormatError(problem, seq, "bad-field")
    try:
        canonical = canonicalize(value)
    except (CanonicalizationError, UnicodeEncodeError) as exc:
        raise RecordFormatError(
            f"not canonical JSON (RFC 8785): {exc}", seq, "not-canonical"
        ) from exc
    if canonical != line:
        raise RecordFormatError(
            "not canonical JSON (RFC 8785): the line was re-encoded", seq, "not-canonical"
        )
    return AuditRecord(
        v=value["v"],
        seq=value["seq"],
        ts=value["ts"],
        kind=value["kind"],
        prev=value["prev"],
        kid=value["kid"],
        body=value["body"],
        sig=value["sig"],
        line=line,
        digest=sha256_hex(line),
    )


def _field_problem(value: dict[str, Any]) -> str | None:
    version = value["v"]
    if isinstance(version, bool) or version != FORMAT_VERSION or not isinstance(version, int):
        return f"unsupported format version {version!r} (this verifier reads v{FORMAT_VERSION})"
    seq = value["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return f"seq {seq!r} is not a non-negative integer"
    ts = value["ts"]
    if not isinstance(ts, str) or not _TS_RE.fullmatch(ts):
        return f"ts {ts!r} is not an RFC 3339 UTC timestamp with microseconds"
    try:
        datetime.fromisoformat(ts)
    except ValueError:
        return f"ts {ts!r} is not a valid date and time"
    kind = value["kind"]
    if not isinstance(kind, str) or not kind:
        return f"kind {kind!r} is not a non-empty string"
    prev = value["prev"]
    if not isinstance(prev, str) or not _HEX64_RE.fullmatch(prev):
        return "prev is not 64 lower-case hex digits"
    kid = value["kid"]
    if not isinstance(kid, str) or not kid:
        return f"kid {kid!r} is not a non-empty string"
    if not isinstance(value["body"], dict):
        return "body is not a JSON object"
    sig = value["sig"]
    if not isinstance(sig, str) or not _SIG_RE.fullmatch(sig):
        return "sig is not an 86-character base64url Ed25519 signature"
    if not _CANONICAL_SIG_RE.fullmatch(sig):
        return "sig is malformed: not the canonical base64url spelling"
    return None


def signature_valid(record: AuditRecord, public_key: Ed25519PublicKey) -> bool:
    """Whether `sig` is the RFC 8032 Ed25519 signature of the record's signing input under key."""
    try:
        # parse_line checked the canonical spelling; this decode cannot be lenient about it.
        raw = base64.urlsafe_b64decode(record.sig + "==")
        public_key.verify(raw, record.signing_input())
    except (InvalidSignature, ValueError):
        return False
    return True
