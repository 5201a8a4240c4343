"""The builtins a policy calls, read from regorus's parsed AST, so a call the engine lacks is refused at load."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BuiltinCall:
    """One call of something the policy does not define itself."""

    name: str
    arity: int
    file: str
    line: int


def _ref_name(node: Any) -> str | None:
    """`a.b.c` for a Var/RefDot chain; None for any other expression (e.g. an indexed ref)."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    kind, body = next(iter(node.items()))
    if kind == "Var":
        value = body.get("value")
        return value if isinstance(value, str) else None
    if kind == "RefDot":
        head = _ref_name(body.get("refr"))
        field = body.get("field")
        if head is None or not isinstance(field, list) or len(field) != 2:
            return None
        return f"{head}.{field[1]}"
    return None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def builtin_calls(ast_json: str) -> list[BuiltinCall]:
    """Every call in the modules whose target is not a function the policy defines.

    A plain name is the policy's own when a function of that name is defined in the same
    package; a dotted name is the policy's own when it starts with `data` or an imported name.
    """
    modules = json.loads(ast_json)
    defined: dict[str, set[str]] = {}
    parsed: list[tuple[str, str, dict[str, Any], set[str]]] = []
    for module in modules:
        ast = module["ast"]
        file = module["source"]["file"]
        source = module["source"]["contents"]
        package = _ref_name(ast["package"]["refr"]) or ""
        local_heads: set[str] = set()
        for node in _walk(ast.get("rules", [])):
            func = node.get("Func")
            if isinstance(func, dict):
                name = _ref_name(func.get("refr"))
                if name:
                    local_heads.add(name)
        defined.setdefault(package, set()).update(local_heads)
        imported: set[str] = set()
        for item in ast.get("imports", []):
            path = _ref_name(item.get("refr")) or ""
            alias = item.get("as")
            if isinstance(alias, dict):
                imported.add(source[alias["start"] : alias["end"]])
            elif "." in path:
                imported.add(path.rsplit(".", 1)[1])
        parsed.append((file, package, ast, imported))
    calls: list[BuiltinCall] = []
    for file, package, ast, imported in parsed:
        for node in _walk(ast.get("rules", [])):
            call = node.get("Call")
            if not isinstance(call, dict):
                continue
            name = _ref_name(call.get("fcn"))
            if name is None:
                continue
            head = name.split(".", 1)[0]
            if "." not in name and name in defined.get(package, set()):
                continue
            if "." in name and (head == "data" or head in imported):
                continue
            params = call.get("params") or []
            line = int(call.get("span", {}).get("line", 0))
            calls.append(BuiltinCall(name, len(params), file, line))
    return calls
