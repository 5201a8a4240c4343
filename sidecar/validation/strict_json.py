"""Strict JSON (RFC 8259) for what agents send: duplicate names refused, size, depth, lengths and counts bounded.

RFC 8259 §4 leaves duplicate object names to the parser ("the behavior of software that
receives such an object is unpredictable"); Python keeps the last, other parsers the first, so a
payload with two `subject`s could be checked as one patient's and stored as another's. I-JSON
(RFC 7493 §2.3) forbids them; so do we. The bounds keep one request from costing the sidecar
more than a request should (docs/limits.md lists them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class DuplicateKeyError(ValueError):
    """An object names the same member twice."""


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """Bounds on one JSON document (docs/limits.md)."""

    max_bytes: int = 256 * 1024
    max_depth: int = 32
    max_string_chars: int = 128 * 1024
    max_array_items: int = 1_000
    max_object_members: int = 200
    max_nodes: int = 20_000


RESOURCE_LIMITS: Final = JsonLimits()


class JsonLimitError(ValueError):
    """A document breaks one of the JsonLimits; `path` says where (never what the value is)."""

    def __init__(self, path: str, description: str) -> None:
        super().__init__(f"{path}: {description}")
        self.path = path
        self.description = description


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(describe_key(key))
            seen.add(key)
    return result


def describe_key(key: str) -> str:
    """A key as it may appear in an error: quoted when it is a short plain name, else a stand-in
    (a key is agent-controlled text too)."""
    return f"member {key!r}" if _NAME.fullmatch(key) else "a member"


def loads_strict(text: str | bytes) -> Any:
    """json.loads that refuses duplicate object names (DuplicateKeyError) and non-JSON constants
    (NaN, Infinity: json.JSONDecodeError). Nesting deep enough to exhaust the parser's recursion
    raises JsonLimitError rather than RecursionError."""
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_refuse_constant)
    except RecursionError:
        raise JsonLimitError("$", "nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def check_limits(value: Any, limits: JsonLimits, root: str) -> None:
    """Walk a parsed document (iteratively: a deep one must not exhaust the stack) and raise
    JsonLimitError at the first bound it breaks, naming the path from `root`."""
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, root, 1)]
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise JsonLimitError(root, f"more than {limits.max_nodes} values in all")
        kind = type(item)
        if kind is str:
            if len(item) > limits.max_string_chars:
                raise JsonLimitError(path, f"string longer than {limits.max_string_chars} characters")
        elif kind is dict:
            if depth > limits.max_depth:
                raise JsonLimitError(path, f"nested deeper than {limits.max_depth} levels")
            if len(item) > limits.max_object_members:
                raise JsonLimitError(path, f"more than {limits.max_object_members} members")
            for key, child in item.items():
                if len(key) > 64:
                    raise JsonLimitError(path, "a member name longer than 64 characters")
                stack.append((child, f"{path}.{key}" if _NAME.fullmatch(key) else path, depth + 1))
        elif kind is list:
            if depth > limits.max_depth:
                raise JsonLimitError(path, f"nested deeper than {limits.max_depth} levels")
            if len(item) > limits.max_array_items:
                raise JsonLimitError(path, f"more than {limits.max_array_items} items")
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def iter_strings(value: Any) -> Iterator[str]:
    """Every string value in a parsed document (not the member names), depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            yield item
        elif type(item) is dict:
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
