"""An in-memory FHIR server behind httpx.MockTransport that records every request it receives."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from adapters.fhir_client import FhirClient
from adapters.vendors.profile import VendorProfile
from adapters.vendors.transport import VendorTransport

BASE = "https://ehr.example/api/FHIR/R4"
PATIENT = "p-1"
FHIR_JSON = "application/fhir+json"


@dataclass
class FakeEhr:
    """Creates, reads, updates and searches by identifier. `conditional_create`: whether it
    honours If-None-Exist (else it answers 400, as the local store behaving like such a vendor
    does). `before_create` runs inside each create, for tests that race two writers."""

    conditional_create: bool = False
    ignore_search_params: bool = False
    before_create: Callable[[], None] | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    stored: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        parts = request.url.path[len(httpx.URL(BASE).path) :].strip("/").split("/")
        if request.method == "GET" and len(parts) == 1:
            return self._search(parts[0], request)
        if request.method == "GET" and len(parts) == 2:
            found = self.stored.get((parts[0], parts[1]))
            if found is None:
                return httpx.Response(404)
            return _json(200, found, {"ETag": f'W/"{found["meta"]["versionId"]}"'})
        if request.method == "POST" and len(parts) == 1:
            return self._create(parts[0], request)
        if request.method == "PUT" and len(parts) == 2:
            body = json.loads(request.content)
            old = self.stored.get((parts[0], parts[1]))
            version = int(old["meta"]["versionId"]) + 1 if old else 1
            body["meta"] = {"versionId": str(version)}
            self.stored[(parts[0], parts[1])] = body
            return _json(200, body)
        return httpx.Response(405)

    def wire(self, method: str | None = None) -> list[httpx.Request]:
        """What reached the server (optionally only one method)."""
        return [r for r in self.requests if method is None or r.method == method]

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for (t, _), r in self.stored.items() if t == resource_type]

    def _search(self, resource_type: str, request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get("identifier")
        matches = [
            r
            for r in self.of_type(resource_type)
            if self.ignore_search_params or wanted is None or _carries(r, wanted)
        ]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in matches],
        }
        return _json(200, bundle)

    def _create(self, resource_type: str, request: httpx.Request) -> httpx.Response:
        condition = request.headers.get("If-None-Exist")
        if condition is not None and not self.conditional_create:
            return _json(400, _outcome("not-supported", "conditional create is not supported"))
        body = json.loads(request.content)
        if condition is not None:
            wanted = condition.partition("=")[2]
            existing = [r for r in self.of_type(resource_type) if _carries(r, wanted)]
            if existing:
                return _json(200, existing[0])
        if self.before_create is not None:
            self.before_create()
        body["id"] = uuid.uuid4().hex[:12]
        body["meta"] = {"versionId": "1"}
        with self._lock:
            self.stored[(resource_type, body["id"])] = body
        return _json(201, body)


def client(
    profile: VendorProfile,
    ehr: Callable[[httpx.Request], httpx.Response],
    settings: dict[str, str] | None = None,
) -> FhirClient:
    """A FhirClient whose transport is the profile's VendorTransport over `ehr`."""
    transport = VendorTransport(
        profile,
        base_url=BASE,
        settings=settings if settings is not None else examples(profile),
        inner=httpx.MockTransport(ehr),
    )
    return FhirClient(BASE, transport=transport)


def examples(profile: VendorProfile) -> dict[str, str]:
    return {setting.name: setting.example for setting in profile.settings}


def body_for(resource_type: str, patient: str = PATIENT) -> dict[str, Any]:
    """A create body of the type that satisfies every profile's element rules."""
    if resource_type == "Observation":
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "subject": {"reference": f"Patient/{patient}"},
            "valueString": "72",
        }
    element = "patient" if resource_type in ("AllergyIntolerance", "Immunization") else "subject"
    return {"resourceType": resource_type, element: {"reference": f"Patient/{patient}"}}


def _carries(resource: dict[str, Any], token: str) -> bool:
    system, _, value = token.partition("|")
    return any(
        i.get("system") == system and i.get("value") == value
        for i in resource.get("identifier", [])
    )


def _outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": FHIR_JSON, **(headers or {})},
    )
