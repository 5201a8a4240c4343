"""The typed records the store keeps: a proposal with everything needed to continue it, and each reviewer's approval.

Every step of a proposal (decide, approve, submit, record the outcome) is a function of a stored
ProposalRecord, so any process sharing the store can take any proposal up again: an approval on
another replica, a retry, a restart (DESIGN.md, "Processes"). The payload and the context are
PHI or close to it: they stay in the store and go only to policy and the adapter, never to logs
or audit records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sidecar.proposals.lifecycle import State


def utc_now() -> str:
    """RFC 3339 UTC timestamp with microseconds (sorts as text in time order)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class ProposalContext:
    """What the agent said about the write, beside the resource itself, and the scopes the agent
    held when it proposed it (from its sidecar's configuration), so any process can rebuild the
    policy input of any agent's proposal (an amendment decided on another replica)."""

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
    agent_scopes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "encounter_id": self.encounter_id,
            "purpose_of_use": self.purpose_of_use,
            "on_behalf_of": self.on_behalf_of,
            "model_version": self.model_version,
            "prompt_version": self.prompt_version,
            "confidence": self.confidence,
            "mode": self.mode,
            "evidence_refs": list(self.evidence_refs),
            "trace_id": self.trace_id,
            "agent_scopes": list(self.agent_scopes),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ProposalContext:
        return cls(
            patient_id=str(value.get("patient_id", "")),
            encounter_id=str(value.get("encounter_id", "")),
            purpose_of_use=str(value.get("purpose_of_use", "")),
            on_behalf_of=str(value.get("on_behalf_of", "")),
            model_version=str(value.get("model_version", "")),
            prompt_version=str(value.get("prompt_version", "")),
            confidence=float(value.get("confidence", 0.0)),
            mode=str(value.get("mode", "live")),
            evidence_refs=tuple(str(r) for r in value.get("evidence_refs", ())),
            trace_id=str(value.get("trace_id", "")),
            agent_scopes=tuple(str(s) for s in value.get("agent_scopes", ())),
        )


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One proposal as the store holds it.

    `payload` is the canonical resource JSON; `fields` and `summary` are what validation derived
    from it for policy. After the decision: `tier`, `reasons`, `policy_revision`, `obligations`
    (the decision's, e.g. token lifetime), and for a held proposal `approvals_required`,
    `approver_roles`, `expires_at` (after it, no approval counts) and `escalate_at` (when the
    wait is escalated; `escalated_at` once it was). `supersedes` / `superseded_by` link an amendment and the
    proposal it replaced; `rejection` holds a reviewer's structured reason.
    """

    proposal_id: str
    tenant_id: str
    agent_id: str
    idempotency_key: str
    payload_sha256: str
    payload: bytes
    tool: str
    operation: str
    resource_type: str
    target: str
    patient_id: str
    encounter_id: str
    trace_id: str
    state: State
    context: ProposalContext
    fields: tuple[str, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    tier: str = ""
    reasons: tuple[Mapping[str, str], ...] = ()
    policy_revision: str = ""
    obligations: Mapping[str, Any] = field(default_factory=dict)
    approvals_required: int = 0
    approver_roles: tuple[str, ...] = ()
    expires_at: str = ""
    escalate_at: str = ""
    escalated_at: str = ""
    supersedes: str = ""
    superseded_by: str = ""
    rejection: Mapping[str, str] = field(default_factory=dict)
    # The write's delivery: attempts, the token id of the latest, when the next is due, and the
    # history of what each attempt came to (classes and reasons, no content).
    delivery: Mapping[str, Any] = field(default_factory=dict)
    # Where the decision record sits in the audit log: origin, leaf index and hash, and a signed
    # checkpoint that includes it (RFC 9162; `chartgate audit prove inclusion`).
    receipt: Mapping[str, Any] = field(default_factory=dict)
    # The read-back of the written resource against what was intended: result, the differences
    # (paths and severities, no values), when, and how many read-backs it took.
    reconciliation: Mapping[str, Any] = field(default_factory=dict)
    fhir_id: str = ""
    fhir_version: str = ""
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One reviewer's approval of one payload of one proposal.

    A reviewer is an (issuer, subject) pair: two sessions of one person are one reviewer.
    `payload_sha256` is the payload the reviewer saw; an approval of another payload does not
    count. `fhir_user` is the reviewer's FHIR identity (the SMART `fhirUser` claim), compared
    with the person the agent acted for.
    """

    approval_id: str
    proposal_id: str
    issuer: str
    subject: str
    roles: tuple[str, ...]
    payload_sha256: str
    fhir_user: str = ""
    created_at: str = ""


@dataclass(frozen=True, slots=True)
class ProposalQuery:
    """Which proposals to list (every criterion optional; all given must hold)."""

    tenant_id: str | None = None
    states: tuple[State, ...] = ()
    tier: str | None = None
    patient_id: str | None = None
    resource_type: str | None = None
    agent_id: str | None = None
    created_before: str | None = None  # RFC 3339; "older than"
    expires_before: str | None = None  # RFC 3339; held proposals whose window ends before it
    escalation_due_before: str | None = None  # RFC 3339; due for escalation, not yet escalated
    limit: int = 100
