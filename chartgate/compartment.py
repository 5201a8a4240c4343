"""Where each accepted resource type names its patient (FHIR R4 Patient compartment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# Patient itself is the patient (its id). A type not listed cannot be bound to a patient, so it is
# refused rather than guessed at.
PATIENT_ELEMENT: Final[Mapping[str, str | None]] = {
    "Patient": None,
    "Observation": "subject",
    "Condition": "subject",
    "DocumentReference": "subject",
    "MedicationRequest": "subject",
    "AllergyIntolerance": "patient",
    "Procedure": "subject",
    "Immunization": "patient",
    "ServiceRequest": "subject",
}

# Every element through which a resource of an accepted type joins a patient's compartment, per
# the R4 (4.0.1) definition (https://hl7.org/fhir/R4/compartmentdefinition-patient.html; the
# search parameters it names, as the elements they index): a write whose element here references
# patient B is in B's compartment, whoever `PATIENT_ELEMENT` names. The sidecar refuses a reference
# to any other patient anywhere in a write (sidecar/validation/references.py); this table says
# where the compartment makes that a question of whose record it is, and the tests walk it.
PATIENT_COMPARTMENT: Final[Mapping[str, tuple[str, ...]]] = {
    "Patient": ("link.other",),
    "Observation": ("subject", "performer"),
    "Condition": ("subject", "asserter"),
    "DocumentReference": ("subject", "author"),
    "MedicationRequest": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Procedure": ("subject", "performer.actor"),
    "Immunization": ("patient",),
    "ServiceRequest": ("subject", "performer"),
}


def patient_of(resource: Mapping[str, Any]) -> str | None:
    """The patient id a resource belongs to, or None when it names none (or is of an unknown type)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in PATIENT_ELEMENT:
        return None
    element = PATIENT_ELEMENT[resource_type]
    if element is None:
        value = resource.get("id")
        return value if isinstance(value, str) else None
    reference = resource.get(element)
    text = reference.get("reference") if isinstance(reference, Mapping) else None
    if isinstance(text, str) and text.startswith("Patient/") and "/" not in text[len("Patient/") :]:
        return text[len("Patient/") :]
    return None
