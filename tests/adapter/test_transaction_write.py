"""A write and its Provenance in one FHIR transaction (http.html#transaction): client and vendor seam."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from adapters.errors import AdapterError, FailureClass
from adapters.fhir_client import Companion, FhirClient
from adapters.provenance import (
    AI_ASSERTED,
    RESOLVE_AS_VERSION_SPECIFIC,
    provenance_for,
    provenance_id,
)
from adapters.tokens import VerifiedWrite, WriteAccount
from adapters.vendors.profile import Conditionals
from adapters.vendors.registry import get_profile
from adapters.vendors.transport import VendorTransport
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM

BASE = "https://ehr.example/fhir"
OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p-1"},
}
PRACTICE_URL = "https://fhir.athena.io/StructureDefinition/ah-practice"


def verified(operation: str = "create", resource: dict[str, Any] | None = None) -> VerifiedWrite:
    return VerifiedWrite(
        jti="j-1",
        expires_at=0,
        proposal_id="pr-1",
        tenant_id="t",
        patient_id="p-1",
        operation=operation,
        resource_type="Observation",
        resource_id="o-1" if operation == "update" else None,
        resource=resource or dict(OBS),
        agent_id="scribe-agent",
        provenance=WriteAccount("m-1", "p-1", ("DocumentReference/d-1",), ()),
    )


def companion(write: VerifiedWrite) -> Companion:
    return Companion.of(lambda target: provenance_for(write, target))


class Server:
    """Records each request; answers a transaction with `answer(bundle)`."""

    def __init__(self, answer: Callable[[dict[str, Any]], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.stored = {
            **OBS,
            "id": "o-1",
            "meta": {"versionId": "3", "security": [{"system": "s", "code": "R"}]},
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            return httpx.Response(200, json=self.stored, headers={"ETag": 'W/"3"'})
        assert request.method == "POST"
        assert request.url.path == "/fhir"
        return self.answer(json.loads(request.content))

    def bundles(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def response_bundle(status: str, location: str) -> Callable[[dict[str, Any]], httpx.Response]:
    def answer(bundle: dict[str, Any]) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [
                    {"response": {"status": status, "location": location}},
                    {"response": {"status": "201 Created", "location": "Provenance/x/_history/1"}},
                ],
            },
        )

    return answer


def test_a_create_and_its_provenance_go_in_one_conditional_transaction() -> None:
    server = Server(response_bundle("201 Created", "Observation/o-9/_history/1"))
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    write = verified()
    result = fhir.create_in_transaction(
        write.resource, "pr-1", [dict(AI_ASSERTED)], companion(write)
    )
    assert (result.fhir_id, result.fhir_version, result.already_existed) == ("o-9", "1", False)
    [bundle] = server.bundles()
    assert bundle["type"] == "transaction"
    first, second = bundle["entry"]
    assert first["request"] == {
        "method": "POST",
        "url": "Observation",
        "ifNoneExist": f"identifier={PROPOSAL_IDENTIFIER_SYSTEM}|pr-1",
    }
    assert {"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": "pr-1"} in first["resource"][
        "identifier"
    ]
    assert first["resource"]["meta"]["security"] == [AI_ASSERTED]
    assert first["fullUrl"].startswith("urn:uuid:")
    # The Provenance names the resource by the entry's urn, to be resolved to the version written.
    assert second["request"] == {"method": "PUT", "url": f"Provenance/{provenance_id('pr-1')}"}
    assert second["resource"]["target"] == [
        {
            "reference": first["fullUrl"],
            "extension": [{"url": RESOLVE_AS_VERSION_SPECIFIC, "valueBoolean": True}],
        }
    ]
    assert second["resource"]["entity"] == [
        {"role": "source", "what": {"reference": "DocumentReference/d-1"}}
    ]


def test_a_conditional_create_that_matched_is_already_there() -> None:
    server = Server(response_bundle("200 OK", f"{BASE}/Observation/o-9/_history/2"))
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    write = verified()
    result = fhir.create_in_transaction(write.resource, "pr-1", None, companion(write))
    assert (result.fhir_id, result.fhir_version, result.already_existed) == ("o-9", "2", True)


def test_an_update_reads_merges_and_checks_the_version_in_the_transaction() -> None:
    server = Server(response_bundle("200 OK", "Observation/o-1/_history/4"))
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    partial = {"resourceType": "Observation", "id": "o-1", "status": "amended"}
    write = verified("update", partial)
    result = fhir.update_in_transaction(partial, "p-1", [dict(AI_ASSERTED)], companion(write))
    assert (result.fhir_id, result.fhir_version, result.already_existed) == ("o-1", "4", False)
    [bundle] = server.bundles()
    entry = bundle["entry"][0]
    assert entry["request"] == {"method": "PUT", "url": "Observation/o-1", "ifMatch": 'W/"3"'}
    # The chart's own labels stay; the AI label is added; the rest of the stored resource stays.
    assert entry["resource"]["meta"]["security"] == [{"system": "s", "code": "R"}, AI_ASSERTED]
    assert entry["resource"]["status"] == "amended"
    assert entry["resource"]["code"] == OBS["code"]


def test_an_update_of_another_patients_resource_sends_no_transaction() -> None:
    server = Server(response_bundle("200 OK", "Observation/o-1/_history/4"))
    server.stored["subject"] = {"reference": "Patient/p-2"}
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    partial = {"resourceType": "Observation", "id": "o-1", "status": "amended"}
    with pytest.raises(AdapterError) as info:
        fhir.update_in_transaction(partial, "p-1", None, companion(verified("update", partial)))
    assert info.value.reason == "payload.wrong_patient"
    assert server.bundles() == []


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (412, FailureClass.CONFLICT),
        (422, FailureClass.VALIDATION),
        (429, FailureClass.THROTTLED),
        (503, FailureClass.SERVER_ERROR),
    ],
)
def test_a_refused_transaction_is_classified_as_the_single_write_would_be(
    status: int, failure: FailureClass
) -> None:
    server = Server(lambda _: httpx.Response(status, json={"resourceType": "OperationOutcome"}))
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    write = verified()
    with pytest.raises(AdapterError) as info:
        fhir.create_in_transaction(write.resource, "pr-1", None, companion(write))
    assert info.value.failure is failure


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"resourceType": "Bundle", "type": "batch-response", "entry": []}',
        b'{"resourceType": "Bundle", "type": "transaction-response", "entry": []}',
        b'{"resourceType": "Bundle", "type": "transaction-response",'
        b' "entry": [{"response": {"status": "201 Created", "location": "Observation/o-9"}}]}',
        b'{"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": 7}]}',
    ],
)
def test_an_accepted_transaction_that_names_no_version_is_ambiguous(body: bytes) -> None:
    # It was committed (200): resending blind could write twice, so it is looked up instead.
    server = Server(lambda _: httpx.Response(200, content=body))
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    write = verified()
    with pytest.raises(AdapterError) as info:
        fhir.create_in_transaction(write.resource, "pr-1", None, companion(write))
    assert (info.value.failure, info.value.reason) == (FailureClass.AMBIGUOUS, "fhir.no_id")


def test_no_answer_after_the_transaction_left_is_ambiguous() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("closed", request=request)

    fhir = FhirClient(BASE, transport=httpx.MockTransport(drop))
    write = verified()
    with pytest.raises(AdapterError) as info:
        fhir.create_in_transaction(write.resource, "pr-1", None, companion(write))
    assert info.value.failure is FailureClass.AMBIGUOUS


# The vendor seam judges each entry of a transaction as it would the same request alone.


def transactional(name: str) -> Any:
    """A vendor profile as if it took transactions (none of the five vendors does)."""
    profile = get_profile(name)
    conditionals = Conditionals(
        conditional_create=True,
        conditional_update=False,
        transactions=True,
        source=profile.conditionals.source,
    )
    return profile.model_copy(update={"conditionals": conditionals})


def test_a_transaction_at_a_vendor_without_them_is_refused_before_the_wire() -> None:
    server = Server(response_bundle("201 Created", "Observation/o-9/_history/1"))
    transport = VendorTransport(
        get_profile("epic"), base_url=BASE, inner=httpx.MockTransport(server)
    )
    write = verified()
    with pytest.raises(AdapterError) as info:
        FhirClient(BASE, transport=transport).create_in_transaction(
            write.resource, "pr-1", None, companion(write)
        )
    assert info.value.reason == "vendor.unsupported"
    assert server.requests == []


def test_an_entry_the_vendor_does_not_take_refuses_the_whole_transaction() -> None:
    # athenahealth takes only QuestionnaireResponse creates: the Observation entry is refused.
    server = Server(response_bundle("201 Created", "Observation/o-9/_history/1"))
    transport = VendorTransport(
        transactional("athenahealth"),
        base_url=BASE,
        settings={"practice_id": "1128700"},
        inner=httpx.MockTransport(server),
    )
    write = verified()
    with pytest.raises(AdapterError) as info:
        FhirClient(BASE, transport=transport).create_in_transaction(
            write.resource, "pr-1", None, companion(write)
        )
    assert info.value.reason == "vendor.unsupported"
    assert "athenahealth does not accept create of Observation" in info.value.message
    assert server.requests == []


def test_a_create_entry_gets_the_content_the_vendor_requires() -> None:
    server = Server(response_bundle("201 Created", "QuestionnaireResponse/q-1/_history/1"))
    profile = transactional("athenahealth")
    profile = profile.model_copy(
        update={"writes": profile.writes.model_copy(update={"update": frozenset({"Provenance"})})}
    )
    transport = VendorTransport(
        profile,
        base_url=BASE,
        settings={"practice_id": "1128700"},
        inner=httpx.MockTransport(server),
    )
    body = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": "Patient/p-1"},
    }
    write = verified(resource=body)
    FhirClient(BASE, transport=transport).create_in_transaction(
        body, "pr-1", None, companion(write)
    )
    [bundle] = server.bundles()
    first, second = bundle["entry"]
    assert {
        "url": PRACTICE_URL,
        "valueReference": {"reference": "Organization/a-1.Practice-1128700"},
    } in first["resource"]["extension"]
    assert "extension" not in second["resource"]  # an update entry is sent as it is


def test_the_generic_profile_passes_a_transaction_through_unchanged() -> None:
    server = Server(response_bundle("201 Created", "Observation/o-9/_history/1"))
    transport = VendorTransport(
        get_profile("generic"), base_url=BASE, inner=httpx.MockTransport(server)
    )
    write = verified()
    direct = Server(response_bundle("201 Created", "Observation/o-9/_history/1"))
    FhirClient(BASE, transport=transport).create_in_transaction(
        write.resource,
        "pr-1",
        None,
        Companion("urn:uuid:1", lambda t: {"resourceType": "Provenance", "id": "x", "target": [t]}),
    )
    FhirClient(BASE, transport=httpx.MockTransport(direct)).create_in_transaction(
        write.resource,
        "pr-1",
        None,
        Companion("urn:uuid:1", lambda t: {"resourceType": "Provenance", "id": "x", "target": [t]}),
    )
    assert server.bundles() == direct.bundles()


def answered(*entries: dict[str, Any]) -> Callable[[dict[str, Any]], httpx.Response]:
    body = {"resourceType": "Bundle", "type": "transaction-response", "entry": list(entries)}
    return lambda _: httpx.Response(200, json=body)


PROVENANCE_OK: dict[str, Any] = {
    "response": {"status": "201 Created", "location": "Provenance/x/_history/1"}
}


@pytest.mark.parametrize(
    "entries",
    [
        # A failed entry inside a 200 (a server answering batch-style).
        [
            {
                "response": {
                    "status": "412 Precondition Failed",
                    "location": "Observation/o-9/_history/3",
                }
            },
            PROVENANCE_OK,
        ],
        # The Provenance entry failed.
        [
            {"response": {"status": "201 Created", "location": "Observation/o-9/_history/1"}},
            {"response": {"status": "422 Unprocessable Entity"}},
        ],
        # Only one answer for two requests.
        [{"response": {"status": "201 Created", "location": "Observation/o-9/_history/1"}}],
        # A location of another type.
        [
            {"response": {"status": "201 Created", "location": "Condition/o-9/_history/1"}},
            PROVENANCE_OK,
        ],
    ],
    ids=["entry-412", "provenance-422", "one-answer", "other-type"],
)
def test_a_transaction_answer_that_is_not_a_committed_write_is_ambiguous(
    entries: list[dict[str, Any]],
) -> None:
    server = Server(answered(*entries))
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    write = verified()
    with pytest.raises(AdapterError) as info:
        fhir.create_in_transaction(write.resource, "pr-1", None, companion(write))
    assert (info.value.failure, info.value.reason) == (FailureClass.AMBIGUOUS, "fhir.no_id")


def test_an_update_answer_naming_another_resource_is_ambiguous() -> None:
    server = Server(
        answered(
            {"response": {"status": "200 OK", "location": "Observation/o-2/_history/4"}},
            PROVENANCE_OK,
        )
    )
    fhir = FhirClient(BASE, transport=httpx.MockTransport(server))
    partial = {"resourceType": "Observation", "id": "o-1", "status": "amended"}
    with pytest.raises(AdapterError) as info:
        fhir.update_in_transaction(partial, "p-1", None, companion(verified("update", partial)))
    assert info.value.failure is FailureClass.AMBIGUOUS


@pytest.mark.parametrize(
    "request_",
    [
        {"method": "POST", "url": f"{BASE}/Observation"},  # absolute: judged as Observation
        {"method": "PUT", "url": "Observation?identifier=x|y"},  # conditional update
        {"method": "DELETE", "url": "QuestionnaireResponse/q-1"},
        {"method": "PATCH", "url": "QuestionnaireResponse/q-1"},
        {"method": "POST", "url": "QuestionnaireResponse?x=1"},
        {"method": "POST", "url": "https://elsewhere.example/fhir/QuestionnaireResponse"},
        {"method": "POST", "url": "Patient"},  # the resource is a QuestionnaireResponse
        {"url": "QuestionnaireResponse"},
    ],
    ids=[
        "absolute",
        "conditional-put",
        "delete",
        "patch",
        "query",
        "elsewhere",
        "type-mismatch",
        "no-method",
    ],
)
def test_an_entry_the_seam_cannot_judge_is_not_sent(request_: dict[str, str]) -> None:
    server = Server(response_bundle("201 Created", "QuestionnaireResponse/q-1/_history/1"))
    transport = VendorTransport(
        transactional("athenahealth"),
        base_url=BASE,
        settings={"practice_id": "1128700"},
        inner=httpx.MockTransport(server),
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "QuestionnaireResponse", "status": "completed"},
                "request": request_,
            }
        ],
    }
    with (
        httpx.Client(transport=transport) as http,
        pytest.raises(AdapterError) as info,
    ):
        http.post(BASE, json=bundle)
    assert info.value.reason == "vendor.unsupported"
    assert server.requests == []


def test_a_conditional_create_in_a_transaction_is_refused_where_it_would_be_emulated() -> None:
    server = Server(response_bundle("201 Created", "QuestionnaireResponse/q-1/_history/1"))
    profile = transactional("athenahealth")
    profile = profile.model_copy(
        update={
            "conditionals": profile.conditionals.model_copy(update={"conditional_create": False})
        }
    )
    transport = VendorTransport(
        profile,
        base_url=BASE,
        settings={"practice_id": "1128700"},
        inner=httpx.MockTransport(server),
    )
    body = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": "Patient/p-1"},
    }
    write = verified(resource=body)
    with pytest.raises(AdapterError) as info:
        FhirClient(BASE, transport=transport).create_in_transaction(
            body, "pr-1", None, companion(write)
        )
    assert info.value.reason == "vendor.unsupported"
    assert "conditional create in a transaction" in info.value.message
    assert server.requests == []
