"""What the templates show of a ReviewItem: names for states and tiers, ages, and what this reviewer may do."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from chartgate.v1 import gateway_pb2, review_pb2
from console.diff import ResourceDiff, resource_diff
from sidecar.review.auth import Reviewer

TIERS: Final = {
    gateway_pb2.TIER_AUTONOMOUS: "autonomous",
    gateway_pb2.TIER_APPROVAL: "approval",
    gateway_pb2.TIER_DUAL_APPROVAL: "dual_approval",
    gateway_pb2.TIER_BLOCKED: "blocked",
}
TIER_LABELS: Final = {
    "autonomous": "Autonomous (no review)",
    "approval": "Approval (one reviewer)",
    "dual_approval": "Dual approval (two reviewers)",
    "blocked": "Blocked",
    "": "Not decided",
}
REJECTION_LABELS: Final = {
    "wrong_patient": "Wrong patient",
    "not_supported_by_evidence": "Not supported by the evidence",
    "clinically_inappropriate": "Clinically inappropriate",
    "duplicate": "Duplicate",
    "incomplete": "Incomplete",
    "other": "Other",
}
# Where each history step belongs in a proposal's life (the audit view).
PHASES: Final = {
    "proposed": "Suggestion",
    "received": "Suggestion",
    "validated": "Validation",
    "invalid": "Validation",
    "decided": "Decision",
    "blocked": "Decision",
    "pending_approval": "Approval",
    "approved": "Approval",
    "rejected": "Approval",
    "expired": "Approval",
    "escalated": "Approval",
    "amends": "Approval",
    "superseded": "Approval",
    "submitted": "EHR delivery",
    "accepted": "EHR delivery",
    "failed_retryable": "EHR delivery",
    "failed_final": "EHR delivery",
    "ambiguous": "EHR delivery",
    "dead_lettered": "EHR delivery",
    "reconciled": "Reconciliation",
    "mismatch": "Reconciliation",
}


def state_name(item: review_pb2.ReviewItem) -> str:
    """`pending_approval`, `accepted`, ... (the lifecycle's names, DESIGN.md)."""
    full: str = gateway_pb2.ProposalState.Name(item.proposal.state)
    return full.removeprefix("PROPOSAL_STATE_").lower()


def tier_name(item: review_pb2.ReviewItem) -> str:
    return TIERS.get(item.proposal.tier, "")


def parse_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """`45 s`, `12 min 5 s`, `3 h 20 min`, `2 d 4 h`: short and unambiguous."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def pretty_json(text: str) -> str:
    """Indented JSON for reading and editing; the text as it is when it is not JSON."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class ItemView:
    """One proposal as a page shows it."""

    item: review_pb2.ReviewItem
    id: str
    state: str
    tier: str
    tier_label: str
    pending: bool
    age: str
    expires_in: str
    may_approve: bool
    approved_by_me: bool
    holds_role: bool
    standing: str

    @property
    def proposal(self) -> gateway_pb2.Proposal:
        return self.item.proposal


def item_view(item: review_pb2.ReviewItem, reviewer: Reviewer, now: datetime) -> ItemView:
    """`item` for `reviewer`: may_approve is the Review API's answer; the rest explains it."""
    state, tier = state_name(item), tier_name(item)
    created = parse_time(item.proposal.created_at)
    mine = any((a.issuer, a.subject) == (reviewer.issuer, reviewer.subject) for a in item.approvals)
    # The roles as the Review API reads them (same claims, same parser): for the explanation
    # only; whether the reviewer may approve is the API's `may_approve`.
    holds = bool(set(reviewer.roles) & set(item.approver_roles))
    pending = state == "pending_approval"
    if not pending:
        standing = f"Decided: {state.replace('_', ' ')}"
    elif item.may_approve:
        standing = "You may approve"
    elif mine:
        standing = "You approved; waiting for another reviewer"
    elif not holds:
        roles = ", ".join(item.approver_roles) or "none named"
        standing = f"Only others may approve (needs role: {roles})"
    elif item.seconds_to_expiry <= 0:
        standing = "Its approval window has ended"
    else:
        standing = "Only others may approve"
    return ItemView(
        item=item,
        id=item.proposal.proposal_id,
        state=state,
        tier=tier,
        tier_label=TIER_LABELS.get(tier, tier),
        pending=pending,
        age=duration((now - created).total_seconds()) if created else "unknown",
        expires_in=duration(item.seconds_to_expiry) if pending else "",
        may_approve=item.may_approve,
        approved_by_me=mine,
        holds_role=holds,
        standing=standing,
    )


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a proposal's life and where it stands, in words (the audit view's row)."""

    name: str
    status: str
    reached: bool


def lifecycle(item: review_pb2.ReviewItem, events: list[review_pb2.HistoryEvent]) -> list[Phase]:
    """Suggestion, validation, decision, approval, EHR delivery, reconciliation: each phase's
    status from the recorded steps (Review.GetHistory) and the proposal's state."""
    kinds = [e.kind for e in events]
    state, p = state_name(item), item.proposal
    proposed = next((e for e in events if e.kind == "proposed"), None)
    decided = next((e for e in events if e.kind == "decided"), None)
    approvals = kinds.count("approved")
    if state in ("rejected", "expired", "superseded"):
        approval = f"{approvals} approval(s); then {state}"
    elif p.tier == gateway_pb2.TIER_AUTONOMOUS:
        approval = "not needed (autonomous tier)"
    elif p.approvals_required:
        approval = f"{approvals} approval(s) of {p.approvals_required} required"
    else:
        approval = f"{approvals} approval(s)"
    delivery_states = ("submitted", "accepted", "failed_retryable", "failed_final", "ambiguous")
    if p.fhir_id:
        delivery = f"stored in the EHR as {p.resource_type}/{p.fhir_id}"
    elif state in (*delivery_states, "dead_lettered"):
        delivery = state.replace("_", " ")
    else:
        delivery = "not sent"
    reconciled = state in ("reconciled", "mismatch")
    return [
        Phase(
            "Suggestion",
            f"proposed by {proposed.actor} at {proposed.at}" if proposed else "no record",
            proposed is not None,
        ),
        # Only a proposal that validated reaches policy: an invalid one is refused at Propose.
        Phase("Validation", "passed" if decided else "no record", decided is not None),
        Phase("Decision", decided.detail if decided else "not decided", decided is not None),
        Phase("Approval", approval, approvals > 0 or p.tier == gateway_pb2.TIER_AUTONOMOUS),
        Phase("EHR delivery", delivery, bool(p.fhir_id) or state in delivery_states),
        Phase(
            "Reconciliation",
            state if reconciled else "no read-back recorded yet",
            reconciled,
        ),
    ]


def diff_of(item: review_pb2.ReviewItem) -> ResourceDiff:
    return resource_diff(
        operation=item.operation,
        resource_json=item.resource_json,
        current_json=item.current_resource_json,
        current_note=item.current_resource_note,
        fields=tuple(item.fields),
    )
