"""Compile snapshot ElementDefinitions into the tree the checker walks: children, choices, slices.

A snapshot lists every element of a structure as a flat, ordered list of ids
(`Observation.category:VSCat.coding.system`); the checker needs, for each JSON object it meets,
the elements that may appear in it by JSON member name (`valueQuantity` for `value[x]` of type
Quantity), which of them are required, and how an array's items fall into slices. Compiling that
once per structure at load time keeps the per-resource walk to dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sidecar.validation.profiles.definitions import Definitions, ValueSetCodes, canonical, label

# Marks an element with no fixed[x] / pattern[x] value (None is not usable: JSON has null).
ABSENT: Final[Any] = object()

# How far a discriminator's path is followed into a slice's elements (paths have 1-3 segments;
# each re-slice on the way adds a level). Definitions are finite; this only bounds a bad one.
_MAX_DISCRIMINATOR_DEPTH: Final = 8


@dataclass(frozen=True, slots=True)
class Discriminator:
    """How an array item is recognised as belonging to a slice: the value at `path` in the item
    must equal (`fixed`), contain (`pattern`) or be in the ValueSet of (`binding`) `expected`."""

    kind: str
    path: tuple[str, ...]
    expected: Any


@dataclass(slots=True, eq=False)
class Node:
    """One ElementDefinition: its constraints, and (after compile) its children by JSON name."""

    id: str
    path: str
    name: str
    profile: str
    min: int
    max: int | None
    types: tuple[str, ...]
    type_profiles: Mapping[str, str]
    fixed: Any
    pattern: Any
    binding: ValueSetCodes | None
    must_support: bool
    content_reference: str | None
    slice_name: str | None
    discriminators: tuple[tuple[str, str], ...]
    slicing_rules: str | None
    children: dict[str, Node] = field(default_factory=dict)
    slices: list[Node] = field(default_factory=list)
    # Filled in by _finish: what a JSON object described by this node may hold.
    keys: dict[str, tuple[Node, str]] = field(default_factory=dict)
    choices: dict[str, Node] = field(default_factory=dict)
    required: tuple[Node, ...] = ()
    # This element's JSON member names (each choice type's, with the `_name` of a primitive's
    # extensions): any of them present means the element is.
    json_keys: tuple[str, ...] = ()
    content: Node | None = None
    matcher: tuple[Discriminator, ...] | None = None


def is_primitive(type_code: str) -> bool:
    """FHIR primitive types are lower-case (`code`, `dateTime`); FHIRPath system types are URLs."""
    return type_code[:1].islower() or "/" in type_code


def _max(value: Any) -> int | None:
    return None if value in (None, "*") else int(value)


def _node(element: Mapping[str, Any], profile: str, definitions: Definitions) -> Node:
    fixed = ABSENT
    pattern = ABSENT
    for key, value in element.items():
        if key.startswith("fixed"):
            fixed = value
        elif key.startswith("pattern"):
            pattern = value
    binding: ValueSetCodes | None = None
    bound = element.get("binding")
    if bound and bound.get("strength") == "required" and "valueSet" in bound:
        # None when the ValueSet could not be expanded from the pinned packages: unchecked.
        binding = definitions.value_sets.get(canonical(bound["valueSet"]))
    types = tuple(t["code"] for t in element.get("type", ()))
    type_profiles = {
        t["code"]: t["profile"][0] for t in element.get("type", ()) if t.get("profile")
    }
    slicing = element.get("slicing") or {}
    last = element["id"].rsplit(".", 1)[-1]
    return Node(
        id=element["id"],
        path=element["path"],
        name=last.split(":", 1)[0],
        profile=profile,
        min=int(element.get("min", 0)),
        max=_max(element.get("max")),
        types=types,
        type_profiles=type_profiles,
        fixed=fixed,
        pattern=pattern,
        binding=binding,
        must_support=bool(element.get("mustSupport")),
        content_reference=element.get("contentReference"),
        slice_name=element.get("sliceName"),
        discriminators=tuple((d["type"], d["path"]) for d in slicing.get("discriminator", ())),
        slicing_rules=slicing.get("rules"),
    )


def compile_structure(sd: Mapping[str, Any], definitions: Definitions) -> Node:
    """The root Node of one StructureDefinition's snapshot, every element linked and indexed."""
    profile = label(sd)
    nodes: dict[str, Node] = {}
    root: Node | None = None
    for element in sd["snapshot"]["element"]:
        node = _node(element, profile, definitions)
        nodes[node.id] = node
        if "." not in node.id:
            root = node
            continue
        parent_id, last = node.id.rsplit(".", 1)
        if ":" in last:
            # A slice of the element named before the colon (snapshots list it first).
            nodes[f"{parent_id}.{last.split(':', 1)[0]}"].slices.append(node)
        else:
            nodes[parent_id].children[last] = node
    if root is None:
        raise ValueError(f"{sd.get('url')}: snapshot has no root element")
    for node in nodes.values():
        if node.content_reference is not None:
            # `#Observation.referenceRange`: the same structure as that element, reused.
            target = nodes.get(node.content_reference.rsplit("#", 1)[-1])
            if target is not None:
                node.content = target
                node.types = target.types
    for node in nodes.values():
        _finish(node)
    return root


def _finish(node: Node) -> None:
    for child in node.children.values():
        if child.name.endswith("[x]"):
            prefix = child.name[:-3]
            by_slice = {s.slice_name: s for s in child.slices}
            names = []
            for type_code in child.types:
                key = prefix + type_code[:1].upper() + type_code[1:]
                node.keys[key] = (by_slice.get(key, child), type_code)
                names.append(key)
            node.choices[prefix] = child
        else:
            node.keys[child.name] = (child, child.types[0] if child.types else "")
            names = [child.name]
        child.json_keys = (*names, *(f"_{n}" for n in names))
    node.required = tuple(c for c in node.children.values() if c.min >= 1)
    if node.slices and node.discriminators:
        for piece in node.slices:
            piece.matcher = _matcher(node, piece)


def _matcher(sliced: Node, piece: Node) -> tuple[Discriminator, ...] | None:
    """How to recognise `piece`'s items, or None when a discriminator names nothing to match on
    (a type discriminator, handled through the JSON names of a choice, or an unsupported one)."""
    found: list[Discriminator] = []
    for kind, path in sliced.discriminators:
        if kind not in ("value", "pattern"):
            return None
        segments = () if path == "$this" else tuple(path.split("."))
        expected = _expected(piece, segments, 0)
        if expected is None:
            return None
        found.append(Discriminator(expected[0], segments, expected[1]))
    return tuple(found)


def _expected(node: Node, segments: tuple[str, ...], depth: int) -> tuple[str, Any] | None:
    """The fixed value, pattern or ValueSet a slice sets at `segments` below `node`; a value set
    inside a required re-slice (the LOINC code of `component:SystolicBP.code.coding:SBPCode`)
    counts, and an extension slice's `url` is its profile's canonical URL."""
    if depth > _MAX_DISCRIMINATOR_DEPTH:
        return None
    if not segments:
        if node.fixed is not ABSENT:
            return ("fixed", node.fixed)
        if node.pattern is not ABSENT:
            return ("pattern", node.pattern)
        if node.binding is not None:
            return ("binding", node.binding)
    else:
        child = node.children.get(segments[0])
        if child is not None:
            found = _expected(child, segments[1:], depth + 1)
            if found is not None:
                return found
        if segments == ("url",) and "Extension" in node.type_profiles:
            return ("fixed", node.type_profiles["Extension"])
    for piece in node.slices:
        if piece.min >= 1:
            found = _expected(piece, segments, depth + 1)
            if found is not None:
                return found
    return None
