"""Human review of held proposals: who may decide what, a quorum of distinct reviewers, expiry, escalation, amendments.

Every operation reads the proposal from the shared store and moves it by compare-and-set, so any
replica can serve any reviewer: two approvals arriving at once on two processes lead to one
submission (each counts after recording its own approval; the last one sees the quorum, and only
one compare-and-set from `pending_approval` succeeds).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final, Protocol

from sidecar.audit.events import (
    ProposalApproved,
    ProposalEscalated,
    ProposalExpired,
    ReviewAmended,
    ReviewApproved,
    Reviewer,
    ReviewRejected,
)
from sidecar.errors import (
    IllegalTransition,
    ProposalNotFound,
    ReviewForbidden,
    ReviewNotPossible,
)
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import (
    ProposalService,
    guard_storage,
    parse_time,
    proposal_id_for,
    rfc3339,
)
from sidecar.storage.records import ApprovalRecord, ProposalQuery, ProposalRecord
from sidecar.validation.fhir import validate_write

log = logging.getLogger("chartgate.review")

REJECTION_CODES: Final = frozenset(
    {
        "wrong_patient",
        "not_supported_by_evidence",
        "clinically_inappropriate",
        "duplicate",
        "incomplete",
        "other",
    }
)
_MAX_MESSAGE: Final = 500
_PRINTABLE: Final = re.compile(r"[^\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]")


class ReviewerIdentity(Protocol):
    """What the review service needs to know of an authenticated reviewer (sidecar/review/auth.py)."""

    @property
    def issuer(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def roles(self) -> tuple[str, ...]: ...

    @property
    def tenants(self) -> tuple[str, ...]: ...

    @property
    def fhir_user(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ReviewView:
    """One proposal as a reviewer sees it: the record, its approvals, and what this reviewer may do."""

    record: ProposalRecord
    approvals: tuple[ApprovalRecord, ...]
    may_approve: bool
    seconds_to_expiry: int
    # An update's target as the chart holds it now (GetReview only), or why it is not shown.
    current_resource_json: str = ""
    current_resource_note: str = ""


def fhir_identity(reference: str) -> str:
    """`Type/id` of a FHIR reference, relative or absolute (an identity provider may send
    `https://ehr.example/fhir/Practitioner/alice` for `Practitioner/alice`)."""
    parts = [p for p in reference.strip().split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ""


def approvals_counted(record: ProposalRecord, approvals: Sequence[ApprovalRecord]) -> int:
    """Distinct reviewers who approved this payload with a role policy names; 0 when none of them
    is known to be someone other than the person the agent acted for (that person cannot
    approve their own proposal alone, and a reviewer whose token names no FHIR identity might be
    them)."""
    counted = {
        (a.issuer, a.subject): a
        for a in approvals
        if a.payload_sha256 == record.payload_sha256 and set(a.roles) & set(record.approver_roles)
    }
    acted_for = fhir_identity(record.context.on_behalf_of)
    if acted_for and counted:
        someone_else = any(
            fhir_identity(a.fhir_user) not in ("", acted_for) for a in counted.values()
        )
        if not someone_else:
            return 0
    return len(counted)


class ReviewService:
    """The Review API's logic over a ProposalService (which decides and submits)."""

    def __init__(self, proposals: ProposalService) -> None:
        self._proposals = proposals
        self._store = proposals.store

    # --- reading ------------------------------------------------------------------------------

    def _visible(self, reviewer: ReviewerIdentity, proposal_id: str) -> ProposalRecord:
        """The proposal if it is in one of the reviewer's tenants; otherwise as good as absent."""
        record = guard_storage(lambda: self._store.get(proposal_id[:256]))
        if record is None or record.tenant_id not in reviewer.tenants:
            raise ProposalNotFound("no proposal with this id exists for this reviewer")
        return record

    def _view(self, reviewer: ReviewerIdentity, record: ProposalRecord) -> ReviewView:
        approvals = tuple(guard_storage(lambda: self._store.approvals(record.proposal_id)))
        remaining = 0
        if record.expires_at:
            remaining = max(
                0, int((parse_time(record.expires_at) - self._proposals.now()).total_seconds())
            )
        own = any((a.issuer, a.subject) == (reviewer.issuer, reviewer.subject) for a in approvals)
        may = (
            record.state is State.PENDING_APPROVAL
            and remaining > 0
            and bool(set(reviewer.roles) & set(record.approver_roles))
            and not own
        )
        return ReviewView(record, approvals, may, remaining)

    def view(self, reviewer: ReviewerIdentity, proposal_id: str) -> ReviewView:
        """One proposal, with the chart's current version of an update's target for the diff."""
        view = self._view(reviewer, self._visible(reviewer, proposal_id))
        current, note = self._proposals.current_resource(view.record)
        return replace(view, current_resource_json=current, current_resource_note=note)

    def list_pending(
        self,
        reviewer: ReviewerIdentity,
        *,
        tenant_id: str | None = None,
        tier: str | None = None,
        patient_id: str | None = None,
        resource_type: str | None = None,
        min_age_seconds: int = 0,
        limit: int = 100,
        state: State = State.PENDING_APPROVAL,
    ) -> list[ReviewView]:
        """Proposals of the reviewer's tenants in `state` (held ones by default; `mismatch`: the
        written resources the EHR stored differently, for a reviewer to look at)."""
        if state not in (State.PENDING_APPROVAL, State.MISMATCH):
            raise ReviewNotPossible("only held proposals and mismatches are listed for review")
        tenants = [t for t in reviewer.tenants if tenant_id in (None, "", t)]
        created_before = None
        if min_age_seconds > 0:
            created_before = rfc3339(self._proposals.now() - timedelta(seconds=min_age_seconds))
        views: list[ReviewView] = []
        for tenant in tenants:
            query = ProposalQuery(
                tenant_id=tenant,
                states=(state,),
                tier=tier or None,
                patient_id=patient_id or None,
                resource_type=resource_type or None,
                created_before=created_before,
                limit=max(1, min(limit, 500)),
            )
            records = guard_storage(lambda q=query: self._store.find(q))  # type: ignore[misc]
            views.extend(self._view(reviewer, r) for r in records)
        views.sort(key=lambda v: (v.record.created_at, v.record.proposal_id))
        return views[: max(1, min(limit, 500))]

    def history(
        self, reviewer: ReviewerIdentity, proposal_id: str
    ) -> list[tuple[str, str, str, str]]:
        """(at, kind, actor, detail) of each step the store knows of, in time order: proposed,
        decided, each approval, escalation, amendment links, where it is now. Identifiers and
        codes only."""
        record = self._visible(reviewer, proposal_id)
        approvals = guard_storage(lambda: self._store.approvals(record.proposal_id))
        events = [
            (
                record.created_at,
                "proposed",
                record.agent_id,
                f"{record.tool} {record.resource_type}",
            ),
        ]
        if record.tier:
            codes = ", ".join(r.get("code", "") for r in record.reasons[:5])
            events.append(
                (
                    record.created_at,
                    "decided",
                    "policy",
                    f"tier {record.tier}; {codes}; revision {record.policy_revision}",
                )
            )
        if record.supersedes:
            events.append((record.created_at, "amends", "reviewer", record.supersedes))
        for a in approvals:
            same = a.payload_sha256 == record.payload_sha256
            events.append(
                (
                    a.created_at,
                    "approved",
                    f"{a.issuer} {a.subject}",
                    "" if same else "of another payload",
                )
            )
        if record.escalated_at:
            events.append(
                (record.escalated_at, "escalated", "sweeper", f"expires {record.expires_at}")
            )
        if record.superseded_by:
            events.append((record.updated_at, "superseded", "reviewer", record.superseded_by))
        detail = f"{record.resource_type}/{record.fhir_id}" if record.fhir_id else ""
        if record.rejection:
            detail = f"review.{record.rejection.get('code', '')}"
        events.append((record.updated_at, record.state.value, "", detail))
        return sorted(events, key=lambda e: e[0])

    # --- deciding -----------------------------------------------------------------------------

    def _pending(self, reviewer: ReviewerIdentity, proposal_id: str) -> ProposalRecord:
        """A proposal the reviewer may decide now: visible, held, within its window, and the
        reviewer holds a role policy names for it."""
        record = self._visible(reviewer, proposal_id)
        if record.state is not State.PENDING_APPROVAL:
            raise ReviewNotPossible(f"the proposal is {record.state.value}, not waiting for review")
        if record.expires_at and parse_time(record.expires_at) <= self._proposals.now():
            self._expire(record)
            raise ReviewNotPossible("the proposal's approval window has ended; it expired")
        if not set(reviewer.roles) & set(record.approver_roles):
            raise ReviewForbidden(
                "the reviewer holds none of the roles policy names for this proposal: "
                + ", ".join(record.approver_roles[:10])
            )
        return record

    def approve(
        self, reviewer: ReviewerIdentity, proposal_id: str, payload_sha256: str
    ) -> ReviewView:
        record = self._pending(reviewer, proposal_id)
        if payload_sha256 != record.payload_sha256:
            raise ReviewNotPossible(
                "the payload approved is not the proposal's (payload_sha256 differs): review "
                "the proposal as it is now"
            )
        approval_id = (
            "ap-"
            + hashlib.sha256(
                f"{record.proposal_id}\x00{reviewer.issuer}\x00{reviewer.subject}".encode()
            ).hexdigest()[:32]
        )
        try:
            stored, created = self._add_approval(record, reviewer, approval_id)
        except IllegalTransition as exc:  # decided or expired since it was read just above
            raise ReviewNotPossible(
                "the proposal is no longer pending approval; nothing was recorded"
            ) from exc
        self._proposals.audit(
            ReviewApproved(
                proposal_id=record.proposal_id,
                approval_id=stored.approval_id,
                reviewer=Reviewer(reviewer.issuer, reviewer.subject),
                roles=list(reviewer.roles)[:20],
                payload_sha256=record.payload_sha256,
                repeated=not created,
            )
        )
        approvals = guard_storage(lambda: self._store.approvals(record.proposal_id))
        if approvals_counted(record, approvals) < record.approvals_required:
            return self._view(reviewer, self._visible(reviewer, record.proposal_id))
        try:
            approved = guard_storage(
                lambda: self._store.transition(
                    record.proposal_id, State.PENDING_APPROVAL, State.APPROVED
                )
            )
        except IllegalTransition:  # another replica reached the quorum first and moved it
            return self._view(reviewer, self._visible(reviewer, record.proposal_id))
        # Read again once moved: no approval can be added after the move, so this is exactly
        # the set every token for the write will carry.
        approvals = guard_storage(lambda: self._store.approvals(record.proposal_id))
        self._proposals.audit(
            ProposalApproved(
                proposal_id=record.proposal_id,
                approvals=[
                    a.approval_id for a in approvals if a.payload_sha256 == record.payload_sha256
                ],
                payload_sha256=record.payload_sha256,
            )
        )
        written = self._proposals.submit(approved)
        return self._view(reviewer, written)

    def _add_approval(
        self, record: ProposalRecord, reviewer: ReviewerIdentity, approval_id: str
    ) -> tuple[ApprovalRecord, bool]:
        return guard_storage(
            lambda: self._store.add_approval(
                ApprovalRecord(
                    approval_id=approval_id,
                    proposal_id=record.proposal_id,
                    issuer=reviewer.issuer,
                    subject=reviewer.subject,
                    roles=tuple(reviewer.roles),
                    payload_sha256=record.payload_sha256,
                    fhir_user=reviewer.fhir_user,
                )
            )
        )

    def reject(
        self, reviewer: ReviewerIdentity, proposal_id: str, code: str, message: str
    ) -> ReviewView:
        if code not in REJECTION_CODES:
            raise ReviewNotPossible(
                f"a rejection names one of: {', '.join(sorted(REJECTION_CODES))}"
            )
        text = _PRINTABLE.sub(" ", message)[:_MAX_MESSAGE].strip()
        record = self._pending(reviewer, proposal_id)
        reason = {
            "code": f"review.{code}",
            "message": text or code.replace("_", " "),
            "rule": "review",
        }
        # The reviewer's words go to the agent through the store, never to the audit log (they
        # may quote the chart); the audit record names the reviewer and the code.
        self._proposals.audit(
            ReviewRejected(
                proposal_id=record.proposal_id,
                reviewer=Reviewer(reviewer.issuer, reviewer.subject),
                code=code,
                payload_sha256=record.payload_sha256,
            )
        )
        try:
            rejected = guard_storage(
                lambda: self._store.transition(
                    record.proposal_id,
                    State.PENDING_APPROVAL,
                    State.REJECTED,
                    reasons=(*record.reasons, reason),
                    rejection={
                        "code": code,
                        "message": reason["message"],
                        "issuer": reviewer.issuer,
                        "subject": reviewer.subject,
                    },
                )
            )
        except IllegalTransition as exc:  # decided or expired since it was read just above
            raise ReviewNotPossible(
                "the proposal is no longer pending approval; nothing was changed"
            ) from exc
        return self._view(reviewer, rejected)

    def amend(
        self, reviewer: ReviewerIdentity, proposal_id: str, resource_json: str
    ) -> tuple[ReviewView, ReviewView]:
        """A reviewer's edit is a new payload for the same write: validated, stored as a new
        proposal that supersedes the original (links both ways), and decided again (its tier may
        change). The original is never written."""
        original = self._pending(reviewer, proposal_id)
        config = self._proposals.config
        write = validate_write(
            tool=original.tool,
            resource_type=original.resource_type,
            resource_json=resource_json,
            patient_id=original.patient_id,
            profiles=config.required_profiles,
            must_support=config.must_support,
        )
        key = f"amend:{original.proposal_id}:{write.payload.sha256[:32]}"
        amendment, _ = guard_storage(
            lambda: self._store.insert_or_get(
                ProposalRecord(
                    proposal_id=proposal_id_for(original.tenant_id, original.agent_id, key),
                    tenant_id=original.tenant_id,
                    agent_id=original.agent_id,
                    idempotency_key=key,
                    payload_sha256=write.payload.sha256,
                    payload=write.payload.canonical,
                    tool=write.tool,
                    operation=write.operation,
                    resource_type=write.resource_type,
                    target=write.target,
                    patient_id=original.patient_id,
                    encounter_id=original.encounter_id,
                    trace_id=original.trace_id,
                    state=State.VALIDATED,
                    context=original.context,
                    fields=write.fields,
                    summary=write.summary,
                    supersedes=original.proposal_id,
                )
            )
        )
        self._proposals.audit(
            ReviewAmended(
                proposal_id=original.proposal_id,
                amendment=amendment.proposal_id,
                reviewer=Reviewer(reviewer.issuer, reviewer.subject),
                payload_sha256=original.payload_sha256,
                amended_payload_sha256=amendment.payload_sha256,
            )
        )
        try:
            superseded = guard_storage(
                lambda: self._store.transition(
                    original.proposal_id,
                    State.PENDING_APPROVAL,
                    State.SUPERSEDED,
                    superseded_by=amendment.proposal_id,
                )
            )
        except IllegalTransition:
            # The original moved meanwhile (approved, rejected, another amendment): this
            # amendment must not be written beside it.
            if amendment.state is State.VALIDATED:
                guard_storage(
                    lambda: self._store.transition(
                        amendment.proposal_id,
                        State.VALIDATED,
                        State.BLOCKED,
                        reasons=(
                            {
                                "code": "review.original_not_pending",
                                "message": "the amended proposal was decided meanwhile",
                                "rule": "review",
                            },
                        ),
                    )
                )
            raise ReviewNotPossible(
                "the proposal was decided meanwhile; nothing was amended"
            ) from None
        decided = self._proposals.resume(amendment)
        return self._view(reviewer, superseded), self._view(reviewer, decided)

    # --- time ---------------------------------------------------------------------------------

    def _expire(self, record: ProposalRecord) -> None:
        try:
            guard_storage(
                lambda: self._store.transition(
                    record.proposal_id,
                    State.PENDING_APPROVAL,
                    State.EXPIRED,
                    reasons=(
                        *record.reasons,
                        {
                            "code": "review.expired",
                            "message": "no quorum of reviewers approved it before its window ended",
                            "rule": "review",
                        },
                    ),
                )
            )
        except IllegalTransition:
            return  # another replica expired (or decided) it first
        self._proposals.audit(
            ProposalExpired(
                proposal_id=record.proposal_id,
                expires_at=record.expires_at,
                state="pending_approval",
            )
        )

    def sweep(self, limit: int = 200) -> tuple[int, int, int]:
        """Expire held proposals past their window, record escalations that are due, and continue
        the writes a failure or a wait left unsettled (ProposalService.sweep_deliveries). Run by
        every replica every second; compare-and-set makes each move happen once. Returns
        (expired, escalated, resumed)."""
        now = self._proposals.now()
        stamp = rfc3339(now)
        expired = escalated = 0
        due = guard_storage(
            lambda: self._store.find(
                ProposalQuery(states=(State.PENDING_APPROVAL,), expires_before=stamp, limit=limit)
            )
        )
        for record in due:
            self._expire(record)
            expired += 1
        for record in guard_storage(
            lambda: self._store.find(
                ProposalQuery(
                    states=(State.PENDING_APPROVAL,), escalation_due_before=stamp, limit=limit
                )
            )
        ):
            try:
                guard_storage(
                    lambda r=record: self._store.update(  # type: ignore[misc]
                        r.proposal_id, State.PENDING_APPROVAL, escalated_at=stamp
                    )
                )
            except IllegalTransition:
                continue
            escalated += 1
            self._proposals.audit(
                ProposalEscalated(
                    proposal_id=record.proposal_id,
                    expires_at=record.expires_at,
                    approvals_required=record.approvals_required,
                )
            )
        resumed = self._proposals.sweep_deliveries(limit)
        return expired, escalated, resumed
