"""The enforcement spine end to end: agent → sidecar → Rego → token → adapter → FHIR store → audit."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chartgate.stack import Stack
from chartgate.v1 import gateway_pb2
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.client import ChartgateClient, ProposalRefused
from tests.support import fhir_search

PATIENT = "demo-patient-1"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def vital(value: float, patient: str = PATIENT) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def propose(stack: Stack, **kwargs: Any) -> gateway_pb2.Proposal:
    kwargs.setdefault("patient_id", PATIENT)
    kwargs.setdefault("confidence", 0.97)
    with ChartgateClient(stack.sidecar_target) as client:
        return client.propose(**kwargs)


def refused(stack: Stack, **kwargs: Any) -> ProposalRefused:
    with pytest.raises(ProposalRefused) as info:
        propose(stack, **kwargs)
    return info.value


def by_proposal(stack: Stack, proposal_id: str) -> list[dict[str, Any]]:
    return fhir_search(
        stack.fhir_base, "Observation", identifier=f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"
    )


def test_autonomous_create_lands_once_when_sent_three_times(stack: Stack) -> None:
    results = [
        propose(stack, tool="fhir.create", resource=vital(71), idempotency_key="hr-three-times")
        for _ in range(3)
    ]
    assert {r.proposal_id for r in results} == {results[0].proposal_id}
    assert results[0].state == gateway_pb2.PROPOSAL_STATE_ACCEPTED
    assert results[0].tier == gateway_pb2.TIER_AUTONOMOUS
    assert {r.fhir_id for r in results} == {results[0].fhir_id} != {""}
    stored = by_proposal(stack, results[0].proposal_id)
    assert len(stored) == 1
    assert stored[0]["id"] == results[0].fhir_id
    assert stored[0]["valueQuantity"]["value"] == 71


def test_concurrent_sends_with_one_key_write_once(stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda _: propose(
                    stack, tool="fhir.create", resource=vital(64), idempotency_key="hr-concurrent"
                ),
                range(3),
            )
        )
    assert len({r.proposal_id for r in results}) == 1
    assert len(by_proposal(stack, results[0].proposal_id)) == 1


def test_autonomous_update_makes_one_new_version(stack: Stack) -> None:
    update = {
        "resourceType": "Patient",
        "id": PATIENT,
        "telecom": [{"system": "phone", "value": "+1-555-0199"}],
    }
    before = fhir_search(stack.fhir_base, "Patient", _id=PATIENT)[0]["meta"]["versionId"]
    results = [
        propose(stack, tool="fhir.update", resource=update, idempotency_key="telecom-three")
        for _ in range(3)
    ]
    assert results[0].state == gateway_pb2.PROPOSAL_STATE_ACCEPTED, results[0].reasons
    after = fhir_search(stack.fhir_base, "Patient", _id=PATIENT)[0]
    assert int(after["meta"]["versionId"]) == int(before) + 1
    assert after["telecom"] == update["telecom"]
    assert after["active"] is True  # elements the update did not name are kept


def test_approval_and_blocked_writes_never_reach_the_store(stack: Stack) -> None:
    lab = {
        **vital(98),
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
    }
    held = propose(stack, tool="fhir.create", resource=lab, idempotency_key="lab-held")
    assert held.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert held.tier in (gateway_pb2.TIER_APPROVAL, gateway_pb2.TIER_DUAL_APPROVAL)
    allergy = {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": f"Patient/{PATIENT}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
    }
    blocked = propose(
        stack, tool="fhir.create", resource=allergy, idempotency_key="allergy-blocked"
    )
    assert blocked.state == gateway_pb2.PROPOSAL_STATE_BLOCKED
    assert blocked.tier == gateway_pb2.TIER_BLOCKED
    assert blocked.reasons
    assert all(r.code and r.message for r in blocked.reasons)
    assert by_proposal(stack, held.proposal_id) == []
    assert fhir_search(stack.fhir_base, "AllergyIntolerance") == []
    # Asked again, they stay where they were: a retry never promotes a proposal.
    again = propose(stack, tool="fhir.create", resource=lab, idempotency_key="lab-held")
    assert again.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert by_proposal(stack, held.proposal_id) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"tool": "fhir.create", "resource": "{not json", "resource_type": "Observation"},
            "resource_json",
        ),
        (
            {
                "tool": "fhir.create",
                "resource": json.dumps(vital(60)),
                "resource_type": "Condition",
            },
            "resource_json.resourceType",
        ),
        (
            {"tool": "fhir.create", "resource": vital(60, patient="demo-patient-2")},
            "resource_json.subject.reference",
        ),
        ({"tool": "fhir.delete", "resource": vital(60)}, "tool"),
        (
            {"tool": "fhir.create", "resource": {**vital(60), "valueQuantity": {"value": "high"}}},
            "resource_json.valueQuantity.value",
        ),
        ({"tool": "fhir.create", "resource": vital(60), "purpose_of_use": ""}, "purpose_of_use"),
    ],
    ids=[
        "bad-json",
        "wrong-type",
        "other-patient",
        "unknown-tool",
        "invalid-element",
        "no-purpose",
    ],
)
def test_invalid_proposals_are_refused_with_a_fixable_detail(
    stack: Stack, kwargs: dict[str, Any], field: str
) -> None:
    key = f"invalid-{field}-{kwargs['tool']}"
    error = refused(stack, idempotency_key=key, **kwargs)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "proposal.invalid"
    assert field in {f for f, _ in error.violations}, error.violations
    # Nothing was recorded: the same key is still free for a correct proposal.
    fixed = propose(stack, tool="fhir.create", resource=vital(61), idempotency_key=key)
    assert fixed.state == gateway_pb2.PROPOSAL_STATE_ACCEPTED


def test_key_reused_for_another_payload_is_refused_and_not_written(stack: Stack) -> None:
    first = propose(stack, tool="fhir.create", resource=vital(80), idempotency_key="reused-key")
    error = refused(stack, tool="fhir.create", resource=vital(81), idempotency_key="reused-key")
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "idempotency.key_reused"
    stored = by_proposal(stack, first.proposal_id)
    assert [r["valueQuantity"]["value"] for r in stored] == [80]
    values = [o["valueQuantity"]["value"] for o in fhir_search(stack.fhir_base, "Observation")]
    assert 81 not in values


def test_get_proposal_returns_the_ledger_state(stack: Stack) -> None:
    made = propose(stack, tool="fhir.create", resource=vital(66), idempotency_key="get-me")
    with ChartgateClient(stack.sidecar_target) as client:
        got = client.get(made.proposal_id)
        assert got.state == made.state
        assert got.fhir_id == made.fhir_id
        with pytest.raises(ProposalRefused) as info:
            client.get("pr-doesnotexist")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_are_served(stack: Stack) -> None:
    with grpc.insecure_channel(stack.sidecar_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="chartgate.v1.ToolGateway")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "chartgate.v1.ToolGateway" in names


def test_audit_log_of_the_run_verifies_and_detects_tampering(stack: Stack, tmp_path: Any) -> None:
    written = propose(stack, tool="fhir.create", resource=vital(70.4321), idempotency_key="audited")
    log = stack.workdir / "audit" / "audit.jsonl"
    key = stack.workdir / "keys" / "audit-signing.jwks.json"

    def verify(path: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "chartgate.cli",
                "audit",
                "verify",
                str(path),
                "--key",
                str(key),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    ok = verify(log)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = log.read_bytes().splitlines(keepends=True)
    kinds = [json.loads(line)["kind"] for line in lines]
    for kind in ("proposal.received", "policy.decision", "token.minted", "write.outcome"):
        assert kind in kinds
    # Every record after the decision names the policy revision that made it.
    decided = [
        json.loads(line)
        for line in lines
        if json.loads(line)["body"].get("proposal_id") == written.proposal_id
    ]
    revisions = {r["kind"]: r["body"].get("policy_revision") for r in decided}
    assert written.policy_revision.startswith("sha256:")
    for kind in ("policy.decision", "token.minted", "write.outcome"):
        assert revisions[kind] == written.policy_revision, kind
    # No clinical content in the log: field names and hashes, never the observation's value.
    assert b"70.4321" not in log.read_bytes()

    tampered = tmp_path / "tampered.jsonl"
    index = len(lines) // 2
    line = bytearray(lines[index])
    position = line.index(b'"kind"') + 8
    line[position] = ord("X") if line[position] != ord("X") else ord("Y")
    tampered.write_bytes(b"".join([*lines[:index], bytes(line), *lines[index + 1 :]]))
    bad = verify(tampered)
    assert bad.returncode == 1
    assert f"line {index + 1}" in bad.stdout + bad.stderr

    deleted = tmp_path / "deleted.jsonl"
    deleted.write_bytes(b"".join([*lines[:index], *lines[index + 1 :]]))
    gone = verify(deleted)
    assert gone.returncode == 1
    assert f"line {index + 1}" in gone.stdout + gone.stderr


def test_the_decision_receipt_proves_inclusion_offline(stack: Stack, tmp_path: Any) -> None:
    """The agent's answer carries where its decision sits in the audit log; an auditor turns it
    into an inclusion proof against the signed checkpoint, with the log and the keyring only."""
    from google.protobuf.json_format import MessageToJson

    proposal = propose(stack, tool="fhir.create", resource=vital(66), idempotency_key="receipt-1")
    receipt = proposal.decision_receipt
    assert receipt.checkpoint
    assert receipt.leaf_hash
    assert receipt.origin in receipt.checkpoint
    path = tmp_path / "receipt.json"
    path.write_text(MessageToJson(proposal))

    def prove(receipt_file: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "chartgate.cli", "audit", "prove", "inclusion"),
                str(stack.workdir / "audit" / "audit.jsonl"),
                *("--receipt", str(receipt_file)),
                *("--keyring", str(stack.workdir / "audit" / "audit.keyring.json")),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    proved = prove(path)
    assert proved.returncode == 0, proved.stderr
    # The same receipt naming another leaf hash does not prove.
    forged = json.loads(path.read_text())
    forged["decisionReceipt"]["leafHash"] = "00" * 32
    path.write_text(json.dumps(forged))
    assert prove(path).returncode != 0
