"""check_profiles: a resource against its profiles and R4 core's required bindings, as field violations."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sidecar.errors import FieldViolation
from sidecar.validation.profiles.definitions import CORE_BASE, canonical, load_definitions
from sidecar.validation.profiles.selection import (
    declared_profiles,
    default_profiles,
    vital_sign_codes,
)
from sidecar.validation.profiles.tree import Node, compile_structure
from sidecar.validation.profiles.walk import MAX_VIOLATIONS, Walk


class UnknownProfile(ValueError):
    """A profile the caller named is not shipped, or is for another resource type (a
    configuration error, not the agent's: the agent cannot fix it)."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """Every shipped structure compiled, by canonical URL, and the vital-sign code table."""

    roots: Mapping[str, Node]
    vital_signs: Mapping[str, str]
    element_paths: Mapping[str, frozenset[str]]


@cache
def compiled() -> Compiled:
    """Compile the package data once (about 0.1 s; preload() does it at start-up)."""
    definitions = load_definitions()
    roots = {url: compile_structure(sd, definitions) for url, sd in definitions.structures.items()}
    paths: dict[str, set[str]] = {}
    for sd in definitions.structures.values():
        if sd.get("kind") == "resource":
            paths.setdefault(str(sd["type"]), set()).update(
                e["path"] for e in sd["snapshot"]["element"]
            )
    return Compiled(
        roots=roots,
        vital_signs=vital_sign_codes(roots),
        element_paths={k: frozenset(v) for k, v in paths.items()},
    )


def preload() -> None:
    """Load and compile the definitions now, so the first proposal does not pay for it."""
    compiled()


def known_profiles(resource_type: str) -> list[str]:
    """The canonical URLs of the shipped profiles (and the core definition) of a resource type."""
    return sorted(url for url, root in compiled().roots.items() if root.name == resource_type)


def check_settings(profiles: Sequence[str] | None, must_support: Collection[str]) -> None:
    """An EHR's required profiles and must-support paths (sidecar configuration), checked once
    at start: each profile must be shipped and each path an element of its type; else
    UnknownProfile. A bad setting stops the sidecar, not every proposal."""
    state = compiled()
    unknown = [p for p in profiles or () if canonical(p) not in state.roots]
    if unknown:
        raise UnknownProfile(f"not shipped profiles: {sorted(unknown)[:10]}")
    paths = [p for p in must_support if p not in state.element_paths.get(p.split(".", 1)[0], ())]
    if paths:
        raise UnknownProfile(f"not elements of a shipped resource type: {sorted(paths)[:10]}")


def applicable(profiles: Sequence[str] | None, resource_type: str) -> tuple[str, ...] | None:
    """Of an EHR's required profiles (for all types), those of `resource_type`; None (the
    defaults) stays None."""
    if profiles is None:
        return None
    roots = compiled().roots
    return tuple(
        p for p in profiles if (root := roots.get(canonical(p))) and root.name == resource_type
    )


def profiles_for(resource: Mapping[str, Any], profiles: Sequence[str] | None = None) -> list[str]:
    """The structures `resource` is checked against: `profiles` (or the defaults: US Core for
    the type where shipped, the vital-signs profile an Observation's code calls for), plus the
    shipped ones it declares in meta.profile; R4 core's own definition when that leaves none.
    Every profile's snapshot carries the core constraints, so core is not checked twice."""
    kind = resource.get("resourceType")
    state = compiled()
    if not isinstance(kind, str) or CORE_BASE + kind not in state.roots:
        return []
    chosen = (
        default_profiles(resource, state.vital_signs)
        if profiles is None
        else [canonical(p) for p in profiles]
    )
    for url in chosen:
        root = state.roots.get(url)
        if root is None or root.name != kind:
            raise UnknownProfile(f"{url} is not a shipped profile of {kind}")
    # A claimed profile Chartgate does not ship cannot be checked here; the EHR may check it.
    claimed = [
        url
        for url in declared_profiles(resource)
        if url in state.roots and state.roots[url].name == kind
    ]
    found = list(dict.fromkeys([*chosen, *claimed]))
    return found or [CORE_BASE + kind]


def check_profiles(
    resource: Mapping[str, Any],
    *,
    operation: Literal["create", "update"],
    profiles: Sequence[str] | None = None,
    must_support: Collection[str] = (),
) -> list[FieldViolation]:
    """What in `resource` breaks its profiles or R4 core's required bindings, as field
    violations (`resource_json.<element>` paths, reasons `fhir.*` / `profile.must_support`).

    `operation="update"`: the resource is a partial one naming only the top-level elements to
    set, so required elements it leaves out are not reported; what it does set is checked
    whole (bindings, cardinality, fixed values, required sub-elements). `must_support`: element
    paths (`MedicationRequest.authoredOn`) the target EHR requires although the profile only
    marks them must-support; a path the resource type does not have raises UnknownProfile.
    """
    if operation not in ("create", "update"):
        raise ValueError(f"operation must be create or update, not {operation!r}")
    state = compiled()
    urls = profiles_for(resource, profiles)
    if not urls:
        return []
    kind = str(resource["resourceType"])
    required_paths = frozenset(p for p in must_support if p.split(".", 1)[0] == kind)
    unknown = required_paths - state.element_paths.get(kind, frozenset())
    if unknown:
        raise UnknownProfile(f"not elements of {kind}: {sorted(unknown)}")
    found: list[FieldViolation] = []
    seen: set[tuple[str, str]] = set()
    for url in urls:
        walk = Walk(state.roots, partial=operation == "update", must_support=required_paths)
        fresh = walk.run(resource, state.roots[url])
        # Two profiles refining the same element say the same thing: what an earlier profile
        # already reported for a field is not repeated (one profile's own findings all stay).
        found.extend(v for v in fresh if (v.field, v.reason) not in seen)
        seen.update((v.field, v.reason) for v in fresh)
    return found[:MAX_VIOLATIONS]
