"""Reconciliation's comparison: what EHRs normalise is not a change; what changes meaning is caught."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.reconcile.compare import Severity, compare, worst

INTENDED: dict[str, Any] = {
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
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            {"system": "http://snomed.info/sct", "code": "364075005"},
        ]
    },
    "subject": {"reference": "Patient/p-1"},
    "effectiveDateTime": "2026-11-22T09:30:00+00:00",
    "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org"},
    "note": [{"text": "Measured at rest after five minutes seated."}],
}


def stored_with(change: Any) -> dict[str, Any]:
    stored = copy.deepcopy(INTENDED)
    stored.update(
        id="o-1",
        meta={"versionId": "1", "security": [{"code": "AIAST"}]},
        text={"status": "generated", "div": "<div>x</div>"},
        identifier=[{"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": "pr-1"}],
    )
    change(stored)
    return stored


def kinds(stored: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(d.path, d.severity.label, d.kind) for d in compare(INTENDED, stored)}


def test_an_unchanged_write_with_server_additions_has_no_difference() -> None:
    assert compare(INTENDED, stored_with(lambda s: s.update(issued="2026-11-22T09:31:00Z"))) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s["code"]["coding"][0].update(system="urn:oid:2.16.840.1.113883.6.1"),
            ("code.coding[0].system", "normalised", "system_spelling"),
        ),
        (
            lambda s: s["note"][0].update(text="Measured at rest  after five minutes seated. "),
            ("note[0].text", "normalised", "whitespace"),
        ),
        (
            lambda s: s.update(effectiveDateTime="2026-11-22T09:30:00.000Z"),
            ("effectiveDateTime", "normalised", "time_spelling"),
        ),
        (
            lambda s: s["valueQuantity"].update(value=72.0),
            ("valueQuantity.value", "normalised", "number_spelling"),
        ),
        (
            lambda s: s["code"].update(coding=list(reversed(s["code"]["coding"]))),
            ("code.coding", "normalised", "reordered"),
        ),
        (
            lambda s: s["code"]["coding"][0].update(display="Pulse rate"),
            ("code.coding[0].display", "cosmetic", "display_changed"),
        ),
    ],
)
def test_normalisations_are_recognised_and_not_meaning_changing(
    change: Any, expected: tuple[str, str, str]
) -> None:
    stored = stored_with(change)
    assert kinds(stored) == {expected}
    assert worst(compare(INTENDED, stored)) in (Severity.COSMETIC, Severity.NORMALISED)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: s["note"][0].update(text="Measured at rest"),
            ("note[0].text", "truncated"),
        ),
        (
            lambda s: s["code"]["coding"][0].update(code="8310-5"),
            ("code.coding[0].code", "changed"),
        ),
        (lambda s: s["valueQuantity"].update(unit="/h"), ("valueQuantity.unit", "changed")),
        (lambda s: s["valueQuantity"].update(value=27), ("valueQuantity.value", "changed")),
        (lambda s: s.pop("note"), ("note", "missing")),
        (
            lambda s: s.update(effectiveDateTime="2026-11-22"),
            ("effectiveDateTime", "precision_lost"),
        ),
        (lambda s: s.update(status="amended"), ("status", "changed")),
    ],
)
def test_meaning_changing_differences_are_caught(change: Any, expected: tuple[str, str]) -> None:
    differences = compare(INTENDED, stored_with(change))
    assert worst(differences) is Severity.MEANING
    assert (expected[0], "meaning-changing", expected[1]) in {
        (d.path, d.severity.label, d.kind) for d in differences
    }


def test_an_update_compares_only_the_elements_it_set() -> None:
    partial = {
        "resourceType": "Patient",
        "id": "p-1",
        "telecom": [{"system": "phone", "value": "1"}],
    }
    stored = {
        **partial,
        "name": [{"family": "Changed by someone else"}],
        "meta": {"versionId": "7"},
    }
    assert compare(partial, stored) == []


def test_differences_name_paths_and_kinds_never_values() -> None:
    stored = stored_with(lambda s: s["note"][0].update(text="SECRET clinical words"))
    rendered = repr([d.to_json() for d in compare(INTENDED, stored)])
    assert "SECRET" not in rendered
    assert "Measured" not in rendered
