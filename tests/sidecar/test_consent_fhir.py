"""Consent records derived from FHIR R4 Consent resources, as read by the directory and decided by policy."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar.consent import ConsentDirectory, ConsentFileError
from sidecar.policy.embedded import EmbeddedEngine
from sidecar.policy.library import shipped_policy_dir

REGO = shipped_policy_dir()
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

PERMIT: dict[str, Any] = {
    "resourceType": "Consent",
    "id": "c-fhir-1",
    "status": "active",
    "scope": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}
        ]
    },
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/p-123"},
    "policyRule": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
    },
    "provision": {
        "type": "permit",
        "period": {"start": "2026-01-01T00:00:00+00:00", "end": "2026-12-31"},
        "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
        ],
        "actor": [
            {
                "role": {"coding": [{"code": "PRCP"}]},
                "reference": {"reference": "Device/scribe-agent"},
            }
        ],
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
    },
}


def directory(tmp_path: Path, content: Any) -> ConsentDirectory:
    path = tmp_path / "consents.json"
    path.write_text(json.dumps(content))
    return ConsentDirectory(path)


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000_000


def test_a_permit_consent_becomes_a_record(tmp_path: Path) -> None:
    (record,) = directory(tmp_path, [PERMIT]).for_patient("p-123")
    assert record == {
        "id": "c-fhir-1",
        "patient": "p-123",
        "status": "active",
        "purposes": ["TREAT"],
        "actors": ["scribe-agent"],
        "data_classes": ["Observation"],
        # An end date covers the whole day: the exclusive bound is the next midnight (UTC).
        "period": {
            "start_ns": ns("2026-01-01T00:00:00+00:00"),
            "end_ns": ns("2027-01-01T00:00:00+00:00"),
        },
    }


def test_a_searchset_bundle_of_consents_loads(tmp_path: Path) -> None:
    other = copy.deepcopy(PERMIT)
    other["id"] = "c-fhir-2"
    other["patient"] = {"reference": "Patient/p-456"}
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": PERMIT}, {"resource": other}],
    }
    consents = directory(tmp_path, bundle)
    assert [r["id"] for r in consents.for_patient("p-123")] == ["c-fhir-1"]
    assert [r["id"] for r in consents.for_patient("p-456")] == ["c-fhir-2"]


from tests.policy.support import agent as policy_agent  # noqa: E402


def policy_input(
    consents: list[dict[str, Any]], now: str, agent: str = "scribe-agent"
) -> dict[str, Any]:
    return {
        "time": {"now_ns": ns(now), "rfc3339": now},
        "agent": policy_agent(["patient/Observation.c"], agent),
        "action": {
            "tool": "fhir.create",
            "operation": "create",
            "resource_type": "Observation",
            "target": "Observation",
            "fields": ["category", "code", "status", "subject"],
            "summary": {
                "status": "preliminary",
                "category": [{"system": OBS_CATEGORY, "code": "laboratory"}],
                "code": [{"system": "http://loinc.org", "code": "2345-7"}],
            },
            "payload_sha256": "0" * 64,
        },
        "patient": {"id": "p-123"},
        "encounter": {"id": ""},
        "purpose_of_use": "TREAT",
        "on_behalf_of": "",
        "consents": consents,
        "tenant": {"id": "st-mary"},
        "model": {"version": "", "prompt_version": ""},
        "confidence": 0.8,
        "mode": "live",
        "evidence_refs": [],
        "trace_id": "",
    }


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    return EmbeddedEngine(REGO)


def codes(engine: EmbeddedEngine, consents: list[dict[str, Any]], now: str, **kw: str) -> list[str]:
    return [r.code for r in engine.evaluate(policy_input(consents, now, **kw)).reasons]


def test_the_shipped_policy_decides_on_the_derived_record(
    tmp_path: Path, engine: EmbeddedEngine
) -> None:
    consents = list(directory(tmp_path, [PERMIT]).for_patient("p-123"))
    assert codes(engine, consents, "2026-06-01T00:00:00+00:00") == ["tier.approval"]
    # Still covered late on the end date, not after it.
    assert codes(engine, consents, "2026-12-31T23:00:00+00:00") == ["tier.approval"]
    assert codes(engine, consents, "2027-01-01T00:00:00+00:00") == ["consent.expired"]
    assert codes(engine, consents, "2026-06-01T00:00:00+00:00", agent="other-agent") == [
        "consent.actor_not_covered"
    ]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"status": "inactive"}, "consent.revoked"),
        ({"provision": {**PERMIT["provision"], "type": "deny"}}, "consent.rejected"),
    ],
    ids=["inactive-is-revoked", "deny-provision-is-rejected"],
)
def test_revoked_and_refused_consents_deny(
    tmp_path: Path, engine: EmbeddedEngine, change: dict[str, Any], code: str
) -> None:
    consents = list(directory(tmp_path, [{**PERMIT, **change}]).for_patient("p-123"))
    assert codes(engine, consents, "2026-06-01T00:00:00+00:00") == [code]


def _without_purpose() -> dict[str, Any]:
    provision = {k: v for k, v in PERMIT["provision"].items() if k != "purpose"}
    return {**PERMIT, "provision": provision}


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        (
            {**PERMIT, "provision": {**PERMIT["provision"], "provision": [{"type": "deny"}]}},
            "Consent/c-fhir-1: nested provisions are not supported",
        ),
        (_without_purpose(), "Consent/c-fhir-1: provision.purpose names no purpose of use"),
        (
            {**PERMIT, "provision": {**PERMIT["provision"], "period": {"start": "2026"}}},
            "needs at least a full date",
        ),
        ({**PERMIT, "patient": {"reference": "Group/g1"}}, "patient must be a Patient/<id>"),
        ({**PERMIT, "status": "approved"}, "status"),
        ({**PERMIT, "patient": "p-123"}, "not a valid FHIR Consent"),
        ({"resourceType": "Patient", "id": "p-123"}, "is a Patient, not a Consent"),
    ],
    ids=[
        "nested",
        "no-purpose",
        "year-only",
        "not-a-patient",
        "bad-status",
        "malformed",
        "not-a-consent",
    ],
)
def test_a_consent_that_cannot_be_read_without_guessing_is_refused(
    tmp_path: Path, resource: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConsentFileError) as info:
        directory(tmp_path, [resource])
    assert message in str(info.value)


def test_a_bad_edit_keeps_the_last_good_consents(tmp_path: Path) -> None:
    consents = directory(tmp_path, [PERMIT])
    path = tmp_path / "consents.json"
    nested = {**PERMIT, "provision": {**PERMIT["provision"], "provision": [{"type": "deny"}]}}
    path.write_text(json.dumps([nested]))
    assert [r["id"] for r in consents.for_patient("p-123")] == ["c-fhir-1"]
