"""Each EHR failure is classified where it happens (httpx mock transport): class, reason, Retry-After, diagnostics."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from adapters.errors import AdapterError, FailureClass
from adapters.fhir_client import FhirClient, retry_after_seconds
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM

BASE = "https://ehr.example/fhir"
OBS = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p-1"},
}


def outcome(code: str, diagnostics: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": code,
                "diagnostics": diagnostics,
                "expression": ["Observation.code"],
            }
        ],
    }


def client(handler: Callable[[httpx.Request], httpx.Response]) -> FhirClient:
    return FhirClient(BASE, transport=httpx.MockTransport(handler))


def failure_of(handler: Callable[[httpx.Request], httpx.Response]) -> AdapterError:
    with pytest.raises(AdapterError) as info:
        client(handler).create(dict(OBS), "pr-1")
    return info.value


@pytest.mark.parametrize(
    ("status", "failure", "reason"),
    [
        (400, FailureClass.VALIDATION, "fhir.invalid"),
        (422, FailureClass.VALIDATION, "fhir.invalid"),
        (401, FailureClass.AUTHORIZATION, "fhir.forbidden"),
        (403, FailureClass.AUTHORIZATION, "fhir.forbidden"),
        (409, FailureClass.CONFLICT, "fhir.conflict"),
        (412, FailureClass.CONFLICT, "fhir.conflict"),
        (404, FailureClass.BUSINESS_RULE, "fhir.not_found"),
        (500, FailureClass.SERVER_ERROR, "fhir.server_error"),
        (503, FailureClass.SERVER_ERROR, "fhir.server_error"),
        (429, FailureClass.THROTTLED, "fhir.throttled"),
        (418, FailureClass.BUSINESS_RULE, "fhir.unexpected"),
    ],
)
def test_each_status_has_its_class(status: int, failure: FailureClass, reason: str) -> None:
    error = failure_of(lambda _: httpx.Response(status, json=outcome("invalid", "no")))
    assert (error.failure, error.reason, error.http_status) == (failure, reason, status)


def test_operation_outcome_diagnostics_are_carried_bounded() -> None:
    said = "code 8867-4 is not in the value set this EHR accepts"
    error = failure_of(lambda _: httpx.Response(422, json=outcome("business-rule", said)))
    assert error.failure is FailureClass.VALIDATION
    assert "business-rule at Observation.code: " + said in error.message
    huge = failure_of(lambda _: httpx.Response(400, json=outcome("invalid", "x" * 50_000)))
    assert len(huge.message) < 1000


def test_a_non_json_error_body_still_classifies() -> None:
    error = failure_of(lambda _: httpx.Response(502, text="<html>Bad gateway</html>"))
    assert (error.failure, error.message) == (FailureClass.SERVER_ERROR, "HTTP 502")


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    error = failure_of(lambda _: httpx.Response(429, headers={"Retry-After": "7"}))
    assert error.retry_after == 7.0
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == pytest.approx(90.0)
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("999999999") == 3600.0  # an EHR's word, bounded


def test_no_answer_after_a_write_left_is_ambiguous_but_a_refused_connection_is_transport() -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    assert failure_of(dropped).failure is FailureClass.AMBIGUOUS
    assert failure_of(slow).failure is FailureClass.AMBIGUOUS
    assert failure_of(refused).failure is FailureClass.TRANSPORT


def test_a_look_up_without_an_answer_is_transport_it_wrote_nothing() -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset")

    with pytest.raises(AdapterError) as info:
        client(dropped).find_created("Observation", "pr-1")
    assert info.value.failure is FailureClass.TRANSPORT


def test_create_is_conditional_on_the_stamped_identifier_and_lookup_finds_it() -> None:
    seen: list[httpx.Request] = []
    stored = {**OBS, "id": "o-9", "meta": {"versionId": "3"}}

    def ehr(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            body = json.loads(request.content)
            assert {"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": "pr-1"} in body["identifier"]
            return httpx.Response(200, json=stored)  # it already existed
        return httpx.Response(
            200,
            json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": stored}]},
        )

    fhir = client(ehr)
    result = fhir.create(dict(OBS), "pr-1")
    assert (result.fhir_id, result.fhir_version, result.already_existed) == ("o-9", "3", True)
    assert seen[0].headers["If-None-Exist"] == f"identifier={PROPOSAL_IDENTIFIER_SYSTEM}|pr-1"
    found = fhir.find_created("Observation", "pr-1")
    assert found is not None
    assert found.fhir_id == "o-9"
    assert seen[1].url.params["identifier"] == f"{PROPOSAL_IDENTIFIER_SYSTEM}|pr-1"


def test_lookup_of_an_absent_write_is_none() -> None:
    fhir = client(lambda _: httpx.Response(200, json={"resourceType": "Bundle", "entry": []}))
    assert fhir.find_created("Observation", "pr-1") is None


@pytest.mark.parametrize("body", [b"<html>ok</html>", b"[1, 2]", b"[" * 5000 + b"]" * 5000])
def test_an_answer_that_is_not_a_json_object_is_classified_never_a_crash(body: bytes) -> None:
    # After a write the EHR may have committed: ambiguous (looked up). For a read: its fault.
    created = failure_of(lambda _: httpx.Response(201, content=body))
    assert (created.failure, created.reason) == (FailureClass.AMBIGUOUS, "fhir.malformed_answer")
    with pytest.raises(AdapterError) as info:
        client(lambda _: httpx.Response(200, content=body)).read_version("Observation", "o", "1")
    assert (info.value.failure, info.value.reason) == (
        FailureClass.SERVER_ERROR,
        "fhir.malformed_answer",
    )


def test_an_operation_outcome_of_the_wrong_shape_still_classifies() -> None:
    odd = {"resourceType": "OperationOutcome", "issue": {"code": "invalid"}}
    error = failure_of(lambda _: httpx.Response(422, json=odd))
    assert (error.failure, error.message) == (FailureClass.VALIDATION, "HTTP 422")
