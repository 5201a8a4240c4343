"""A write may reference no patient but the proposal's (FHIR R4 references, Patient compartment).

A resource that references patient B from `performer`, `focus`, a note's author, an extension or
anywhere else is, or may become, part of B's record (the R4 Patient compartment puts it there for
the elements `chartgate.compartment.PATIENT_COMPARTMENT` lists), while policy and consent were
asked about the proposal's patient only. So every Patient reference is checked, wherever it is:

* `Patient/<id>` and `Patient/<id>/_history/<v>` must carry the proposal's id;
* an absolute `https://.../Patient/<id>` with another id is another patient; with the same id it
  may be another server's patient of that id, which nothing here can tell apart, so it is refused
  as unverifiable (the relative form is the one that means "this server's patient");
* conditional (`Patient?identifier=...`), logical (`type: Patient` with only an `identifier`) and
  `urn:uuid:` / `urn:oid:` references (which resolve only inside a Bundle) name a patient nobody
  can check before the EHR resolves them: refused as unverifiable;
* a contained Patient is refused outright (its identity is whatever the agent wrote), and so is a
  local `#id` reference to one; a local reference to nothing contained breaks FHIR's ref-1;
* anything else that still names Patient as a path segment, in another case, percent-encoded or
  with stray slashes, is refused as unverifiable rather than parsed the way one server might.

References to other resource types (`Observation/x`, whose subject may be anyone) cannot be
checked without reading the EHR and are left alone (docs/limits.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import unquote

from sidecar.errors import FieldViolation
from sidecar.validation.strict_json import bounded_path, is_plain_name

OTHER_PATIENT: Final = "reference.other_patient"
UNVERIFIABLE: Final = "reference.unverifiable"
CONTAINED_PATIENT: Final = "reference.contained_patient"
FHIR_INVALID: Final = "input.fhir_invalid"

# At most this many reference violations are reported; one is enough to refuse, a few help a fix.
MAX_REPORTED: Final = 20

# R4 `id` datatype (datatypes.html#id) and the literal reference forms of references.html#literal.
_ID: Final = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE: Final = re.compile(rf"Patient/({_ID})(?:/_history/{_ID})?")
_ABSOLUTE: Final = re.compile(
    rf"https?://[^/?#\s]+(?:/[^?#\s]*)?/Patient/({_ID})(?:/_history/{_ID})?"
)
_SEGMENTS: Final = re.compile(r"[/#]")

# The members a Reference datatype may have (datatypes.html#Reference), with primitive
# extensions: a dict of only these, without `reference`, is a logical (or display-only) reference.
_REFERENCE_KEYS: Final = frozenset(
    {
        "id",
        "extension",
        "reference",
        "_reference",
        "type",
        "_type",
        "identifier",
        "display",
        "_display",
    }
)

_OTHER: Final = (
    "references a Patient other than patient_id; a write may name no patient but the "
    "proposal's (FHIR R4 Patient compartment)"
)
_ABSOLUTE_SAME: Final = (
    "an absolute Patient URL may name another server's patient; write Patient/<patient_id>"
)
_CONDITIONAL: Final = (
    "a conditional Patient reference cannot be checked against patient_id before the EHR "
    "resolves it; write Patient/<patient_id>"
)
_LOGICAL: Final = (
    "a logical Patient reference (type Patient with no literal reference) cannot be checked "
    "against patient_id; write reference Patient/<patient_id>"
)
_URN: Final = (
    "a urn: reference resolves only inside a Bundle and may name any patient; give a literal "
    "reference, or a type other than Patient"
)
_MALFORMED: Final = (
    "names a Patient in a form that cannot be checked against patient_id; write exactly "
    "Patient/<patient_id>"
)
_TYPE_CONFLICT: Final = (
    "type says Patient but the reference is not Patient/<patient_id>; they must agree"
)
_CONTAINED: Final = (
    "a contained Patient cannot be checked against patient_id; reference Patient/<patient_id>"
)
_LOCAL_PATIENT: Final = (
    "refers to a contained Patient, which cannot be checked against patient_id; reference "
    "Patient/<patient_id>"
)
_DANGLING: Final = "a local reference (#id) must name a resource in contained (FHIR R4 ref-1)"


def is_patient_type(name: str) -> bool:
    """Whether a resource type or Reference.type names Patient, in any case and also as the
    absolute StructureDefinition URL (Reference.type is a uri relative to hl7.org/fhir/...)."""
    return name == "Patient" or name.rsplit("/", 1)[-1].strip().lower() == "patient"


def patient_reference_violations(
    resource: Mapping[str, Any],
    patient_id: str,
    *,
    root: str = "resource_json",
    objects: Iterable[Mapping[str, Any]] | None = None,
) -> list[FieldViolation]:
    """A violation for each reference in `resource` that may name a patient other than
    `patient_id` (at most MAX_REPORTED). `objects`, when given, is every object of the resource
    (what strict_json.check_limits returns), which spares a walk; else the resource is walked.
    Iterative: nothing here recurses."""
    contained = _contained_types(resource)
    # Most writes reference no other patient: look first without building paths, which is most
    # of the cost of a walk, and walk again with paths only when something is wrong. Only an
    # object with one of these members can be a problem.
    for node in _objects(resource) if objects is None else objects:
        if ("reference" in node or "type" in node or "resourceType" in node) and _problems(
            node, node is resource, patient_id, contained
        ):
            return _locate(resource, patient_id, contained, root)
    return []


def _objects(value: Any) -> Iterator[Mapping[str, Any]]:
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            yield node
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)


def _locate(
    resource: Mapping[str, Any], patient_id: str, contained: Mapping[str, str], root: str
) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    stack: list[tuple[Any, str]] = [(resource, root)]
    while stack and len(found) < MAX_REPORTED:
        node, path = stack.pop()
        if type(node) is dict:
            for suffix, reason, description in _problems(
                node, node is resource, patient_id, contained
            ):
                found.append(FieldViolation(bounded_path(path + suffix), description, reason))
            # Reversed so the stack pops members in document order: violations come out sorted
            # the way the agent wrote them.
            for key, child in reversed(node.items()):
                if type(child) is dict or type(child) is list:
                    stack.append((child, f"{path}.{_segment(key)}"))
        elif type(node) is list:
            stack.extend(
                (child, f"{path}[{i}]")
                for i, child in reversed(list(enumerate(node)))
                if type(child) is dict or type(child) is list
            )
    return found[:MAX_REPORTED]


def _segment(key: str) -> str:
    # Member names are agent text too; a name that is not a plain element name is not repeated.
    return key if is_plain_name(key) else "*"


def _contained_types(resource: Mapping[str, Any]) -> dict[str, str]:
    """id -> resourceType of each contained resource (the targets of `#id` references)."""
    out: dict[str, str] = {}
    contained = resource.get("contained")
    if type(contained) is list:
        for item in contained:
            if type(item) is dict:
                rid, rtype = item.get("id"), item.get("resourceType")
                if type(rid) is str and type(rtype) is str:
                    out[rid] = rtype
    return out


def _problems(
    node: Mapping[str, Any], is_root: bool, patient_id: str, contained: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """(path suffix, reason, description) for what is wrong with one object of the resource."""
    problems: list[tuple[str, str, str]] = []
    if not is_root:
        resource_type = node.get("resourceType")
        if type(resource_type) is str and is_patient_type(resource_type):
            problems.append(("", CONTAINED_PATIENT, _CONTAINED))
    declared = node.get("type")
    typed_patient = type(declared) is str and is_patient_type(declared)
    reference = node.get("reference")
    if type(reference) is str:
        verdict = _classify(reference, patient_id, typed_patient, declared is None, contained)
        if verdict is not None:
            problems.append((".reference", *verdict))
    elif (
        reference is None
        and typed_patient
        and "resourceType" not in node
        and node.keys() <= _REFERENCE_KEYS
    ):
        problems.append(("", UNVERIFIABLE, _LOGICAL))
    return problems


def _classify(
    reference: str,
    patient_id: str,
    typed_patient: bool,
    untyped: bool,
    contained: Mapping[str, str],
) -> tuple[str, str] | None:
    """(reason, description) when a literal reference may name another patient, else None."""
    if reference.startswith("#"):
        return _local(reference[1:], typed_patient, contained)
    lowered = reference.lower()
    if lowered.startswith("urn:"):
        return (UNVERIFIABLE, _URN) if typed_patient or untyped else None
    if "%" in reference:
        # A server may decode the path before it resolves it; what would decode into a Patient
        # reference is not checked against one decoding here.
        decoded = unquote(reference)
        if decoded != reference and "patient" in decoded.lower():
            return UNVERIFIABLE, _MALFORMED
    if not typed_patient and "patient" not in lowered:
        return None  # the common case: Practitioner/…, Encounter/…, Observation/…
    relative = _RELATIVE.fullmatch(reference)
    if relative is not None:
        return None if relative[1] == patient_id else (OTHER_PATIENT, _OTHER)
    absolute = _ABSOLUTE.fullmatch(reference)
    if absolute is not None:
        return (
            (UNVERIFIABLE, _ABSOLUTE_SAME) if absolute[1] == patient_id else (OTHER_PATIENT, _OTHER)
        )
    head, conditional, _ = reference.partition("?")
    segments = [segment.strip().lower() for segment in _SEGMENTS.split(head)]
    if conditional:
        return (UNVERIFIABLE, _CONDITIONAL) if segments[-1] == "patient" or typed_patient else None
    if "patient" in segments:
        return UNVERIFIABLE, _MALFORMED
    if typed_patient:
        return UNVERIFIABLE, _TYPE_CONFLICT
    return None


def _local(
    target: str, typed_patient: bool, contained: Mapping[str, str]
) -> tuple[str, str] | None:
    if not target:
        return None  # `#` alone is the containing resource itself
    kind = contained.get(target)
    if kind is None:
        return FHIR_INVALID, _DANGLING
    if is_patient_type(kind):
        return CONTAINED_PATIENT, _LOCAL_PATIENT
    if typed_patient:
        return UNVERIFIABLE, _TYPE_CONFLICT
    return None
