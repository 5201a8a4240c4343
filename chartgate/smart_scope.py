"""SMART App Launch v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html), parsed once.

A scope is `<patient|user|system>/<Type or *>.<permissions>[?<query>]`, permissions an ordered
subset of `cruds`, the query `name=value[,value...]&...` of FHIR search parameters. Scopes are an
operator's configuration, so they are parsed when the configuration loads (a malformed one is
refused there, naming it) and handed to policy as structured grants: policy decides what a grant
allows without re-parsing strings on every decision (docs/policy.md, "Scopes").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>[A-Z][A-Za-z]{0,63}|\*)\."
    r"(?P<permissions>c?r?u?d?s?)(?:\?(?P<query>[^?#\s]+))?"
)
_PARAMETER = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_MAX_VALUES: Final = 32


class ScopeError(ValueError):
    """A scope that is not SMART v2 syntax."""


@dataclass(frozen=True, slots=True)
class TokenValue:
    """One value of a token search parameter (FHIR search, "token"): `code` (any system),
    `system|code`, `system|` (any code) or `|code` (no system). None stands for "any"."""

    system: str | None
    code: str | None

    @classmethod
    def parse(cls, text: str) -> TokenValue:
        if "|" not in text:
            return cls(None, text)
        system, _, code = text.partition("|")
        if "|" in code:
            raise ScopeError("a token value has at most one '|'")
        return cls(system, code or None)


@dataclass(frozen=True, slots=True)
class FilterParameter:
    """One `name=v1,v2` of a scope's query: it matches when one of its values does."""

    name: str
    values: tuple[TokenValue, ...]


@dataclass(frozen=True, slots=True)
class SmartScope:
    """A parsed SMART v2 resource scope."""

    text: str
    context: str
    resource_type: str
    permissions: str
    filter: tuple[FilterParameter, ...]

    def grants(self, letter: str) -> bool:
        return letter in self.permissions

    def to_policy(self) -> dict[str, Any]:
        """The grant as policy sees it (docs/policy.md, "Input": `agent.grants`)."""
        return {
            "scope": self.text,
            "context": self.context,
            "type": self.resource_type,
            "permissions": self.permissions,
            "filter": [
                {
                    "name": p.name,
                    "values": [{"system": v.system, "code": v.code} for v in p.values],
                }
                for p in self.filter
            ],
        }


def parse_scope(text: str) -> SmartScope:
    """Parse one scope; raise ScopeError saying what is wrong (never echoing more than the scope)."""
    match = _SCOPE.fullmatch(text)
    if match is None or not match.group("permissions"):
        raise ScopeError(
            "not a SMART v2 resource scope: expected <patient|user|system>/<Type or *>."
            "<permissions, an ordered subset of cruds>[?<search parameters>]"
        )
    parameters: list[FilterParameter] = []
    query = match.group("query")
    for part in query.split("&") if query else ():
        name, sep, values = part.partition("=")
        if not sep or not _PARAMETER.fullmatch(name) or not values:
            raise ScopeError("each search parameter must be name=value[,value...]")
        texts = values.split(",")
        if len(texts) > _MAX_VALUES or any(not t for t in texts):
            raise ScopeError(f"a search parameter takes 1..{_MAX_VALUES} non-empty values")
        parameters.append(FilterParameter(name, tuple(TokenValue.parse(t) for t in texts)))
    return SmartScope(
        text=text,
        context=match.group("context"),
        resource_type=match.group("type"),
        permissions=match.group("permissions"),
        filter=tuple(parameters),
    )
