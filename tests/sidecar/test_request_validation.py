"""The Propose request's fields beside the resource: bounded, well-formed, never echoed."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import pytest

from sidecar.errors import FieldViolation
from sidecar.validation.request import (
    MAX_EVIDENCE_REFS,
    validate_request_fields,
)


def fields(**changes: Any) -> dict[str, Any]:
    """What the demo sends (chartgate/demo.py), with a client-made key and trace id."""
    base: dict[str, Any] = {
        "idempotency_key": "demo-hr-1",
        "patient_id": "demo-patient-1",
        "encounter_id": "",
        "purpose_of_use": "TREAT",
        "on_behalf_of": "Practitioner/dr-lee",
        "model_version": "scribe-2026-10",
        "prompt_version": "p-41",
        "confidence": 0.97,
        "mode": "live",
        "evidence_refs": ["DocumentReference/abc"],
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    base.update(changes)
    return base


def problems(**changes: Any) -> dict[str, str]:
    return {v.field: v.reason for v in validate_request_fields(**fields(**changes))}


def test_ordinary_values_from_the_demo_client_tests_and_benches_pass() -> None:
    assert validate_request_fields(**fields()) == []
    # sidecar/client.py defaults: uuid4().hex key and trace id, empty optional fields.
    assert (
        validate_request_fields(
            **fields(
                idempotency_key=uuid.uuid4().hex,
                trace_id=uuid.uuid4().hex,
                on_behalf_of="",
                model_version="",
                prompt_version="",
                evidence_refs=[],
                confidence=0.0,
            )
        )
        == []
    )
    # bench/propose_latency.py, tests/e2e and tests/policy values.
    for changes in (
        {"patient_id": "p-ok", "purpose_of_use": "MLTRAINING", "mode": "batch"},
        {"idempotency_key": "invalid-resource_json.subject.reference-fhir.create"},
        {"on_behalf_of": "Practitioner/1", "confidence": 1.0, "encounter_id": "enc-1.2"},
        {"evidence_refs": ["DocumentReference/abc/_history/2", "Observation/o-1"]},
        {"on_behalf_of": "PractitionerRole/r1"},
        {"on_behalf_of": "RelatedPerson/mum"},
        {"on_behalf_of": "Patient/demo-patient-1"},
        {"on_behalf_of": "Organization/org.1"},
        {"on_behalf_of": "Device/d-1"},
        {"idempotency_key": "!" * 128, "model_version": "~" * 128, "prompt_version": "v" * 128},
    ):
        assert validate_request_fields(**fields(**changes)) == [], changes


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"idempotency_key": ""}, "idempotency_key", "input.required"),
        ({"idempotency_key": "k" * 129}, "idempotency_key", "input.too_long"),
        ({"idempotency_key": "has space"}, "idempotency_key", "input.format"),
        ({"idempotency_key": "tab\tkey"}, "idempotency_key", "input.format"),
        ({"idempotency_key": "clé"}, "idempotency_key", "input.format"),
        ({"patient_id": ""}, "patient_id", "input.required"),
        ({"patient_id": "p" * 65}, "patient_id", "input.too_long"),
        ({"patient_id": "p1/../p2"}, "patient_id", "input.format"),
        ({"patient_id": "p_1"}, "patient_id", "input.format"),
        ({"encounter_id": "e" * 65}, "encounter_id", "input.too_long"),
        ({"encounter_id": "Encounter/e1"}, "encounter_id", "input.format"),
        ({"purpose_of_use": ""}, "purpose_of_use", "input.required"),
        ({"purpose_of_use": "T" * 65}, "purpose_of_use", "input.too_long"),
        ({"purpose_of_use": "TREAT OR ELSE"}, "purpose_of_use", "input.format"),
        ({"on_behalf_of": "Practitioner/" + "x" * 100}, "on_behalf_of", "input.too_long"),
        ({"on_behalf_of": "Practitioner/" + "x" * 65}, "on_behalf_of", "input.format"),
        ({"on_behalf_of": "Group/g1"}, "on_behalf_of", "input.format"),
        ({"on_behalf_of": "practitioner/1"}, "on_behalf_of", "input.format"),
        ({"on_behalf_of": "dr-lee"}, "on_behalf_of", "input.format"),
        ({"on_behalf_of": "Practitioner/1/_history/2"}, "on_behalf_of", "input.format"),
        ({"on_behalf_of": "https://x/Practitioner/1"}, "on_behalf_of", "input.format"),
        ({"model_version": "m" * 129}, "model_version", "input.too_long"),
        ({"model_version": "gpt 5"}, "model_version", "input.format"),
        ({"prompt_version": "p\n41"}, "prompt_version", "input.format"),
        ({"confidence": -0.01}, "confidence", "input.out_of_range"),
        ({"confidence": 1.0000001}, "confidence", "input.out_of_range"),
        ({"confidence": math.nan}, "confidence", "input.out_of_range"),
        ({"confidence": math.inf}, "confidence", "input.out_of_range"),
        ({"mode": "unknown"}, "mode", "input.format"),
        ({"mode": ""}, "mode", "input.format"),
        (
            {"evidence_refs": ["DocumentReference/a"] * (MAX_EVIDENCE_REFS + 1)},
            "evidence_refs",
            "input.too_many",
        ),
        (
            {"evidence_refs": ["DocumentReference/" + "a" * 300]},
            "evidence_refs[0]",
            "input.too_long",
        ),
        ({"evidence_refs": ["ok/1", "Observation/o1"]}, "evidence_refs[0]", "input.format"),
        ({"evidence_refs": ["Observation/o1", "Observation"]}, "evidence_refs[1]", "input.format"),
        ({"evidence_refs": ["https://x/Observation/o1"]}, "evidence_refs[0]", "input.format"),
        ({"evidence_refs": ["Observation?code=1"]}, "evidence_refs[0]", "input.format"),
        ({"evidence_refs": ["#c1"]}, "evidence_refs[0]", "input.format"),
        ({"trace_id": "0" * 32}, "trace_id", "input.format"),
        ({"trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736"}, "trace_id", "input.format"),
        ({"trace_id": "4bf92f3577b34da6a3ce929d0e0e473"}, "trace_id", "input.format"),
        ({"trace_id": "4bf92f3577b34da6a3ce929d0e0e47360"}, "trace_id", "input.too_long"),
        # A test in tests/policy/test_gateway.py sends this; it is not a W3C trace-id.
        ({"trace_id": "trace-shadow-1"}, "trace_id", "input.format"),
        (
            {"trace_id": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "trace_id",
            "input.too_long",
        ),
    ],
)
def test_each_rule_names_the_field_and_a_reason(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    assert problems(**changes) == {field: reason}


def test_every_field_wrong_at_once_is_reported_field_by_field() -> None:
    found = problems(
        idempotency_key="",
        patient_id="",
        encounter_id="?",
        purpose_of_use="",
        on_behalf_of="x",
        model_version=" ",
        prompt_version=" ",
        confidence=2.0,
        mode="fast",
        evidence_refs=["x"],
        trace_id="x",
    )
    assert set(found) == {
        "idempotency_key",
        "patient_id",
        "encounter_id",
        "purpose_of_use",
        "on_behalf_of",
        "model_version",
        "prompt_version",
        "confidence",
        "mode",
        "evidence_refs[0]",
        "trace_id",
    }


def _hostile(size: int, marker: str) -> str:
    return (marker + "<script>\u202e\x00") * max(1, size // (len(marker) + 10))


def test_no_description_repeats_what_was_sent() -> None:
    marker = "PHI-Jane-Doe-HIV"
    for size in (20, 100, 10_000):
        text = _hostile(size, marker)
        violations = validate_request_fields(
            idempotency_key=text,
            patient_id=text,
            encounter_id=text,
            purpose_of_use=text,
            on_behalf_of=text,
            model_version=text,
            prompt_version=text,
            confidence=0.5,
            mode=text,
            evidence_refs=[text, text],
            trace_id=text,
        )
        assert len(violations) == 11  # every field but confidence; both evidence refs
        for violation in violations:
            assert marker not in violation.description
            assert marker not in violation.field
            assert len(violation.description) <= 200
            assert violation.reason.startswith("input.")


def test_the_worst_case_request_is_refused_fast_with_a_small_answer() -> None:
    megabyte = "A" * 1_000_000
    refs = [megabyte] * 100_000  # the same object: 100,000 one-megabyte references, cheaply
    kwargs: dict[str, Any] = {
        "idempotency_key": megabyte,
        "patient_id": megabyte,
        "encounter_id": megabyte,
        "purpose_of_use": megabyte,
        "on_behalf_of": megabyte,
        "model_version": megabyte,
        "prompt_version": megabyte,
        "confidence": math.nan,
        "mode": megabyte,
        "evidence_refs": refs,
        "trace_id": megabyte,
    }
    validate_request_fields(**kwargs)  # warm up
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        violations: list[FieldViolation] = validate_request_fields(**kwargs)
        runs.append(time.perf_counter() - start)
    # Measured at ~10-20 µs: lengths and counts are checked before any pattern, so nothing
    # here reads the megabytes. 5 ms leaves room for a loaded CI machine.
    assert sorted(runs)[len(runs) // 2] < 0.005
    assert len(violations) == 11
    assert {v.field for v in violations} >= {"evidence_refs", "patient_id", "trace_id"}
    assert sum(len(v.field) + len(v.description) for v in violations) < 3_000

    # The largest count that is allowed is still cheap: 50 references of 256 characters each.
    many = ["DocumentReference/" + "a" * 64] * MAX_EVIDENCE_REFS
    start = time.perf_counter()
    assert validate_request_fields(**fields(evidence_refs=many)) == []
    assert time.perf_counter() - start < 0.005
