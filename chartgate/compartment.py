"""Where each accepted resource type names its patient (FHIR R4 Patient compartment, the links used)."""

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
