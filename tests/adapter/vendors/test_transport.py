"""Each vendor quirk at the httpx seam, against a mock transport: refusals, emulation, error shapes, content."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from adapters.errors import AdapterError, FailureClass
from adapters.fhir_client import FhirClient
from adapters.vendors.emulation import KeyedLocks
from adapters.vendors.gate import check_write
from adapters.vendors.profile import IdentifierRule, Setting
from adapters.vendors.registry import get_profile
from adapters.vendors.transport import VendorTransport
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from tests.adapter.vendors.fake_ehr import BASE, PATIENT, FakeEhr, body_for, client

EPIC = get_profile("epic")
ATHENA = get_profile("athenahealth")
ECW = get_profile("eclinicalworks")
GENERIC = get_profile("generic")
PRACTICE_URL = "https://fhir.athena.io/StructureDefinition/ah-practice"


def refusal(fhir: FhirClient, body: dict[str, object]) -> AdapterError:
    with pytest.raises(AdapterError) as info:
        fhir.create(body, "pr-refused")
    return info.value


# (a) refused before the wire, naming the vendor


def test_the_adapter_refuses_before_spending_anything() -> None:
    with pytest.raises(AdapterError) as info:
        check_write(EPIC, "update", "Condition", {"resourceType": "Condition"})
    assert info.value.failure is FailureClass.PAYLOAD
    assert info.value.reason == "vendor.unsupported"
    assert info.value.message.startswith("epic does not accept update of Condition")


def test_epic_observation_needs_its_elements_before_the_wire() -> None:
    ehr = FakeEhr()
    body = body_for("Observation")
    del body["effectiveDateTime"], body["valueString"]
    error = refusal(client(EPIC, ehr), body)
    assert error.reason == "vendor.missing_element"
    assert "Observation.effectiveDateTime, Observation.valueString" in error.message
    assert ehr.requests == []


def test_epic_files_only_final_observations() -> None:
    ehr = FakeEhr()
    error = refusal(client(EPIC, ehr), {**body_for("Observation"), "status": "preliminary"})
    assert (error.reason, ehr.requests) == ("vendor.fixed_value", [])
    assert "'final'" in error.message


def test_a_transaction_is_refused_where_the_vendor_takes_none() -> None:
    ehr = FakeEhr()
    http = httpx.Client(
        transport=VendorTransport(EPIC, base_url=BASE, inner=httpx.MockTransport(ehr))
    )
    with pytest.raises(AdapterError) as info:
        http.post(BASE, json={"resourceType": "Bundle", "type": "transaction"})
    assert info.value.message.startswith("epic does not accept transaction of Bundle")
    assert ehr.requests == []


def test_reads_and_searches_pass_untouched() -> None:
    ehr = FakeEhr()
    assert client(EPIC, ehr).find_created("Immunization", "pr-x") is None
    assert [r.method for r in ehr.requests] == ["GET"]


# (b) conditional create emulated: search, then create, one lock per identifier


def test_emulation_never_sends_the_header_and_writes_once() -> None:
    ehr = FakeEhr(conditional_create=False)
    fhir = client(ECW, ehr)
    first = fhir.create(body_for("Condition"), "pr-1")
    second = fhir.create(body_for("Condition"), "pr-1")
    assert (first.http_status, second.http_status) == (201, 200)
    assert second.fhir_id == first.fhir_id
    assert second.fhir_version == "1"
    assert len(ehr.of_type("Condition")) == 1
    assert [r.method for r in ehr.requests] == ["GET", "POST", "GET"]
    search = ehr.requests[0]
    assert search.url.params["identifier"] == f"{PROPOSAL_IDENTIFIER_SYSTEM}|pr-1"
    assert "If-None-Exist" not in ehr.requests[1].headers


def test_racing_creates_of_one_identifier_write_once() -> None:
    """Two threads create the same proposal; the second waits on the lock and finds the first."""
    started = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.2)  # the other thread arrives meanwhile

    ehr = FakeEhr(before_create=slow)
    fhir = client(ECW, ehr)
    results = []

    def write() -> None:
        results.append(fhir.create(body_for("Condition"), "pr-race"))

    threads = [threading.Thread(target=write) for _ in range(2)]
    threads[0].start()
    assert started.wait(5)
    threads[1].start()
    for thread in threads:
        thread.join(5)
    assert sorted(r.already_existed for r in results) == [False, True]
    assert len(ehr.of_type("Condition")) == 1
    assert len(ehr.wire("POST")) == 1


def test_other_identifiers_are_not_held_up() -> None:
    """A create of one proposal in progress does not block a create of another."""
    release = threading.Event()
    first_inside = threading.Event()
    ehr = FakeEhr()

    def hold_first() -> None:
        if not first_inside.is_set():
            first_inside.set()
            assert release.wait(5)

    ehr.before_create = hold_first
    fhir = client(ECW, ehr)
    blocked = threading.Thread(target=lambda: fhir.create(body_for("Condition"), "pr-a"))
    blocked.start()
    assert first_inside.wait(5)
    other = fhir.create(body_for("AllergyIntolerance"), "pr-b")  # would hang under one global lock
    release.set()
    blocked.join(5)
    assert not other.already_existed
    assert len(ehr.wire("POST")) == 2


def test_a_server_that_ignores_the_search_parameter_is_not_taken_at_its_word() -> None:
    """It answers with every Condition; none carries this identifier, so the create goes out."""
    ehr = FakeEhr(ignore_search_params=True)
    fhir = client(ECW, ehr)
    fhir.create(body_for("Condition"), "pr-other")
    created = fhir.create(body_for("Condition"), "pr-mine")
    assert not created.already_existed
    assert len(ehr.of_type("Condition")) == 2


def test_several_matches_are_a_conflict_and_nothing_is_written() -> None:
    ehr = FakeEhr()
    for rid in ("c-1", "c-2"):
        ehr.stored[("Condition", rid)] = {
            **body_for("Condition"),
            "id": rid,
            "identifier": [{"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": "pr-dup"}],
        }
    with pytest.raises(AdapterError) as info:
        client(ECW, ehr).create(body_for("Condition"), "pr-dup")
    assert (info.value.failure, info.value.http_status) == (FailureClass.CONFLICT, 412)
    assert ehr.wire("POST") == []


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (503, FailureClass.TRANSPORT),
        (429, FailureClass.THROTTLED),
        (403, FailureClass.AUTHORIZATION),
        (400, FailureClass.BUSINESS_RULE),
    ],
)
def test_a_failed_search_sends_no_create(status: int, failure: FailureClass) -> None:
    posts = []

    def ehr(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request)
        return httpx.Response(status, headers={"Retry-After": "3"})

    with pytest.raises(AdapterError) as info:
        client(ECW, ehr).create(body_for("Condition"), "pr-s")
    assert info.value.failure is failure
    assert info.value.message.startswith("eclinicalworks: ")
    assert posts == []


def test_no_answer_to_the_search_is_safe_to_resend() -> None:
    def ehr(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(AdapterError) as info:
        client(ECW, ehr).create(body_for("Condition"), "pr-t")
    # Only the search went out, so nothing was written: transport, not ambiguous.
    assert info.value.failure is FailureClass.TRANSPORT


def test_a_401_on_the_search_stays_a_401() -> None:
    """Left for the SMART auth to refresh; without auth it is the answer."""
    with pytest.raises(AdapterError) as info:
        client(ECW, lambda r: httpx.Response(401)).create(body_for("Condition"), "pr-u")
    assert (info.value.failure, info.value.reason) == (FailureClass.AUTHORIZATION, "fhir.forbidden")


def test_only_identifier_conditions_are_emulated() -> None:
    ehr = FakeEhr()
    http = httpx.Client(
        transport=VendorTransport(ECW, base_url=BASE, inner=httpx.MockTransport(ehr))
    )
    with pytest.raises(AdapterError) as info:
        http.post(
            f"{BASE}/Condition",
            json=body_for("Condition"),
            headers={"If-None-Exist": "code=http://snomed.info/sct|1"},
        )
    assert info.value.reason == "vendor.unsupported_condition"
    assert ehr.requests == []


def test_locks_are_dropped_once_released() -> None:
    locks = KeyedLocks()
    with locks.hold("a"), locks.hold("b"):
        assert len(locks) == 2
    assert len(locks) == 0


# (c) vendor error shapes


def test_athena_over_qps_403_is_throttling_not_a_refusal() -> None:
    def ehr(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="<h1>Developer Over Qps</h1>")

    with pytest.raises(AdapterError) as info:
        client(ATHENA, ehr).find_created("Observation", "pr-q")
    assert (info.value.failure, info.value.reason) == (FailureClass.THROTTLED, "vendor.throttled")
    assert info.value.message == "athenahealth: HTTP 403: Developer Over Qps"


def test_athena_other_403_is_still_authorization() -> None:
    def ehr(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="<h1>Forbidden</h1>")

    with pytest.raises(AdapterError) as info:
        client(ATHENA, ehr).find_created("Observation", "pr-f")
    assert (info.value.failure, info.value.reason) == (FailureClass.AUTHORIZATION, "fhir.forbidden")


@pytest.mark.parametrize(("header", "wait"), [(None, 20.0), ("7", 7.0)])
def test_ecw_429_waits_for_the_next_minute_unless_told(header: str | None, wait: float) -> None:
    def ehr(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": header} if header else {})

    transport = VendorTransport(
        ECW, base_url=BASE, inner=httpx.MockTransport(ehr), clock=lambda: 1_000_000_000.0
    )
    with pytest.raises(AdapterError) as info:
        FhirClient(BASE, transport=transport).find_created("Condition", "pr-w")
    assert info.value.failure is FailureClass.THROTTLED
    assert info.value.retry_after == wait  # 1_000_000_000 % 60 == 40: 20 s to the next minute


# (d) required content


def test_athena_creates_carry_the_practice_extension() -> None:
    ehr = FakeEhr()
    client(ATHENA, ehr, {"practice_id": "1128700"}).create(
        body_for("QuestionnaireResponse"), "pr-e"
    )
    sent = json.loads(ehr.wire("POST")[0].content)
    assert {
        "url": PRACTICE_URL,
        "valueReference": {"reference": "Organization/a-1.Practice-1128700"},
    } in sent["extension"]


def test_a_practice_extension_already_there_is_not_doubled() -> None:
    ehr = FakeEhr()
    mine = {"url": PRACTICE_URL, "valueReference": {"reference": "Organization/a-1.Practice-7"}}
    body = {**body_for("QuestionnaireResponse"), "extension": [mine]}
    client(ATHENA, ehr, {"practice_id": "1128700"}).create(body, "pr-d")
    sent = json.loads(ehr.wire("POST")[0].content)
    assert sent["extension"] == [mine]


def test_settings_are_checked_when_the_adapter_starts() -> None:
    with pytest.raises(ValueError, match="practice_id"):
        VendorTransport(ATHENA, base_url=BASE, settings={"practice_id": "not a number"})


def test_generic_passes_the_request_through_unchanged() -> None:
    ehr = FakeEhr(conditional_create=True)
    fhir = FhirClient(
        BASE, transport=VendorTransport(GENERIC, base_url=BASE, inner=httpx.MockTransport(ehr))
    )
    fhir.create(body_for("Observation"), "pr-g")
    (post,) = ehr.requests
    plain = FakeEhr(conditional_create=True)
    FhirClient(BASE, transport=httpx.MockTransport(plain)).create(body_for("Observation"), "pr-g")
    assert post.content == plain.requests[0].content
    assert post.headers["If-None-Exist"] == f"identifier={PROPOSAL_IDENTIFIER_SYSTEM}|pr-g"
    assert PATIENT in post.content.decode()


def test_the_environments_proxy_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx ignores HTTP(S)_PROXY once given a transport; the vendor seam must not lose it."""
    seen: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def proxy() -> None:
        connection, _ = server.accept()
        with connection:
            seen.append(connection.recv(65536).split(b"\r\n", 1)[0])
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    transport = VendorTransport(GENERIC, base_url="http://ehr.invalid/fhir")
    with httpx.Client(transport=transport, timeout=5) as http:
        assert http.get("http://ehr.invalid/fhir/metadata").status_code == 200
    thread.join(5)
    server.close()
    # A proxy sees the absolute URL on the request line.
    assert seen == [b"GET http://ehr.invalid/fhir/metadata HTTP/1.1"]


def test_required_identifiers_and_profiles_are_added_from_settings() -> None:
    """No shipped profile requires an identifier or a meta profile yet; the mechanism is ready."""
    required = GENERIC.requirements.model_copy(
        update={
            "identifiers": (IdentifierRule(system="urn:example:site", value="site-{site}"),),
            "profiles": {"Condition": ("http://example.org/StructureDefinition/c",)},
        }
    )
    site = Setting(name="site", description="the site", pattern=r"[a-z]+", example="north")
    profile = GENERIC.model_copy(update={"requirements": required, "settings": (site,)})
    ehr = FakeEhr(conditional_create=True)
    client(profile, ehr, {"site": "north"}).create(body_for("Condition"), "pr-i")
    sent = json.loads(ehr.wire("POST")[0].content)
    assert {"system": "urn:example:site", "value": "site-north"} in sent["identifier"]
    assert sent["meta"]["profile"] == ["http://example.org/StructureDefinition/c"]
