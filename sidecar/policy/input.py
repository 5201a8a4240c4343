"""Build the documented policy input (docs/policy.md) for one validated proposal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from chartgate.smart_scope import parse_scope
from sidecar.config import SidecarConfig
from sidecar.storage.records import ProposalContext, ProposalRecord

__all__ = ["ProposalContext", "build_input"]


@lru_cache(maxsize=64)
def _grants(scopes: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """The configured scopes as policy grants, parsed once per distinct configuration (the config
    validated them at load)."""
    return tuple(parse_scope(scope).to_policy() for scope in scopes)


def build_input(
    config: SidecarConfig,
    record: ProposalRecord,
    consents: Sequence[dict[str, Any]],
    now_ns: int | None = None,
) -> dict[str, Any]:
    """The policy input for a stored proposal (everything comes from the record, so any process
    sharing the store decides it the same way). Times go in as integer ns plus RFC 3339 with a
    numeric offset. The agent's identity and scopes are the record's: the ones its agent held
    when it proposed (this process's configuration only fills in a record that has none)."""
    context = record.context
    scopes = context.agent_scopes or tuple(config.agent_scopes)
    now_ns = time.time_ns() if now_ns is None else now_ns
    moment = datetime.fromtimestamp(now_ns / 1e9, tz=UTC)
    return {
        "time": {"now_ns": now_ns, "rfc3339": moment.isoformat(timespec="seconds")},
        "agent": {
            "id": record.agent_id,
            "tenant": record.tenant_id,
            "scopes": list(scopes),
            "grants": list(_grants(scopes)),
        },
        "action": {
            "tool": record.tool,
            "operation": record.operation,
            "resource_type": record.resource_type,
            "target": record.target,
            "fields": list(record.fields),
            "summary": dict(record.summary),
            "payload_sha256": record.payload_sha256,
        },
        "patient": {"id": context.patient_id},
        "encounter": {"id": context.encounter_id},
        "purpose_of_use": context.purpose_of_use,
        "on_behalf_of": context.on_behalf_of,
        "consents": list(consents),
        "tenant": {"id": record.tenant_id},
        "model": {"version": context.model_version, "prompt_version": context.prompt_version},
        "confidence": context.confidence,
        "mode": context.mode,
        "evidence_refs": list(context.evidence_refs),
        "trace_id": context.trace_id,
    }
