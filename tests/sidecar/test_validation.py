"""Proposal validation: every malformed write meets a violation naming the field to fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chartgate.canonical import canonicalize, sha256_hex
from sidecar.errors import InvalidProposal
from sidecar.validation.fhir import validate_write


def obs(**changes: Any) -> dict[str, Any]:
    base = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
        },
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 70},
    }
    base.update(changes)
    return base


def violations(**kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidProposal) as info:
        validate_write(**kwargs)
    return {v.field: v.description for v in info.value.violations}


def test_valid_create_is_canonicalized_once_with_fields_and_a_phi_free_summary() -> None:
    text = json.dumps(obs(), indent=4)
    write = validate_write(
        tool="fhir.create", resource_type="Observation", resource_json=text, patient_id="p1"
    )
    assert write.operation == "create"
    assert write.target == "Observation"
    assert write.payload.canonical == canonicalize(json.loads(text))
    assert write.payload.sha256 == sha256_hex(write.payload.canonical)
    assert write.fields == ("code", "status", "subject", "valueQuantity")
    assert write.summary == {
        "status": "final",
        "code": [{"system": "http://loinc.org", "code": "8867-4"}],
    }
    assert "Heart rate" not in json.dumps(write.summary)


def test_whitespace_and_key_order_do_not_change_the_hash() -> None:
    a = validate_write(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(obs()),
        patient_id="p1",
    )
    reordered = dict(reversed(list(obs().items())))
    b = validate_write(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(reordered, indent=2),
        patient_id="p1",
    )
    assert a.payload.sha256 == b.payload.sha256


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resource_json": "{"}, "resource_json"),
        ({"resource_json": "[1, 2]"}, "resource_json"),
        (
            {"resource_json": json.dumps(obs(resourceType="Condition"))},
            "resource_json.resourceType",
        ),
        ({"tool": "fhir.patch"}, "tool"),
        ({"resource_type": "Account"}, "resource_type"),
        (
            {"resource_json": json.dumps(obs(subject={"reference": "Patient/p2"}))},
            "resource_json.subject.reference",
        ),
        (
            {"resource_json": json.dumps({k: v for k, v in obs().items() if k != "subject"})},
            "resource_json.subject",
        ),
        ({"resource_json": json.dumps(obs(id="x1"))}, "resource_json.id"),
        ({"resource_json": json.dumps(obs(status="made-up", bogus=1))}, "resource_json.bogus"),
        ({"patient_id": ""}, "patient_id"),
    ],
)
def test_malformed_writes_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    args = {
        "tool": "fhir.create",
        "resource_type": "Observation",
        "resource_json": json.dumps(obs()),
        "patient_id": "p1",
        **kwargs,
    }
    assert field in violations(**args)


def test_errors_do_not_echo_the_submitted_values() -> None:
    secret = "patient says: chest pain since Tuesday"
    found = violations(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(obs(valueQuantity={"value": secret})),
        patient_id="p1",
    )
    assert found
    assert all(secret not in text for text in found.values())


def test_update_may_leave_out_required_elements_but_not_the_id() -> None:
    write = validate_write(
        tool="fhir.update",
        resource_type="Observation",
        resource_json=json.dumps({"resourceType": "Observation", "id": "o1", "status": "amended"}),
        patient_id="p1",
    )
    assert write.target == "Observation/o1"
    assert write.fields == ("status",)
    assert "resource_json.id" in violations(
        tool="fhir.update",
        resource_type="Observation",
        resource_json=json.dumps({"resourceType": "Observation", "status": "amended"}),
        patient_id="p1",
    )


def test_patient_update_must_be_the_named_patient_and_patients_are_not_created() -> None:
    assert "resource_json.id" in violations(
        tool="fhir.update",
        resource_type="Patient",
        resource_json=json.dumps({"resourceType": "Patient", "id": "p2", "active": True}),
        patient_id="p1",
    )
    assert "resource_type" in violations(
        tool="fhir.create",
        resource_type="Patient",
        resource_json=json.dumps({"resourceType": "Patient", "active": True}),
        patient_id="p1",
    )


def test_r4_instances_of_accepted_types_parse_with_the_r4b_models() -> None:
    samples = [
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/p1"},
            "code": {"text": "x"},
            "clinicalStatus": {"coding": [{"code": "active"}]},
        },
        {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": "Patient/p1"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        },
        {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}},
    ]
    for sample in samples:
        write = validate_write(
            tool="fhir.create",
            resource_type=sample["resourceType"],
            resource_json=json.dumps(sample),
            patient_id="p1",
        )
        assert write.resource_type == sample["resourceType"]
