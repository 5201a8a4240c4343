"""Load the shipped FHIR definitions (package data): StructureDefinitions and expanded ValueSets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

# The files scripts/extract_fhir_definitions.py writes; data/README.md says where they come from.
DATA_FILES: Final = ("hl7.fhir.r4.core-4.0.1.json", "hl7.fhir.us.core-5.0.1.json")

CORE_BASE: Final = "http://hl7.org/fhir/StructureDefinition/"
US_CORE_BASE: Final = "http://hl7.org/fhir/us/core/StructureDefinition/"


@dataclass(frozen=True, slots=True)
class ValueSetCodes:
    """A required ValueSet's expansion: its (system, code) pairs and, for `code` elements, the codes."""

    url: str
    name: str
    pairs: frozenset[tuple[str, str]]
    codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Definitions:
    """Every shipped StructureDefinition by canonical URL and every expanded ValueSet by URL."""

    structures: Mapping[str, Mapping[str, Any]]
    value_sets: Mapping[str, ValueSetCodes]


def canonical(url: str) -> str:
    """A canonical reference without its `|version` suffix."""
    return url.split("|", 1)[0]


def label(sd: Mapping[str, Any]) -> str:
    """How a violation names the profile it comes from, e.g. `US Core 5.0.1 us-core-patient`."""
    url = str(sd.get("url", ""))
    source = "US Core 5.0.1" if url.startswith(US_CORE_BASE) else "FHIR R4"
    return f"{source} {sd.get('id', '?')}"


@cache
def load_definitions() -> Definitions:
    """Read the package data once; a missing or unreadable file is a packaging defect and raises."""
    structures: dict[str, Mapping[str, Any]] = {}
    value_sets: dict[str, ValueSetCodes] = {}
    folder = resources.files(__package__).joinpath("data")
    for name in DATA_FILES:
        bundle = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "StructureDefinition":
                structures[resource["url"]] = resource
            elif resource["resourceType"] == "ValueSet":
                contains = resource["expansion"]["contains"]
                pairs = frozenset((c["system"], c["code"]) for c in contains)
                value_sets[resource["url"]] = ValueSetCodes(
                    url=resource["url"],
                    name=str(resource.get("name") or resource["id"]),
                    pairs=pairs,
                    codes=frozenset(code for _, code in pairs),
                )
    return Definitions(structures=structures, value_sets=value_sets)
