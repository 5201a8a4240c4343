"""A broken policy engine denies every proposal, through the real sidecar, with a reason saying so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chartgate.demo import demo_sidecar_config
from chartgate.stack import start_stack
from chartgate.v1 import gateway_pb2
from sidecar.client import ChartgateClient
from sidecar.policy.library import shipped_policy_dir
from tests.support import fhir_search, seed_patient

REGO = shipped_policy_dir()

VITAL = {
    "resourceType": "Observation",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/demo-patient-1"},
    "valueQuantity": {"value": 72},
}

BROKEN_SYNTAX = "package chartgate.decision\n\nimport rego.v1\n\ndecision := {{ broken\n"

# Compiles, but fails at evaluation time under strict builtin errors: a number parsed from a
# string that is not a number.
ENGINE_ERROR = """package chartgate.decision

import rego.v1

decision := {"allow": to_number(input.action.resource_type) > 0, "tier": "autonomous", "reasons": []}
"""


@pytest.mark.parametrize(
    ("module", "code_prefix"),
    [(BROKEN_SYNTAX, "policy."), (ENGINE_ERROR, "policy.engine_error")],
    ids=["bad-policy-file", "engine-error"],
)
def test_every_proposal_is_denied_with_a_policy_reason(
    tmp_path: Path, module: str, code_prefix: str
) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(REGO, policy)
    for test_file in policy.rglob("*_test.rego"):
        test_file.unlink()
    decision_files = [
        p for p in policy.rglob("*.rego") if "package chartgate.decision\n" in p.read_text()
    ]
    for path in decision_files:
        path.unlink()
    (policy / "broken.rego").write_text(module)
    with start_stack(tmp_path / "work", demo_sidecar_config(tmp_path / "work", policy)) as stack:
        seed_patient(stack.fhir_base, "demo-patient-1")
        with ChartgateClient(stack.sidecar_target) as client:
            for key in ("broken-1", "broken-2"):
                proposal = client.propose(
                    tool="fhir.create",
                    resource=VITAL,
                    patient_id="demo-patient-1",
                    idempotency_key=key,
                    confidence=0.99,
                )
                assert proposal.state == gateway_pb2.PROPOSAL_STATE_BLOCKED
                assert proposal.tier == gateway_pb2.TIER_BLOCKED
                codes = [r.code for r in proposal.reasons]
                assert codes
                assert all(c.startswith(code_prefix) for c in codes), codes
                assert all("polic" in r.message.lower() for r in proposal.reasons)
        assert fhir_search(stack.fhir_base, "Observation") == []
