"""The profiles the target EHR requires (`required_profiles`) are checked before any token is minted."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sidecar.config import SidecarConfig
from sidecar.errors import InvalidProposal
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import ProposeCommand
from sidecar.storage.records import ProposalContext
from tests.sidecar.test_delivery import PATIENT, build
from tests.sidecar.test_profile_validation import INVALID

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
US_CORE_MEDICATION_REQUEST = US_CORE + "us-core-medicationrequest"


def order(key: str) -> ProposeCommand:
    """A medication order without `requester` (US Core requires one) and without `authoredOn`."""
    return ProposeCommand(
        idempotency_key=key,
        tool="fhir.create",
        resource_type="MedicationRequest",
        resource_json=json.dumps(
            {
                "resourceType": "MedicationRequest",
                "status": "draft",
                "intent": "proposal",
                "medicationCodeableConcept": {
                    "coding": [
                        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}
                    ]
                },
                "subject": {"reference": f"Patient/{PATIENT}"},
            }
        ),
        context=ProposalContext(
            patient_id=PATIENT,
            encounter_id="",
            purpose_of_use="TREAT",
            on_behalf_of="",
            model_version="",
            prompt_version="",
            confidence=0.9,
            mode="live",
            evidence_refs=(),
            trace_id=uuid.uuid4().hex,
        ),
    )


def test_an_ehr_requiring_us_core_refuses_an_order_without_a_requester(tmp_path: Path) -> None:
    parts = build(
        tmp_path,
        agent_scopes=("patient/MedicationRequest.c",),
        required_profiles=(US_CORE_MEDICATION_REQUEST,),
    )
    with pytest.raises(InvalidProposal) as info:
        parts.service.propose(order("us-core"))
    assert ("resource_json.requester", "fhir.required") in {
        (v.field, v.reason) for v in info.value.violations
    }
    assert "token.minted" not in parts.kinds()
    assert parts.ehr.sends == []
    parts.store.close()


def test_without_a_required_profile_the_same_order_goes_to_review(tmp_path: Path) -> None:
    parts = build(tmp_path, agent_scopes=("patient/MedicationRequest.c",))
    record = parts.service.propose(order("core-only"))
    assert record.state is State.PENDING_APPROVAL
    parts.store.close()


@pytest.mark.parametrize(
    ("resource", "operation", "expected"),
    [pytest.param(r, op, exp, id=name) for name, r, op, exp, _ in INVALID],
)
def test_each_invalid_resource_is_refused_by_the_pipeline_before_any_token(
    tmp_path: Path, resource: dict[str, Any], operation: str, expected: list[tuple[str, str]]
) -> None:
    # The 30 invalid resources, through the Propose pipeline as the sidecar runs it
    # (strict defaults: required_profiles=None), not only through the checker.
    parts = build(
        tmp_path,
        agent_scopes=tuple(
            f"patient/{t}.cu"
            for t in (
                "Observation",
                "Patient",
                "Condition",
                "MedicationRequest",
                "AllergyIntolerance",
                "DocumentReference",
                "Encounter",
            )
        ),
        required_profiles=None,
    )
    command = order("x")
    subject = resource.get("subject", {})
    patient = "p1" if resource.get("resourceType") == "Patient" or subject else PATIENT
    with pytest.raises(InvalidProposal) as info:
        parts.service.propose(
            replace(
                command,
                idempotency_key=f"invalid-{uuid.uuid4().hex}",
                tool=f"fhir.{operation}",
                resource_type=str(resource.get("resourceType", "")),
                resource_json=json.dumps(resource),
                context=replace(command.context, patient_id=patient),
            )
        )
    found = {(v.field, v.reason) for v in info.value.violations}
    assert set(expected) <= found, found
    assert "token.minted" not in parts.kinds()
    assert parts.ehr.sends == []
    parts.store.close()


def test_a_profile_of_another_type_applies_to_that_type_only(tmp_path: Path) -> None:
    # An EHR requiring US Core Patient: its Patients are checked against it, its orders are not
    # (they were refused with a retryable fault, every one, before).
    parts = build(
        tmp_path,
        agent_scopes=("patient/MedicationRequest.c",),
        required_profiles=(US_CORE + "us-core-patient",),
    )
    assert parts.service.propose(order("other-type")).state is State.PENDING_APPROVAL
    parts.store.close()


@pytest.mark.parametrize(
    "settings",
    [
        {"required_profiles": ("http://example.org/StructureDefinition/not-shipped",)},
        {"must_support": ("Observation.notAnElement",)},
        {"must_support": ("Widget.code",)},
    ],
)
def test_a_profile_setting_that_cannot_be_checked_stops_the_sidecar_at_start(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="required_profiles / must_support"):
        SidecarConfig(agent_id="a", tenant_id="t", **settings)
