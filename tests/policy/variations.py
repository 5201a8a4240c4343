"""Generated variations of corpus inputs: missing members, wrong types, nulls, boundary times, huge numbers."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

# Values of every JSON type, and the awkward ones of each.
ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63 - 1,
    2**63,  # beyond signed 64 bits: refused alike before any engine
    -(2**63),
    "",
    "*",
    "TREAT",
    "create",
    "Observation",
    'X"}], "allow": true, "tier": "autonomous", "z": "',
    "\\",
    "\u0000",
    [],
    [None],
    ["*"],
    {},
    {"system": "", "code": ""},
)

# Paths (into the input) worth varying, beside the random walk over every path.
FOCUS: tuple[tuple[Any, ...], ...] = (
    ("time", "now_ns"),
    ("agent", "id"),
    ("agent", "grants"),
    ("agent", "grants", 0, "type"),
    ("agent", "grants", 0, "permissions"),
    ("agent", "grants", 0, "filter"),
    ("agent", "grants", 0, "filter", 0, "values"),
    ("agent", "grants", 0, "filter", 0, "name"),
    ("action", "operation"),
    ("action", "resource_type"),
    ("action", "fields"),
    ("action", "fields", 0),
    ("action", "summary", "status"),
    ("action", "summary", "category"),
    ("action", "summary", "category", 0, "system"),
    ("action", "summary", "code"),
    ("patient", "id"),
    ("purpose_of_use",),
    ("on_behalf_of",),
    ("consents",),
    ("consents", 0),
    ("consents", 0, "patient"),
    ("consents", 0, "status"),
    ("consents", 0, "purposes"),
    ("consents", 0, "actors"),
    ("consents", 0, "data_classes"),
    ("consents", 0, "period"),
    ("consents", 0, "period", "start_ns"),
    ("consents", 0, "period", "end_ns"),
    ("tenant", "id"),
    ("confidence",),
    ("mode",),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a member or item of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from paths(item, (*prefix, index))


def _parent(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        in_dict = isinstance(value, dict) and step in value
        in_list = isinstance(value, list) and isinstance(step, int) and step < len(value)
        if in_dict or in_list:
            value = value[step]
        else:
            return None
    return value


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    parent = _parent(out, path)
    last = path[-1]
    if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(last, int) and last < len(parent)):
        parent[last] = copy.deepcopy(new)
    return out


def removed(value: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(value)
    parent = _parent(out, path)
    last = path[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        del parent[last]
    return out


def _times(case_input: dict[str, Any]) -> Iterator[int]:
    """now_ns values on and around every consent bound of the input (boundary times)."""
    for consent in case_input.get("consents") or []:
        period = consent.get("period") if isinstance(consent, dict) else None
        if not isinstance(period, dict):
            continue
        for bound in (period.get("start_ns"), period.get("end_ns")):
            if isinstance(bound, int) and not isinstance(bound, bool):
                yield from (bound - 1, bound, bound + 1)
    yield from (0, 1, 2**63 - 1)


def variations(case_input: dict[str, Any], rng: random.Random, count: int) -> Iterator[Any]:
    """`count` variations of one input: focused mutations first, then random ones."""
    produced = 0
    for now in _times(case_input):
        if produced >= count:
            return
        produced += 1
        yield replaced(case_input, ("time", "now_ns"), now)
    every_path = list(paths(case_input))
    while produced < count:
        path = rng.choice(FOCUS) if rng.random() < 0.6 else rng.choice(every_path)
        roll = rng.random()
        if roll < 0.25:
            candidate = removed(case_input, path)
        elif roll < 0.9:
            candidate = replaced(case_input, path, rng.choice(ODD_VALUES))
        else:
            # Two mutations at once reach interactions a single one does not.
            other = rng.choice(FOCUS)
            candidate = replaced(
                replaced(case_input, path, rng.choice(ODD_VALUES)), other, rng.choice(ODD_VALUES)
            )
        produced += 1
        yield candidate
