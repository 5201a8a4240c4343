"""Sidecar configuration: the agent's identity and scopes (set by operators, never by requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chartgate.smart_scope import ScopeError, parse_scope
from sidecar.review.auth import IssuerConfig
from sidecar.validation.profiles import UnknownProfile, check_settings
from sidecar.validation.strict_json import loads_strict


class SidecarConfig(BaseModel):
    """Everything `chartgate serve` needs; loaded from a JSON file (docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_id: str = Field(min_length=1, description="Identity of the agent this sidecar serves.")
    tenant_id: str = Field(min_length=1, description="Tenant (hospital) the agent works for.")
    agent_scopes: tuple[str, ...] = Field(
        default=(), description="SMART v2 scopes granted to the agent, e.g. patient/Observation.c."
    )
    issuer: str = Field(default="chartgate-sidecar", description="`iss` of minted tokens.")
    adapter_target: str = Field(
        default="127.0.0.1:50052", description="host:port of the adapter's gRPC endpoint."
    )
    adapter_audience: str = Field(
        default="chartgate-adapter", description="`aud` of minted tokens: the adapter's name."
    )
    adapter_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    policy_dir: Path | None = Field(
        default=None,
        description="Directory of Rego policy (default: the library shipped with Chartgate).",
    )
    policy_engine: Literal["regorus", "opa"] = Field(
        default="regorus",
        description="In-process engine: regorus (default) or opa (OPA's Go engine; optional).",
    )
    policy_data: Path | None = Field(
        default=None, description="Operator data JSON (tenant settings, kill switches)."
    )
    shadow_policy_dir: Path | None = Field(
        default=None,
        description="A candidate Rego directory evaluated beside the enforced one (dry run).",
    )
    shadow_policy_data: Path | None = Field(
        default=None, description="Operator data for the shadow policy (default: policy_data)."
    )
    opa_url: str | None = Field(
        default=None, description="Use an OPA server at this URL instead of an in-process engine."
    )
    opa_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    consents_file: Path | None = Field(
        default=None, description="JSON list of consent records (docs/policy.md)."
    )
    token_ttl_seconds: int = Field(default=60, ge=1, le=60)
    store_path: Path | None = Field(
        default=None,
        description="SQLite proposal store file (default WORKDIR/sidecar/ledger.sqlite3); several "
        "processes on one host may share it.",
    )
    review_listen: str | None = Field(
        default=None,
        description="HOST:PORT of the Review API (chartgate.v1.Review) for reviewers; none: off.",
    )
    reviewer_issuers: tuple[IssuerConfig, ...] = Field(
        default=(),
        description="Issuers whose tokens reviewers present (docs/review-auth.md).",
    )
    sweep_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often this replica expires and escalates held proposals and continues "
        "unsettled writes (retries, look-ups, writes a failed process left).",
    )
    store_dsn: str | None = Field(
        default=None,
        description="PostgreSQL DSN of the proposal store shared by replicas (instead of SQLite).",
    )
    operator_roles: tuple[str, ...] = Field(
        default=("chartgate-operator",),
        description="Roles (reviewer token claims) that may list, replay and discard dead "
        "letters through the Review API.",
    )
    retry_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Attempts of one write before it is dead-lettered."
    )
    retry_base_seconds: float = Field(
        default=0.5, gt=0, le=60, description="First backoff ceiling; doubles every attempt."
    )
    retry_cap_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Largest backoff ceiling (full jitter below it)."
    )
    retry_max_total_seconds: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="Time from a write's first attempt after which it is dead-lettered.",
    )
    retry_index_delay_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="Wait after an ambiguous attempt before a look-up that finds nothing counts "
        "as absent (search indexes lag).",
    )
    required_profiles: tuple[str, ...] | None = Field(
        default=(),
        description="Profiles the target EHR requires, checked before any token is minted "
        "(docs/validation.md): [] checks R4 core's required bindings and the profiles a resource "
        "claims; a list adds those canonical URLs; null adds the shipped defaults (US Core "
        "where it applies, the R4 vital-signs profiles).",
    )
    must_support: tuple[str, ...] = Field(
        default=(),
        description="Elements (e.g. `Observation.effective[x]`) the target EHR requires present.",
    )
    reconcile_writes: bool = Field(
        default=True,
        description="Read every accepted write back and compare it with what was intended "
        "(accepted → reconciled | mismatch; docs/reconciliation.md).",
    )
    max_queued_writes: int = Field(
        default=100,
        ge=0,
        le=100000,
        description="Writes of this agent that may wait while the adapter asks for a pause; "
        "past it Propose answers RESOURCE_EXHAUSTED with a retry-after hint.",
    )

    @field_validator("agent_scopes")
    @classmethod
    def _scopes_are_smart_v2(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        for scope in scopes:
            try:
                parse_scope(scope)
            except ScopeError as exc:
                raise ValueError(f"scope {scope[:200]!r}: {exc}") from None
        return scopes

    @model_validator(mode="after")
    def _profiles_are_shipped(self) -> SidecarConfig:
        try:
            check_settings(self.required_profiles, self.must_support)
        except UnknownProfile as exc:
            raise ValueError(f"required_profiles / must_support: {exc}") from None
        return self

    @model_validator(mode="after")
    def _review_needs_issuers(self) -> SidecarConfig:
        if self.review_listen and not self.reviewer_issuers:
            raise ValueError(
                "review_listen is set but reviewer_issuers is empty: no reviewer could sign in "
                "(docs/review-auth.md)"
            )
        return self

    @classmethod
    def load(cls, path: Path) -> SidecarConfig:
        """Read and validate a JSON config file; relative paths resolve against its directory."""
        return cls.model_validate(loads_strict(path.read_text())).resolved(path.parent)

    @property
    def effective_policy_dir(self) -> Path:
        """The configured policy directory, or the shipped library when none is configured."""
        if self.policy_dir is not None:
            return self.policy_dir
        from sidecar.policy.library import shipped_policy_dir

        return shipped_policy_dir()

    def resolved(self, base: Path) -> SidecarConfig:
        """This config with every relative path setting made absolute against `base`."""
        update = {}
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                update[name] = base / value
        issuers = tuple(
            issuer.model_copy(update={"jwks_file": base / issuer.jwks_file})
            if issuer.jwks_file is not None and not issuer.jwks_file.is_absolute()
            else issuer
            for issuer in self.reviewer_issuers
        )
        if issuers != self.reviewer_issuers:
            update["reviewer_issuers"] = issuers
        return self.model_copy(update=update)


# The settings that name files or directories (derived from the model, so a new one is covered).
_PATH_FIELDS = tuple(
    name
    for name, field in SidecarConfig.model_fields.items()
    if field.annotation in (Path, Path | None)
)
