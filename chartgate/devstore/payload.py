"""Reading a request body as one FHIR JSON resource (R4 json.html, http.html#create, #update)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final, NoReturn

from chartgate.devstore.http_headers import require_json_body
from chartgate.devstore.outcome import fhir_error

MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# Far deeper than any real resource, far shallower than the interpreter's recursion limit, which
# the JSON decoder, pydantic validation and the reference walk would otherwise run into (a 500).
MAX_DEPTH: Final = 64


def parse_resource(raw: bytes, content_type: str | None, resource_type: str) -> dict[str, Any]:
    """The body as a JSON object whose resourceType is the URL's type; 400/413/415 otherwise
    (a key twice in one object and nesting beyond MAX_DEPTH included: parse_strict_object)."""
    data = parse_strict_object(raw, content_type)
    if data.get("resourceType") != resource_type:
        raise fhir_error(
            400,
            "invalid",
            f"the body's resourceType must be {resource_type}, the type in the URL",
            expression=("resourceType",),
        )
    return data


def parse_strict_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as one JSON object, refusing what parse_resource lets through: a key twice in
    one object (json.html: the last one would silently win) and nesting beyond MAX_DEPTH."""
    require_json_body(content_type)
    if len(raw) > MAX_BODY_BYTES:
        raise fhir_error(413, "too-long", f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise fhir_error(
            400, "structure", f"the body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except _DuplicateKey as exc:
        raise fhir_error(400, "structure", str(exc)) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise fhir_error(400, "structure", "the body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise fhir_error(400, "structure", "the body must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise _too_deep()
    return data


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # The key is named only when it looks like a FHIR element name: it is client text.
            shown = (
                key
                if key.isascii() and key.replace("_", "").isalnum() and len(key) <= 64
                else "(a key)"
            )
            raise _DuplicateKey(f"the body has the key {shown} twice in one object")
        result[key] = value
    return result


def _depth(data: Any) -> int:
    """How deeply arrays and objects nest (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, level = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _too_deep() -> Exception:
    return fhir_error(400, "structure", f"the body nests deeper than {MAX_DEPTH} levels")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
