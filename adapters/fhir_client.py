"""FHIR R4 REST writes over httpx: conditional create (If-None-Exist) and version-checked update."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.errors import AdapterError, FailureClass
from chartgate.compartment import patient_of
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class WriteResult:
    fhir_id: str
    fhir_version: str
    already_existed: bool
    http_status: int


class FhirClient:
    """One FHIR server base URL (http://hl7.org/fhir/R4/http.html)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._http = httpx.Client(
            timeout=timeout_seconds,
            headers={"Accept": FHIR_JSON},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def create(self, resource: dict[str, Any], proposal_id: str) -> WriteResult:
        """Create the resource stamped with the proposal's identifier, at most once.

        Conditional create (http.html#ccreate): when a resource with this identifier exists, the
        server answers 200 with it instead of creating a second.
        """
        stamped = copy.deepcopy(resource)
        identifiers = stamped.setdefault("identifier", [])
        identifiers.append({"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": proposal_id})
        resource_type = stamped["resourceType"]
        response = self._send(
            "POST",
            f"{self._base}/{resource_type}",
            json=stamped,
            headers={
                "Content-Type": FHIR_JSON,
                "If-None-Exist": f"identifier={PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}",
                "Prefer": "return=representation",
            },
        )
        if response.status_code not in (200, 201):
            raise _classify(response)
        return _result(response, already_existed=response.status_code == 200)

    def update(self, partial: dict[str, Any], patient_id: str) -> WriteResult:
        """Set the partial's top-level elements on the stored resource (read, merge, PUT If-Match).

        The read also proves the stored resource belongs to the token's patient, so an update
        cannot move data into another patient's chart by naming only an id.
        """
        resource_type, resource_id = partial["resourceType"], partial["id"]
        url = f"{self._base}/{resource_type}/{resource_id}"
        current = self._send("GET", url)
        if current.status_code != 200:
            raise _classify(current)
        stored = current.json()
        if patient_of(stored) != patient_id:
            raise AdapterError(
                FailureClass.AUTHORIZATION,
                "payload.wrong_patient",
                "the stored resource belongs to another patient than the token's",
            )
        merged = merge_update(stored, partial)
        if patient_of(merged) != patient_id:
            raise AdapterError(
                FailureClass.AUTHORIZATION,
                "payload.wrong_patient",
                "the update would move the resource to another patient",
            )
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        etag = current.headers.get("ETag")
        if etag:
            headers["If-Match"] = etag  # a change made since our read fails with 412, not lost
        response = self._send("PUT", url, json=merged, headers=headers)
        if response.status_code not in (200, 201):
            raise _classify(response)
        return _result(response, already_existed=False)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Nothing reached the server: safe to retry.
            raise AdapterError(
                FailureClass.TRANSPORT,
                "fhir.unreachable",
                f"FHIR server unreachable: {type(exc).__name__}",
            ) from None
        except httpx.TransportError as exc:
            # Sent, but no answer: the write may or may not have happened.
            raise AdapterError(
                FailureClass.AMBIGUOUS,
                "fhir.no_answer",
                f"no answer from the FHIR server: {type(exc).__name__}",
            ) from None


# Set by the server on every write (FHIR R4 Resource.meta): never carried over from a read.
_SERVER_META = frozenset({"versionId", "lastUpdated"})


def merge_update(stored: dict[str, Any], partial: dict[str, Any]) -> dict[str, Any]:
    """The resource an update PUTs: the stored one with the partial's top-level elements set.

    Every stored element the partial does not name stays, `meta` and `text` included: a
    telecom-only update must not wipe the chart's security labels, tags or narrative (FHIR
    update replaces the whole resource, so what is left out of the PUT is deleted). `meta` is
    merged element by element, so a partial naming one meta element (only if policy allowed it)
    changes that element alone; the server-assigned versionId and lastUpdated are dropped.
    """
    merged = copy.deepcopy(stored)
    for key, value in partial.items():
        if key == "meta" and isinstance(value, dict) and isinstance(merged.get("meta"), dict):
            merged["meta"] = {**merged["meta"], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    meta = merged.get("meta")
    if isinstance(meta, dict):
        for server_assigned in _SERVER_META:
            meta.pop(server_assigned, None)
        if not meta:
            del merged["meta"]
    return merged


def _result(response: httpx.Response, *, already_existed: bool) -> WriteResult:
    body = response.json() if response.content else {}
    fhir_id = str(body.get("id", ""))
    version = str((body.get("meta") or {}).get("versionId", ""))
    if not fhir_id or not version:
        # return=representation may be ignored; fall back to Location: [base]/T/id/_history/v
        parts = response.headers.get("Location", "").rstrip("/").split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            fhir_id, version = parts[-3], parts[-1]
    if not fhir_id:
        raise AdapterError(
            FailureClass.AMBIGUOUS,
            "fhir.no_id",
            "the FHIR server accepted the write but named no resource id",
        )
    return WriteResult(fhir_id, version, already_existed, response.status_code)


def _classify(response: httpx.Response) -> AdapterError:
    """Map a FHIR error answer to a failure class; diagnostics only, never resource content."""
    status = response.status_code
    diagnostics = _diagnostics(response)
    if status == 429:
        return AdapterError(FailureClass.THROTTLED, "fhir.throttled", f"HTTP 429 {diagnostics}")
    if status in (401, 403):
        return AdapterError(
            FailureClass.AUTHORIZATION, "fhir.forbidden", f"HTTP {status} {diagnostics}"
        )
    if status in (409, 412):
        return AdapterError(FailureClass.CONFLICT, "fhir.conflict", f"HTTP {status} {diagnostics}")
    if status in (400, 422):
        return AdapterError(FailureClass.VALIDATION, "fhir.invalid", f"HTTP {status} {diagnostics}")
    if status in (404, 410):
        return AdapterError(
            FailureClass.BUSINESS_RULE, "fhir.not_found", f"HTTP {status} {diagnostics}"
        )
    if status >= 500:
        return AdapterError(
            FailureClass.TRANSPORT, "fhir.server_error", f"HTTP {status} {diagnostics}"
        )
    return AdapterError(
        FailureClass.BUSINESS_RULE, "fhir.unexpected", f"HTTP {status} {diagnostics}"
    )


def _diagnostics(response: httpx.Response) -> str:
    try:
        outcome = response.json()
    except ValueError:
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    codes = [str(i.get("code", "")) for i in outcome.get("issue", []) if isinstance(i, dict)]
    return "(OperationOutcome: " + ", ".join(codes) + ")"
