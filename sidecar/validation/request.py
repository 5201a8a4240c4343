"""Bounds and formats of a Propose request's other fields (FHIR R4 id, W3C Trace Context, HL7 v3).

Every value here comes from the agent and is treated as hostile: each field's length (and the
number of evidence references) is checked before any pattern is applied, so a megabyte string
costs a `len`, and no description repeats what was sent (it may be PHI, huge, or written to
mislead whoever reads the error). docs/limits.md lists every rule and why it exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from sidecar.errors import FieldViolation

MAX_IDEMPOTENCY_KEY: Final = 128
MAX_VERSION: Final = 128
MAX_FHIR_ID: Final = 64
MAX_PURPOSE: Final = 64
MAX_EVIDENCE_REFS: Final = 50
MAX_EVIDENCE_REF: Final = 256
# Longest on_behalf_of: the longest allowed type, a slash and a 64-character id.
MAX_ON_BEHALF_OF: Final = len("PractitionerRole/") + MAX_FHIR_ID
TRACE_ID_CHARS: Final = 32

ON_BEHALF_OF_TYPES: Final = frozenset(
    {"Practitioner", "PractitionerRole", "RelatedPerson", "Patient", "Organization", "Device"}
)
MODES: Final = frozenset({"live", "batch"})

# Visible ASCII without the space: keys and versions are identifiers, and whitespace or control
# characters in them make audit records and logs ambiguous.
_VISIBLE_ASCII: Final = re.compile(r"[\x21-\x7e]*")
# FHIR R4 `id` datatype (datatypes.html#id).
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# HL7 v3 PurposeOfUse codes (TREAT, HPAYMT, MLTRAINING, ...) are short tokens of this shape.
_PURPOSE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_ON_BEHALF_OF: Final = re.compile(r"([A-Za-z]{1,32})/([A-Za-z0-9\-.]{1,64})")
# A relative literal reference (FHIR R4 references.html#literal): Type/id[/_history/version].
_RELATIVE_REFERENCE: Final = re.compile(
    r"[A-Z][A-Za-z]{0,63}/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
# W3C Trace Context trace-id: 16 bytes as 32 lower-case hex digits, not all zero (§3.2.2.3).
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE_ID: Final = "0" * TRACE_ID_CHARS

REQUIRED: Final = "input.required"
TOO_LONG: Final = "input.too_long"
TOO_MANY: Final = "input.too_many"
FORMAT: Final = "input.format"
OUT_OF_RANGE: Final = "input.out_of_range"

# What each field must be, as the descriptions say it (built once: this runs on every proposal).
_KEY_RULE: Final = (
    f"1..{MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces), the same on every retry of "
    "the same write"
)
_ID_RULE: Final = f"a FHIR id: 1..{MAX_FHIR_ID} of A-Z a-z 0-9 - ."
_PURPOSE_RULE: Final = (
    f"an HL7 v3 PurposeOfUse code, e.g. TREAT: 1..{MAX_PURPOSE} of A-Z a-z 0-9 _ . -"
)
_ON_BEHALF_OF_RULE: Final = (
    f"empty, or Type/id with Type one of {', '.join(sorted(ON_BEHALF_OF_TYPES))} and id a FHIR "
    "id, e.g. Practitioner/123"
)
_VERSION_RULE: Final = f"0..{MAX_VERSION} visible ASCII characters (no spaces)"
_EVIDENCE_RULE: Final = (
    f"a relative reference Type/id or Type/id/_history/version, at most {MAX_EVIDENCE_REF} "
    "characters, e.g. DocumentReference/abc"
)
_TRACE_RULE: Final = (
    "empty, or a W3C trace-context trace-id: 32 lower-case hex digits, not all zero"
)


def validate_request_fields(
    *,
    idempotency_key: str,
    patient_id: str,
    encounter_id: str,
    purpose_of_use: str,
    on_behalf_of: str,
    model_version: str,
    prompt_version: str,
    confidence: float,
    mode: str,
    evidence_refs: Sequence[str],
    trace_id: str,
) -> list[FieldViolation]:
    """Every violation among the request's non-resource fields; never raises for bad input."""
    found: list[FieldViolation] = []
    _idempotency_key(idempotency_key, found)
    _fhir_id("patient_id", patient_id, found, required=True)
    _fhir_id("encounter_id", encounter_id, found, required=False)
    _purpose(purpose_of_use, found)
    _on_behalf_of(on_behalf_of, found)
    _version("model_version", model_version, found)
    _version("prompt_version", prompt_version, found)
    _confidence(confidence, found)
    if mode not in MODES:
        found.append(FieldViolation("mode", "must be MODE_LIVE or MODE_BATCH", FORMAT))
    _evidence(evidence_refs, found)
    _trace_id(trace_id, found)
    return found


def _idempotency_key(value: str, found: list[FieldViolation]) -> None:
    rule = _KEY_RULE
    if not value:
        found.append(FieldViolation("idempotency_key", f"required: {rule}", REQUIRED))
    elif len(value) > MAX_IDEMPOTENCY_KEY:
        found.append(FieldViolation("idempotency_key", f"too long: {rule}", TOO_LONG))
    elif not _VISIBLE_ASCII.fullmatch(value):
        found.append(FieldViolation("idempotency_key", rule, FORMAT))


def _fhir_id(field: str, value: str, found: list[FieldViolation], *, required: bool) -> None:
    rule = _ID_RULE
    if not value:
        if required:
            found.append(FieldViolation(field, f"required: {rule}", REQUIRED))
    elif len(value) > MAX_FHIR_ID:
        found.append(FieldViolation(field, f"too long: {rule}", TOO_LONG))
    elif not _FHIR_ID.fullmatch(value):
        found.append(FieldViolation(field, rule, FORMAT))


def _purpose(value: str, found: list[FieldViolation]) -> None:
    rule = _PURPOSE_RULE
    if not value:
        found.append(FieldViolation("purpose_of_use", f"required: {rule}", REQUIRED))
    elif len(value) > MAX_PURPOSE:
        found.append(FieldViolation("purpose_of_use", f"too long: {rule}", TOO_LONG))
    elif not _PURPOSE.fullmatch(value):
        found.append(FieldViolation("purpose_of_use", rule, FORMAT))


def _on_behalf_of(value: str, found: list[FieldViolation]) -> None:
    if not value:
        return  # batch work may act for no one; policy decides whether that is allowed
    rule = _ON_BEHALF_OF_RULE
    if len(value) > MAX_ON_BEHALF_OF:
        found.append(FieldViolation("on_behalf_of", f"too long: {rule}", TOO_LONG))
        return
    match = _ON_BEHALF_OF.fullmatch(value)
    if match is None or match[1] not in ON_BEHALF_OF_TYPES:
        found.append(FieldViolation("on_behalf_of", rule, FORMAT))


def _version(field: str, value: str, found: list[FieldViolation]) -> None:
    rule = _VERSION_RULE
    if len(value) > MAX_VERSION:
        found.append(FieldViolation(field, f"too long: {rule}", TOO_LONG))
    elif value and not _VISIBLE_ASCII.fullmatch(value):
        found.append(FieldViolation(field, rule, FORMAT))


def _confidence(value: float, found: list[FieldViolation]) -> None:
    # NaN compares false with everything, so the range test alone would not catch it.
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        found.append(
            FieldViolation("confidence", "must be a finite number from 0 to 1", OUT_OF_RANGE)
        )


def _evidence(refs: Sequence[str], found: list[FieldViolation]) -> None:
    if len(refs) > MAX_EVIDENCE_REFS:
        found.append(
            FieldViolation("evidence_refs", f"at most {MAX_EVIDENCE_REFS} references", TOO_MANY)
        )
        return
    rule = _EVIDENCE_RULE
    for index, ref in enumerate(refs):
        field = f"evidence_refs[{index}]"
        if not isinstance(ref, str):
            found.append(FieldViolation(field, rule, FORMAT))
        elif len(ref) > MAX_EVIDENCE_REF:
            found.append(FieldViolation(field, f"too long: {rule}", TOO_LONG))
        elif not _RELATIVE_REFERENCE.fullmatch(ref):
            found.append(FieldViolation(field, rule, FORMAT))


def _trace_id(value: str, found: list[FieldViolation]) -> None:
    if not value:
        return
    rule = _TRACE_RULE
    if len(value) > TRACE_ID_CHARS:
        found.append(FieldViolation("trace_id", f"too long: {rule}", TOO_LONG))
    elif value == _ZERO_TRACE_ID or not _TRACE_ID.fullmatch(value):
        found.append(FieldViolation("trace_id", rule, FORMAT))
