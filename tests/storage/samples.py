"""Records for the store suite: a plain one, and one with every field set to something awkward."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sidecar.proposals.lifecycle import State
from sidecar.storage.records import ApprovalRecord, ProposalContext, ProposalRecord

# Text a store could mangle: non-ASCII in several planes, combining marks, a right-to-left
# run, line separators, quotes and backslashes, SQL and printf-style placeholders.
AWKWARD = "Zoë 患者 🩺 e\u0301 \u05d0\u05d1 \u2028 'q\" \\ %s %(x)s ?; DROP TABLE proposals; --"


def context(**overrides: Any) -> ProposalContext:
    base = ProposalContext(
        patient_id="patient-1",
        encounter_id="",
        purpose_of_use="TREAT",
        on_behalf_of="",
        model_version="model-1",
        prompt_version="prompt-1",
        confidence=0.5,
        mode="live",
        evidence_refs=(),
        trace_id="",
    )
    return replace(base, **overrides)


def record(
    proposal_id: str = "pr-1",
    *,
    key: str | None = None,
    tenant_id: str = "tenant-1",
    agent_id: str = "agent-1",
    state: State = State.VALIDATED,
    **overrides: Any,
) -> ProposalRecord:
    """A plain proposal (defaults for everything the decision fills in later)."""
    base = ProposalRecord(
        proposal_id=proposal_id,
        tenant_id=tenant_id,
        agent_id=agent_id,
        idempotency_key=key if key is not None else f"key-{proposal_id}",
        payload_sha256="a" * 64,
        payload=b'{"resourceType":"Observation"}',
        tool="fhir.create",
        operation="create",
        resource_type="Observation",
        target="Observation",
        patient_id="patient-1",
        encounter_id="",
        trace_id="",
        state=state,
        context=context(),
    )
    return replace(base, **overrides)


def full_context() -> ProposalContext:
    """A context with no field left at its default (tests/storage/suite.py checks that)."""
    return ProposalContext(
        patient_id="patient-" + AWKWARD,
        encounter_id="encounter-7",
        purpose_of_use="ETREAT",
        on_behalf_of="Practitioner/" + AWKWARD,
        model_version="model-\u00df-2025.1",
        prompt_version="prompt-\u0394",
        confidence=0.1 + 0.2,  # 0.30000000000000004: every digit must come back
        mode="batch",
        evidence_refs=("DocumentReference/1", "Observation/é", ""),
        trace_id="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        agent_scopes=("patient/Observation.c", "patient/Condition.rs"),
    )


def full_record(proposal_id: str = "pr-full") -> ProposalRecord:
    """A proposal with every field set, none to its default, each to something awkward."""
    return ProposalRecord(
        proposal_id=proposal_id,
        tenant_id="tenant-" + AWKWARD,
        agent_id="agent-" + AWKWARD,
        idempotency_key="key-" + AWKWARD,
        payload_sha256="0123456789abcdef" * 4,
        # Every byte value, NUL and invalid UTF-8 included: the payload is bytes, not text.
        payload=bytes(range(256)) * 3 + b"\x00",
        tool="fhir.update",
        operation="update",
        resource_type="Condition",
        target="Condition/" + AWKWARD,
        patient_id="patient-" + AWKWARD,
        encounter_id="encounter-7",
        trace_id="trace-" + AWKWARD,
        state=State.PENDING_APPROVAL,
        context=full_context(),
        fields=("code", "valueQuantity.value", AWKWARD),
        summary={
            "code": {"system": "http://loinc.org", "code": "8867-4", "display": AWKWARD},
            "values": [1, -2, 3.25, 1e300, 5e-324, True, False, None, "", [], {}],
            "nested": {"deeper": {"deepest": [{"a": [1, {"b": "c"}]}]}},
            AWKWARD: "a key of awkward text",
        },
        tier="dual_approval",
        reasons=({"code": "tier.dual", "message": AWKWARD}, {"code": "consent.ok", "message": ""}),
        policy_revision="rev-" + AWKWARD,
        obligations={"token_ttl_seconds": 45, "approval_expiry": 900.5, "roles": ["nurse"]},
        approvals_required=2,
        approver_roles=("physician", "pharmacist", AWKWARD),
        expires_at="2030-01-01T00:00:00.000000+00:00",
        escalate_at="2029-12-31T23:00:00.000000+00:00",
        escalated_at="2029-12-31T23:00:01.000001+00:00",
        supersedes="pr-older",
        superseded_by="pr-newer",
        rejection={"code": "clinical.wrong_patient", "note": AWKWARD},
        delivery={"attempts": 3, "jti": AWKWARD, "history": [{"class": "throttled", "at": 1.5}]},
        receipt={"origin": AWKWARD, "leaf_index": 2**40, "checkpoint": "a\nb\n"},
        reconciliation={"result": "mismatch", "differences": [{"path": "note", "severity": "x"}]},
        fhir_id="Condition-" + "9" * 40,
        fhir_version='W/"3"',
        created_at="1999-01-01T00:00:00.000000+00:00",  # the store sets its own
        updated_at="1999-01-01T00:00:00.000000+00:00",
    )


def approval(
    approval_id: str = "ap-1",
    *,
    proposal_id: str = "pr-1",
    issuer: str = "https://idp.example",
    subject: str = "reviewer-1",
    **overrides: Any,
) -> ApprovalRecord:
    base = ApprovalRecord(
        approval_id=approval_id,
        proposal_id=proposal_id,
        issuer=issuer,
        subject=subject,
        roles=("physician",),
        payload_sha256="a" * 64,
    )
    return replace(base, **overrides)
