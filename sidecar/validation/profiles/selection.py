"""Which profiles a resource is checked against when the caller names none (the defaults)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from sidecar.validation.profiles.definitions import CORE_BASE, US_CORE_BASE, canonical
from sidecar.validation.profiles.tree import Node

# US Core 5.0.1 profiles by resource type, as far as the pinned package carries them (data/README.md:
# it has no Condition, AllergyIntolerance or laboratory Observation profile; those get R4 core).
US_CORE_BY_TYPE: Final[Mapping[str, str]] = {
    "Patient": US_CORE_BASE + "us-core-patient",
    "MedicationRequest": US_CORE_BASE + "us-core-medicationrequest",
}

# The vital-signs profiles: FHIR R4 makes them mandatory for an Observation with one of their
# LOINC codes (observation-vitalsigns.html), and US Core 5.0.1's vital signs derive from them.
VITAL_SIGNS: Final = CORE_BASE + "vitalsigns"
_LOINC: Final = "http://loinc.org"
_CATEGORY: Final = ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")


def vital_sign_codes(roots: Mapping[str, Node]) -> dict[str, str]:
    """LOINC code → the profile an Observation with that code must meet, read from each
    Observation profile's own fixed code (a US Core profile wins over the FHIR core one it
    refines, e.g. us-core-blood-pressure over bp for 85354-9)."""
    found: dict[str, str] = {}
    for url in sorted(roots, key=lambda u: u.startswith(US_CORE_BASE)):
        root = roots[url]
        if root.name != "Observation" or url == CORE_BASE + "Observation":
            continue
        code = root.children.get("code")
        if code is None:
            continue
        for loinc in _loinc_codes(code):
            found[loinc] = url
    return found


def _loinc_codes(code: Node) -> Iterator[str]:
    if isinstance(code.pattern, dict):
        for coding in code.pattern.get("coding", ()):
            if coding.get("system") == _LOINC and isinstance(coding.get("code"), str):
                yield coding["code"]
    coding_node = code.children.get("coding")
    for piece in coding_node.slices if coding_node else ():
        system, value = piece.children.get("system"), piece.children.get("code")
        if system is not None and value is not None and system.fixed == _LOINC:
            yield from [value.fixed] if isinstance(value.fixed, str) else []


def default_profiles(resource: Mapping[str, Any], vital_signs: Mapping[str, str]) -> list[str]:
    """US Core for the type where the pinned package has it; for an Observation, the vital-signs
    profile its LOINC code calls for (or the generic one for a vital-signs category)."""
    kind = resource.get("resourceType")
    if kind == "Observation":
        for system, code in _codings(resource.get("code")):
            if system == _LOINC and code in vital_signs:
                return [vital_signs[code]]
        if _CATEGORY in set(_codings(resource.get("category"))):
            return [VITAL_SIGNS]
        return []
    profile = US_CORE_BY_TYPE.get(kind) if isinstance(kind, str) else None
    return [profile] if profile else []


def declared_profiles(resource: Mapping[str, Any]) -> list[str]:
    """The canonical URLs in `meta.profile` (the resource claims to meet them)."""
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    if not isinstance(claimed, list):
        return []
    return [canonical(url) for url in claimed if isinstance(url, str)]


def _codings(value: Any) -> Iterator[tuple[str, str]]:
    """(system, code) of each coding of a CodeableConcept or a list of them; strings only."""
    concepts = value if isinstance(value, list) else [value]
    for concept in concepts:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else ():
            if isinstance(coding, dict):
                system, code = coding.get("system"), coding.get("code")
                if isinstance(system, str) and isinstance(code, str):
                    yield system, code
