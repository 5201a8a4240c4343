"""Fixed values, patterns and slice membership: comparing JSON values with what a profile sets."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Final

from sidecar.validation.profiles.bindings import in_value_set
from sidecar.validation.profiles.definitions import ValueSetCodes
from sidecar.validation.profiles.tree import Discriminator, Node

# A pattern nests as deep as the datatype it describes (CodeableConcept > Coding > code).
_MAX_DEPTH: Final = 16
_MAX_SHOWN: Final = 120


def equals_fixed(value: Any, fixed: Any) -> bool:
    """fixed[x]: the value must be exactly this (FHIR: no more and no less, for complex types
    too). JSON numbers compare by value; `true` is not `1`."""
    if isinstance(fixed, bool) or isinstance(value, bool):
        return type(value) is type(fixed) and value == fixed
    return bool(value == fixed)


def contains_pattern(value: Any, pattern: Any, depth: int = 0) -> bool:
    """pattern[x]: every member the pattern sets must be in the value with the same content;
    each item of a pattern array must match some item of the value's array (FHIR R4
    elementdefinition-definitions.html#ElementDefinition.pattern_x_)."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(
            key in value and contains_pattern(value[key], item, depth + 1)
            for key, item in pattern.items()
        )
    if isinstance(pattern, list):
        if not isinstance(value, list):
            return False
        return all(any(contains_pattern(v, item, depth + 1) for v in value) for item in pattern)
    return equals_fixed(value, pattern)


def values_at(item: Any, path: Sequence[str]) -> Iterator[Any]:
    """Every value at `path` (member names) below `item`, arrays flattened on the way."""
    stack: list[tuple[Any, int]] = [(item, 0)]
    while stack:
        value, index = stack.pop()
        if isinstance(value, list):
            stack.extend((v, index) for v in value)
        elif index == len(path):
            yield value
        elif isinstance(value, dict) and path[index] in value:
            stack.append((value[path[index]], index + 1))


def _matches(value: Any, discriminator: Discriminator) -> bool:
    if discriminator.kind == "fixed":
        return equals_fixed(value, discriminator.expected)
    if discriminator.kind == "pattern":
        return contains_pattern(value, discriminator.expected)
    value_set: ValueSetCodes = discriminator.expected
    kind = "code" if isinstance(value, str) else "CodeableConcept"
    if isinstance(value, dict) and "coding" not in value:
        kind = "Coding"
    return bool(in_value_set(value, kind, value_set))


def slice_of(item: Any, slices: Sequence[Node]) -> Node | None:
    """The first slice whose discriminators all find a matching value in `item`, else None."""
    for piece in slices:
        matcher = piece.matcher
        if matcher is None:
            continue
        if all(any(_matches(v, d) for v in values_at(item, d.path)) for d in matcher):
            return piece
    return None


def show(value: Any) -> str:
    """A profile's fixed value or pattern as compact JSON, bounded (never an instance value)."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def describe_slice(piece: Node) -> str:
    """How a slice is recognised, e.g. `coding.code = vital-signs, coding.system = http://…`."""
    if not piece.matcher:
        return f"slice {piece.slice_name}"
    parts = []
    for d in piece.matcher:
        where = ".".join(d.path) or "the item"
        if d.kind == "binding":
            parts.append(f"{where} from ValueSet {d.expected.name}")
        elif d.kind == "pattern":
            parts.append(f"{where} matching {show(d.expected)}")
        else:
            parts.append(f"{where} = {show(d.expected)}")
    return ", ".join(parts)
