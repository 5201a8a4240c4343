"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and the SHA-256 digests taken over it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import rfc8785


class CanonicalizationError(ValueError):
    """The value cannot be put in RFC 8785 form (e.g. a non-finite number or an integer out of range)."""


# Integers a JSON number (IEEE 754 double) carries exactly; RFC 8785 refuses the rest.
_INT_MAX = 2**53 - 1

# The stdlib's C encoder, set up to give RFC 8785 bytes on the values `stdlib_agrees` accepts: it
# escapes exactly what RFC 8785 escapes (", \ and U+0000-U+001F, with the same short forms and
# lower-case \u00xx), prints integers and such floats as RFC 8785 does (rfc8785 itself starts
# from repr), and sorts keys by code point, which is UTF-16 order for keys below U+D800.
_STDLIB_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def stdlib_agrees(value: Any) -> bool:
    """Whether the stdlib encoder gives the RFC 8785 bytes of `value`: exact built-in types only,
    integers within 2^53 - 1, finite non-zero floats whose repr has no exponent and no trailing
    `.0`, object keys below U+D800 (lone surrogates in strings are caught when encoding)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(key) < "\ud800"):
                return False
            if not stdlib_agrees(item):
                return False
        return True
    if kind is list:
        for item in value:  # noqa: SIM110 - a loop, not all(genexpr): this runs per proposal
            if not stdlib_agrees(item):
                return False
        return True
    if kind is int:
        return bool(-_INT_MAX <= value <= _INT_MAX)
    if kind is float:
        if value == 0 or not math.isfinite(value):
            return False
        text = repr(value)
        return "e" not in text and not text.endswith(".0")
    return False


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON-compatible value.

    `rfc8785` is pure Python (20-110 µs for a small resource, on every proposal's path); on the
    usual values, where the stdlib C encoder provably gives the same bytes, that encoder is used
    (a few µs). Anything else, and every error, goes through `reference_canonicalize`."""
    if stdlib_agrees(value):
        try:
            return _STDLIB_ENCODER.encode(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the reference says what is wrong
            pass
    return reference_canonicalize(value)


def reference_canonicalize(value: Any) -> bytes:
    """RFC 8785 bytes from the `rfc8785` library alone: the yardstick the tests hold the shortcut
    of `canonicalize` to (the audit verifier uses `canonicalize` itself, for speed)."""
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
