"""Reconciliation through real processes: the local store changes what it stores; the sidecar reads it back and says so.

A truncated note, a remapped code and a changed unit are meaning-changing: the proposal ends
`mismatch`, with the differences, in the reviewers' mismatch queue, and audited. Padded text is
a normalisation: `reconciled`, not queued. The lag from accepted to checked is measured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chartgate.demo import TENANT
from chartgate.devissuer.issuer import DevIssuer
from chartgate.stack import Stack
from chartgate.v1 import gateway_pb2
from sidecar.client import ChartgateClient
from sidecar.review.client import ReviewClient
from tests.e2e.test_write_faults import OBS_CATEGORY, PATIENT, control, inject, start_faulty_stack

SETTLED = {gateway_pb2.PROPOSAL_STATE_RECONCILED, gateway_pb2.PROPOSAL_STATE_MISMATCH}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_faulty_stack(tmp_path_factory.mktemp("reconcile"))
    yield running
    running.stop()


def note_observation(value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "/min"},
        "note": [{"text": "Measured at rest after five minutes seated."}],
    }


def write_altered(stack: Stack, key: str, changes: list[dict[str, Any]]) -> gateway_pb2.Proposal:
    """Propose a write the store alters as it stores it; wait until it is read back."""
    inject(stack, {"alter": {"changes": changes}, "schedule": [{"fault": "alter"}]})
    with ChartgateClient(stack.sidecar_target) as agent:
        proposal = agent.propose(
            tool="fhir.create",
            resource=note_observation(70),
            patient_id=PATIENT,
            confidence=0.97,
            idempotency_key=key,
        )
        assert proposal.state == gateway_pb2.PROPOSAL_STATE_ACCEPTED  # the EHR said "stored"
        deadline = time.monotonic() + 20
        while proposal.state not in SETTLED:
            assert time.monotonic() < deadline, "never reconciled"
            time.sleep(0.05)
            proposal = agent.get(proposal.proposal_id)
    httpx.delete(control(stack)).raise_for_status()
    return proposal


def differences(proposal: gateway_pb2.Proposal) -> set[tuple[str, str, str]]:
    return {(d.path, d.severity, d.kind) for d in proposal.reconciliation.differences}


@pytest.mark.parametrize(
    ("key", "change", "expected"),
    [
        (
            "truncated",
            {"path": "note[0].text", "op": "truncate", "length": 11},
            ("note[0].text", "meaning-changing", "truncated"),
        ),
        (
            "remapped",
            {"path": "code.coding[0].code", "op": "set", "value": "8310-5"},
            ("code.coding[0].code", "meaning-changing", "changed"),
        ),
        (
            "unit",
            {"path": "valueQuantity.unit", "op": "set", "value": "/h"},
            ("valueQuantity.unit", "meaning-changing", "changed"),
        ),
    ],
)
def test_a_meaning_changing_alteration_is_detected_queued_and_audited(
    stack: Stack, key: str, change: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    proposal = write_altered(stack, f"alter-{key}", [change])
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_MISMATCH
    assert proposal.reconciliation.result == "mismatch"
    assert expected in differences(proposal)
    assert proposal.reconciliation.lag_seconds > 0
    reviewer = DevIssuer(stack.workdir / "dev-issuer").mint(
        "alice", roles=["clinician"], tenants=[TENANT], fhir_user="Practitioner/alice"
    )
    queued = ReviewClient(stack.review_target, reviewer).mismatches()
    assert proposal.proposal_id in {item.proposal.proposal_id for item in queued}
    records = [
        json.loads(line)
        for line in (stack.workdir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    [audited] = [
        r["body"]
        for r in records
        if r["kind"] == "write.reconciled" and r["body"]["proposal_id"] == proposal.proposal_id
    ]
    assert audited["result"] == "mismatch"
    assert expected[0] in audited["mismatched_fields"]
    assert audited["stored_sha256"] != audited["intended_sha256"]
    assert "Measured" not in json.dumps(audited)  # paths and hashes, never clinical text


def test_a_cosmetic_normalisation_is_reconciled_and_not_queued(stack: Stack) -> None:
    proposal = write_altered(stack, "alter-padded", [{"path": "note[0].text", "op": "pad"}])
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_RECONCILED
    assert differences(proposal) == {("note[0].text", "normalised", "whitespace")}
    reviewer = DevIssuer(stack.workdir / "dev-issuer").mint(
        "alice", roles=["clinician"], tenants=[TENANT], fhir_user="Practitioner/alice"
    )
    queued = ReviewClient(stack.review_target, reviewer).mismatches()
    assert proposal.proposal_id not in {item.proposal.proposal_id for item in queued}


def test_an_unaltered_write_is_reconciled_with_no_difference(stack: Stack) -> None:
    proposal = write_altered(stack, "alter-none", [{"path": "noSuchElement", "op": "remove"}])
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_RECONCILED
    assert list(proposal.reconciliation.differences) == []
