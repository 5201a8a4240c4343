"""Strict JSON (RFC 8259) for what agents send: duplicate names refused, size, depth, lengths and counts bounded.

RFC 8259 §4 leaves duplicate object names to the parser ("the behavior of software that
receives such an object is unpredictable"); Python keeps the last, other parsers the first, so a
payload with two `subject`s could be checked as one patient's and stored as another's. I-JSON
(RFC 7493 §2.3) forbids them; so do we. The bounds keep one request from costing the sidecar
more than a request should (docs/limits.md lists them). Numbers I-JSON cannot carry exactly
(§2.2) and characters FHIR strings forbid are refused too: each would otherwise fail later, in
canonicalization or in the EHR, after policy had already been asked about the write.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# Longest member name accepted: every FHIR element name is far shorter.
MAX_NAME_CHARS: Final = 64

# I-JSON (RFC 7493 §2.2): integers outside ±(2**53 - 1) are not interoperable (a double cannot hold
# them exactly, so two parsers may read two different numbers), and RFC 8785 refuses them.
_INT_MAX: Final = 2**53 - 1

# FHIR R4 strings (datatypes.html#string): no code point below U+0020 but tab, CR and LF. A lone
# surrogate (what is left of a `\ud800` escape without its pair) is not a Unicode scalar value at
# all (RFC 8259 §8.2), so no UTF-8 encoder, RFC 8785 included, can write it.
_BAD_CHAR: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
# The JSON escapes (RFC 8259 §7) that decode to one of those.
_RISKY_ESCAPE: Final = re.compile(r"\\(?:[bf]|u00[01][0-9A-Fa-f]|u[Dd][89A-Fa-f][0-9A-Fa-f]{2})")


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
    # A typical resource holds 50-300 values; model validation costs ~8 µs a value, so this
    # bounds one proposal's validation near 30 ms.
    max_nodes: int = 4_000


RESOURCE_LIMITS: Final = JsonLimits()


class JsonLimitError(ValueError):
    """A document breaks one of the JsonLimits; `path` says where (never what the value is) and
    `reason` which kind of bound (the FieldViolation reason codes of docs/limits.md)."""

    def __init__(self, path: str, description: str, reason: str = "input.too_large") -> None:
        super().__init__(f"{path}: {description}")
        self.path = path
        self.description = description
        self.reason = reason


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(describe_key(key))
            seen.add(key)
    return result


def is_plain_name(key: str) -> bool:
    """Whether a member name may be repeated in a path or an error: a short plain name (FHIR
    element names are), not arbitrary agent text."""
    return _NAME.fullmatch(key) is not None


# Longest field path an error names: a path is built from member names (agent text, at most 64
# characters each) and indexes, so a deep one is cut rather than sent back whole. The same bound
# as a field in the gRPC error details (chartgate/rpc_errors.py), so the cut is made once, here.
MAX_PATH_CHARS: Final = 160


def bounded_path(path: str) -> str:
    """`path`, cut to MAX_PATH_CHARS (the cut marked with an ellipsis)."""
    return path if len(path) <= MAX_PATH_CHARS else path[: MAX_PATH_CHARS - 1] + "…"


def describe_key(key: str) -> str:
    """A key as it may appear in an error: quoted when it is a short plain name, else a stand-in
    (a key is agent-controlled text too)."""
    return f"member {key!r}" if _NAME.fullmatch(key) else "a member"


def check_size(text: str, limits: JsonLimits, root: str) -> None:
    """Raise JsonLimitError (`input.too_large`) if `text` is longer than `limits.max_bytes` in
    UTF-8; checked before parsing, so an oversized document costs no parse."""
    # A character is at least one UTF-8 byte, so the length alone refuses most oversized text;
    # only non-ASCII text that might fit is encoded to be measured.
    if len(text) > limits.max_bytes or (
        not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes
    ):
        raise JsonLimitError(root, f"larger than {limits.max_bytes} bytes of UTF-8")


def loads_strict(text: str | bytes, *, root: str = "$") -> Any:
    """json.loads that refuses duplicate object names (DuplicateKeyError) and non-JSON constants
    (NaN, Infinity: json.JSONDecodeError). Nesting deep enough to exhaust the parser's recursion
    raises JsonLimitError (at `root`, reason `input.too_deep`) rather than RecursionError."""
    try:
        if isinstance(text, str):
            return _DECODER.decode(text)
        # Bytes: json.loads detects the encoding (RFC 8259 §8.1 allows only UTF-8, but
        # json.loads also reads UTF-16/32), then decodes as above.
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_refuse_constant)
    except RecursionError:
        raise JsonLimitError(root, "nested too deeply to parse", "input.too_deep") from None


NON_JSON_CONSTANTS: Final = frozenset({"NaN", "Infinity", "-Infinity"})


def _refuse_constant(name: str) -> Any:
    # The decoder does not say where the constant was; `doc` carries its name (one of
    # NON_JSON_CONSTANTS) so a caller can tell this refusal from a syntax error.
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


# One decoder for every call: json.loads with hooks builds a new one each time (a few µs on
# every proposal). JSONDecoder keeps no state between calls, so threads may share it.
_DECODER: Final = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_refuse_constant)


def check_limits(value: Any, limits: JsonLimits, root: str) -> list[dict[str, Any]]:
    """Raise JsonLimitError at the first bound a parsed document breaks, naming the path from
    `root`: depth, string and member-name length, array and object sizes, the number of values,
    and numbers I-JSON cannot carry (non-finite floats, integers beyond ±(2**53 - 1)).

    Both walks are iterative (a deep document must not exhaust the stack). The first carries no
    paths, which is what makes it cheap; only a document that breaks a bound is walked again to
    say where. Returns every object of the document (outermost first), so that a check that
    looks at each object need not walk the document again."""
    objects: list[dict[str, Any]] = []
    if not _fits(value, limits, objects):
        _locate(value, limits, root)
    return objects


def _fits(value: Any, limits: JsonLimits, objects: list[dict[str, Any]]) -> bool:
    """Whether the document keeps every bound; breadth first, one level at a time, so the depth
    is the level number and no per-value tuple is built. Appends each object to `objects`."""
    keep = objects.append
    max_string = limits.max_string_chars
    max_items = limits.max_array_items
    max_members = limits.max_object_members
    nodes = 0
    depth = 0
    level = [value]
    while level:
        depth += 1
        nodes += len(level)
        if nodes > limits.max_nodes:
            return False
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                if len(item) > max_string:
                    return False
            elif kind is dict:
                if depth > limits.max_depth or len(item) > max_members:
                    return False
                if item and max(map(len, item)) > MAX_NAME_CHARS:
                    return False
                keep(item)
                below.extend(item.values())
            elif kind is list:
                if depth > limits.max_depth or len(item) > max_items:
                    return False
                below.extend(item)
            elif kind is int:
                if not -_INT_MAX <= item <= _INT_MAX:
                    return False
            elif kind is float and not math.isfinite(item):
                return False
        level = below
    return True


def _locate(value: Any, limits: JsonLimits, root: str) -> None:
    """The slow walk of a document `_fits` refused: depth first with paths, raising at the first
    breach. A member name that is not a plain name is left out of the path (it is agent text)."""
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, root, 1)]
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise JsonLimitError(
                root, f"more than {limits.max_nodes} values in all", "input.too_many"
            )
        kind = type(item)
        if kind is str:
            if len(item) > limits.max_string_chars:
                raise JsonLimitError(
                    path,
                    f"string longer than {limits.max_string_chars} characters",
                    "input.too_long",
                )
        elif kind is dict:
            if depth > limits.max_depth:
                raise JsonLimitError(
                    path, f"nested deeper than {limits.max_depth} levels", "input.too_deep"
                )
            if len(item) > limits.max_object_members:
                raise JsonLimitError(
                    path, f"more than {limits.max_object_members} members", "input.too_many"
                )
            for key, child in item.items():
                if len(key) > MAX_NAME_CHARS:
                    raise JsonLimitError(
                        path,
                        f"a member name longer than {MAX_NAME_CHARS} characters",
                        "input.too_long",
                    )
                stack.append((child, f"{path}.{key}" if _NAME.fullmatch(key) else path, depth + 1))
        elif kind is list:
            if depth > limits.max_depth:
                raise JsonLimitError(
                    path, f"nested deeper than {limits.max_depth} levels", "input.too_deep"
                )
            if len(item) > limits.max_array_items:
                raise JsonLimitError(
                    path, f"more than {limits.max_array_items} items", "input.too_many"
                )
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif kind is int:
            if not -_INT_MAX <= item <= _INT_MAX:
                raise JsonLimitError(
                    path,
                    "an integer outside ±(2^53 - 1), which JSON numbers do not carry exactly "
                    "(I-JSON, RFC 7493 §2.2)",
                    "input.out_of_range",
                )
        elif kind is float and not math.isfinite(item):
            raise JsonLimitError(
                path,
                "a number outside the range of a double (I-JSON, RFC 7493 §2.2)",
                "input.out_of_range",
            )
    # _fits and _locate check the same bounds; reaching here would be a defect, and still refuses.
    raise JsonLimitError(root, "the document breaks a size bound")


def check_characters(text: str, value: Any, root: str) -> None:
    """Raise JsonLimitError (reason `input.invalid_char`) if a string or member name of `value`,
    parsed from `text`, holds a control character FHIR forbids or a lone surrogate.

    json.loads refuses raw control characters inside strings, so such a character can only come
    from an escape that makes one (`\\b`, `\\f`, `\\u0000`-`\\u001f`, `\\ud800`-`\\udfff`) or, for
    a surrogate, from a `str` that was never valid UTF-8. Text with neither, the usual case even
    with `\\u00e9`-style escapes, costs a scan or two of the text; the values are walked only when
    one is found (an escaped backslash before such letters, or a valid surrogate pair, also
    leads to the walk, which then finds nothing)."""
    if ("\\" in text and _RISKY_ESCAPE.search(text)) or (
        not text.isascii() and _SURROGATE.search(text)
    ):
        _locate_char(value, root)


def _locate_char(value: Any, root: str) -> None:
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack:
        item, path = stack.pop()
        kind = type(item)
        if kind is str:
            if _BAD_CHAR.search(item):
                raise JsonLimitError(path, _CHAR_RULE, "input.invalid_char")
        elif kind is dict:
            for key, child in item.items():
                if _BAD_CHAR.search(key):
                    raise JsonLimitError(path, "a member name " + _CHAR_RULE, "input.invalid_char")
                stack.append((child, f"{path}.{key}" if _NAME.fullmatch(key) else path))
        elif kind is list:
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


_CHAR_RULE: Final = (
    "holds a control character (below U+0020 other than tab, CR, LF; FHIR R4 string) "
    "or a lone surrogate (not Unicode text, RFC 8259 §8.2)"
)


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
