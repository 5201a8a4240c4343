"""Validate a proposed FHIR write with fhir.resources (R4B models) and bind it to one patient.

R4B (4.3.0) versus R4 (4.0.1) for the resource types accepted here: the R4B release changed the
medication-definition family (MedicinalProductDefinition and friends), added Evidence and
Subscription topic resources and reworked some definitional resources; Patient, Observation,
Condition, DocumentReference, MedicationRequest, AllergyIntolerance, Procedure, Immunization and
ServiceRequest keep the R4 element set, so an R4 instance of them parses with the R4B model. The
FHIR store we write to speaks R4 (fhirVersion 4.0.1); the R4B models are used for validation only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from chartgate.canonical import CanonicalizationError, CanonicalPayload
from chartgate.compartment import PATIENT_ELEMENT
from sidecar.errors import FieldViolation, InvalidProposal

TOOLS: Final[Mapping[str, str]] = {"fhir.create": "create", "fhir.update": "update"}

# Elements that describe the resource rather than set clinical data; not "fields touched".
_NON_FIELDS: Final = frozenset({"resourceType", "id", "meta", "text"})


@dataclass(frozen=True, slots=True)
class ValidatedWrite:
    """A proposal that passed validation: what to write, canonicalized once, and what it touches."""

    tool: str
    operation: str
    resource_type: str
    resource_id: str | None
    payload: CanonicalPayload
    fields: tuple[str, ...]
    summary: Mapping[str, Any]

    @property
    def target(self) -> str:
        """`Type` for a create, `Type/id` for an update (the token's target claim)."""
        if self.resource_id is None:
            return self.resource_type
        return f"{self.resource_type}/{self.resource_id}"


def preload_models() -> None:
    """Import every accepted model once at start-up, so the first proposal does not pay for it."""
    for resource_type in PATIENT_ELEMENT:
        get_fhir_model_class(resource_type)


def validate_write(
    *, tool: str, resource_type: str, resource_json: str, patient_id: str
) -> ValidatedWrite:
    """Validate one proposed write; raise InvalidProposal listing every violation found."""
    violations: list[FieldViolation] = []
    operation = TOOLS.get(tool)
    if operation is None:
        violations.append(
            FieldViolation("tool", f"unknown tool {tool!r}; use one of {sorted(TOOLS)}")
        )
    if resource_type not in PATIENT_ELEMENT:
        violations.append(
            FieldViolation(
                "resource_type",
                f"resource type {resource_type!r} is not accepted; use one of "
                f"{sorted(PATIENT_ELEMENT)}",
            )
        )
    if not patient_id:
        violations.append(FieldViolation("patient_id", "patient_id is required"))
    try:
        payload = CanonicalPayload.from_json_text(resource_json)
    except json.JSONDecodeError as exc:
        # The position, never the content: the text may hold PHI.
        violations.append(
            FieldViolation(
                "resource_json",
                f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            )
        )
        raise InvalidProposal("the proposal is malformed", tuple(violations)) from None
    except CanonicalizationError as exc:
        violations.append(FieldViolation("resource_json", f"not representable as I-JSON: {exc}"))
        raise InvalidProposal("the proposal is malformed", tuple(violations)) from None
    resource = payload.value
    if not isinstance(resource, dict):
        violations.append(FieldViolation("resource_json", "must be a JSON object (a resource)"))
        raise InvalidProposal("the proposal is malformed", tuple(violations))
    declared = resource.get("resourceType")
    if declared != resource_type:
        violations.append(
            FieldViolation(
                "resource_json.resourceType",
                f"resourceType {declared!r} does not match resource_type {resource_type!r}",
            )
        )
    if violations:
        raise InvalidProposal("the proposal is malformed", tuple(violations))
    assert operation is not None
    violations.extend(_model_violations(resource_type, resource, partial=operation == "update"))
    resource_id = resource.get("id")
    if operation == "create" and resource_id is not None:
        violations.append(
            FieldViolation(
                "resource_json.id", "a create must not carry an id; the server assigns it"
            )
        )
    if operation == "update" and not (isinstance(resource_id, str) and resource_id):
        violations.append(
            FieldViolation(
                "resource_json.id", "an update must carry the id of the resource to change"
            )
        )
    violations.extend(_patient_violations(resource_type, resource, patient_id, operation))
    if violations:
        raise InvalidProposal("the proposal is malformed", tuple(violations))
    fields = tuple(sorted(k for k in resource if k not in _NON_FIELDS))
    if not fields:
        raise InvalidProposal(
            "the proposal is malformed",
            (FieldViolation("resource_json", "the resource sets no elements"),),
        )
    return ValidatedWrite(
        tool=tool,
        operation=operation,
        resource_type=resource_type,
        resource_id=resource_id if operation == "update" else None,
        payload=payload,
        fields=fields,
        summary=summarize(resource),
    )


def _model_violations(
    resource_type: str, resource: Mapping[str, Any], *, partial: bool
) -> list[FieldViolation]:
    """Validate against the R4B model. An update names only the elements it sets, so a required
    element it leaves out (kept as the chart has it) is not a violation there."""
    model = get_fhir_model_class(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            if partial and error["type"] == "missing":
                continue
            path = ".".join(str(part) for part in error["loc"])
            # error["msg"] describes the rule broken; error["input"] (the value) is left out: PHI.
            found.append(FieldViolation(f"resource_json.{path}", error["msg"]))
        return found
    return []


def _patient_violations(
    resource_type: str, resource: Mapping[str, Any], patient_id: str, operation: str
) -> list[FieldViolation]:
    """The resource must be about the patient the proposal names, and no other."""
    element = PATIENT_ELEMENT[resource_type]
    if element is None:
        if operation == "create":
            return [FieldViolation("resource_type", "Chartgate does not create Patient resources")]
        if resource.get("id") != patient_id:
            return [FieldViolation("resource_json.id", "Patient id differs from patient_id")]
        return []
    reference = resource.get(element)
    expected = f"Patient/{patient_id}"
    if reference is None:
        if operation == "create":
            return [FieldViolation(f"resource_json.{element}", f"must reference {expected}")]
        # An update that leaves the patient element out keeps the chart's; the adapter checks it.
        return []
    ref_text = reference.get("reference") if isinstance(reference, dict) else None
    if ref_text != expected:
        return [
            FieldViolation(
                f"resource_json.{element}.reference",
                f"the resource is for another patient than patient_id; expected {expected}",
            )
        ]
    return []


def _codings(value: Any) -> list[dict[str, str]]:
    """System and code of every coding in a CodeableConcept or a list of them; no display text."""
    concepts = value if isinstance(value, list) else [value]
    out: list[dict[str, str]] = []
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding", []) or []:
            if isinstance(coding, dict):
                out.append(
                    {"system": str(coding.get("system", "")), "code": str(coding.get("code", ""))}
                )
    return out


def summarize(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The minimized, PHI-free summary policy sees: status and category/code codings."""
    summary: dict[str, Any] = {}
    status = resource.get("status")
    if isinstance(status, str):
        summary["status"] = status
    if "category" in resource:
        summary["category"] = _codings(resource["category"])
    for element in ("code", "medicationCodeableConcept", "type", "vaccineCode"):
        if element in resource:
            summary["code"] = _codings(resource[element])
            break
    return summary
