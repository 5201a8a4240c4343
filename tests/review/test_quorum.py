"""The quorum rule: distinct reviewers, the exact payload, qualifying roles, never the acted-for person alone."""

from __future__ import annotations

import pytest

from sidecar.proposals.lifecycle import State
from sidecar.review.service import approvals_counted, fhir_identity
from sidecar.storage.records import ApprovalRecord, ProposalContext, ProposalRecord

SHA = "a" * 64


def proposal(on_behalf_of: str = "Practitioner/alice", required: int = 1) -> ProposalRecord:
    return ProposalRecord(
        proposal_id="pr-1",
        tenant_id="t",
        agent_id="a",
        idempotency_key="k",
        payload_sha256=SHA,
        payload=b"{}",
        tool="fhir.create",
        operation="create",
        resource_type="Observation",
        target="Observation",
        patient_id="p",
        encounter_id="",
        trace_id="",
        state=State.PENDING_APPROVAL,
        context=ProposalContext("p", "", "TREAT", on_behalf_of, "", "", 0.9, "live", (), ""),
        approvals_required=required,
        approver_roles=("clinician",),
    )


def approval(
    subject: str,
    fhir_user: str,
    *,
    sha: str = SHA,
    roles: tuple[str, ...] = ("clinician",),
    iss: str = "https://idp",
) -> ApprovalRecord:
    return ApprovalRecord(f"ap-{iss}-{subject}", "pr-1", iss, subject, roles, sha, fhir_user)


@pytest.mark.parametrize(
    ("reference", "identity"),
    [
        ("Practitioner/alice", "Practitioner/alice"),
        ("https://ehr.example/fhir/Practitioner/alice", "Practitioner/alice"),
        ("https://ehr.example/fhir/Practitioner/alice/_history/3", "Practitioner/alice"),
        ("alice", ""),
        ("", ""),
    ],
)
def test_fhir_identity(reference: str, identity: str) -> None:
    assert fhir_identity(reference) == identity


def test_the_acted_for_person_alone_does_not_count_in_any_spelling() -> None:
    record = proposal()
    assert approvals_counted(record, [approval("alice", "Practitioner/alice")]) == 0
    absolute = approval("alice", "https://ehr.example/fhir/Practitioner/alice")
    assert approvals_counted(record, [absolute]) == 0
    # No FHIR identity in the token: could be them, so not alone either.
    assert approvals_counted(record, [approval("anon", "")]) == 0
    assert approvals_counted(record, [approval("bob", "Practitioner/bob")]) == 1
    assert approvals_counted(record, [absolute, approval("bob", "Practitioner/bob")]) == 2


def test_distinct_reviewers_of_the_exact_payload_with_a_qualifying_role() -> None:
    record = proposal(on_behalf_of="", required=2)
    same_person_twice = [
        approval("carol", "Practitioner/carol"),
        approval("carol", "Practitioner/carol"),
    ]
    assert approvals_counted(record, same_person_twice) == 1
    other_issuer = approval("carol", "Practitioner/carol", iss="https://other-idp")
    assert approvals_counted(record, [*same_person_twice, other_issuer]) == 2
    assert approvals_counted(record, [approval("erin", "Practitioner/erin", sha="b" * 64)]) == 0
    assert (
        approvals_counted(record, [approval("erin", "Practitioner/erin", roles=("registrar",))])
        == 0
    )
