"""The console's search over the audit index: decided proposals too, only through the reviewer's own Review API."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from chartgate import keys
from chartgate.v1 import gateway_pb2, review_pb2
from console.search import AuditIndexSearch, SearchQuery
from sidecar.audit.events import ProposalReceived, ReviewApproved, Reviewer, WriteOutcome
from sidecar.audit.log import AuditLog
from sidecar.review.client import ReviewRefused


class TenantReview:
    """The Review API as one reviewer sees it: their tenant's proposals, not-found otherwise."""

    def __init__(self, visible: set[str]) -> None:
        self.visible = visible
        self.asked: list[str] = []

    def show(self, proposal_id: str) -> review_pb2.ReviewItem:
        self.asked.append(proposal_id)
        if proposal_id not in self.visible:
            raise ReviewRefused(
                grpc.StatusCode.NOT_FOUND, "no such proposal", "proposal.not_found", []
            )
        return review_pb2.ReviewItem(proposal=gateway_pb2.Proposal(proposal_id=proposal_id))


def write_log(path: Path) -> None:
    key = keys.load_or_create(path.parent / "audit.jwk", "audit")
    with AuditLog(path, key) as log:
        for pid, patient, encounter, agent, tenant in (
            ("pr-a1", "p-ann", "enc-1", "scribe", "st-mary"),
            ("pr-b1", "p-bob", "enc-2", "scribe", "st-mary"),
            ("pr-a2", "p-ann", "enc-3", "coder", "st-mary"),
            ("pr-x9", "p-ann", "enc-9", "scribe", "other-hospital"),
        ):
            log.append_event(
                ProposalReceived(
                    proposal_id=pid,
                    agent=agent,
                    tenant=tenant,
                    idempotency_key=f"k-{pid}",
                    tool="fhir.create",
                    resource_type="Observation",
                    target="Observation",
                    patient=patient,
                    encounter=encounter,
                )
            )
        log.append_event(
            ReviewApproved(
                proposal_id="pr-b1", approval_id="ap-1", reviewer=Reviewer("https://idp", "alice")
            )
        )
        # Decided and written: the pending list would no longer show it; the index does.
        log.append_event(WriteOutcome(proposal_id="pr-a1", state="accepted", fhir_id="o-1"))


def found(search: AuditIndexSearch, review: TenantReview, **criteria: str) -> list[str]:
    result = search.search(review, SearchQuery(**criteria))  # type: ignore[arg-type]
    return [item.proposal.proposal_id for item in result.items]


def test_search_finds_decided_proposals_by_each_criterion_within_the_tenant(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log)
    search = AuditIndexSearch([log])
    review = TenantReview({"pr-a1", "pr-b1", "pr-a2"})
    # Most recently active first: pr-a1 was written after pr-a2 was proposed.
    assert found(search, review, patient="p-ann") == ["pr-a1", "pr-a2"]
    assert "pr-x9" in review.asked  # the index found it; the API kept it hidden
    assert found(search, review, encounter="enc-2") == ["pr-b1"]
    assert found(search, review, agent="coder") == ["pr-a2"]
    assert found(search, review, reviewer="alice") == ["pr-b1"]
    assert found(search, review, patient="p-nobody") == []
    assert "audit log" in search.scope


def test_an_audit_log_that_cannot_be_read_is_a_refusal_the_page_shows(tmp_path: Path) -> None:
    search = AuditIndexSearch([tmp_path / "missing" / "audit.jsonl"])
    review = TenantReview(set())
    with pytest.raises(ReviewRefused) as refused:
        search.search(review, SearchQuery(patient="p-1"))  # type: ignore[arg-type]
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "audit.unavailable",
    )
    assert review.asked == []
