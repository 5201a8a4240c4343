"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and the SHA-256 digests taken over it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import rfc8785


class CanonicalizationError(ValueError):
    """The value cannot be put in RFC 8785 form (e.g. a non-finite number or an integer out of range)."""


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON-compatible value."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(str(exc)) from exc


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class CanonicalPayload:
    """A JSON payload canonicalized once, with its bytes and digest kept for reuse on the hot path."""

    value: Any
    canonical: bytes
    sha256: str

    @classmethod
    def from_json_text(cls, text: str | bytes) -> CanonicalPayload:
        """Parse JSON text (RFC 8259) and canonicalize it. Raises json.JSONDecodeError or
        CanonicalizationError."""
        value = json.loads(text)
        canonical = canonicalize(value)
        return cls(value=value, canonical=canonical, sha256=sha256_hex(canonical))
