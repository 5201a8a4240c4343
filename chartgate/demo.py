"""`chartgate demo`: a scripted agent driven through a real sidecar, adapter and FHIR store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from chartgate.devissuer.issuer import DEFAULT_AUDIENCE as REVIEW_AUDIENCE
from chartgate.devissuer.issuer import DevIssuer
from chartgate.stack import Stack, start_stack
from chartgate.v1 import gateway_pb2
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.audit.verify import verify_command
from sidecar.client import ChartgateClient, ProposalRefused
from sidecar.proposals.service import proposal_id_for
from sidecar.review.client import ReviewClient, ReviewRefused

AGENT = "scribe-agent"
TENANT = "st-mary"
PATIENT = "demo-patient-1"
OTHER_PATIENT = "demo-patient-2"
LOINC = "http://loinc.org"
APPROVAL_WINDOW_SECONDS = 8
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


# Short retry waits so the faults phase settles in seconds (docs/configuration.md).
DEMO_DELIVERY: dict[str, Any] = {
    "sweep_seconds": 0.2,
    "retry_base_seconds": 0.2,
    "retry_index_delay_seconds": 0.5,
}


def demo_sidecar_config(workdir: Path, policy_dir: Path) -> dict[str, Any]:
    """Sidecar settings for the demo tenant, with its consent file and policy data beside them."""
    workdir.mkdir(parents=True, exist_ok=True)
    consents = workdir / "consents.json"
    consents.write_text(
        json.dumps(
            [
                {
                    "id": "consent-treat-1",
                    "patient": PATIENT,
                    "status": "active",
                    "purposes": ["TREAT"],
                    "period": {
                        "start": "2026-01-01T00:00:00+00:00",
                        "end": "2027-12-31T00:00:00+00:00",
                    },
                },
            ],
            indent=2,
        )
    )
    policy_data = workdir / "policy-data.json"
    policy_data.write_text(
        json.dumps(
            {
                "chartgate_config": {
                    "tenants": {
                        TENANT: {
                            "autonomous_vital_signs_min_confidence": 0.9,
                            # Short, so the demo can show a proposal expiring while it waits.
                            "approval_expiry_seconds": APPROVAL_WINDOW_SECONDS,
                        }
                    },
                    "switches": {"agents_off": [], "actions_off": [], "tenants_off": []},
                }
            },
            indent=2,
        )
    )
    issuer = DevIssuer(workdir / "dev-issuer")
    return {
        "agent_id": AGENT,
        "tenant_id": TENANT,
        # Reviewers sign in at the development issuer (chartgate/devissuer; not a product).
        "reviewer_issuers": [
            {
                "issuer": issuer.issuer,
                "audience": REVIEW_AUDIENCE,
                "jwks_file": str(issuer.jwks_path),
            }
        ],
        "agent_scopes": [
            "patient/Patient.u",
            "patient/Observation.c",
            "patient/Condition.c",
            "patient/MedicationRequest.c",
            "patient/AllergyIntolerance.c",
        ],
        "policy_dir": str(policy_dir),
        "policy_data": str(policy_data),
        "consents_file": str(consents),
    }


def _vital_sign(patient: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-22T09:30:00+00:00",
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


@dataclass(frozen=True)
class Step:
    title: str
    expect: str  # "written", "held", "blocked", "refused", "unchanged"
    run: Callable[[ChartgateClient], gateway_pb2.Proposal]


def _steps() -> list[Step]:
    telecom_update = {
        "resourceType": "Patient",
        "id": PATIENT,
        "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "mobile"}],
    }
    lab_draft = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": 98, "unit": "mg/dL"},
    }
    order = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
    }
    allergy = {
        "resourceType": "AllergyIntolerance",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
        "patient": {"reference": f"Patient/{PATIENT}"},
    }
    common: dict[str, Any] = {
        "patient_id": PATIENT,
        "on_behalf_of": "Practitioner/dr-lee",
        "model_version": "scribe-2026-10",
        "prompt_version": "p-41",
    }
    return [
        Step(
            "update Patient.telecom (administrative)",
            "written",
            lambda c: c.propose(
                tool="fhir.update",
                resource=telecom_update,
                idempotency_key="demo-telecom-1",
                confidence=0.99,
                **common,
            ),
        ),
        Step(
            "same telecom update retried with the same key",
            "unchanged",
            lambda c: c.propose(
                tool="fhir.update",
                resource=telecom_update,
                idempotency_key="demo-telecom-1",
                confidence=0.99,
                **common,
            ),
        ),
        Step(
            "record heart rate from a device (vital signs, confidence 0.97)",
            "written",
            lambda c: c.propose(
                tool="fhir.create",
                resource=_vital_sign(PATIENT, 72),
                idempotency_key="demo-hr-1",
                confidence=0.97,
                **common,
            ),
        ),
        Step(
            "draft a lab observation",
            "held",
            lambda c: c.propose(
                tool="fhir.create",
                resource=lab_draft,
                idempotency_key="demo-lab-1",
                confidence=0.8,
                **common,
            ),
        ),
        Step(
            "draft a medication order",
            "held",
            lambda c: c.propose(
                tool="fhir.create",
                resource=order,
                idempotency_key="demo-order-1",
                confidence=0.9,
                **common,
            ),
        ),
        Step(
            "record an allergy (not whitelisted for agents)",
            "blocked",
            lambda c: c.propose(
                tool="fhir.create",
                resource=allergy,
                idempotency_key="demo-allergy-1",
                confidence=0.9,
                **common,
            ),
        ),
        Step(
            "reuse the chart for AI model training",
            "blocked",
            lambda c: c.propose(
                tool="fhir.create",
                resource=_vital_sign(PATIENT, 75),
                idempotency_key="demo-train-1",
                confidence=0.97,
                purpose_of_use="MLTRAINING",
                **common,
            ),
        ),
        Step(
            "heart rate for another patient than the one named",
            "refused",
            lambda c: c.propose(
                tool="fhir.create",
                resource=_vital_sign(OTHER_PATIENT, 80),
                idempotency_key="demo-hr-2",
                confidence=0.97,
                **common,
            ),
        ),
        Step(
            "reuse the lab draft's key for a different payload",
            "refused",
            lambda c: c.propose(
                tool="fhir.create",
                resource={**lab_draft, "status": "final"},
                idempotency_key="demo-lab-1",
                confidence=0.8,
                **common,
            ),
        ),
    ]


_OUTCOME = {
    gateway_pb2.PROPOSAL_STATE_ACCEPTED: "written",
    # Read back and found as intended (or not: a reviewer is shown the difference).
    gateway_pb2.PROPOSAL_STATE_RECONCILED: "written",
    gateway_pb2.PROPOSAL_STATE_MISMATCH: "written, stored differently",
    gateway_pb2.PROPOSAL_STATE_PENDING_APPROVAL: "held",
    gateway_pb2.PROPOSAL_STATE_BLOCKED: "blocked",
    gateway_pb2.PROPOSAL_STATE_SUPERSEDED: "superseded",
    gateway_pb2.PROPOSAL_STATE_EXPIRED: "expired",
}


def _run_step(
    client: ChartgateClient, step: Step, previous: gateway_pb2.Proposal | None
) -> tuple[str, str, gateway_pb2.Proposal | None]:
    """Run one step; returns (outcome, what to print, the proposal for the next step to compare)."""
    try:
        proposal = step.run(client)
    except ProposalRefused as exc:
        fixes = "; ".join(f"{f}: {d}" for f, d in exc.violations) or exc.message
        return "refused", f"{exc.code.name} {exc.reason}: {fixes}", previous
    outcome = _OUTCOME.get(proposal.state, gateway_pb2.ProposalState.Name(proposal.state))
    reasons = "; ".join(r.code for r in proposal.reasons) or "-"
    tier = gateway_pb2.Tier.Name(proposal.tier).removeprefix("TIER_").lower()
    detail = f"tier {tier}, reasons: {reasons}"
    if proposal.fhir_id:
        detail += f", stored {proposal.resource_type}/{proposal.fhir_id} v{proposal.fhir_version}"
    if step.expect == "unchanged" and previous is not None:
        same = (proposal.proposal_id, proposal.fhir_version) == (
            previous.proposal_id,
            previous.fhir_version,
        )
        outcome = "unchanged" if same else "written again"
        detail = f"same proposal {proposal.proposal_id}, no new write ({detail})"
    return outcome, detail, proposal


def _review_phase(stack: Stack, client: ChartgateClient) -> int:
    """Reviewers decide what the agent's steps left held; returns the number of steps off."""
    issuer = DevIssuer(stack.workdir / "dev-issuer")

    def reviewer(subject: str, role: str) -> ReviewClient:
        return ReviewClient(
            stack.review_target,
            issuer.mint(
                subject, roles=[role], tenants=[TENANT], fhir_user=f"Practitioner/{subject}"
            ),
        )

    def key(k: str) -> str:
        return proposal_id_for(TENANT, AGENT, k)

    failures = 0

    def show(title: str, proposal: gateway_pb2.Proposal, expect: str) -> None:
        nonlocal failures
        outcome = _OUTCOME.get(proposal.state, gateway_pb2.ProposalState.Name(proposal.state))
        outcome = outcome.removeprefix("PROPOSAL_STATE_").lower()
        ok = outcome == expect
        failures += not ok
        detail = f"{proposal.approvals_given}/{proposal.approvals_required} approvals"
        if proposal.fhir_id:
            detail = f"stored {proposal.resource_type}/{proposal.fhir_id}"
        note = "" if ok else f" (expected {expect})"
        print(f"  - {title}\n     -> {outcome.upper()}{note}: {detail}")

    alice, carol, erin = (
        reviewer("alice", "clinician"),
        reviewer("carol", "prescriber"),
        reviewer("erin", "prescriber"),
    )
    try:
        print("\n  Reviewers (tokens from the development issuer):")
        show(
            "alice (clinician) approves the lab draft",
            alice.approve(key("demo-lab-1")).proposal,
            "written",
        )
        show(
            "carol (prescriber) approves the medication order",
            carol.approve(key("demo-order-1")).proposal,
            "held",
        )
        again = reviewer("carol", "prescriber").approve(key("demo-order-1")).proposal
        show("carol approves it again, in another session: still one reviewer", again, "held")
        show(
            "erin (prescriber) approves it: two distinct reviewers",
            erin.approve(key("demo-order-1")).proposal,
            "written",
        )
        draft = client.propose(
            tool="fhir.create",
            resource=_lab_draft(101),
            idempotency_key="demo-lab-2",
            patient_id=PATIENT,
            confidence=0.97,
            model_version="scribe-2026-10",
            prompt_version="p-41",
        )
        vital = _vital_sign(PATIENT, 101)
        amended = alice.amend(draft.proposal_id, json.dumps(vital))
        show(
            "alice amends a held lab draft into a vital sign: the original",
            amended.original.proposal,
            "superseded",
        )
        show(
            "  ... and the amendment, decided again (autonomous)",
            amended.amendment.proposal,
            "written",
        )
        late = client.propose(
            tool="fhir.create",
            resource=_lab_draft(102),
            idempotency_key="demo-lab-3",
            patient_id=PATIENT,
            confidence=0.8,
            model_version="scribe-2026-10",
            prompt_version="p-41",
        )
        print(f"  - a lab draft waits past its {APPROVAL_WINDOW_SECONDS} s approval window ...")
        time.sleep(APPROVAL_WINDOW_SECONDS + 1)
        try:
            alice.approve(late.proposal_id)
            failures += 1
            print("     -> APPROVED (expected refused)")
        except ReviewRefused as exc:
            print(f"     -> REFUSED: {exc.code.name} {exc.reason}: {exc.message}")
        show("  ... the agent sees it", client.get(late.proposal_id), "expired")
    except ReviewRefused as exc:
        failures += 1
        print(f"     -> REFUSED unexpectedly: {exc.code.name} {exc.reason}: {exc.message}")
    finally:
        for r in (alice, carol, erin):
            r.close()
    return failures


def _lab_draft(value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "valueQuantity": {"value": value, "unit": "mg/dL"},
    }


_WRITTEN = {gateway_pb2.PROPOSAL_STATE_ACCEPTED, gateway_pb2.PROPOSAL_STATE_RECONCILED}


def _ehr_session(stack: Stack) -> httpx.Client:
    """An HTTP client that signs in to the local FHIR store with SMART Backend Services, as the
    adapter does. The demo plays the EHR's administrator here (seeding the chart, counting what
    it holds), so it borrows the development client the stack registered for the adapter."""
    from adapters.smart import BackendServicesAuth, SmartSettings

    assert stack.smart_settings is not None
    auth = BackendServicesAuth.from_settings(SmartSettings.load(stack.smart_settings))
    return httpx.Client(auth=auth, timeout=10)


def _faults_phase(stack: Stack, client: ChartgateClient, ehr: httpx.Client) -> int:
    """The EHR misbehaves: a 429 with Retry-After, then a write committed whose answer is lost.
    Both end accepted and stored once; returns the number of steps off."""
    control = stack.fhir_base.removesuffix("/fhir") + "/_faults"
    failures = 0

    def settle(proposal: gateway_pb2.Proposal) -> gateway_pb2.Proposal:
        deadline = time.monotonic() + 30
        while proposal.state not in _WRITTEN and time.monotonic() < deadline:
            time.sleep(0.1)
            proposal = client.get(proposal.proposal_id)
        return proposal

    def stored(proposal_id: str) -> int:
        bundle = ehr.get(
            f"{stack.fhir_base}/Observation",
            params={"identifier": f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"},
        ).json()
        return int(bundle.get("total", 0))

    print("\n  The EHR misbehaves (faults injected by the local FHIR store):")
    for title, plan, first in (
        (
            "the EHR answers 429 Too Many Requests, Retry-After: 1",
            {"throttle": {"retry_after_seconds": 1}, "schedule": [{"fault": "throttle"}]},
            gateway_pb2.PROPOSAL_STATE_FAILED_RETRYABLE,
        ),
        (
            "the EHR stores the write, then the connection drops before it answers",
            {"schedule": [{"fault": "drop_after_commit"}]},
            gateway_pb2.PROPOSAL_STATE_AMBIGUOUS,
        ),
    ):
        httpx.post(control, json=plan, timeout=10).raise_for_status()
        started = time.monotonic()
        proposal = client.propose(
            tool="fhir.create",
            resource=_vital_sign(PATIENT, 66 + failures),
            patient_id=PATIENT,
            confidence=0.97,
            idempotency_key=f"demo-fault-{first}",
        )
        answered = gateway_pb2.ProposalState.Name(proposal.state).removeprefix("PROPOSAL_STATE_")
        final = settle(proposal)
        took = time.monotonic() - started
        copies = stored(proposal.proposal_id)
        ok = proposal.state == first and final.state in _WRITTEN and copies == 1
        failures += not ok
        print(
            f"  - {title}\n     -> Propose answered {answered} ({proposal.reasons[-1].code}); "
            f"{'looked up and ' if first == gateway_pb2.PROPOSAL_STATE_AMBIGUOUS else ''}"
            f"settled {gateway_pb2.ProposalState.Name(final.state).removeprefix('PROPOSAL_STATE_')} "
            f"after {took:.1f} s, stored {copies} time(s)"
            + ("" if ok else " (expected: accepted, stored once)")
        )
    httpx.delete(control, timeout=10).raise_for_status()
    return failures


def _seed_chart(fhir_base: str, ehr: httpx.Client) -> None:
    """The EHR already holds the demo patient (synthetic data) before the agent starts."""
    patient = {
        "resourceType": "Patient",
        "id": PATIENT,
        "active": True,
        "name": [{"family": "Example", "given": ["Demo"]}],
        "gender": "unknown",
    }
    response = ehr.put(
        f"{fhir_base}/Patient/{PATIENT}",
        json=patient,
        headers={"Content-Type": "application/fhir+json"},
        timeout=10,
    )
    response.raise_for_status()


def run_demo(workdir: Path, policy_dir: Path) -> int:
    """Run the scripted agent; exit 0 when every step did what it should and the audit verifies."""
    run_dir = workdir / "demo" / datetime.now(UTC).strftime("run-%Y%m%dT%H%M%S%f")
    run_dir.mkdir(parents=True)
    print(f"Chartgate demo: state in {run_dir}")
    started = time.monotonic()
    # The adapter signs in to the store with SMART Backend Services; the store can fail on purpose.
    stack: Stack = start_stack(
        run_dir,
        {**demo_sidecar_config(run_dir, policy_dir), **DEMO_DELIVERY},
        smart=True,
        store_args=["--allow-fault-control"],
    )
    failures = 0
    ehr = _ehr_session(stack)
    try:
        _seed_chart(stack.fhir_base, ehr)
        print(
            f"  FHIR store {stack.fhir_base}, adapter {stack.adapter_target}, "
            f"sidecar {stack.sidecar_target} (ready in {time.monotonic() - started:.1f} s)\n"
        )
        previous: gateway_pb2.Proposal | None = None
        with ChartgateClient(stack.sidecar_target) as client:
            for number, step in enumerate(_steps(), 1):
                outcome, detail, previous = _run_step(client, step, previous)
                ok = outcome == step.expect
                failures += not ok
                note = "" if ok else f" (expected {step.expect})"
                print(f"  {number}. {step.title}\n     -> {outcome.upper()}{note}: {detail}")
            failures += _review_phase(stack, client)
            failures += _faults_phase(stack, client, ehr)
        stored = (
            ehr.get(
                f"{stack.fhir_base}/Observation",
                params={"subject": f"Patient/{PATIENT}"},
                timeout=10,
            )
            .json()
            .get("total")
        )
        # The heart rate, the approved lab draft, the amended vital sign and the two written
        # through faults; nothing else, nothing twice.
        print(f"\n  FHIR store holds {stored} Observation(s) for the patient (expected 5)")
        failures += stored != 5
    finally:
        ehr.close()
        stack.stop()
    audit_log = run_dir / "audit" / "audit.jsonl"
    audit_key = run_dir / "keys" / "audit-signing.jwks.json"
    print(f"\n  audit log: {audit_log}\n  audit public key: {audit_key}")
    print("  $ chartgate audit verify", audit_log, "--key", audit_key)
    verified = verify_command(audit_log, audit_key)
    failures += verified != 0
    print(
        f"\nDemo {'passed' if failures == 0 else f'FAILED ({failures} step(s) off)'}; "
        f"processes stopped after {time.monotonic() - started:.1f} s."
    )
    return 0 if failures == 0 else 1
