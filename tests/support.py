"""Helpers the tests share: seeding and searching the FHIR store over its REST API."""

from __future__ import annotations

from typing import Any

import httpx


def seed_patient(fhir_base: str, patient_id: str) -> None:
    response = httpx.put(
        f"{fhir_base}/Patient/{patient_id}",
        json={"resourceType": "Patient", "id": patient_id, "active": True},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code in (200, 201), response.text


def fhir_search(fhir_base: str, resource_type: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{fhir_base}/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    return [entry["resource"] for entry in bundle.get("entry", [])]
