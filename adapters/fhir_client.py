"""FHIR R4 REST writes over httpx: conditional create, version-checked update, alone or in a transaction."""

from __future__ import annotations

import copy
import email.utils
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from adapters.errors import AdapterError, FailureClass, payload_error
from adapters.provenance import transaction_target, with_labels
from adapters.smart import BackendServicesAuth, TokenEndpointError
from chartgate.compartment import patient_of
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Companion:
    """A resource written in the same transaction as the write, built once the write's entry has
    its `full_url` (a urn:uuid, RFC 4122 / http.html#trules) to reference: the Provenance."""

    full_url: str
    build: Callable[[dict[str, Any]], dict[str, Any]]

    @classmethod
    def of(cls, build: Callable[[dict[str, Any]], dict[str, Any]]) -> Companion:
        return cls(f"urn:uuid:{uuid.uuid4()}", build)


@dataclass(frozen=True, slots=True)
class WriteResult:
    fhir_id: str
    fhir_version: str
    already_existed: bool
    http_status: int
    # The stored resource, when a read returned it (read_current).
    body: dict[str, Any] | None = None


class FhirClient:
    """One FHIR server base URL (http://hl7.org/fhir/R4/http.html)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        auth: BackendServicesAuth | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._auth = auth
        self._http = httpx.Client(
            timeout=timeout_seconds,
            headers={"Accept": FHIR_JSON},
            transport=transport,
            auth=auth,  # SMART Backend Services: a bearer token on every request (docs/smart.md)
        )

    def close(self) -> None:
        self._http.close()
        if self._auth is not None:
            self._auth.close()

    def create(
        self,
        resource: dict[str, Any],
        proposal_id: str,
        labels: list[dict[str, str]] | None = None,
    ) -> WriteResult:
        """Create the resource stamped with the proposal's identifier, at most once.

        Conditional create (http.html#ccreate): when a resource with this identifier exists, the
        server answers 200 with it instead of creating a second.
        """
        stamped = _stamped(resource, proposal_id, labels)
        resource_type = stamped["resourceType"]
        response = self._send(
            "POST",
            f"{self._base}/{resource_type}",
            json=stamped,
            headers={
                "Content-Type": FHIR_JSON,
                "If-None-Exist": _if_none_exist(proposal_id),
                "Prefer": "return=representation",
            },
        )
        if response.status_code not in (200, 201):
            raise _classify(response)
        return _result(response, already_existed=response.status_code == 200)

    def create_in_transaction(
        self,
        resource: dict[str, Any],
        proposal_id: str,
        labels: list[dict[str, str]] | None,
        companion: Companion,
    ) -> WriteResult:
        """`create`, with a companion resource (the Provenance) in the same transaction
        (http.html#transaction): both are stored or neither. The create stays conditional
        (`request.ifNoneExist`), so a resent transaction finds the first one's resource."""
        stamped = _stamped(resource, proposal_id, labels)
        request = {
            "method": "POST",
            "url": stamped["resourceType"],
            "ifNoneExist": _if_none_exist(proposal_id),
        }
        return self._transact(stamped, request, companion, conditional=True)

    def update_in_transaction(
        self,
        partial: dict[str, Any],
        patient_id: str,
        labels: list[dict[str, str]] | None,
        companion: Companion,
    ) -> WriteResult:
        """`update`, with a companion resource in the same transaction (version-checked with
        `request.ifMatch`, as the single PUT is with If-Match)."""
        merged, etag = self._merged(partial, patient_id, labels)
        request = {"method": "PUT", "url": f"{partial['resourceType']}/{partial['id']}"}
        if etag:
            request["ifMatch"] = etag
        return self._transact(merged, request, companion, conditional=False)

    def _transact(
        self,
        resource: dict[str, Any],
        request: dict[str, str],
        companion: Companion,
        *,
        conditional: bool,
    ) -> WriteResult:
        """POST [base] a transaction of the write (entry 0) and its companion (entry 1)."""
        other = companion.build(transaction_target(companion.full_url))
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": companion.full_url, "resource": resource, "request": request},
                {
                    "fullUrl": f"{self._base}/{other['resourceType']}/{other['id']}",
                    "resource": other,
                    "request": {"method": "PUT", "url": f"{other['resourceType']}/{other['id']}"},
                },
            ],
        }
        response = self._send(
            "POST",
            self._base,
            json=bundle,
            headers={"Content-Type": FHIR_JSON, "Prefer": "return=minimal"},
        )
        if response.status_code != 200:
            raise _classify(response)
        fixed_id = resource.get("id") if request["method"] == "PUT" else None
        return _transaction_result(
            response,
            conditional=conditional,
            resource_type=str(resource["resourceType"]),
            resource_id=fixed_id if isinstance(fixed_id, str) else None,
        )

    def update(
        self,
        partial: dict[str, Any],
        patient_id: str,
        labels: list[dict[str, str]] | None = None,
    ) -> WriteResult:
        """Set the partial's top-level elements on the stored resource (read, merge, PUT If-Match).

        The read also proves the stored resource belongs to the token's patient, so an update
        cannot move data into another patient's chart by naming only an id.
        """
        merged, etag = self._merged(partial, patient_id, labels)
        url = f"{self._base}/{partial['resourceType']}/{partial['id']}"
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if etag:
            headers["If-Match"] = etag  # a change made since our read fails with 412, not lost
        response = self._send("PUT", url, json=merged, headers=headers)
        if response.status_code not in (200, 201):
            raise _classify(response)
        return _result(response, already_existed=False)

    def _merged(
        self, partial: dict[str, Any], patient_id: str, labels: list[dict[str, str]] | None
    ) -> tuple[dict[str, Any], str]:
        """The resource an update writes (the stored one with the partial's elements set) and
        the stored version's ETag; only within the token's patient's compartment."""
        url = f"{self._base}/{partial['resourceType']}/{partial['id']}"
        current = self._send("GET", url)
        if current.status_code != 200:
            raise _classify(current)
        stored = _json_object(current, committed=False)
        if patient_of(stored) != patient_id:
            raise payload_error(
                "payload.wrong_patient",
                "the stored resource belongs to another patient than the token's",
            )
        merged = merge_update(stored, partial)
        if labels:
            merged = with_labels(merged, labels)
        if patient_of(merged) != patient_id:
            raise payload_error(
                "payload.wrong_patient",
                "the update would move the resource to another patient",
            )
        return merged, current.headers.get("ETag", "")

    def read_version(self, resource_type: str, fhir_id: str, version: str) -> dict[str, Any] | None:
        """One stored version (vread, http.html#vread); None when the EHR has no such version."""
        response = self._send("GET", f"{self._base}/{resource_type}/{fhir_id}/_history/{version}")
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise _classify(response)
        return _json_object(response, committed=False)

    def exists(self, resource_type: str, fhir_id: str) -> bool:
        """Whether a resource is there (read, http.html#read)."""
        response = self._send("GET", f"{self._base}/{resource_type}/{fhir_id}")
        if response.status_code in (404, 410):
            return False
        if response.status_code != 200:
            raise _classify(response)
        return True

    def put_provenance(self, provenance: dict[str, Any]) -> str:
        """Write a Provenance under its own id (update-as-create, http.html#upsert): idempotent,
        so a retried write never makes a second one. Returns its id."""
        response = self._send(
            "PUT",
            f"{self._base}/Provenance/{provenance['id']}",
            json=provenance,
            headers={"Content-Type": FHIR_JSON},
        )
        if response.status_code not in (200, 201):
            raise _classify(response)
        return str(provenance["id"])

    def find_created(self, resource_type: str, proposal_id: str) -> WriteResult | None:
        """The resource a create stamped with this proposal's identifier, if the EHR holds it
        (search by token, http.html#search): how an ambiguous create is settled."""
        response = self._send(
            "GET",
            f"{self._base}/{resource_type}",
            params={"identifier": f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"},
        )
        if response.status_code != 200:
            raise _classify(response)
        bundle = _json_object(response, committed=False)
        listed = bundle.get("entry")
        entries: list[dict[str, Any]] = [
            e["resource"]
            for e in (listed if isinstance(listed, list) else [])
            if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and (e.get("search") or {}).get("mode", "match") == "match"
        ]
        if not entries:
            return None
        found = entries[0]
        meta = found.get("meta")
        version = meta.get("versionId", "") if isinstance(meta, dict) else ""
        return WriteResult(str(found.get("id", "")), str(version), True, 200)

    def find_updated(self, partial: dict[str, Any], patient_id: str) -> WriteResult | None:
        """The stored resource if it holds every element the update set (so the update, or an
        identical one, is in): how an ambiguous update is settled. Only within the token's
        patient's compartment."""
        url = f"{self._base}/{partial['resourceType']}/{partial['id']}"
        response = self._send("GET", url)
        if response.status_code != 200:
            raise _classify(response)
        stored = _json_object(response, committed=False)
        if patient_of(stored) != patient_id:
            raise payload_error(
                "payload.wrong_patient",
                "the stored resource belongs to another patient than the token's",
            )
        for key, value in partial.items():
            if key in ("resourceType", "id", "meta"):
                continue
            if stored.get(key) != value:
                return None
        meta = stored.get("meta")
        version = meta.get("versionId", "") if isinstance(meta, dict) else ""
        return WriteResult(str(stored.get("id", "")), str(version), True, 200)

    def read_current(self, partial: dict[str, Any], patient_id: str) -> WriteResult | None:
        """The stored resource an update targets, with its version in `fhir_version` and the body
        in `body`; None when the EHR holds none. Only a resource in the token's patient's
        compartment is returned."""
        url = f"{self._base}/{partial['resourceType']}/{partial['id']}"
        response = self._send("GET", url)
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise _classify(response)
        stored = _json_object(response, committed=False)
        if patient_of(stored) != patient_id:
            raise payload_error(
                "payload.wrong_patient",
                "the stored resource belongs to another patient than the token's",
            )
        meta = stored.get("meta")
        version = meta.get("versionId", "") if isinstance(meta, dict) else ""
        return WriteResult(str(stored.get("id", "")), str(version), True, 200, body=stored)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange. A failure before the request left is TRANSPORT (safe to resend); one
        after a write request left is AMBIGUOUS (it may have been stored); a read that got no
        answer wrote nothing, so it is TRANSPORT too."""
        try:
            return self._http.request(method, url, **kwargs)
        except TokenEndpointError as exc:
            # No access token, so the FHIR request never left: nothing can have been written.
            # Unreachable, 5xx or 429 at the token endpoint is worth a retry; an OAuth refusal
            # (invalid_client, invalid_scope, ...) is final until the configuration changes.
            raise AdapterError(
                FailureClass.TRANSPORT if exc.retryable else FailureClass.AUTHORIZATION,
                "fhir.auth_unavailable" if exc.retryable else "fhir.auth_refused",
                str(exc),
                http_status=exc.http_status or 0,
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise AdapterError(
                FailureClass.TRANSPORT,
                "fhir.unreachable",
                f"FHIR server unreachable: {type(exc).__name__}",
            ) from None
        except httpx.TransportError as exc:
            if method in ("GET", "HEAD"):
                raise AdapterError(
                    FailureClass.TRANSPORT,
                    "fhir.no_answer",
                    f"no answer to a read from the FHIR server: {type(exc).__name__}",
                ) from None
            raise AdapterError(
                FailureClass.AMBIGUOUS,
                "fhir.no_answer",
                f"no answer from the FHIR server after the write was sent: {type(exc).__name__}",
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


def _json_object(response: httpx.Response, *, committed: bool) -> dict[str, Any]:
    """The answer's JSON object. An answer that is not one is the EHR's fault, never a crash:
    ambiguous after a write it may have committed, a server error for a read."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise AdapterError(
            FailureClass.AMBIGUOUS if committed else FailureClass.SERVER_ERROR,
            "fhir.malformed_answer",
            f"the FHIR server answered HTTP {response.status_code} without a JSON object",
            http_status=response.status_code,
        )
    return body


def _result(response: httpx.Response, *, already_existed: bool) -> WriteResult:
    body = _json_object(response, committed=True) if response.content else {}
    meta = body.get("meta")
    fhir_id = str(body.get("id", ""))
    version = str(meta.get("versionId", "") if isinstance(meta, dict) else "")
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


def _stamped(
    resource: dict[str, Any], proposal_id: str, labels: list[dict[str, str]] | None
) -> dict[str, Any]:
    """A copy carrying the labels and the proposal's identifier (what makes the create
    conditional and an ambiguous one findable)."""
    stamped = with_labels(resource, labels) if labels else copy.deepcopy(resource)
    identifiers = stamped.setdefault("identifier", [])
    identifiers.append({"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": proposal_id})
    return stamped


def _if_none_exist(proposal_id: str) -> str:
    return f"identifier={PROPOSAL_IDENTIFIER_SYSTEM}|{proposal_id}"


def _transaction_result(
    response: httpx.Response,
    *,
    conditional: bool,
    resource_type: str,
    resource_id: str | None,
) -> WriteResult:
    """The write's outcome from a transaction-response (bundle.html, http.html#transaction-
    response): one entry per request entry, each with a 2xx `response.status`; entry 0's
    `response.location` ([base/]Type/id/_history/v) names the resource the request named. An
    answer that says less or otherwise was still a 200 to a transaction that may have been
    committed: ambiguous, settled by a look-up, never read as a success."""
    try:
        body = response.json()
        answers = [entry["response"] for entry in body["entry"]]
        statuses = [str(answer["status"]).strip() for answer in answers]
        location = str(answers[0].get("location") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        body, statuses, location = None, [], ""
    parts = location.rstrip("/").split("/")
    well_formed = (
        isinstance(body, dict)
        and body.get("type") == "transaction-response"
        and len(statuses) == 2
        and all(status[:3] in ("200", "201") for status in statuses)
        and len(parts) >= 4
        and parts[-2] == "_history"
        and parts[-4] == resource_type
        and (resource_id is None or parts[-3] == resource_id)
    )
    if not well_formed:
        raise AdapterError(
            FailureClass.AMBIGUOUS,
            "fhir.no_id",
            "the FHIR server answered the transaction but not as a committed write of this "
            "resource and its Provenance",
        )
    code = int(statuses[0][:3])
    return WriteResult(parts[-3], parts[-1], conditional and code == 200, code)


_MAX_DIAGNOSTICS = 600


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110
    section 10.2.3); None when absent or unreadable. Bounded to an hour: a header is the EHR's
    word, not a reason to park a write for days."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), 3600.0)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    delta = moment.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(delta, 3600.0))


def _classify(response: httpx.Response) -> AdapterError:
    """Map a FHIR error answer to a failure class, with the OperationOutcome's diagnostics for the
    agent (they may quote the resource: they are returned, never logged)."""
    status = response.status_code
    said = diagnostics(response)
    message = f"HTTP {status}" + (f": {said}" if said else "")
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))

    def error(failure: FailureClass, reason: str) -> AdapterError:
        return AdapterError(failure, reason, message, http_status=status, retry_after=retry_after)

    if status == 429:
        return error(FailureClass.THROTTLED, "fhir.throttled")
    if status in (401, 403):
        return error(FailureClass.AUTHORIZATION, "fhir.forbidden")
    if status in (409, 412):
        return error(FailureClass.CONFLICT, "fhir.conflict")
    if status in (400, 422):
        return error(FailureClass.VALIDATION, "fhir.invalid")
    if status in (404, 410):
        return error(FailureClass.BUSINESS_RULE, "fhir.not_found")
    if status >= 500:
        return error(FailureClass.SERVER_ERROR, "fhir.server_error")
    return error(FailureClass.BUSINESS_RULE, "fhir.unexpected")


def diagnostics(response: httpx.Response) -> str:
    """`code at path: diagnostics` of each OperationOutcome issue, bounded (FHIR R4
    OperationOutcome); "" when the answer is not one. For the agent: returned, never logged."""
    try:
        outcome = response.json()
    except (ValueError, RecursionError):
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = outcome.get("issue")
    parts: list[str] = []
    for issue in issues[:10] if isinstance(issues, list) else []:
        if not isinstance(issue, dict):
            continue
        code = str(issue.get("code", ""))[:40]
        text = issue.get("diagnostics")
        if not isinstance(text, str):
            details = issue.get("details")
            text = details.get("text") if isinstance(details, dict) else None
        paths = issue.get("expression")
        where = ""
        if isinstance(paths, list) and paths and isinstance(paths[0], str):
            where = f" at {paths[0][:80]}"
        parts.append(f"{code}{where}" + (f": {text[:200]}" if isinstance(text, str) else ""))
    return "; ".join(parts)[:_MAX_DIAGNOSTICS]
