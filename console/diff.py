"""A side-by-side diff of a proposed FHIR resource against the chart's current version, element by element.

Both sides are flattened to leaf paths (`code.coding[0].system`) so a reviewer sees each value
that changes on its own row. A create is compared with nothing ("new resource"). An update
follows the sidecar's update semantics (docs/review.md, gateway.proto `resource_json`): the
proposal names `resourceType`, `id` and the top-level elements it sets; every element it does not
name keeps the chart's value. Rows under the fields the write sets (`ReviewItem.fields`, e.g.
`valueQuantity`, `meta.tag`) are marked as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

Status = Literal["added", "removed", "changed", "unchanged"]
Kind = Literal["create", "update", "update_unread"]

# Elements that identify the resource; never shown as written.
_IDENTITY: Final = frozenset({"resourceType", "id"})
MAX_ROWS: Final = 2000


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One leaf: its path, the chart's value and the proposed value (None: absent), and whether written."""

    path: str
    current: str | None
    proposed: str | None
    status: Status
    written: bool


@dataclass(frozen=True, slots=True)
class ResourceDiff:
    """What the reviewer compares: the kind of comparison, the rows, and a note when the chart was not read."""

    kind: Kind
    rows: tuple[DiffRow, ...]
    note: str
    truncated: bool

    @property
    def changed(self) -> int:
        return sum(1 for r in self.rows if r.status != "unchanged")


def render_value(value: Any) -> str:
    """A leaf as the reviewer reads it: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Leaf paths to rendered values, in document order; empty objects and arrays are leaves too."""
    out: dict[str, str] = {}
    if isinstance(value, dict) and value:
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
    else:
        out[prefix or "(resource)"] = render_value(value)
    return out


def under(path: str, field: str) -> bool:
    """Whether `path` is the element `field` (e.g. `meta.tag`) or inside it."""
    return path == field or path.startswith((f"{field}.", f"{field}["))


def _parse(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _rows(
    current: dict[str, Any], proposed: dict[str, Any], written: tuple[str, ...]
) -> list[DiffRow]:
    before, after = flatten(current) if current else {}, flatten(proposed) if proposed else {}
    paths = list(before) + [p for p in after if p not in before]
    # What the resource is first (resourceType, id), then the elements in document order.
    paths.sort(key=lambda p: p not in _IDENTITY)
    rows = []
    for path in paths:
        old, new = before.get(path), after.get(path)
        status: Status
        if old is None:
            status = "added"
        elif new is None:
            status = "removed"
        elif old != new:
            status = "changed"
        else:
            status = "unchanged"
        mark = any(under(path, f) for f in written) and path.split(".")[0] not in _IDENTITY
        rows.append(DiffRow(path, old, new, status, mark))
    return rows


def resource_diff(
    *,
    operation: str,
    resource_json: str,
    current_json: str = "",
    current_note: str = "",
    fields: tuple[str, ...] | list[str] = (),
) -> ResourceDiff:
    """The diff a reviewer sees for one proposal (see the module docstring for the semantics)."""
    proposed = _parse(resource_json) or {}
    fields = tuple(fields) or tuple(k for k in proposed if k not in _IDENTITY)
    if operation != "update":
        rows = _rows({}, proposed, fields)
        return _bounded("create", rows, "")
    current = _parse(current_json) if current_json else None
    if current is None:
        # The chart's version could not be read: show what will be written, and say so.
        note = current_note or "the chart's current version could not be read"
        return _bounded("update_unread", _rows({}, proposed, fields), note)
    # Update semantics: top-level elements the proposal names replace the chart's; the rest stay.
    result = {**current, **proposed}
    return _bounded("update", _rows(current, result, fields), "")


def _bounded(kind: Kind, rows: list[DiffRow], note: str) -> ResourceDiff:
    return ResourceDiff(kind, tuple(rows[:MAX_ROWS]), note, len(rows) > MAX_ROWS)
