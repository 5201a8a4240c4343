"""Policy through the sidecar's gRPC API: each denial has its own code, edits reload live, dry run."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chartgate.stack import Stack, start_stack
from chartgate.v1 import gateway_pb2
from sidecar.client import ChartgateClient
from sidecar.policy.library import shipped_policy_dir
from tests.support import fhir_search, seed_patient

REGO = shipped_policy_dir()
AGENT = "scribe-agent"
TENANT = "st-mary"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB_SCOPE = f"patient/Observation.c?category={OBS_CATEGORY}|laboratory"

# One patient per consent situation; "p-none" has no record at all.
CONSENTS = [
    {"id": "c-ok", "patient": "p-ok", "status": "active", "purposes": ["TREAT"]},
    {
        "id": "c-expired",
        "patient": "p-expired",
        "status": "active",
        "purposes": ["TREAT"],
        "period": {"start": "2024-01-01T00:00:00+00:00", "end": "2025-01-01T00:00:00+00:00"},
    },
    {"id": "c-revoked", "patient": "p-revoked", "status": "inactive", "purposes": ["TREAT"]},
]
PATIENTS = ("p-ok", "p-expired", "p-revoked", "p-none")
NO_SWITCHES: dict[str, Any] = {
    "all_off": False,
    "agents_off": [],
    "actions_off": [],
    "tenants_off": [],
}


def observation(patient: str, category: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
        **extra,
    }


def write_operator_data(path: Path, switches: dict[str, Any], tenant: dict[str, Any]) -> None:
    """Replace the operator file the way an operator's tooling would: write, then rename."""
    staged = path.with_suffix(".staged")
    staged.write_text(
        json.dumps({"chartgate_config": {"tenants": {TENANT: tenant}, "switches": switches}})
    )
    staged.replace(path)


def sidecar_config(workdir: Path, policy_dir: Path, **extra: Any) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    consents = workdir / "consents.json"
    consents.write_text(json.dumps(CONSENTS))
    operator = workdir / "policy-data.json"
    write_operator_data(operator, NO_SWITCHES, {})
    return {
        "agent_id": AGENT,
        "tenant_id": TENANT,
        "agent_scopes": ["patient/Patient.u", LAB_SCOPE],
        "policy_dir": str(policy_dir),
        "policy_data": str(operator),
        "consents_file": str(consents),
        **extra,
    }


def running_stack(workdir: Path, config: dict[str, Any]) -> Stack:
    stack = start_stack(workdir, config)
    for patient in PATIENTS:
        seed_patient(stack.fhir_base, patient)
    return stack


def propose(stack: Stack, resource: dict[str, Any], **kwargs: Any) -> gateway_pb2.Proposal:
    patient = resource["subject"]["reference"].split("/")[1]
    with ChartgateClient(stack.sidecar_target) as client:
        return client.propose(
            tool="fhir.create", resource=resource, patient_id=patient, confidence=0.9, **kwargs
        )


def observations_of(stack: Stack, patient: str) -> list[dict[str, Any]]:
    return fhir_search(stack.fhir_base, "Observation", subject=f"Patient/{patient}")


def wait_for(check: Callable[[], bool], seconds: float = 30.0) -> float:
    """Poll until `check()` holds; return how long it took (fails the test past `seconds`)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            pytest.fail(f"condition not met within {seconds:g} s")
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("policy-gateway")
    running = running_stack(workdir, sidecar_config(workdir, REGO))
    yield running
    running.stop()


# --- each denial has its own reason code, and nothing is written -----------------------------


DENIALS = {
    "no-consent": (observation("p-none", "laboratory"), {}, "consent.missing"),
    "expired-consent": (observation("p-expired", "laboratory"), {}, "consent.expired"),
    "revoked-consent": (observation("p-revoked", "laboratory"), {}, "consent.revoked"),
    "training-purpose": (
        observation("p-ok", "laboratory"),
        {"purpose_of_use": "MLTRAINING"},
        "consent.training_not_permitted",
    ),
    # The agent's only Observation scope is filtered to laboratory results.
    "scope-filter": (observation("p-ok", "vital-signs"), {}, "scope.filter_mismatch"),
    "field-outside-allowlist": (
        observation(
            "p-ok", "laboratory", extension=[{"url": "https://example.org/x", "valueString": "y"}]
        ),
        {},
        "fields.not_allowed",
    ),
}


@pytest.mark.parametrize("case", DENIALS, ids=list(DENIALS))
def test_each_denial_has_its_own_reason_code_and_writes_nothing(stack: Stack, case: str) -> None:
    resource, kwargs, code = DENIALS[case]
    result = propose(stack, resource, **kwargs)
    assert result.state == gateway_pb2.PROPOSAL_STATE_BLOCKED
    assert result.tier == gateway_pb2.TIER_BLOCKED
    assert [r.code for r in result.reasons] == [code]
    assert result.reasons[0].rule.startswith("chartgate.")
    assert result.policy_revision.startswith("sha256:")
    patient = resource["subject"]["reference"].split("/")[1]
    assert observations_of(stack, patient) == []


def test_the_control_write_is_allowed_so_the_denials_mean_something(stack: Stack) -> None:
    held = propose(stack, observation("p-ok", "laboratory"))
    assert held.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert [r.code for r in held.reasons] == ["tier.approval"]
    telecom = {
        "resourceType": "Patient",
        "id": "p-ok",
        "telecom": [{"system": "phone", "value": "555-0100"}],
    }
    with ChartgateClient(stack.sidecar_target) as client:
        written = client.propose(tool="fhir.update", resource=telecom, patient_id="p-ok")
    assert written.state == gateway_pb2.PROPOSAL_STATE_ACCEPTED, written.reasons


def test_an_agent_switched_off_by_operator_data_is_denied_within_seconds(stack: Stack) -> None:
    operator = Path(stack.workdir) / "policy-data.json"
    before = propose(stack, observation("p-ok", "laboratory"))
    assert before.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL

    write_operator_data(operator, {**NO_SWITCHES, "agents_off": [AGENT]}, {})
    try:
        codes: list[str] = []

        def switched_off() -> bool:
            result = propose(stack, observation("p-ok", "laboratory"))
            codes[:] = [r.code for r in result.reasons]
            return result.state == gateway_pb2.PROPOSAL_STATE_BLOCKED

        wait_for(switched_off)
        assert codes == ["switch.agent_off"]
        assert observations_of(stack, "p-ok") == []
    finally:
        write_operator_data(operator, NO_SWITCHES, {})
    wait_for(
        lambda: propose(stack, observation("p-ok", "laboratory")).state
        == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    )


# --- hot reload of the policy directory, and a broken edit refused ----------------------------


@pytest.fixture
def editable(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    policy = tmp_path / "policy"
    shutil.copytree(REGO, policy)
    running = running_stack(tmp_path / "stack", sidecar_config(tmp_path / "stack", policy))
    yield running, policy
    running.stop()


def test_a_policy_edit_changes_decisions_without_restart_and_a_broken_edit_does_not(
    editable: tuple[Stack, Path],
) -> None:
    stack, policy = editable
    first = propose(stack, observation("p-ok", "laboratory"))
    assert first.tier == gateway_pb2.TIER_APPROVAL

    # A tenant override in the operator data makes the same write need two approvals.
    write_operator_data(
        Path(stack.workdir) / "policy-data.json",
        NO_SWITCHES,
        {"tier_overrides": {"create:Observation": "dual_approval"}},
    )
    seconds = wait_for(
        lambda: propose(stack, observation("p-ok", "laboratory")).tier
        == gateway_pb2.TIER_DUAL_APPROVAL
    )
    assert seconds < 15
    edited = propose(stack, observation("p-ok", "laboratory"))
    assert edited.policy_revision != first.policy_revision
    assert "tier.tenant_override" in [r.code for r in edited.reasons]

    # A syntax error in a module: refused, the previous revision keeps deciding, the log says why.
    (policy / "tiers.rego").write_text((policy / "tiers.rego").read_text() + "\nbroken := {{\n")
    log = Path(stack.workdir) / "logs" / "sidecar.log"
    wait_for(lambda: "refused" in log.read_text() and "tiers.rego" in log.read_text())
    after = propose(stack, observation("p-ok", "laboratory"))
    assert after.tier == gateway_pb2.TIER_DUAL_APPROVAL
    assert after.policy_revision == edited.policy_revision
    refusal = next(line for line in log.read_text().splitlines() if "refused" in line)
    assert "stays in force" in refusal
    assert edited.policy_revision in refusal


def test_an_edit_that_fails_its_own_tests_is_refused(editable: tuple[Stack, Path]) -> None:
    stack, policy = editable
    first = propose(stack, observation("p-ok", "laboratory"))
    data = json.loads((policy / "data.json").read_text())
    data["chartgate_library"]["whitelist"]["create:Observation"]["tier"] = "autonomous"
    (policy / "data.json").write_text(json.dumps(data))
    log = Path(stack.workdir) / "logs" / "sidecar.log"
    wait_for(lambda: "policy test(s) failed" in log.read_text())
    after = propose(stack, observation("p-ok", "laboratory"))
    assert after.state == gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL
    assert after.policy_revision == first.policy_revision
    assert observations_of(stack, "p-ok") == []


# --- dry run: a candidate policy beside the enforced one ---------------------------------------


def test_a_shadow_policy_is_evaluated_and_audited_but_never_enforced(tmp_path: Path) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(REGO, candidate)
    for test_file in candidate.rglob("*_test.rego"):
        test_file.unlink()  # the candidate's tier change would fail the shipped tests
    data = json.loads((candidate / "data.json").read_text())
    data["chartgate_library"]["whitelist"]["create:Observation"]["tier"] = "dual_approval"
    (candidate / "data.json").write_text(json.dumps(data))
    workdir = tmp_path / "stack"
    stack = running_stack(
        workdir, sidecar_config(workdir, REGO, shadow_policy_dir=str(candidate))
    )
    try:
        held = propose(stack, observation("p-ok", "laboratory"), trace_id="5ad0bf1e2c3d4e5f60718293a4b5c6d7")
        # The enforced policy decided: one approval, not the candidate's two.
        assert held.tier == gateway_pb2.TIER_APPROVAL
        agreed = propose(stack, observation("p-none", "laboratory"))  # both block: no record
        assert agreed.state == gateway_pb2.PROPOSAL_STATE_BLOCKED
    finally:
        stack.stop()
    records = [
        json.loads(line) for line in (workdir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    shadow = [r for r in records if r["kind"] == "policy.shadow_disagreement"]
    assert len(shadow) == 1
    body = shadow[0]["body"]
    assert body["trace_id"] == "5ad0bf1e2c3d4e5f60718293a4b5c6d7"
    assert (body["enforced"]["tier"], body["candidate"]["tier"]) == ("approval", "dual_approval")
    assert body["enforced"]["policy_revision"] == held.policy_revision
    assert body["candidate"]["policy_revision"] != held.policy_revision
