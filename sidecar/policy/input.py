"""Build the documented policy input (docs/policy.md) for one validated proposal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from chartgate.smart_scope import parse_scope
from sidecar.config import SidecarConfig
from sidecar.validation.fhir import ValidatedWrite


@dataclass(frozen=True, slots=True)
class ProposalContext:
    """What the agent said about the write, beside the resource itself."""

    patient_id: str
    encounter_id: str
    purpose_of_use: str
    on_behalf_of: str
    model_version: str
    prompt_version: str
    confidence: float
    mode: str
    evidence_refs: Sequence[str]
    trace_id: str


@lru_cache(maxsize=64)
def _grants(scopes: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """The configured scopes as policy grants, parsed once per distinct configuration (the config
    validated them at load)."""
    return tuple(parse_scope(scope).to_policy() for scope in scopes)


def build_input(
    config: SidecarConfig,
    write: ValidatedWrite,
    context: ProposalContext,
    consents: Sequence[dict[str, Any]],
    now_ns: int | None = None,
) -> dict[str, Any]:
    """The policy input. Times go in as integer ns plus RFC 3339 with a numeric offset, a form both
    rego-cpp and OPA parse (rego-cpp 1.5.2 leaves a `Z` suffix undefined)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    moment = datetime.fromtimestamp(now_ns / 1e9, tz=UTC)
    return {
        "time": {"now_ns": now_ns, "rfc3339": moment.isoformat(timespec="seconds")},
        "agent": {
            "id": config.agent_id,
            "tenant": config.tenant_id,
            "scopes": list(config.agent_scopes),
            "grants": list(_grants(config.agent_scopes)),
        },
        "action": {
            "tool": write.tool,
            "operation": write.operation,
            "resource_type": write.resource_type,
            "target": write.target,
            "fields": list(write.fields),
            "summary": write.summary,
            "payload_sha256": write.payload.sha256,
        },
        "patient": {"id": context.patient_id},
        "encounter": {"id": context.encounter_id},
        "purpose_of_use": context.purpose_of_use,
        "on_behalf_of": context.on_behalf_of,
        "consents": list(consents),
        "tenant": {"id": config.tenant_id},
        "model": {"version": context.model_version, "prompt_version": context.prompt_version},
        "confidence": context.confidence,
        "mode": context.mode,
        "evidence_refs": list(context.evidence_refs),
        "trace_id": context.trace_id,
    }
