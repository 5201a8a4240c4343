"""A write may reference no patient but the proposal's: every form of Patient reference, anywhere."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from chartgate.compartment import PATIENT_COMPARTMENT, PATIENT_ELEMENT
from sidecar.errors import FieldViolation, InvalidProposal
from sidecar.validation.fhir import validate_write
from sidecar.validation.references import MAX_REPORTED, patient_reference_violations

PATIENT = "p1"
# Distinctive, so a description that repeats it is caught.
OTHER = "zz-other-4242"


def ref(target: str, **extra: Any) -> dict[str, Any]:
    return {"reference": target, **extra}


def observation(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": ref(f"Patient/{PATIENT}"),
        "valueQuantity": {"value": 70},
    }
    base.update(changes)
    return base


def refused(resource: dict[str, Any], **kwargs: Any) -> list[FieldViolation]:
    tool = kwargs.pop("tool", "fhir.create")
    with pytest.raises(InvalidProposal) as info:
        validate_write(
            tool=tool,
            resource_type=resource["resourceType"],
            resource_json=json.dumps(resource),
            patient_id=PATIENT,
            **kwargs,
        )
    return list(info.value.violations)


def accepted(resource: dict[str, Any], tool: str = "fhir.create") -> None:
    validate_write(
        tool=tool,
        resource_type=resource["resourceType"],
        resource_json=json.dumps(resource),
        patient_id=PATIENT,
    )


def by_field(violations: list[FieldViolation]) -> dict[str, str]:
    return {v.field: v.reason for v in violations}


# One valid resource per accepted type, and for each R4 Patient-compartment link element how to
# point it at a patient: (resource, {link element: (path of the reference, setter)}).
def _compartment_cases() -> list[tuple[str, str, dict[str, Any], str]]:
    own = ref(f"Patient/{PATIENT}")
    bases: dict[str, dict[str, Any]] = {
        "Observation": observation(),
        "Condition": {"resourceType": "Condition", "subject": own, "code": {"text": "x"}},
        "DocumentReference": {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": own,
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        },
        "MedicationRequest": {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {"text": "x"},
            "subject": own,
        },
        "AllergyIntolerance": {"resourceType": "AllergyIntolerance", "patient": own},
        "Procedure": {"resourceType": "Procedure", "status": "completed", "subject": own},
        "Immunization": {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"text": "x"},
            "patient": own,
            "occurrenceDateTime": "2026-01-01",
        },
        "ServiceRequest": {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "subject": own,
        },
        "Patient": {"resourceType": "Patient", "id": PATIENT, "active": True},
    }
    other = ref(f"Patient/{OTHER}")
    # How each link element holds its reference, and the path the violation must name.
    shapes: dict[str, tuple[Any, str]] = {
        "subject": (other, "subject.reference"),
        "patient": (other, "patient.reference"),
        "performer": ([other], "performer[0].reference"),
        "asserter": (other, "asserter.reference"),
        "recorder": (other, "recorder.reference"),
        "author": ([other], "author[0].reference"),
        "performer.actor": ([{"actor": other}], "performer[0].actor.reference"),
        "link.other": ([{"other": other, "type": "seealso"}], "link[0].other.reference"),
    }
    cases = []
    for resource_type, links in PATIENT_COMPARTMENT.items():
        for link in links:
            value, path = shapes[link]
            resource = copy.deepcopy(bases[resource_type])
            resource[link.split(".")[0]] = value
            tool = "fhir.update" if resource_type == "Patient" else "fhir.create"
            cases.append((tool, link, resource, f"resource_json.{path}"))
    return cases


@pytest.mark.parametrize(
    ("tool", "link", "resource", "path"),
    _compartment_cases(),
    ids=[f"{c[2]['resourceType']}.{c[1]}" for c in _compartment_cases()],
)
def test_every_patient_compartment_link_to_another_patient_is_refused(
    tool: str, link: str, resource: dict[str, Any], path: str
) -> None:
    violations = refused(resource, tool=tool)
    assert by_field(violations).get(path) == "reference.other_patient", violations
    # The compartment-element check and the reference walk report the same place once.
    assert [v.field for v in violations].count(path) == 1
    assert all(OTHER not in v.description for v in violations)


def test_the_compartment_table_covers_every_accepted_type() -> None:
    assert set(PATIENT_COMPARTMENT) == set(PATIENT_ELEMENT)
    for resource_type, element in PATIENT_ELEMENT.items():
        if element is not None:
            assert element in PATIENT_COMPARTMENT[resource_type]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"performer": [ref(f"Patient/{OTHER}")]}, "resource_json.performer[0].reference"),
        ({"focus": [ref(f"Patient/{OTHER}")]}, "resource_json.focus[0].reference"),
        ({"derivedFrom": [ref(f"Patient/{OTHER}")]}, "resource_json.derivedFrom[0].reference"),
        ({"hasMember": [ref(f"Patient/{OTHER}")]}, "resource_json.hasMember[0].reference"),
        (
            {"note": [{"authorReference": ref(f"Patient/{OTHER}"), "text": "n"}]},
            "resource_json.note[0].authorReference.reference",
        ),
        (
            {"extension": [{"url": "http://x/e", "valueReference": ref(f"Patient/{OTHER}")}]},
            "resource_json.extension[0].valueReference.reference",
        ),
        (
            {"performer": [ref(f"Patient/{OTHER}/_history/3")]},
            "resource_json.performer[0].reference",
        ),
        (
            {"performer": [ref(f"https://ehr.example/fhir/Patient/{OTHER}")]},
            "resource_json.performer[0].reference",
        ),
        (
            {"performer": [ref(f"http://ehr.example/r4/Patient/{OTHER}/_history/1")]},
            "resource_json.performer[0].reference",
        ),
    ],
    ids=[
        "performer",
        "focus",
        "derivedFrom",
        "hasMember",
        "note-author",
        "extension",
        "versioned",
        "absolute",
        "absolute-versioned",
    ],
)
def test_a_reference_to_another_patient_anywhere_is_refused(
    changes: dict[str, Any], path: str
) -> None:
    violations = refused(observation(**changes))
    assert by_field(violations) == {path: "reference.other_patient"}
    assert all(OTHER not in v.description and len(v.description) <= 200 for v in violations)


@pytest.mark.parametrize(
    ("performer", "reason"),
    [
        (ref(f"Patient?identifier=http://mrn|{OTHER}"), "reference.unverifiable"),
        (ref("Patient?name=smith", type="Patient"), "reference.unverifiable"),
        (
            {"type": "Patient", "identifier": {"system": "mrn", "value": OTHER}},
            "reference.unverifiable",
        ),
        (
            {
                "type": "http://hl7.org/fhir/StructureDefinition/Patient",
                "identifier": {"value": OTHER},
            },
            "reference.unverifiable",
        ),
        (
            ref("urn:uuid:0b8a1c4e-7e2f-4a36-9d0c-3f7c1f1e2a11", type="Patient"),
            "reference.unverifiable",
        ),
        (ref("urn:oid:1.2.3.4"), "reference.unverifiable"),
        (ref(f"https://other.example/fhir/Patient/{PATIENT}"), "reference.unverifiable"),
        (ref(f"patient/{OTHER}"), "reference.unverifiable"),
        (ref(f"PATIENT/{PATIENT}"), "reference.unverifiable"),
        (ref(f"Patient/{PATIENT}/"), "reference.unverifiable"),
        (ref(f"/Patient/{OTHER}"), "reference.unverifiable"),
        (ref(f" Patient/{OTHER}"), "reference.unverifiable"),
        (ref("Patient/p%31"), "reference.unverifiable"),
        (ref("Pati%65nt/p1"), "reference.unverifiable"),
        (ref("Patient"), "reference.unverifiable"),
        (ref("Practitioner/dr-1", type="Patient"), "reference.unverifiable"),
    ],
    ids=[
        "conditional",
        "conditional-typed",
        "logical",
        "logical-absolute-type",
        "urn-uuid-typed",
        "urn-oid-untyped",
        "absolute-same-id",
        "lower-case-type",
        "upper-case-type",
        "trailing-slash",
        "leading-slash",
        "leading-space",
        "percent-encoded-id",
        "percent-encoded-type",
        "no-id",
        "type-conflict",
    ],
)
def test_a_patient_reference_that_cannot_be_checked_is_refused(
    performer: dict[str, Any], reason: str
) -> None:
    violations = refused(observation(performer=[performer]))
    reasons = {v.reason for v in violations}
    assert reasons == {reason}, violations
    assert all(v.field.startswith("resource_json.performer[0]") for v in violations)
    assert all(OTHER not in v.description for v in violations)


@pytest.mark.parametrize(
    "performer",
    [
        ref(f"Patient/{PATIENT}"),
        ref(f"Patient/{PATIENT}/_history/7"),
        ref("Practitioner/dr-lee"),
        ref("Practitioner/patient-liaison"),
        ref("PractitionerRole/r1", display="Patient services desk"),
        {
            "type": "Practitioner",
            "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1"},
        },
        {"display": "the night nurse"},
        ref("urn:uuid:0b8a1c4e-7e2f-4a36-9d0c-3f7c1f1e2a11", type="Practitioner"),
        ref(f"Observation?subject=Patient/{OTHER}"),
        ref("Organization/o1"),
    ],
    ids=[
        "own",
        "own-versioned",
        "practitioner",
        "id-mentions-patient",
        "display-mentions-patient",
        "logical-practitioner",
        "display-only",
        "urn-typed-other",
        "conditional-other-type",
        "organization",
    ],
)
def test_references_to_the_patient_or_to_other_types_pass(performer: dict[str, Any]) -> None:
    accepted(observation(performer=[performer]))


def test_contained_patients_are_refused_with_the_local_references_to_them() -> None:
    violations = refused(
        observation(
            contained=[{"resourceType": "Patient", "id": "c1", "active": True}],
            performer=[ref("#c1")],
        )
    )
    assert by_field(violations) == {
        "resource_json.contained[0]": "reference.contained_patient",
        "resource_json.performer[0].reference": "reference.contained_patient",
    }
    # Unreferenced, a contained Patient is still refused (FHIR dom-3 aside, it names a patient).
    unreferenced = refused(
        observation(contained=[{"resourceType": "Patient", "id": "c1", "active": True}])
    )
    assert {v.reason for v in unreferenced} == {"reference.contained_patient"}


def test_local_references_must_resolve_and_contained_resources_are_walked() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "c1", "active": True}
    accepted(observation(contained=[practitioner], performer=[ref("#c1")]))
    dangling = refused(observation(performer=[ref("#nowhere")]))
    assert by_field(dangling) == {"resource_json.performer[0].reference": "input.fhir_invalid"}
    # A reference inside a contained resource names a patient just the same.
    role = {
        "resourceType": "PractitionerRole",
        "id": "c2",
        "practitioner": ref(f"Patient/{OTHER}"),
    }
    inside = patient_reference_violations(
        observation(contained=[role], performer=[ref("#c2")]), PATIENT
    )
    assert [(v.field, v.reason) for v in inside] == [
        ("resource_json.contained[0].practitioner.reference", "reference.other_patient")
    ]


def test_subject_of_another_kind_or_missing_is_still_refused() -> None:
    assert by_field(refused(observation(subject=ref("Group/g1")))) == {
        "resource_json.subject.reference": "reference.unverifiable"
    }
    no_subject = observation()
    del no_subject["subject"]
    assert by_field(refused(no_subject)) == {"resource_json.subject": "input.required"}


def test_a_patient_update_may_not_link_or_become_another_patient() -> None:
    own = {"resourceType": "Patient", "id": PATIENT}
    other_id = refused({**own, "id": OTHER, "active": True}, tool="fhir.update")
    assert by_field(other_id) == {"resource_json.id": "reference.other_patient"}
    assert all(OTHER not in v.description for v in other_id)
    accepted(
        {**own, "link": [{"other": ref(f"Patient/{PATIENT}"), "type": "seealso"}]},
        tool="fhir.update",
    )


def test_the_walk_is_iterative_and_reports_a_bounded_number_in_document_order() -> None:
    deep: dict[str, Any] = {"reference": f"Patient/{OTHER}"}
    for _ in range(20_000):  # far past the interpreter's recursion limit
        deep = {"extension": [deep]}
    found = patient_reference_violations({"resourceType": "Observation", "x": deep}, PATIENT)
    assert len(found) == 1
    assert found[0].reason == "reference.other_patient"
    assert len(found[0].field) <= 200

    many = observation(performer=[ref(f"Patient/{OTHER}-{i}") for i in range(500)])
    found = patient_reference_violations(many, PATIENT)
    assert len(found) == MAX_REPORTED
    assert [v.field for v in found[:3]] == [
        "resource_json.performer[0].reference",
        "resource_json.performer[1].reference",
        "resource_json.performer[2].reference",
    ]


def test_member_names_that_are_not_element_names_are_not_repeated_in_paths() -> None:
    secret = "name with spaces and PHI"
    found = patient_reference_violations(
        {"resourceType": "Observation", secret: {"reference": f"Patient/{OTHER}"}}, PATIENT
    )
    assert [v.field for v in found] == ["resource_json.*.reference"]


def test_objects_from_check_limits_give_the_same_answer_as_a_walk() -> None:
    from sidecar.validation.strict_json import RESOURCE_LIMITS, check_limits

    resource = observation(
        performer=[ref(f"Patient/{OTHER}")],
        note=[{"authorReference": ref("Patient?x=1"), "text": "n"}],
    )
    objects = check_limits(resource, RESOURCE_LIMITS, "resource_json")
    assert patient_reference_violations(
        resource, PATIENT, objects=objects
    ) == patient_reference_violations(resource, PATIENT)
