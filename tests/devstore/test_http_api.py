"""The FHIR store over real HTTP, as a separate process: the R4 interactions the adapter relies on."""

from __future__ import annotations

import email.utils
import re
import signal
import threading
from datetime import datetime
from typing import Any

import httpx

from tests.devstore.conftest import FHIR_JSON, StoreProcess

SYSTEM = "urn:chartgate:test:proposal"
SECRET = "Jane-Doe-1962-SECRET"  # stands for patient data: must never come back in an error


def observation(value: str | None = None, *, patient: str = "p1", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    if value is not None:
        resource["identifier"] = [{"system": SYSTEM, "value": value}]
    resource.update(extra)
    return resource


def post(client: httpx.Client, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(
        resource["resourceType"],
        json=resource,
        headers={"Content-Type": FHIR_JSON, **{k.replace("_", "-"): v for k, v in headers.items()}},
    )


def assert_outcome(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """The response is an error of this status whose body is a well-formed OperationOutcome."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"], outcome
    for issue in outcome["issue"]:
        assert issue["severity"] in ("fatal", "error", "warning", "information")
        assert re.fullmatch(r"[a-z-]+", issue["code"])
        assert issue["diagnostics"]
    if code is not None:
        assert code in [issue["code"] for issue in outcome["issue"]], outcome
    assert SECRET not in response.text
    return outcome


def location_parts(response: httpx.Response, base: str) -> tuple[str, str, str]:
    match = re.fullmatch(
        re.escape(base) + r"/(\w+)/([A-Za-z0-9\-.]{1,64})/_history/(\d+)",
        response.headers["Location"],
    )
    assert match, response.headers.get("Location")
    return match[1], match[2], match[3]


def search(client: httpx.Client, resource_type: str, **params: str) -> dict[str, Any]:
    response = client.get(resource_type, params=params)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    return bundle


def matched_ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_metadata_is_an_r4_capability_statement(client: httpx.Client) -> None:
    response = client.get("metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert by_type["Observation"]["conditionalCreate"] is True
    assert by_type["Observation"]["versioning"] == "versioned-update"
    codes = {i["code"] for i in by_type["Patient"]["interaction"]}
    assert {"read", "vread", "create", "update", "search-type"} <= codes
    assert {p["name"] for p in rest["searchParam"]} >= {"_id", "identifier", "patient", "subject"}


def test_create_assigns_id_and_version_and_answers_201(
    client: httpx.Client, store: StoreProcess
) -> None:
    response = post(client, observation("create-1", id="client-chosen"))
    assert response.status_code == 201, response.text
    created = response.json()
    resource_type, resource_id, version = location_parts(response, store.base)
    assert (resource_type, version) == ("Observation", "1")
    assert created["id"] == resource_id != "client-chosen"  # the server assigns the id
    assert created["meta"]["versionId"] == "1"
    last_updated = datetime.fromisoformat(created["meta"]["lastUpdated"])
    assert last_updated.tzinfo is not None
    assert response.headers["ETag"] == 'W/"1"'
    modified = email.utils.parsedate_to_datetime(response.headers["Last-Modified"])
    assert abs((modified - last_updated).total_seconds()) < 1
    assert created["identifier"] == [{"system": SYSTEM, "value": "create-1"}]


def test_create_honours_prefer_return_and_plain_json(
    client: httpx.Client, store: StoreProcess
) -> None:
    minimal = post(client, observation("m"), Prefer="return=minimal")
    assert minimal.status_code == 201
    assert minimal.content == b""
    _, resource_id, _ = location_parts(minimal, store.base)
    assert client.get(f"Observation/{resource_id}").status_code == 200

    outcome = post(client, observation("o"), Prefer="return=OperationOutcome")
    assert outcome.status_code == 201
    body = outcome.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"

    representation = post(client, observation("r"), Prefer="return=representation")
    assert representation.json()["resourceType"] == "Observation"

    # application/json is accepted as FHIR JSON (http.html#mime-type).
    response = client.post(
        "Patient",
        json={"resourceType": "Patient", "active": True},
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert response.status_code == 201


def test_read_and_vread(client: httpx.Client) -> None:
    created = post(client, observation("read-1")).json()
    url = f"Observation/{created['id']}"

    read = client.get(url)
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in read.headers

    changed = {**created, "status": "amended"}
    assert client.put(url, json=changed).status_code == 200

    first, second = client.get(f"{url}/_history/1"), client.get(f"{url}/_history/2")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["status"] == "final"
    assert second.json()["status"] == "amended"
    assert second.json()["meta"]["versionId"] == "2"
    assert second.headers["ETag"] == 'W/"2"'
    assert client.get(url).json()["meta"]["versionId"] == "2"
    assert_outcome(client.get(f"{url}/_history/3"), 404, "not-found")
    assert_outcome(client.get(f"{url}/_history/x"), 404, "not-found")


def test_unknown_and_deleted_resources(client: httpx.Client) -> None:
    assert_outcome(client.get("Observation/does-not-exist"), 404, "not-found")
    created = post(client, observation("del-1")).json()
    url = f"Observation/{created['id']}"
    deleted = client.delete(url)
    assert deleted.status_code == 204
    assert deleted.headers["ETag"] == 'W/"2"'
    assert_outcome(client.get(url), 410, "deleted")
    assert client.get(f"{url}/_history/1").status_code == 200  # history is kept
    assert_outcome(client.get(f"{url}/_history/2"), 410, "deleted")
    assert matched_ids(search(client, "Observation", identifier=f"{SYSTEM}|del-1")) == []
    assert client.delete(url).status_code == 204  # deleting again changes nothing
    assert_outcome(client.delete("Observation/never-was"), 404, "not-found")


def test_conditional_create_zero_one_many(client: httpx.Client, store: StoreProcess) -> None:
    condition = {"If-None-Exist": f"identifier={SYSTEM}|cc-1"}

    first = post(client, observation("cc-1"), **condition)
    assert first.status_code == 201
    created = first.json()

    again = post(client, observation("cc-1", status="amended"), **condition)
    assert again.status_code == 200  # matched: the existing resource, nothing created
    assert again.json() == created
    assert location_parts(again, store.base)[1:] == (created["id"], "1")
    assert again.headers["ETag"] == 'W/"1"'
    assert search(client, "Observation", identifier=f"{SYSTEM}|cc-1")["total"] == 1

    # Two resources with one identifier (plain creates), then a conditional create matches both.
    assert post(client, observation("dup")).status_code == 201
    assert post(client, observation("dup")).status_code == 201
    many = post(client, observation("dup"), **{"If-None-Exist": f"identifier={SYSTEM}|dup"})
    assert_outcome(many, 412, "multiple-matches")
    assert search(client, "Observation", identifier=f"{SYSTEM}|dup")["total"] == 2

    # Criteria the store cannot apply are refused, never widened into "match anything".
    for header in ("colour=red", "", "identifier=", "_count=1&identifier=a|b"):
        response = post(client, observation("x"), **{"If-None-Exist": header})
        assert_outcome(response, 400)
    assert search(client, "Observation", identifier=f"{SYSTEM}|x")["total"] == 0


def test_concurrent_conditional_creates_create_exactly_one(store: StoreProcess) -> None:
    barrier = threading.Barrier(8)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def create() -> None:
        with httpx.Client(base_url=store.base + "/", timeout=10.0) as http:
            barrier.wait()
            response = post(
                http, observation("race"), **{"If-None-Exist": f"identifier={SYSTEM}|race"}
            )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.status_code for r in results) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in results}) == 1
    with httpx.Client(base_url=store.base + "/") as http:
        assert search(http, "Observation", identifier=f"{SYSTEM}|race")["total"] == 1


def test_update_is_version_aware_and_may_create(client: httpx.Client, store: StoreProcess) -> None:
    created = post(client, observation("up-1")).json()
    url = f"Observation/{created['id']}"

    matching = client.put(url, json={**created, "status": "amended"}, headers={"If-Match": 'W/"1"'})
    assert matching.status_code == 200, matching.text
    assert matching.headers["ETag"] == 'W/"2"'
    assert location_parts(matching, store.base) == ("Observation", created["id"], "2")
    assert matching.json()["meta"]["versionId"] == "2"

    stale = client.put(url, json={**created, "status": "cancelled"}, headers={"If-Match": 'W/"1"'})
    assert_outcome(stale, 412, "conflict")
    assert client.get(url).json()["status"] == "amended"  # the stale write changed nothing

    assert_outcome(client.put(url, json=created, headers={"If-Match": "v1"}), 400, "invalid")

    # Update-as-create with a client-chosen id; the body's id must equal the URL's.
    patient = {"resourceType": "Patient", "id": "p-new", "active": True}
    created = client.put("Patient/p-new", json=patient)
    assert created.status_code == 201
    assert created.json()["meta"]["versionId"] == "1"
    assert client.put("Patient/p-new", json=patient).status_code == 200

    assert_outcome(client.put("Patient/p-new", json={**patient, "id": "other"}), 400, "invalid")
    no_id = {"resourceType": "Patient", "active": True}
    assert_outcome(client.put("Patient/p-new", json=no_id), 400, "invalid")
    conditional = client.put(
        "Patient/p-absent", json={**patient, "id": "p-absent"}, headers={"If-Match": 'W/"1"'}
    )
    assert_outcome(conditional, 412, "conflict")


def test_search_by_identifier_id_and_patient(client: httpx.Client) -> None:
    a = post(client, observation("s-a", patient="p1")).json()
    b = post(client, observation("s-b", patient="p2")).json()
    other = observation(None, identifier=[{"system": "urn:other", "value": "s-a"}], patient="p2")
    c = post(client, other).json()
    bare = post(client, observation(None, identifier=[{"value": "s-a"}])).json()

    bundle = search(client, "Observation", identifier=f"{SYSTEM}|s-a")
    assert bundle["total"] == 1
    entry = bundle["entry"][0]
    assert entry["fullUrl"].endswith(f"/Observation/{a['id']}")
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"] == a

    assert set(matched_ids(search(client, "Observation", identifier="s-a"))) == {
        a["id"],
        c["id"],
        bare["id"],
    }
    assert set(matched_ids(search(client, "Observation", identifier=f"{SYSTEM}|"))) == {
        a["id"],
        b["id"],
    }
    assert matched_ids(search(client, "Observation", identifier="|s-a")) == [bare["id"]]
    either = search(client, "Observation", identifier=f"{SYSTEM}|s-a,{SYSTEM}|s-b")
    assert set(matched_ids(either)) == {a["id"], b["id"]}
    assert matched_ids(search(client, "Observation", _id=b["id"])) == [b["id"]]
    assert set(matched_ids(search(client, "Observation", patient="p2"))) == {b["id"], c["id"]}
    assert set(matched_ids(search(client, "Observation", patient="Patient/p2"))) == {
        b["id"],
        c["id"],
    }
    assert matched_ids(search(client, "Observation", subject="Patient/p2", identifier="s-a")) == [
        c["id"]
    ]
    assert search(client, "Observation", identifier=f"{SYSTEM}|nope")["total"] == 0

    # POST [type]/_search with a form body searches the same way (http.html#search).
    response = client.post("Observation/_search", data={"identifier": f"{SYSTEM}|s-a"})
    assert response.status_code == 200
    assert matched_ids(response.json()) == [a["id"]]


def test_search_paging_and_unknown_parameters(client: httpx.Client) -> None:
    ids = [post(client, observation(f"page-{i}")).json()["id"] for i in range(5)]
    first = search(client, "Observation", _count="2")
    assert first["total"] == 5
    assert matched_ids(first) == ids[:2]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(next_url).json()
    assert matched_ids(second) == ids[2:4]
    assert search(client, "Observation", _count="0")["total"] == 5
    assert "entry" not in search(client, "Observation", _count="0")
    assert_outcome(client.get("Observation", params={"_count": "-1"}), 400, "invalid")

    created = post(client, observation("u-1")).json()
    lenient = search(client, "Observation", colour="red", identifier=f"{SYSTEM}|u-1")
    assert matched_ids(lenient) == [created["id"]]
    outcomes = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes[0]["resourceType"] == "OperationOutcome"
    assert "colour" in outcomes[0]["issue"][0]["diagnostics"]
    self_link = next(link["url"] for link in lenient["link"] if link["relation"] == "self")
    assert "colour" not in self_link
    assert "identifier" in self_link

    strict = client.get(
        "Observation", params={"colour": "red"}, headers={"Prefer": "handling=strict"}
    )
    assert_outcome(strict, 400, "not-supported")
    # An unsupported modifier is refused either way: ignoring :not would invert the answer.
    assert_outcome(client.get("Observation", params={"identifier:not": "x"}), 400, "not-supported")
    # A parameter the type does not have (Patient has no subject) counts as unknown.
    strict_patient = client.get(
        "Patient", params={"subject": "x"}, headers={"Prefer": "handling=strict"}
    )
    assert_outcome(strict_patient, 400, "not-supported")


ERROR_CASES: list[tuple[str, str, bytes, dict[str, str], int, str | None]] = [
    ("POST", "Observation", b'{"resourceType": "Observation", ', {}, 400, "structure"),
    ("POST", "Observation", b"[1, 2]", {}, 400, "structure"),
    ("POST", "Observation", b'{"resourceType": "Observation", "x": NaN}', {}, 400, "structure"),
    ("POST", "Observation", b"\xff\xfe{", {}, 400, "structure"),
    # A key twice (the last would silently win) and nesting past the bound: refused, never a 500.
    (
        "POST",
        "Observation",
        b'{"resourceType": "Observation", "status": "final", "status": "x"}',
        {},
        400,
        "structure",
    ),
    (
        "POST",
        "Observation",
        b'{"resourceType": "Observation", "extension": '
        + b'[{"extension": ' * 300
        + b"[]"
        + b"}]" * 300
        + b"}",
        {},
        400,
        "structure",
    ),
    ("POST", "Observation", b'{"resourceType": "Patient"}', {}, 400, "invalid"),
    ("POST", "Observation", b"<Observation/>", {"Content-Type": "application/fhir+xml"}, 415, None),
    ("POST", "Widget", b'{"resourceType": "Widget"}', {}, 404, "not-supported"),
    ("POST", "observation", b'{"resourceType": "observation"}', {}, 404, "not-supported"),
    ("GET", "Widget/1", b"", {}, 404, "not-supported"),
    ("GET", "Observation/bad$id", b"", {}, 400, "invalid"),
    ("PATCH", "Observation/1", b"{}", {}, 405, "not-supported"),
    ("DELETE", "Observation", b"", {}, 405, "not-supported"),
    ("PUT", "Observation", b'{"resourceType": "Observation"}', {}, 400, "not-supported"),
    ("GET", "Observation/1/_history", b"", {}, 404, "not-found"),
    ("POST", "", b'{"resourceType": "Bundle"}', {}, 404, "not-found"),
    ("GET", "metadata", b"", {"Accept": "application/fhir+xml"}, 406, "not-supported"),
    ("GET", "Observation", b"", {}, 406, "not-supported"),  # with _format=xml, below
]


def test_errors_are_operation_outcomes(client: httpx.Client) -> None:
    """One store for all cases: a process per case would cost a second each."""
    failures = []
    for method, path, body, headers, status, code in ERROR_CASES:
        params = {"_format": "xml"} if status == 406 and path == "Observation" else None
        sent = {"Content-Type": FHIR_JSON, **headers}
        response = client.request(method, path, content=body, headers=sent, params=params)
        try:
            assert_outcome(response, status, code)
        except (AssertionError, ValueError, KeyError) as exc:
            failures.append(f"{method} /{path} -> {response.status_code}: {exc!r}")
    assert not failures, "\n".join(failures)


def test_invalid_resources_are_refused_with_the_element_path(client: httpx.Client) -> None:
    missing_status = observation("v-1")
    del missing_status["status"]
    outcome = assert_outcome(post(client, missing_status), 400, "required")
    assert outcome["issue"][0]["expression"] == ["Observation.status"]

    unknown_element = observation("v-2", favouriteColour=SECRET)
    outcome = assert_outcome(post(client, unknown_element), 400, "structure")
    assert outcome["issue"][0]["expression"] == ["Observation.favouriteColour"]

    bad_date = observation("v-3", effectiveDateTime=SECRET)
    outcome = assert_outcome(post(client, bad_date), 400, "value")
    assert outcome["issue"][0]["expression"] == ["Observation.effectiveDateTime"]

    bad_nested = observation("v-4", code={"coding": [{"system": "http://loinc.org", "code": 5}]})
    assert_outcome(post(client, bad_nested), 400)

    bad_update = client.put(
        "Patient/p1", json={"resourceType": "Patient", "id": "p1", "active": SECRET}
    )
    assert_outcome(bad_update, 400)
    assert search(client, "Observation")["total"] == 0  # nothing invalid was stored


def test_restart_keeps_data_and_versions(client: httpx.Client, store: StoreProcess) -> None:
    created = post(client, observation("persist-1")).json()
    url = f"Observation/{created['id']}"
    assert client.put(url, json={**created, "status": "amended"}).status_code == 200

    # SIGTERM shuts down cleanly (uvicorn then re-raises the signal, hence -SIGTERM).
    assert store.stop() in (0, -signal.SIGTERM)
    assert "FHIR store stopped; database closed" in store.log()
    store.start()

    with httpx.Client(base_url=store.base + "/") as http:
        assert http.get(url).json()["meta"]["versionId"] == "2"
        assert http.get(f"{url}/_history/1").json()["status"] == "final"
        again = post(
            http, observation("persist-1"), **{"If-None-Exist": f"identifier={SYSTEM}|persist-1"}
        )
        assert again.status_code == 200
        assert again.json()["id"] == created["id"]


def test_log_names_requests_without_their_content(
    client: httpx.Client, store: StoreProcess
) -> None:
    post(client, observation(SECRET))
    search(client, "Observation", identifier=f"{SYSTEM}|{SECRET}")
    post(client, observation("z", effectiveDateTime=SECRET))
    store.stop()
    log = store.log()
    assert "POST /fhir/Observation 201" in log
    assert "GET /fhir/Observation 200" in log
    assert "POST /fhir/Observation 400" in log
    assert SECRET not in log
