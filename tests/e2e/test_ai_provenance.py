"""AI provenance on every write, through real processes: AI Transparency labels and a Provenance per written version.

An autonomous write carries `AIAST`; one a clinician approved carries `CLINAST` as well. Each
written version has a Provenance naming the AI agent (a Device with its model and prompt
versions), the person it acted for, the approving reviewers and the evidence. The agent cannot
set, change or drop these labels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.provenance import AI_ASSERTED, CLINICIAN_ASSERTED, provenance_id
from chartgate.demo import TENANT, demo_sidecar_config
from chartgate.devissuer.issuer import DevIssuer
from chartgate.stack import Stack, start_stack
from chartgate.v1 import gateway_pb2
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.client import ChartgateClient
from sidecar.policy.library import shipped_policy_dir
from sidecar.review.client import ReviewClient
from tests.support import fhir_search, seed_patient

PATIENT = "demo-patient-1"
OBS = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("provenance")
    running = start_stack(workdir, demo_sidecar_config(workdir, shipped_policy_dir()))
    try:
        seed_patient(running.fhir_base, PATIENT)
        yield running
    finally:
        running.stop()


def observation(category: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final" if category == "vital-signs" else "preliminary",
        "category": [{"coding": [{"system": OBS, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def propose(stack: Stack, resource: dict[str, Any], key: str) -> gateway_pb2.Proposal:
    with ChartgateClient(stack.sidecar_target) as agent:
        return agent.propose(
            tool="fhir.create",
            resource=resource,
            patient_id=PATIENT,
            idempotency_key=key,
            confidence=0.97,
            on_behalf_of="Practitioner/dr-lee",
            model_version="scribe-2026-10",
            prompt_version="p-41",
            evidence_refs=["DocumentReference/visit-note-7"],
        )


def stored(stack: Stack, proposal_id: str) -> dict[str, Any]:
    [resource] = fhir_search(
        stack.fhir_base, "Observation", identifier=f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"
    )
    return resource


def provenance(stack: Stack, resource: dict[str, Any], proposal_id: str) -> dict[str, Any]:
    pid = provenance_id(proposal_id)
    response = httpx.get(f"{stack.fhir_base}/Provenance/{pid}", timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def labels(resource: dict[str, Any]) -> set[str]:
    return {c["code"] for c in resource.get("meta", {}).get("security", [])}


def test_an_autonomous_write_is_labelled_ai_asserted_with_its_provenance(stack: Stack) -> None:
    proposal = propose(stack, observation("vital-signs", 72), "prov-auto")
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_ACCEPTED
    resource = stored(stack, proposal.proposal_id)
    assert labels(resource) == {"AIAST"}
    assert resource["meta"]["security"][0]["system"] == AI_ASSERTED["system"]
    prov = provenance(stack, resource, proposal.proposal_id)
    # Written in one transaction with the resource: the store resolved the entry's urn:uuid to
    # the version it wrote.
    [target] = prov["target"]
    assert target["reference"] == (
        f"Observation/{resource['id']}/_history/{resource['meta']['versionId']}"
    )
    [device] = prov["contained"]
    assert device["deviceName"][0]["name"] == "scribe-agent"
    assert {v["type"]["text"]: v["value"] for v in device["version"]} == {
        "model": "scribe-2026-10",
        "prompt": "p-41",
    }
    [author] = prov["agent"]
    assert author["who"] == {"reference": "#agent"}
    assert author["onBehalfOf"] == {"reference": "Practitioner/dr-lee"}
    assert prov["entity"] == [
        {"role": "source", "what": {"reference": "DocumentReference/visit-note-7"}}
    ]
    # A retry of the same key writes neither the resource nor its Provenance again.
    again = propose(stack, observation("vital-signs", 72), "prov-auto")
    assert again.fhir_version == proposal.fhir_version
    assert len(fhir_search(stack.fhir_base, "Provenance", _id=prov["id"])) == 1


def test_an_approved_write_is_clinician_asserted_too_and_names_its_reviewer(
    stack: Stack,
) -> None:
    held = propose(stack, observation("laboratory", 98), "prov-approved")
    assert held.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    token = DevIssuer(stack.workdir / "dev-issuer").mint(
        "alice", roles=["clinician"], tenants=[TENANT], fhir_user="Practitioner/alice"
    )
    ReviewClient(stack.review_target, token).approve(held.proposal_id)
    deadline = time.monotonic() + 20
    with ChartgateClient(stack.sidecar_target) as agent:
        while agent.get(held.proposal_id).state not in (
            gateway_pb2.PROPOSAL_STATE_ACCEPTED,
            gateway_pb2.PROPOSAL_STATE_RECONCILED,
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    resource = stored(stack, held.proposal_id)
    assert labels(resource) == {AI_ASSERTED["code"], CLINICIAN_ASSERTED["code"]}
    prov = provenance(stack, resource, held.proposal_id)
    verifiers = [a for a in prov["agent"] if a["type"]["coding"][0]["code"] == "verifier"]
    assert [v["who"] for v in verifiers] == [{"reference": "Practitioner/alice"}]


def test_the_agent_can_neither_set_nor_drop_the_labels(stack: Stack) -> None:
    spoofed = {**observation("vital-signs", 73), "meta": {"security": []}}
    blocked = propose(stack, spoofed, "prov-spoof")
    assert blocked.state == gateway_pb2.PROPOSAL_STATE_BLOCKED
    assert any(r.code == "fields.security_label" for r in blocked.reasons)
    # An update of a labelled resource keeps its labels (and the adapter adds them anyway).
    with ChartgateClient(stack.sidecar_target) as agent:
        update = agent.propose(
            tool="fhir.update",
            resource={
                "resourceType": "Patient",
                "id": PATIENT,
                "telecom": [{"system": "phone", "value": "+1-555-0101"}],
            },
            patient_id=PATIENT,
            idempotency_key="prov-update",
        )
    assert update.state == gateway_pb2.PROPOSAL_STATE_ACCEPTED
    [patient] = fhir_search(stack.fhir_base, "Patient", _id=PATIENT)
    assert "AIAST" in labels(patient)
