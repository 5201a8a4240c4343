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
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from chartgate.canonical import CanonicalizationError, CanonicalPayload, canonicalize, sha256_hex
from chartgate.compartment import PATIENT_ELEMENT
from sidecar.errors import FieldViolation, InvalidProposal
from sidecar.validation.profiles import applicable, check_profiles
from sidecar.validation.profiles import preload as preload_profiles
from sidecar.validation.references import patient_reference_violations
from sidecar.validation.strict_json import (
    NON_JSON_CONSTANTS,
    RESOURCE_LIMITS,
    DuplicateKeyError,
    JsonLimitError,
    bounded_path,
    check_characters,
    check_limits,
    check_size,
    is_plain_name,
    loads_strict,
)

TOOLS: Final[Mapping[str, Literal["create", "update"]]] = {
    "fhir.create": "create",
    "fhir.update": "update",
}

ROOT: Final = "resource_json"

# FHIR R4 `id` datatype (datatypes.html#id).
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")

# Elements that identify the resource rather than set anything in it; never "fields set".
_NOT_FIELDS: Final = frozenset({"resourceType", "id"})

# Bounds on what one refusal reports: a hostile resource can break thousands of rules, and the
# agent needs the first few to fix it, not a response as large as its request.
MAX_MODEL_VIOLATIONS: Final = 20
MAX_DESCRIPTION: Final = 200

# pydantic's own messages are templates that never embed the input; fhir.resources adds custom
# error types, one of which ("wrong resource type") does embed the resourceType it was given.
_ECHOING_ERROR_TYPES: Final = frozenset({"fhir-validation-wrong-resource-type"})
_MALFORMED: Final = "the proposal is malformed"


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
    preload_profiles()


def validate_write(
    *,
    tool: str,
    resource_type: str,
    resource_json: str,
    patient_id: str,
    profiles: Sequence[str] | None = (),
    must_support: Collection[str] = (),
) -> ValidatedWrite:
    """Validate one proposed write; raise InvalidProposal listing every violation found.

    The resource text is hostile until shown otherwise: its size is checked before it is parsed,
    it is parsed strictly (no duplicate names, no NaN), and its depth, lengths and counts are
    bounded before anything else reads it, fhir.resources' recursive validation included.

    `profiles` and `must_support` are what the target EHR requires (docs/validation.md): `()`
    checks R4 core's required bindings and the profiles the resource claims in meta.profile;
    `None` adds the defaults (US Core where shipped, the R4 vital-signs profiles)."""
    violations: list[FieldViolation] = []
    operation = TOOLS.get(tool)
    if operation is None:
        violations.append(
            FieldViolation("tool", f"unknown tool; use one of {sorted(TOOLS)}", "input.unsupported")
        )
    if resource_type not in PATIENT_ELEMENT:
        violations.append(
            FieldViolation(
                "resource_type",
                f"this resource type is not accepted; use one of {sorted(PATIENT_ELEMENT)}",
                "input.unsupported",
            )
        )
    if not patient_id:
        violations.append(FieldViolation("patient_id", "patient_id is required", "input.required"))
    parsed = _parse(resource_json, violations)
    if parsed is None:
        raise InvalidProposal(_MALFORMED, tuple(violations))
    resource, objects = parsed
    if not isinstance(resource, dict):
        violations.append(
            FieldViolation(ROOT, "must be a JSON object (a resource)", "input.not_a_resource")
        )
        raise InvalidProposal(_MALFORMED, tuple(violations))
    if resource.get("resourceType") != resource_type:
        violations.append(
            FieldViolation(
                f"{ROOT}.resourceType",
                "must be present and equal resource_type",
                "input.type_mismatch",
            )
        )
    if violations:
        raise InvalidProposal(_MALFORMED, tuple(violations))
    assert operation is not None
    model_violations = _model_violations(resource_type, resource, partial=operation == "update")
    violations.extend(model_violations)
    if not model_violations:
        # Profiles and required value-set bindings (docs/validation.md), on a resource the model
        # accepted: they read elements by the types the model has just checked.
        violations.extend(
            check_profiles(
                resource,
                operation=operation,
                profiles=applicable(profiles, resource_type),
                must_support=must_support,
            )
        )
    resource_id = resource.get("id")
    if operation == "create" and resource_id is not None:
        violations.append(
            FieldViolation(
                f"{ROOT}.id",
                "a create must not carry an id; the server assigns it",
                "input.fhir_invalid",
            )
        )
    if operation == "update" and not (isinstance(resource_id, str) and resource_id):
        violations.append(
            FieldViolation(
                f"{ROOT}.id",
                "an update must carry the id of the resource to change",
                "input.required",
            )
        )
    elif (
        operation == "update"
        and isinstance(resource_id, str)
        and not _FHIR_ID.fullmatch(resource_id)
    ):
        # The model checks the id's characters but not its length; the id goes into the token's
        # target claim and the EHR's URL, so it is held to the R4 id datatype exactly.
        violations.append(
            FieldViolation(
                f"{ROOT}.id", "must be a FHIR id: 1..64 of A-Z a-z 0-9 - .", "input.format"
            )
        )
    references = patient_reference_violations(resource, patient_id, root=ROOT, objects=objects)
    flagged = {v.field for v in references}
    violations.extend(
        v
        for v in _patient_violations(resource_type, resource, patient_id, operation)
        if v.field not in flagged
    )
    violations.extend(references)
    if violations:
        raise InvalidProposal(_MALFORMED, tuple(violations))
    fields = fields_set(resource)
    if not fields:
        raise InvalidProposal(
            _MALFORMED,
            (FieldViolation(ROOT, "the resource sets no elements", "input.not_a_resource"),),
        )
    return ValidatedWrite(
        tool=tool,
        operation=operation,
        resource_type=resource_type,
        resource_id=resource_id if operation == "update" else None,
        # Last: canonicalizing is the dearest step after the model, and a refused write skips it.
        payload=_canonical(resource),
        fields=fields,
        summary=summarize(resource),
    )


def _parse(text: str, violations: list[FieldViolation]) -> tuple[Any, list[dict[str, Any]]] | None:
    """The resource text parsed strictly and within RESOURCE_LIMITS, with every object in it, or
    None with a violation added. Nothing here repeats the text: it may hold PHI."""
    try:
        check_size(text, RESOURCE_LIMITS, ROOT)
        value = loads_strict(text, root=ROOT)
        objects = check_limits(value, RESOURCE_LIMITS, ROOT)
        check_characters(text, value, ROOT)
    except JsonLimitError as exc:
        violations.append(FieldViolation(bounded_path(exc.path), exc.description, exc.reason))
        return None
    except DuplicateKeyError as exc:
        violations.append(
            FieldViolation(
                ROOT,
                f"an object names {exc} more than once; each member may appear once "
                "(RFC 8259 §4, I-JSON RFC 7493 §2.3)",
                "input.duplicate_key",
            )
        )
        return None
    except json.JSONDecodeError as exc:
        if exc.doc in NON_JSON_CONSTANTS:
            violations.append(
                FieldViolation(
                    ROOT, "NaN and Infinity are not JSON numbers (RFC 8259 §6)", "input.not_json"
                )
            )
            return None
        # The position, never the content. exc.msg is one of the decoder's fixed messages.
        violations.append(
            FieldViolation(
                ROOT,
                f"not valid JSON: {exc.msg[:80]} at line {exc.lineno} column {exc.colno}",
                "input.not_json",
            )
        )
        return None
    except UnicodeError:
        violations.append(FieldViolation(ROOT, "not valid UTF-8 text", "input.not_json"))
        return None
    except ValueError:
        # The one other ValueError the decoder raises: an integer literal longer than Python
        # converts (sys.get_int_max_str_digits), far beyond any JSON number.
        violations.append(
            FieldViolation(
                ROOT,
                "a number with too many digits for a JSON number (I-JSON, RFC 7493 §2.2)",
                "input.out_of_range",
            )
        )
        return None
    return value, objects


def _canonical(resource: dict[str, Any]) -> CanonicalPayload:
    """RFC 8785 bytes and digest of the parsed resource, taken once for the whole proposal."""
    try:
        canonical = canonicalize(resource)
    except CanonicalizationError:
        # check_limits and check_characters leave nothing RFC 8785 refuses; should something
        # get through, the refusal says what is expected, not what the library saw.
        raise InvalidProposal(
            _MALFORMED,
            (
                FieldViolation(
                    ROOT,
                    "not representable as I-JSON (RFC 7493): finite numbers within ±(2^53 - 1) "
                    "and Unicode text only",
                    "input.out_of_range",
                ),
            ),
        ) from None
    return CanonicalPayload(value=resource, canonical=canonical, sha256=sha256_hex(canonical))


def fields_set(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """What policy sees as the fields a write sets (`action.fields`), sorted: every top-level
    element but `resourceType` and `id`, with `meta` as `meta.<element>` for each element inside
    it (security labels, tags and profiles are policy questions of their own) and as `meta`
    when empty. `text` (narrative) is a field like any other."""
    fields: list[str] = []
    for key, value in resource.items():
        if key in _NOT_FIELDS:
            continue
        if key == "meta" and isinstance(value, dict) and value:
            fields.extend(f"meta.{element}" for element in value)
        else:
            fields.append(key)
    return tuple(sorted(fields))


def _model_violations(
    resource_type: str, resource: Mapping[str, Any], *, partial: bool
) -> list[FieldViolation]:
    """Validate against the R4B model. An update names only the elements it sets, so a required
    element it leaves out (kept as the chart has it) is not a violation there."""
    model = get_fhir_model_class(resource_type)
    contained = _contained_type_violations(resource)
    if contained:
        return contained
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        found: list[FieldViolation] = []
        for error in exc.errors(include_url=False):
            if partial and error["type"] in ("missing", "model_field_validation.missing"):
                continue
            if len(found) == MAX_MODEL_VIOLATIONS:
                found.append(
                    FieldViolation(
                        ROOT,
                        f"more than {MAX_MODEL_VIOLATIONS} problems; fix these and send again",
                        "input.too_many",
                    )
                )
                break
            found.append(
                FieldViolation(
                    bounded_path(_error_path(error["loc"])),
                    _error_description(error),
                    "input.fhir_invalid",
                )
            )
        return found
    except Exception:
        # fhir.resources raises plain KeyError/TypeError on some hostile shapes (an unknown
        # resourceType nested in a contained resource). Any failure to validate is a refusal;
        # the exception text, which can hold the input, is not passed on.
        return [
            FieldViolation(
                ROOT,
                f"not a valid FHIR R4 {resource_type} (the validator could not read it)",
                "input.fhir_invalid",
            )
        ]
    return []


def _contained_type_violations(resource: Mapping[str, Any]) -> list[FieldViolation]:
    """Each contained resource must name a FHIR resource type (fhir.resources fails with a bare
    KeyError otherwise, not a validation error naming the place)."""
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return []
    found: list[FieldViolation] = []
    for index, item in enumerate(contained):
        name = item.get("resourceType") if isinstance(item, dict) else None
        if not (isinstance(name, str) and _is_resource_type(name)):
            found.append(
                FieldViolation(
                    f"{ROOT}.contained[{index}].resourceType",
                    "must name a FHIR R4 resource type",
                    "input.fhir_invalid",
                )
            )
    return found[:MAX_MODEL_VIOLATIONS]


def _is_resource_type(name: str) -> bool:
    if not (is_plain_name(name) and name[:1].isupper()):
        return False
    try:
        get_fhir_model_class(name)
    except (KeyError, ValueError, ImportError, AttributeError):
        return False
    return True


def _error_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path; member names that are not plain element names
    (agent text, e.g. an unknown member) are not repeated."""
    path = ROOT
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif is_plain_name(part):
            path += f".{part}"
        else:
            path += ".*"
    return path


def _error_description(error: Any) -> str:
    """error["msg"], bounded, unless it may repeat the input (error["input"] is never used).

    pydantic's messages are fixed templates ("Input should be a valid string", "String should
    match pattern ..."); fhir.resources' own ("DateTime value string does not match spec regex.",
    the list of choice-type names) describe the rule. One type embeds what was sent, and a later
    library version could add more: a message that contains any string of the input is dropped."""
    kind = str(error.get("type", ""))
    msg = str(error.get("msg", ""))
    if kind in _ECHOING_ERROR_TYPES or _echoes(msg, error.get("input")):
        return f"invalid value for this element ({kind[:60]})"
    return msg if len(msg) <= MAX_DESCRIPTION else msg[: MAX_DESCRIPTION - 1] + "…"


def _echoes(msg: str, value: Any) -> bool:
    """Whether `msg` contains a string of 4 or more characters taken from `value` (its first
    100 values are looked at; shorter strings match too much ordinary text to mean anything)."""
    return any(len(text) >= 4 and text in msg for text in _strings(value, limit=100))


def _strings(value: Any, *, limit: int) -> Iterator[str]:
    stack = [value]
    seen = 0
    while stack and seen < limit:
        item = stack.pop()
        seen += 1
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _patient_violations(
    resource_type: str, resource: Mapping[str, Any], patient_id: str, operation: str
) -> list[FieldViolation]:
    """The element that binds the resource to its patient (the compartment's `subject` or
    `patient`, or a Patient's own id) must be the proposal's patient. Descriptions say what is
    expected with a placeholder; neither patient_id nor what the resource holds is repeated."""
    element = PATIENT_ELEMENT[resource_type]
    if element is None:
        if operation == "create":
            return [
                FieldViolation(
                    "resource_type",
                    "Chartgate does not create Patient resources",
                    "input.unsupported",
                )
            ]
        if resource.get("id") != patient_id:
            return [
                FieldViolation(
                    f"{ROOT}.id",
                    "a Patient update must carry id equal to patient_id",
                    "reference.other_patient",
                )
            ]
        return []
    reference = resource.get(element)
    if reference is None:
        if operation == "create":
            return [
                FieldViolation(
                    f"{ROOT}.{element}",
                    "required: must reference Patient/<patient_id>, the proposal's patient",
                    "input.required",
                )
            ]
        # An update that leaves the patient element out keeps the chart's; the adapter checks it.
        return []
    ref_text = reference.get("reference") if isinstance(reference, dict) else None
    if ref_text != f"Patient/{patient_id}":
        return [
            FieldViolation(
                f"{ROOT}.{element}.reference",
                "must be exactly Patient/<patient_id>, the proposal's patient",
                "reference.unverifiable",
            )
        ]
    return []


def _codings(value: Any) -> list[dict[str, str]]:
    """System and code of every coding in a CodeableConcept or a list of them; no display text.
    A system or code that is not a string is given as "" (policy checks types)."""
    concepts = value if isinstance(value, list) else [value]
    out: list[dict[str, str]] = []
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        codings = concept.get("coding")
        if not isinstance(codings, list):
            continue
        for coding in codings:
            if isinstance(coding, dict):
                system, code = coding.get("system"), coding.get("code")
                out.append(
                    {
                        "system": system if isinstance(system, str) else "",
                        "code": code if isinstance(code, str) else "",
                    }
                )
    return out


# Where each accepted type keeps what it is (its "code" for policy), first match wins.
_CODE_ELEMENTS: Final = ("code", "medicationCodeableConcept", "type", "vaccineCode")


def summarize(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The minimized, PHI-free summary policy sees, always with the same three keys: `status`
    (a string, "" when absent or not a string), and the system and code of the codings of
    `category` and of the resource's code (lists, empty when absent)."""
    status = resource.get("status")
    code: list[dict[str, str]] = []
    for element in _CODE_ELEMENTS:
        if element in resource:
            code = _codings(resource[element])
            break
    return {
        "status": status if isinstance(status, str) else "",
        "category": _codings(resource["category"]) if "category" in resource else [],
        "code": code,
    }
