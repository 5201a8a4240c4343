"""The profiles the target EHR requires (`required_profiles`) are checked before any token is minted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from sidecar.errors import InvalidProposal
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import ProposeCommand
from sidecar.storage.records import ProposalContext
from tests.sidecar.test_delivery import PATIENT, build

US_CORE_MEDICATION_REQUEST = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"
)


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
