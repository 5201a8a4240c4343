"""The interface every vendor module fills in: a frozen VendorProfile whose every fact names its public source."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Interaction = Literal["create", "update"]
INTERACTIONS: Final[tuple[Interaction, ...]] = ("create", "update")
ANY_TYPE: Final = "*"

# adapters/errors.py FailureClass values a vendor's error may map to. Spelled out rather than
# imported: this module is read by the local FHIR store, which has no business importing the
# adapter's gRPC stubs.
FailureName = Literal[
    "transport",
    "ambiguous",
    "throttled",
    "server_error",
    "validation",
    "authorization",
    "conflict",
    "business_rule",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Verification(StrEnum):
    """How far a fact could be checked here (docs/adapters.md, "What each fact rests on")."""

    # Read in the vendor's own published text (its documentation or CapabilityStatement).
    VENDOR = "vendor-doc"
    # Only seen in a third party's account of the vendor: treated as unverified.
    THIRD_PARTY = "third-party"
    # Not found in any public source reachable here: a conservative assumption.
    UNVERIFIED = "unverified"


class Source(BaseModel):
    """Where a fact comes from. `unverified` is true unless the vendor's own text was read."""

    model_config = _FROZEN

    url: str = Field(pattern=r"^https://\S+$")
    verification: Verification
    note: str = ""

    @property
    def unverified(self) -> bool:
        return self.verification is not Verification.VENDOR


class Writes(BaseModel):
    """The resource types the vendor's FHIR API takes for create and for update (`*`: any)."""

    model_config = _FROZEN

    create: frozenset[str] = frozenset()
    update: frozenset[str] = frozenset()
    source: Source

    def accepts(self, interaction: Interaction, resource_type: str) -> bool:
        types = self.create if interaction == "create" else self.update
        return ANY_TYPE in types or resource_type in types


class Conditionals(BaseModel):
    """Conditional create (If-None-Exist), conditional update and transaction bundles.

    Where conditional create is false (or unverified, which is treated as false) the adapter
    emulates it: a search for the stamped identifier, then a plain create, under a lock per
    identifier (adapters/vendors/emulation.py).
    """

    model_config = _FROZEN

    conditional_create: bool
    conditional_update: bool
    transactions: bool
    source: Source


class IdentifierRule(BaseModel):
    """An identifier the vendor requires on a created resource; `value` may name settings as {name}."""

    model_config = _FROZEN

    system: str
    value: str
    resource_types: frozenset[str] = frozenset({ANY_TYPE})


class ExtensionRule(BaseModel):
    """A resource-level extension the vendor requires; its valueReference may name settings as {name}."""

    model_config = _FROZEN

    url: str
    value_reference: str
    resource_types: frozenset[str] = frozenset({ANY_TYPE})


class Requirements(BaseModel):
    """What a created resource must carry: added by the adapter (identifiers, extensions, meta
    profiles) or checked before the wire (elements present, fixed values)."""

    model_config = _FROZEN

    identifiers: tuple[IdentifierRule, ...] = ()
    extensions: tuple[ExtensionRule, ...] = ()
    profiles: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    elements: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    fixed: Mapping[str, Mapping[str, str]] = Field(default_factory=dict)
    source: Source

    def applies(self, types: frozenset[str], resource_type: str) -> bool:
        return ANY_TYPE in types or resource_type in types


class RateLimit(BaseModel):
    """The vendor's documented limit (None where it publishes no number)."""

    model_config = _FROZEN

    requests: int | None = None
    per_seconds: float | None = None
    scope: str = ""
    description: str
    source: Source


class ErrorRule(BaseModel):
    """A vendor error shape and the failure class it means: an answer with `status` whose body
    contains `contains` (case-insensitive; empty matches any body)."""

    model_config = _FROZEN

    status: int = Field(ge=400, le=599)
    contains: str = ""
    failure: FailureName
    reason: str = Field(pattern=r"^vendor\.[a-z_]+$")
    # Where the wait before a retry comes from: the Retry-After header, or (a vendor that
    # resets its counter every minute and says no more) the start of the next minute.
    retry_after: Literal["header", "next-minute"] = "header"
    source: Source

    @field_validator("status")
    @classmethod
    def _not_401(cls, status: int) -> int:
        # A 401 belongs to the SMART auth (one token refresh, then authorization): never remapped.
        if status == 401:
            raise ValueError("401 is left to the SMART auth's refresh")
        return status


class ErrorReporting(BaseModel):
    """How the vendor reports errors, what it answers to a write it does not take, and the error
    shapes that mean something other than their HTTP status says (adapters/fhir_client.py)."""

    model_config = _FROZEN

    format: str
    unsupported_write_status: int = Field(ge=400, le=599)
    rules: tuple[ErrorRule, ...] = ()
    source: Source


class TokenEndpoint(BaseModel):
    """SMART Backend Services at the vendor (adapters/smart/, docs/smart.md)."""

    model_config = _FROZEN

    url: str | None = None
    algorithms: frozenset[str]
    max_assertion_lifetime_seconds: int = Field(gt=0)
    access_token_lifetime_seconds: int | None = None
    notes: str = ""
    source: Source


class Setting(BaseModel):
    """A per-connection value the profile needs (`--vendor-setting NAME=VALUE`)."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    pattern: str
    example: str  # a well-formed value, for the docs and the shared test suite


class VendorProfile(BaseModel):
    """Everything Chartgate knows about one vendor's FHIR write API, each fact with its source."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    summary: str
    fhir_version: str = "4.0.1"
    writes: Writes
    conditionals: Conditionals
    requirements: Requirements
    rate_limit: RateLimit
    errors: ErrorReporting
    token: TokenEndpoint
    settings: tuple[Setting, ...] = ()

    def accepts(self, interaction: Interaction, resource_type: str) -> bool:
        return self.writes.accepts(interaction, resource_type)

    def sources(self) -> Iterator[tuple[str, Source]]:
        """(fact, source) for every fact group and error rule: for the docs and the shared suite."""
        for fact in ("writes", "conditionals", "requirements", "rate_limit", "errors", "token"):
            group = getattr(self, fact)
            yield fact, group.source
        for rule in self.errors.rules:
            yield f"errors.rules[{rule.reason}]", rule.source

    def check_settings(self, values: Mapping[str, str]) -> dict[str, str]:
        """The settings this profile needs, every one present and well formed; else ValueError
        naming the setting (raised at start, never on a write)."""
        known = {s.name: s for s in self.settings}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"vendor {self.name} takes no setting {', '.join(unknown)}")
        checked: dict[str, str] = {}
        for name, setting in known.items():
            value = values.get(name)
            if value is None:
                raise ValueError(
                    f"vendor {self.name} needs --vendor-setting {name}=... ({setting.description})"
                )
            if not re.fullmatch(setting.pattern, value):
                raise ValueError(
                    f"vendor {self.name} setting {name} does not match {setting.pattern}"
                )
            checked[name] = value
        return checked

    def token_mismatches(self, alg: str, assertion_lifetime_seconds: int) -> list[str]:
        """Where SMART settings disagree with what the vendor's token endpoint is said to take
        (warnings at start: the facts behind them may be unverified)."""
        found: list[str] = []
        if alg not in self.token.algorithms:
            allowed = ", ".join(sorted(self.token.algorithms))
            found.append(f"{self.name} token endpoint takes {allowed}, not {alg}")
        if assertion_lifetime_seconds > self.token.max_assertion_lifetime_seconds:
            found.append(
                f"{self.name} token endpoint takes assertions of at most "
                f"{self.token.max_assertion_lifetime_seconds} s"
            )
        return found
