"""The write rail through real processes while the FHIR store fails on purpose: counted in what the store holds.

agent → sidecar → adapter → local FHIR store, the store injecting faults through its control
endpoint (docs/devstore-faults.md). Every test ends by counting the resources the store holds per
stamped proposal identifier: exactly one per accepted proposal, none for a refused one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from adapters.provenance import provenance_id
from chartgate.demo import demo_sidecar_config
from chartgate.stack import Stack, start_adapter, start_fhir_store, start_sidecar
from chartgate.v1 import gateway_pb2
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.client import ChartgateClient, ProposalRefused
from sidecar.policy.library import shipped_policy_dir
from tests.support import fhir_search, seed_patient

PATIENT = "demo-patient-1"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTICS = "Observation.code: LOINC 8867-4 is not in the value set this EHR accepts"
# Written: accepted, and reconciled once a sweep read it back (docs/reconciliation.md).
WRITTEN = {gateway_pb2.PROPOSAL_STATE_ACCEPTED, gateway_pb2.PROPOSAL_STATE_RECONCILED}
TERMINAL = {
    gateway_pb2.PROPOSAL_STATE_ACCEPTED,
    gateway_pb2.PROPOSAL_STATE_RECONCILED,
    gateway_pb2.PROPOSAL_STATE_MISMATCH,
    gateway_pb2.PROPOSAL_STATE_FAILED_FINAL,
    gateway_pb2.PROPOSAL_STATE_DEAD_LETTERED,
}

# Short waits, so faults settle within seconds (the defaults are for an EHR, not a test).
DELIVERY = {
    "sweep_seconds": 0.2,
    "retry_base_seconds": 0.2,
    "retry_cap_seconds": 1.0,
    "retry_index_delay_seconds": 0.5,
    "retry_max_attempts": 40,
    "max_queued_writes": 3,
    "adapter_timeout_seconds": 5.0,
}


def start_faulty_stack(workdir: Any) -> Stack:
    stack = Stack(workdir=workdir)
    try:
        start_fhir_store(stack, extra_args=["--allow-fault-control"])
        start_adapter(
            stack,
            extra_args=[
                "--fhir-timeout",
                "3",
                "--breaker-threshold",
                "3",
                "--breaker-cool-down",
                "2",
            ],
        )
        config = demo_sidecar_config(workdir, shipped_policy_dir())
        start_sidecar(stack, {**config, **DELIVERY})
        seed_patient(stack.fhir_base, PATIENT)
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_faulty_stack(tmp_path_factory.mktemp("faults"))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_faults_after(stack: Stack) -> Iterator[None]:
    yield
    httpx.delete(control(stack)).raise_for_status()


def control(stack: Stack) -> str:
    return stack.fhir_base.removesuffix("/fhir") + "/_faults"


def inject(stack: Stack, plan: dict[str, Any]) -> None:
    httpx.post(control(stack), json=plan).raise_for_status()


def injected(stack: Stack) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(control(stack)).json()
    return report


def vital(value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def propose(stack: Stack, value: float, key: str) -> gateway_pb2.Proposal:
    with ChartgateClient(stack.sidecar_target) as client:
        return client.propose(
            tool="fhir.create",
            resource=vital(value),
            patient_id=PATIENT,
            confidence=0.97,
            idempotency_key=key,
        )


def settled(stack: Stack, proposal_id: str, timeout: float = 30.0) -> gateway_pb2.Proposal:
    deadline = time.monotonic() + timeout
    with ChartgateClient(stack.sidecar_target) as client:
        while True:
            proposal = client.get(proposal_id)
            if proposal.state in TERMINAL or time.monotonic() > deadline:
                return proposal
            time.sleep(0.05)


def stored(stack: Stack, proposal_id: str) -> list[dict[str, Any]]:
    return fhir_search(
        stack.fhir_base, "Observation", identifier=f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"
    )


def test_429_retry_after_is_honoured_measured_at_the_store(stack: Stack) -> None:
    inject(stack, {"throttle": {"retry_after_seconds": 2}, "schedule": [{"fault": "throttle"}]})
    started = time.monotonic()
    first = propose(stack, 61, "throttled-1")
    assert first.state == gateway_pb2.PROPOSAL_STATE_FAILED_RETRYABLE
    assert first.reasons[-1].rule == "adapter.throttled"
    # Poll the store itself: the write appears only once the EHR's Retry-After has passed.
    while not stored(stack, first.proposal_id):
        assert time.monotonic() - started < 15, "the throttled write never landed"
        time.sleep(0.02)
    waited = time.monotonic() - started
    assert waited >= 2.0, f"resent after {waited:.2f} s, before the EHR's Retry-After of 2 s"
    assert settled(stack, first.proposal_id).state in WRITTEN
    assert len(stored(stack, first.proposal_id)) == 1
    assert injected(stack)["injected"]["throttle"] == 1


def test_a_422_operation_outcome_is_final_and_its_diagnostics_reach_the_agent(
    stack: Stack,
) -> None:
    inject(stack, {"reject": {"diagnostics": DIAGNOSTICS}, "schedule": [{"fault": "reject"}]})
    proposal = propose(stack, 62, "rejected-1")
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_FAILED_FINAL
    reason = proposal.reasons[-1]
    assert reason.rule == "adapter.validation"
    assert DIAGNOSTICS in reason.message
    time.sleep(1.5)  # several sweeps: nothing resends it
    report = injected(stack)
    assert report["injected"]["reject"] == 1
    assert report["requests"] == 1  # the one create; never retried
    assert stored(stack, proposal.proposal_id) == []
    # The agent retrying its key learns the same answer, and the EHR's words stay out of logs.
    again = propose(stack, 62, "rejected-1")
    assert again.state == gateway_pb2.PROPOSAL_STATE_FAILED_FINAL
    for process in stack.processes:
        assert DIAGNOSTICS not in process.log_path.read_text(errors="replace")
    assert DIAGNOSTICS not in (stack.workdir / "audit" / "audit.jsonl").read_text()


def test_a_write_committed_then_dropped_is_looked_up_and_accepted_once(stack: Stack) -> None:
    inject(stack, {"schedule": [{"fault": "drop_after_commit"}]})
    proposal = propose(stack, 63, "dropped-1")
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_AMBIGUOUS
    assert len(stored(stack, proposal.proposal_id)) == 1  # it did commit
    final = settled(stack, proposal.proposal_id)
    assert final.state in WRITTEN
    [resource] = stored(stack, proposal.proposal_id)
    assert final.fhir_id == resource["id"]
    # Its Provenance went in the same transaction (at an EHR without transactions the read-back
    # writes it), and reconciliation then finds the write as intended.
    deadline = time.monotonic() + 20
    with ChartgateClient(stack.sidecar_target) as client:
        while (now := client.get(proposal.proposal_id)).state != (
            gateway_pb2.PROPOSAL_STATE_RECONCILED
        ):
            assert now.state != gateway_pb2.PROPOSAL_STATE_MISMATCH
            assert time.monotonic() < deadline
            time.sleep(0.1)
    pid = provenance_id(proposal.proposal_id)
    assert httpx.get(f"{stack.fhir_base}/Provenance/{pid}").status_code == 200


def test_a_write_dropped_before_commit_is_resent_and_stored_once(stack: Stack) -> None:
    inject(stack, {"schedule": [{"fault": "drop_before_commit"}]})
    proposal = propose(stack, 64, "dropped-2")
    assert proposal.state == gateway_pb2.PROPOSAL_STATE_AMBIGUOUS
    assert settled(stack, proposal.proposal_id).state in WRITTEN
    assert len(stored(stack, proposal.proposal_id)) == 1


def test_with_the_circuit_open_propose_is_refused_with_a_hint_and_nothing_is_lost(
    stack: Stack,
) -> None:
    inject(stack, {"unavailable": {"probability": 1.0, "retry_after_seconds": 1}})
    accepted: list[gateway_pb2.Proposal] = []
    refusal: ProposalRefused | None = None
    for n in range(12):
        try:
            accepted.append(propose(stack, 70 + n, f"breaker-{n}"))
        except ProposalRefused as exc:
            refusal = exc
            break
        time.sleep(0.1)
    assert refusal is not None, "Propose never pushed back while the EHR was down"
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.reason == "delivery.backpressure"
    assert refusal.retry_after_seconds > 0
    assert {p.state for p in accepted} <= {
        gateway_pb2.PROPOSAL_STATE_FAILED_RETRYABLE,
        gateway_pb2.PROPOSAL_STATE_APPROVED,
    }
    refused_key = f"breaker-{len(accepted)}"
    httpx.delete(control(stack)).raise_for_status()  # the EHR is back
    time.sleep(refusal.retry_after_seconds)
    retried = None
    for _ in range(50):  # the agent comes back after the hint (and again if told to)
        try:
            retried = propose(stack, 70 + len(accepted), refused_key)
            break
        except ProposalRefused as exc:
            refusal = exc
        assert refusal.reason == "delivery.backpressure"
        time.sleep(max(refusal.retry_after_seconds, 0.2))
    assert retried is not None
    final = [settled(stack, p.proposal_id) for p in [*accepted, retried]]
    assert {p.state for p in final} <= WRITTEN
    # The breaker did open: some attempt was refused by it before anything was sent.
    assert any(r.rule == "adapter.circuit_open" for p in final for r in p.reasons)
    for proposal in final:
        assert len(stored(stack, proposal.proposal_id)) == 1
