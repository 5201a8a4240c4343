"""Search: parse _id, identifier (token), patient/subject (reference), _count; match resources (R4 search.html)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

from chartgate.devstore.outcome import FhirError, fhir_error
from chartgate.devstore.resource_types import ID_PATTERN, TYPE_PATTERN, element_datatype

DEFAULT_COUNT: Final = 100
MAX_COUNT: Final = 1000
# Parameters that shape the result page rather than select resources (search.html#count,
# #_format). `_offset` is this server's own paging parameter, used in its `next` links.
RESULT_PARAMETERS: Final = frozenset({"_count", "_offset", "_format", "_pretty"})

_NAME: Final = re.compile(r"[A-Za-z0-9_\-.:]{1,64}")
_LOCAL_REFERENCE: Final = re.compile(
    rf"(?P<type>{TYPE_PATTERN.pattern})/(?P<id>{ID_PATTERN.pattern})(?:/_history/[^/]+)?"
)


class Criterion(Protocol):
    def matches(self, resource: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search: every criterion must match (AND); `used` and `ignored` are for the Bundle."""

    criteria: tuple[Criterion, ...] = ()
    used: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0

    def matches(self, resource: Mapping[str, Any]) -> bool:
        return all(criterion.matches(resource) for criterion in self.criteria)


def parse_search(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    base_url: str,
    strict: bool,
) -> SearchQuery:
    """Parse query parameters for a search of `resource_type`.

    Unknown or unsupported parameters are ignored and reported (lenient, the default), or refused
    with 400 under `Prefer: handling=strict` (search.html#errors). An unsupported *modifier* of a
    supported parameter is always refused: ignoring `identifier:not=x` would return its opposite.
    """
    criteria: list[Criterion] = []
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    count, offset = DEFAULT_COUNT, 0
    for name, value in params:
        base, _, modifier = name.partition(":")
        if name == "_count":
            count = min(_non_negative(name, value), MAX_COUNT)
        elif name == "_offset":
            offset = _non_negative(name, value)
        elif name in RESULT_PARAMETERS:
            continue  # _format is negotiated by the app; _pretty does not change JSON meaning
        elif value == "":
            continue  # no value, no constraint: treated as absent, as common servers do
        elif (criterion := _criterion(resource_type, base, modifier, value, base_url)) is not None:
            criteria.append(criterion)
            used.append((name, value))
        elif strict:
            raise fhir_error(
                400,
                "not-supported",
                f"search parameter {_shown(name)} is unknown or not supported for {resource_type}",
            )
        else:
            ignored.append(_shown(name))
    return SearchQuery(tuple(criteria), tuple(used), tuple(ignored), count, offset)


def parse_condition(resource_type: str, header: str, *, base_url: str) -> SearchQuery:
    """Parse an If-None-Exist header (http.html#ccreate): strictly, and it must select something.

    Lenient handling here would be dangerous: an ignored parameter widens the match, and a
    conditional create would then answer with some unrelated resource.
    """
    query = header.strip()
    if "?" in query:  # tolerate "Observation?identifier=..." by dropping a matching type prefix
        prefix, _, query = query.partition("?")
        if prefix not in ("", resource_type):
            raise fhir_error(400, "invalid", "If-None-Exist names another resource type")
    params = parse_qsl(query, keep_blank_values=True)
    if any(name in RESULT_PARAMETERS for name, _ in params):
        raise fhir_error(400, "invalid", "If-None-Exist takes search parameters only")
    parsed = parse_search(resource_type, params, base_url=base_url, strict=True)
    if not parsed.criteria:
        raise fhir_error(400, "invalid", "If-None-Exist has no search criteria")
    return parsed


def _criterion(
    resource_type: str, name: str, modifier: str, value: str, base_url: str
) -> Criterion | None:
    """The criterion for one parameter, or None when the type has no such parameter."""
    if name == "_id":
        if modifier:
            raise _bad_modifier(name, modifier)
        return IdCriterion(frozenset(_unescape(v) for v in _split(value, ",")))
    if name == "identifier" and element_datatype(resource_type, "identifier") == "Identifier":
        if modifier == "missing":
            return MissingCriterion("identifier", _boolean(name, value))
        if modifier:
            raise _bad_modifier(name, modifier)
        return TokenCriterion("identifier", tuple(_token(v) for v in _split(value, ",")))
    if name in ("patient", "subject"):
        element, target = _reference_element(resource_type, name)
        if element is None:
            return None
        if modifier == "missing":
            return MissingReferenceCriterion(element, _boolean(name, value), target, base_url)
        if modifier:
            if not TYPE_PATTERN.fullmatch(modifier):  # [param]:[Type] narrows the target type
                raise _bad_modifier(name, modifier)
            if target is not None and modifier != target:
                raise fhir_error(400, "invalid", f"{name} only refers to {target}")
            target = modifier
        targets = tuple(_reference(_unescape(v), target, base_url) for v in _split(value, ","))
        required = target if name == "patient" else None
        return ReferenceCriterion(element, required, targets, base_url)
    return None


def _reference_element(resource_type: str, name: str) -> tuple[str | None, str | None]:
    """(element, required target type) of the reference parameter on this type, if it has one.

    `patient` is the `patient` element where the type has one, else `subject` restricted to
    Patient; this is how R4 defines it for the clinical types (e.g. Observation.subject.where(
    resolve() is Patient), AllergyIntolerance.patient).
    """
    if name == "subject":
        has_subject = element_datatype(resource_type, "subject") == "Reference"
        return ("subject" if has_subject else None), None
    for element in ("patient", "subject"):
        if element_datatype(resource_type, element) == "Reference":
            return element, "Patient"
    return None, None


@dataclass(frozen=True, slots=True)
class IdCriterion:
    ids: frozenset[str]

    def matches(self, resource: Mapping[str, Any]) -> bool:
        return resource.get("id") in self.ids


@dataclass(frozen=True, slots=True)
class Token:
    """`code`, `system|code`, `|code` (system absent) or `system|` (search.html#token).

    system None: any system; "" : no system. code None: any code.
    """

    system: str | None
    code: str | None

    def matches(self, identifier: Mapping[str, Any]) -> bool:
        system = identifier.get("system") or ""
        if self.system is not None and system != self.system:
            return False
        return self.code is None or identifier.get("value") == self.code


@dataclass(frozen=True, slots=True)
class TokenCriterion:
    element: str
    tokens: tuple[Token, ...]

    def matches(self, resource: Mapping[str, Any]) -> bool:
        return any(t.matches(i) for i in _items(resource.get(self.element)) for t in self.tokens)


@dataclass(frozen=True, slots=True)
class Target:
    """A reference search value: a local (type, id), or an absolute URL compared literally."""

    resource_type: str | None
    resource_id: str | None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceCriterion:
    element: str
    required_type: str | None  # `patient` only matches references to a Patient
    targets: tuple[Target, ...]
    base_url: str  # references under this base are local ones

    def matches(self, resource: Mapping[str, Any]) -> bool:
        stored = _references(resource, self.element, self.required_type, self.base_url)
        return any(_same(s, target) for s in stored for target in self.targets)


@dataclass(frozen=True, slots=True)
class MissingCriterion:
    """`[param]:missing=true|false` on identifier (search.html#missing)."""

    element: str
    missing: bool

    def matches(self, resource: Mapping[str, Any]) -> bool:
        return (not _items(resource.get(self.element))) == self.missing


@dataclass(frozen=True, slots=True)
class MissingReferenceCriterion:
    """`:missing` on a reference parameter; for `patient`, a reference to a Group is missing."""

    element: str
    missing: bool
    required_type: str | None
    base_url: str

    def matches(self, resource: Mapping[str, Any]) -> bool:
        found = _references(resource, self.element, self.required_type, self.base_url)
        return (not found) == self.missing


def _references(
    resource: Mapping[str, Any], element: str, required_type: str | None, base_url: str
) -> list[Target]:
    """The literal references in an element, only those to `required_type` when it is set."""
    found = [
        _reference(r["reference"], None, base_url)
        for r in _items(resource.get(element))
        if isinstance(r.get("reference"), str)
    ]
    return [t for t in found if required_type is None or t.resource_type == required_type]


def _same(stored: Target, wanted: Target) -> bool:
    if wanted.url is not None or stored.url is not None:
        return wanted.url == stored.url
    if wanted.resource_type is not None and stored.resource_type != wanted.resource_type:
        return False
    return stored.resource_id == wanted.resource_id


def _reference(text: str, implied_type: str | None, base_url: str) -> Target:
    """Parse `id`, `Type/id[/_history/v]` or `[base]/Type/id` (search.html#reference)."""
    local = text.removeprefix(base_url.rstrip("/") + "/") if base_url else text
    if match := _LOCAL_REFERENCE.fullmatch(local):
        return Target(match["type"], match["id"])
    if ID_PATTERN.fullmatch(local):
        return Target(implied_type, local)
    return Target(None, None, text)  # another server's URL, urn:uuid:, #contained: literal


def _token(value: str) -> Token:
    parts = _split(value, "|")
    if len(parts) == 1:
        return Token(None, _unescape(parts[0]))
    if len(parts) != 2 or parts == ["", ""]:
        raise fhir_error(400, "invalid", "a token is code, system|code, |code or system|")
    system, code = (_unescape(p) for p in parts)
    return Token(system, code or None)


def _split(value: str, separator: str) -> list[str]:
    """Split at separators not escaped with a backslash (search.html#escaping)."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


def _items(value: Any) -> Sequence[Mapping[str, Any]]:
    """An element's values as a list of objects, whether it repeats (0..*) or not (0..1)."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, Mapping)]


def _non_negative(name: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", value):
        raise fhir_error(400, "invalid", f"{name} must be a non-negative integer")
    return int(value)


def _boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise fhir_error(400, "invalid", f"{name}:missing takes true or false")
    return value == "true"


def _bad_modifier(name: str, modifier: str) -> FhirError:
    return fhir_error(
        400, "not-supported", f"modifier :{_shown(modifier)} of {name} is not supported"
    )


def _shown(name: str) -> str:
    """A parameter name fit to quote back: names are client text, so only plain ones are echoed."""
    return name if _NAME.fullmatch(name) else "(malformed name)"
