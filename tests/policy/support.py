"""Shared helpers for the policy tests: paths, a valid base input, the corpus, a policy copy."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from chartgate.smart_scope import parse_scope
from sidecar.policy.library import shipped_policy_dir

REPO = Path(__file__).resolve().parent.parent.parent
REGO = shipped_policy_dir()
CORPUS = Path(__file__).resolve().parent / "corpus"

NOW_NS = 1795377600000000000
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITAL_SIGNS = [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}]
LABORATORY = [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]
VITAL_SCOPE = f"patient/Observation.c?category={OBSERVATION_CATEGORY}|vital-signs"

CONSENT: dict[str, Any] = {
    "id": "consent-1",
    "patient": "p-123",
    "status": "active",
    "purposes": ["TREAT"],
    "actors": ["*"],
    "data_classes": ["*"],
    "period": {"start_ns": 0, "end_ns": 0},
}


def action(
    op: str, rtype: str, fields: list[str], categories: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {
        "tool": f"fhir.{op}",
        "operation": op,
        "resource_type": rtype,
        "target": rtype if op == "create" else f"{rtype}/x-1",
        "fields": sorted(fields),
        "summary": {
            "status": "final",
            "category": copy.deepcopy(categories or []),
            "code": [{"system": "http://loinc.org", "code": "8867-4"}],
        },
        "payload_sha256": "9f2c" * 16,
    }


def agent(scopes: list[str], agent_id: str = "scribe-agent") -> dict[str, Any]:
    """The input's agent member as the sidecar builds it: scopes and their parsed grants."""
    return {
        "id": agent_id,
        "tenant": "st-mary",
        "scopes": list(scopes),
        "grants": [parse_scope(s).to_policy() for s in scopes],
    }


def base_input(**changes: Any) -> dict[str, Any]:
    """The documented example input (docs/policy.md): a vital-sign Observation draft."""
    value: dict[str, Any] = {
        "time": {"now_ns": NOW_NS, "rfc3339": "2026-11-22T20:00:00+00:00"},
        "agent": agent([VITAL_SCOPE, "patient/Patient.u"]),
        "action": action(
            "create",
            "Observation",
            ["category", "code", "status", "subject", "valueQuantity"],
            VITAL_SIGNS,
        ),
        "patient": {"id": "p-123"},
        "encounter": {"id": "enc-9"},
        "purpose_of_use": "TREAT",
        "on_behalf_of": "Practitioner/dr-lee",
        "consents": [copy.deepcopy(CONSENT)],
        "tenant": {"id": "st-mary"},
        "model": {"version": "scribe-2026-10", "prompt_version": "p-41"},
        "confidence": 0.93,
        "mode": "live",
        "evidence_refs": ["DocumentReference/abc"],
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    value.update(copy.deepcopy(changes))
    return value


def consent(**changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(CONSENT)
    value.update(changes)
    return value


def corpus() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(CORPUS.glob("*.json"))]


def copy_policy(target: Path) -> Path:
    """A private copy of the shipped library to edit."""
    shutil.copytree(REGO, target)
    return target


def write_data(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path
