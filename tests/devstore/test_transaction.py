"""FHIR R4 transactions (POST [base], http.html#transaction) in the local store, over real HTTP."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt

from adapters.vendors.registry import get_profile
from chartgate.devstore.http_headers import Preferences
from chartgate.devstore.interactions import classify
from chartgate.devstore.outcome import FhirError
from chartgate.devstore.payload import MAX_BODY_BYTES
from chartgate.devstore.storage import Storage
from chartgate.devstore.transaction import MAX_ENTRIES, Context, execute
from chartgate.devstore.validation import validate_resource
from chartgate.devstore.vendor_mode import VendorMode
from tests.devstore.conftest import FHIR_JSON, StoreProcess
from tests.devstore.test_http_api import SECRET, assert_outcome
from tests.devstore.test_smart import JWT_BEARER, RSA, public

SYSTEM = "urn:chartgate:test:transaction"
RESOLVE_AS_VERSION_SPECIFIC = "http://hl7.org/fhir/StructureDefinition/resolve-as-version-specific"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
VERSIONED_LOCATION = re.compile(r"(\w+)/([A-Za-z0-9\-.]{1,64})/_history/(\d+)")


# -- builders -------------------------------------------------------------------------------


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def observation(tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": SYSTEM, "value": tag}],
        "valueString": "72 per minute",
        **extra,
    }


def provenance(target: str, *, versioned: bool = True, **extra: Any) -> dict[str, Any]:
    reference: dict[str, Any] = {"reference": target}
    if versioned:
        reference["extension"] = [{"url": RESOLVE_AS_VERSION_SPECIFIC, "valueBoolean": True}]
    return {
        "resourceType": "Provenance",
        "target": [reference],
        "recorded": "2024-05-01T10:00:00Z",
        "agent": [{"who": {"display": "Chartgate test agent"}}],
        **extra,
    }


def post_entry(
    resource: dict[str, Any], full_url: str | None = None, **request: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def put_entry(
    resource: dict[str, Any], full_url: str | None = None, **request: str
) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "PUT", "url": url, **request},
    }
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def send(http: httpx.Client, bundle: Any, path: str = "/fhir", **headers: str) -> httpx.Response:
    body = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    return http.post(path, content=body, headers={**HEADERS, **headers})


def committed(response: httpx.Response) -> list[dict[str, Any]]:
    """The response entries of a successful transaction, checked against the R4 Bundle model."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction-response"
    validate_resource(bundle)  # a well-formed R4 Bundle, or this raises
    entries: list[dict[str, Any]] = bundle.get("entry", [])
    return entries


def located(entry: dict[str, Any]) -> tuple[str, str, str]:
    match = VERSIONED_LOCATION.fullmatch(entry["response"]["location"])
    assert match, entry["response"]
    return match[1], match[2], match[3]


def count(http: httpx.Client, resource_type: str, **params: str) -> int:
    response = http.get(f"/fhir/{resource_type}", params=params, headers={"Accept": FHIR_JSON})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def tagged(http: httpx.Client, tag: str) -> int:
    return count(http, "Observation", identifier=f"{SYSTEM}|{tag}")


def total(http: httpx.Client) -> int:
    """Everything the store holds of the types these tests write."""
    return sum(count(http, t) for t in ("Observation", "Provenance", "Patient"))


# -- fixtures -------------------------------------------------------------------------------


def _start(tmp: Path, *args: str) -> StoreProcess:
    running = StoreProcess(db=tmp / "fhir.sqlite3", log_path=tmp / "store.log", args=list(args))
    running.start()
    return running


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    """One store for the module, with the fault control endpoint (no plan unless a test sets one)."""
    running = _start(tmp_path_factory.mktemp("transaction"), "--allow-fault-control")
    yield running
    running.stop()


@pytest.fixture
def http(plain_store: StoreProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plain_store.origin, timeout=10.0) as client:
        assert client.delete("/_faults").status_code == 200
        yield client
        client.delete("/_faults")


@pytest.fixture
def fresh(store: StoreProcess) -> Iterator[httpx.Client]:
    """A client of a store of its own, empty: for counting everything it holds."""
    with httpx.Client(base_url=store.origin, timeout=10.0) as client:
        yield client


# -- the happy path -------------------------------------------------------------------------


def test_a_resource_and_its_provenance_are_written_together_with_references_resolved(
    http: httpx.Client, plain_store: StoreProcess
) -> None:
    patient_url, observation_url = urn(), urn()
    contained_specimen = {
        "resourceType": "Specimen",
        "id": "s1",
        "subject": {"reference": patient_url},
    }
    written = observation(
        "together",
        subject={"reference": patient_url},
        contained=[contained_specimen],
        specimen={"reference": "#s1"},
    )
    record = provenance(
        observation_url,
        entity=[{"role": "source", "what": {"reference": observation_url}}],
        text={
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{observation_url}">obs</a></div>',
        },
    )
    bundle = transaction(
        post_entry(record, urn()),
        post_entry(written, observation_url),
        post_entry({"resourceType": "Patient", "active": True}, patient_url),
    )
    entries = committed(send(http, bundle))
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 3
    (p_type, p_id, _), (o_type, o_id, o_version), (pt_type, pt_id, _) = map(located, entries)
    assert (p_type, o_type, pt_type) == ("Provenance", "Observation", "Patient")
    for entry in entries:
        _, _, version = located(entry)
        assert entry["response"]["etag"] == f'W/"{version}"'
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["response"]["lastModified"]
        )
        assert (
            entry["fullUrl"]
            == f"{plain_store.base}/{entry['resource']['resourceType']}/{entry['resource']['id']}"
        )

    stored_provenance = http.get(f"/fhir/Provenance/{p_id}", headers={"Accept": FHIR_JSON}).json()
    target = stored_provenance["target"][0]
    # resolve-as-version-specific: the exact version this transaction wrote; the extension stays.
    assert target["reference"] == f"Observation/{o_id}/_history/{o_version}"
    assert target["extension"] == [{"url": RESOLVE_AS_VERSION_SPECIFIC, "valueBoolean": True}]
    assert stored_provenance["entity"][0]["what"] == {"reference": f"Observation/{o_id}"}
    assert f'href="Observation/{o_id}"' in stored_provenance["text"]["div"]
    assert observation_url not in json.dumps(stored_provenance)

    stored_observation = http.get(f"/fhir/Observation/{o_id}", headers={"Accept": FHIR_JSON}).json()
    assert stored_observation["subject"] == {"reference": f"Patient/{pt_id}"}
    assert stored_observation["contained"][0]["subject"] == {"reference": f"Patient/{pt_id}"}
    assert stored_observation["specimen"] == {"reference": "#s1"}  # not a fullUrl: as sent
    assert entries[1]["resource"] == stored_observation  # return=representation by default


def test_prefer_minimal_and_operation_outcome_shape_the_entries(http: httpx.Client) -> None:
    minimal = committed(
        send(http, transaction(post_entry(observation("minimal"))), Prefer="return=minimal")
    )
    assert "resource" not in minimal[0]
    assert minimal[0]["response"]["status"] == "201 Created"
    with_outcome = committed(
        send(http, transaction(post_entry(observation("oo"))), Prefer="return=OperationOutcome")
    )
    assert "resource" not in with_outcome[0]
    outcome = with_outcome[0]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"


def test_an_empty_transaction_is_not_an_error(http: httpx.Client) -> None:
    assert committed(send(http, transaction())) == []
    assert committed(send(http, {"resourceType": "Bundle", "type": "transaction"})) == []


def test_put_entries_update_or_create_and_honour_if_match(http: httpx.Client) -> None:
    resource_id = f"tx-{uuid.uuid4().hex[:12]}"
    first = observation("put", id=resource_id)
    entries = committed(send(http, transaction(put_entry(first))))
    assert entries[0]["response"]["status"] == "201 Created"  # update-as-create
    assert located(entries[0]) == ("Observation", resource_id, "1")
    entries = committed(send(http, transaction(put_entry(first, ifMatch='W/"1"'))))
    assert entries[0]["response"]["status"] == "200 OK"
    assert located(entries[0]) == ("Observation", resource_id, "2")
    stale = send(http, transaction(put_entry(first, ifMatch='W/"1"')))
    outcome = assert_outcome(stale, 412, "conflict")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert "Bundle.entry[0]" in outcome["issue"][0]["diagnostics"]


def test_entries_answer_in_request_order_and_creates_run_before_updates(
    http: httpx.Client,
) -> None:
    tag = f"order-{uuid.uuid4().hex[:8]}"
    ids = [f"{tag}-a", f"{tag}-b"]
    bundle = transaction(
        put_entry(observation(tag, id=ids[0])),
        post_entry(observation(tag)),
        put_entry(observation(tag, id=ids[1])),
        post_entry({"resourceType": "Patient", "active": False}),
    )
    entries = committed(send(http, bundle))
    kinds = [located(e)[:2] for e in entries]
    assert kinds[0] == ("Observation", ids[0])
    assert kinds[1][0] == "Observation"
    assert kinds[1][1] not in ids
    assert kinds[2] == ("Observation", ids[1])
    assert kinds[3][0] == "Patient"
    # http.html#trules: POSTs are processed before PUTs; search answers in write order.
    search = http.get("/fhir/Observation", params={"identifier": f"{SYSTEM}|{tag}"}).json()
    assert [e["resource"]["id"] for e in search["entry"]] == [kinds[1][1], *ids]


# -- conditional create ----------------------------------------------------------------------


def test_a_conditional_create_that_matches_writes_nothing_and_the_urn_names_the_match(
    http: httpx.Client,
) -> None:
    tag = f"match-{uuid.uuid4().hex[:8]}"
    existing = http.post("/fhir/Observation", json=observation(tag), headers=HEADERS)
    assert existing.status_code == 201
    existing_id = existing.json()["id"]
    full_url = urn()
    condition = f"identifier={SYSTEM}|{tag}"
    bundle = transaction(
        post_entry(observation(tag), full_url, ifNoneExist=condition),
        post_entry(provenance(full_url)),
    )
    entries = committed(send(http, bundle))
    assert entries[0]["response"]["status"] == "200 OK"
    assert located(entries[0]) == ("Observation", existing_id, "1")
    assert entries[0]["resource"]["id"] == existing_id
    assert (
        entries[1]["resource"]["target"][0]["reference"] == f"Observation/{existing_id}/_history/1"
    )
    assert tagged(http, tag) == 1

    # The existing resource's *current* version: after an update it is 2.
    current = http.get(f"/fhir/Observation/{existing_id}").json()
    assert (
        http.put(f"/fhir/Observation/{existing_id}", json=current, headers=HEADERS).status_code
        == 200
    )
    entries = committed(send(http, bundle))
    assert located(entries[0]) == ("Observation", existing_id, "2")
    assert (
        entries[1]["resource"]["target"][0]["reference"] == f"Observation/{existing_id}/_history/2"
    )
    assert tagged(http, tag) == 1


def test_a_conditional_create_without_a_match_creates(http: httpx.Client) -> None:
    tag = f"nomatch-{uuid.uuid4().hex[:8]}"
    bundle = transaction(post_entry(observation(tag), ifNoneExist=f"identifier={SYSTEM}|{tag}"))
    assert committed(send(http, bundle))[0]["response"]["status"] == "201 Created"
    assert committed(send(http, bundle))[0]["response"]["status"] == "200 OK"  # resent: found
    assert tagged(http, tag) == 1


def test_a_conditional_create_matching_several_fails_the_transaction_with_412(
    fresh: httpx.Client,
) -> None:
    tag = "twice"
    for _ in range(2):
        assert (
            fresh.post("/fhir/Observation", json=observation(tag), headers=HEADERS).status_code
            == 201
        )
    full_url = urn()
    bundle = transaction(
        post_entry(provenance(full_url)),
        post_entry(observation(tag), full_url, ifNoneExist=f"identifier={SYSTEM}|{tag}"),
    )
    outcome = assert_outcome(send(fresh, bundle), 412, "multiple-matches")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert total(fresh) == 2  # the two Observations; no Provenance


def test_overlapping_identities_fail_the_transaction(http: httpx.Client) -> None:
    tag = f"overlap-{uuid.uuid4().hex[:8]}"
    resource_id = f"{tag}-x"
    twice = transaction(
        put_entry(observation(tag, id=resource_id)), put_entry(observation(tag, id=resource_id))
    )
    assert_outcome(send(http, twice), 400, "invalid")
    created = http.post("/fhir/Observation", json=observation(tag), headers=HEADERS).json()
    condition = f"identifier={SYSTEM}|{tag}"
    # Two conditional creates resolving to the same stored resource.
    both = transaction(
        post_entry(observation(tag), ifNoneExist=condition),
        post_entry(observation(tag), ifNoneExist=condition),
    )
    assert_outcome(send(http, both), 400, "invalid")
    # A conditional create and an update of the resource it resolves to.
    mixed = transaction(
        post_entry(observation(tag), ifNoneExist=condition),
        put_entry({**created, "status": "amended"}),
    )
    assert_outcome(send(http, mixed), 400, "invalid")
    assert http.get(f"/fhir/Observation/{created['id']}").json()["meta"]["versionId"] == "1"


# -- atomicity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "status", "code"),
    [
        ({"resourceType": "Observation", "code": {"text": "no status"}}, 400, "required"),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueQuantity": {"value": "NaN-ish"},
            },
            400,
            None,
        ),
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "bogus": 1},
            400,
            "structure",
        ),
    ],
)
def test_a_failing_entry_leaves_nothing_stored(
    fresh: httpx.Client, second: dict[str, Any], status: int, code: str | None
) -> None:
    bundle = transaction(post_entry(observation("first")), post_entry(second))
    outcome = assert_outcome(send(fresh, bundle), status, code)
    assert all(e.startswith("Bundle.entry[1]") for i in outcome["issue"] for e in i["expression"])
    assert all(i["diagnostics"].startswith("Bundle.entry[1]") for i in outcome["issue"])
    assert total(fresh) == 0


def test_a_failing_update_rolls_back_the_creates_before_it(fresh: httpx.Client) -> None:
    stored = fresh.post("/fhir/Observation", json=observation("base"), headers=HEADERS).json()
    bundle = transaction(
        post_entry(observation("first")),
        post_entry({"resourceType": "Patient", "active": True}),
        put_entry({**stored, "status": "amended"}, ifMatch='W/"7"'),
    )
    outcome = assert_outcome(send(fresh, bundle), 412, "conflict")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[2]"]
    assert total(fresh) == 1  # only the Observation stored before
    assert fresh.get(f"/fhir/Observation/{stored['id']}").json()["status"] == "final"


def test_an_unknown_type_fails_as_it_would_alone(fresh: httpx.Client) -> None:
    bundle = transaction(
        post_entry(observation("first")),
        {
            "resource": {"resourceType": "Nonsense"},
            "request": {"method": "POST", "url": "Nonsense"},
        },
    )
    alone = fresh.post("/fhir/Nonsense", json={"resourceType": "Nonsense"}, headers=HEADERS)
    outcome = assert_outcome(send(fresh, bundle), alone.status_code, "not-supported")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert total(fresh) == 0


# -- malformed bundles -----------------------------------------------------------------------


def one(method: Any, url: str, resource: dict[str, Any] | None = None) -> dict[str, Any]:
    """A transaction of one entry, however wrong."""
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
    return transaction(entry)


def bundle_of(kind: Any, **elements: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, **elements}


HOSTILE = f"{SECRET}\u0000\u202e<script>'\"../../etc/passwd%00"
DUPLICATE_IN_RESOURCE = json.dumps(one("POST", "Observation", observation("x"))).replace(
    '"status": "final"', '"status": "final", "status": "amended"'
)


def _malformed() -> list[tuple[str, Any, int, str]]:
    ok = post_entry(observation("malformed"))
    obs, put_obs = observation("x"), observation("x", id="a")
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": [deep]}
    full_url = urn()
    return [
        ("not JSON", b"{not json", 400, "structure"),
        ("JSON array", b"[]", 400, "structure"),
        ("NaN", b'{"resourceType": "Bundle", "type": "transaction", "x": NaN}', 400, "structure"),
        ("not UTF-8", b'{"resourceType": "Bundle\xff"}', 400, "structure"),
        ("a Patient", {"resourceType": "Patient"}, 400, "invalid"),
        ("batch", bundle_of("batch", entry=[ok]), 400, "not-supported"),
        ("document", bundle_of("document"), 400, "invalid"),
        ("no type", {"resourceType": "Bundle", "entry": [ok]}, 400, "invalid"),
        ("hostile type", bundle_of(HOSTILE), 400, "invalid"),
        ("entry object", bundle_of("transaction", entry={}), 400, "structure"),
        ("entry null", bundle_of("transaction", entry=None), 400, "structure"),
        ("entry item null", bundle_of("transaction", entry=[None]), 400, "structure"),
        ("no request", transaction({"resource": obs}), 400, "required"),
        ("unknown element", {**transaction(ok), "bogus": True}, 400, "structure"),
        ("DELETE", one("DELETE", "Observation/1"), 400, "not-supported"),
        ("GET", one("GET", "Observation/1"), 400, "not-supported"),
        ("PATCH", one("PATCH", "Observation/1", obs), 400, "not-supported"),
        ("bad method", one("FETCH", "Observation", obs), 400, "invalid"),
        ("method not a string", one(7, "Observation", obs), 400, "value"),
        ("no resource", one("POST", "Observation"), 400, "required"),
        ("type mismatch", one("POST", "Patient", obs), 400, "invalid"),
        ("PUT id mismatch", one("PUT", "Observation/b", put_obs), 400, "invalid"),
        ("PUT without id in url", one("PUT", "Observation", put_obs), 400, "invalid"),
        ("PUT bad id", one("PUT", "Observation/" + "a" * 65, put_obs), 400, "invalid"),
        ("conditional update", one("PUT", "Observation?identifier=a|b", obs), 400, "not-supported"),
        ("POST with query", one("POST", "Observation?x=1", obs), 400, "invalid"),
        ("hostile url", one("POST", HOSTILE, obs), 400, "invalid"),
        ("path url", one("POST", "../Observation", obs), 400, "invalid"),
        ("ifMatch on POST", transaction(post_entry(obs, ifMatch='W/"1"')), 400, "invalid"),
        ("ifNoneExist on PUT", transaction(put_entry(put_obs, ifNoneExist="a=b")), 400, "invalid"),
        ("bad ifMatch", transaction(put_entry(put_obs, ifMatch=HOSTILE)), 400, "invalid"),
        ("ifNoneMatch", transaction(put_entry(put_obs, ifNoneMatch='W/"1"')), 400, "not-supported"),
        ("empty ifNoneExist", transaction(post_entry(obs, ifNoneExist="")), 400, "value"),
        (
            "unknown search in ifNoneExist",
            transaction(post_entry(obs, ifNoneExist=f"{HOSTILE}=1")),
            400,
            "not-supported",
        ),
        (
            "duplicate fullUrl",
            transaction(post_entry(obs, full_url), post_entry(observation("y"), full_url)),
            400,
            "invalid",
        ),
        (
            "fullUrl disagrees",
            transaction(put_entry(put_obs, "http://elsewhere/fhir/Observation/b")),
            400,
            "invalid",
        ),
        ("fullUrl not a string", transaction({**ok, "fullUrl": 12}), 400, "value"),
        (
            "conditional reference",
            one("POST", "Observation", observation("x", subject={"reference": "Patient?a=b"})),
            400,
            "not-supported",
        ),
        (
            "invalid resource",
            one("POST", "Observation", observation("x", valueQuantity={"value": HOSTILE})),
            400,
            "value",
        ),
        (
            "deep nesting",
            one("POST", "Observation", observation("x", extension=[deep])),
            400,
            "structure",
        ),
        (
            "duplicate key",
            b'{"resourceType": "Bundle", "type": "batch", "type": "transaction"}',
            400,
            "structure",
        ),
        ("duplicate key in a resource", DUPLICATE_IN_RESOURCE.encode(), 400, "structure"),
        ("too many entries", transaction(*[ok] * (MAX_ENTRIES + 1)), 413, "too-long"),
    ]


@pytest.mark.parametrize(
    ("name", "body", "status", "code"), _malformed(), ids=[case[0] for case in _malformed()]
)
def test_a_malformed_transaction_is_refused_and_stores_nothing(
    http: httpx.Client, name: str, body: Any, status: int, code: str
) -> None:
    before = tagged(http, "malformed") + tagged(http, "x") + tagged(http, "y")
    response = send(http, body)
    outcome = assert_outcome(response, status, code)
    assert "passwd" not in response.text
    assert "<script>" not in response.text
    assert before == tagged(http, "malformed") + tagged(http, "x") + tagged(http, "y")
    if name in _ABOUT_ONE_ENTRY:
        issue = outcome["issue"][0]
        assert issue["diagnostics"].startswith("Bundle.entry[")
        assert all(e.startswith("Bundle.entry[") for e in issue["expression"])


# The cases refused for one entry: the outcome names it.
_ABOUT_ONE_ENTRY = frozenset(
    {
        "no request",
        "DELETE",
        "GET",
        "PATCH",
        "bad method",
        "no resource",
        "type mismatch",
        "PUT id mismatch",
        "PUT without id in url",
        "PUT bad id",
        "conditional update",
        "POST with query",
        "hostile url",
        "path url",
        "ifMatch on POST",
        "ifNoneExist on PUT",
        "bad ifMatch",
        "ifNoneMatch",
        "unknown search in ifNoneExist",
        "duplicate fullUrl",
        "fullUrl disagrees",
        "conditional reference",
        "invalid resource",
        "method not a string",
    }
)


def test_size_limits_and_media_types(http: httpx.Client) -> None:
    too_big = (
        b'{"resourceType": "Bundle", "type": "transaction", "x": "' + b"a" * MAX_BODY_BYTES + b'"}'
    )
    assert_outcome(send(http, too_big), 413, "too-long")
    assert_outcome(
        http.post("/fhir", content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        "not-supported",
    )
    assert_outcome(
        http.post("/fhir", json=transaction(), headers={"Accept": "application/xml"}),
        406,
        "not-supported",
    )
    # Only POST is served at the base: a GET (whole-system search) is 405, not a 500.
    assert_outcome(http.get("/fhir"), 405, "not-supported")


def test_a_big_valid_transaction_commits_whole(fresh: httpx.Client) -> None:
    entries = [post_entry(observation(f"big-{i}")) for i in range(MAX_ENTRIES)]
    answered = committed(send(fresh, transaction(*entries), Prefer="return=minimal"))
    assert len(answered) == MAX_ENTRIES
    assert count(fresh, "Observation") == MAX_ENTRIES


# -- CapabilityStatement and classification --------------------------------------------------


def test_the_capability_statement_declares_transaction(http: httpx.Client) -> None:
    rest = http.get("/fhir/metadata").json()["rest"][0]
    declared = {i["code"]: i.get("documentation", "") for i in rest["interaction"]}
    assert "transaction" in declared
    assert "DELETE" in declared["transaction"]  # says what it refuses


def test_post_to_the_base_is_classified_as_a_transaction() -> None:
    assert classify("POST", "/fhir", "/fhir") == ("transaction", None)
    assert classify("GET", "/fhir", "/fhir") is None
    assert classify("POST", "/", "") == ("transaction", None)
    assert classify("POST", "/fhir/", "/fhir") is None


# -- SMART bearer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    tmp = tmp_path_factory.mktemp("transaction-smart")
    clients = {
        "clients": [
            {
                "client_id": "writer",
                "jwks": {"keys": [public(RSA, "rsa-1")]},
                "scopes": ["system/Observation.cruds", "system/Provenance.cruds"],
            }
        ]
    }
    (tmp / "clients.json").write_text(json.dumps(clients))
    running = _start(tmp, "--clients", str(tmp / "clients.json"))
    yield running
    running.stop()


def token(store: StoreProcess, scope: str) -> str:
    token_url = f"{store.base}/auth/token"
    now = int(time.time())
    claims = {
        "iss": "writer",
        "sub": "writer",
        "aud": token_url,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode(
        {"alg": "RS384", "kid": "rsa-1", "typ": "JWT"}, claims, RSA, algorithms=["RS384"]
    )
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    access: str = response.json()["access_token"]
    return access


def test_each_entry_needs_the_scope_its_interaction_needs_alone(auth_store: StoreProcess) -> None:
    tag = f"smart-{uuid.uuid4().hex[:8]}"
    full_url = urn()
    bundle = transaction(post_entry(observation(tag), full_url), post_entry(provenance(full_url)))
    with httpx.Client(base_url=auth_store.origin, timeout=10.0) as http:
        assert_outcome(send(http, bundle), 401, "login")  # no token at all
        only_observations = token(auth_store, "system/Observation.c system/Observation.s")
        refused = send(http, bundle, Authorization=f"Bearer {only_observations}")
        outcome = assert_outcome(refused, 403, "forbidden")
        assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
        assert "system/Provenance.c" in outcome["issue"][0]["diagnostics"]
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert tagged_with(http, only_observations, tag) == 0  # nothing stored

        # An update needs u, not c.
        creator = token(auth_store, "system/Observation.cs system/Provenance.c")
        update = transaction(put_entry(observation(tag, id=f"{tag}-u")))
        denied = send(http, update, Authorization=f"Bearer {creator}")
        assert (
            "system/Observation.u"
            in assert_outcome(denied, 403, "forbidden")["issue"][0]["diagnostics"]
        )

        committed(send(http, bundle, Authorization=f"Bearer {creator}"))
        assert tagged_with(http, creator, tag) == 1


def tagged_with(http: httpx.Client, access: str, tag: str) -> int:
    response = http.get(
        "/fhir/Observation",
        params={"identifier": f"{SYSTEM}|{tag}"},
        headers={"Authorization": f"Bearer {access}"},
    )
    assert response.status_code == 200, response.text
    found: int = response.json()["total"]
    return found


# -- faults ----------------------------------------------------------------------------------


def set_plan(http: httpx.Client, **plan: Any) -> None:
    response = http.post("/_faults", json=plan)
    assert response.status_code == 200, response.text


def test_a_transaction_only_plan_faults_transactions_and_spares_creates(http: httpx.Client) -> None:
    tag = f"fault-{uuid.uuid4().hex[:8]}"
    set_plan(http, server_error={"probability": 1, "interactions": ["transaction"]})
    assert_outcome(send(http, transaction(post_entry(observation(tag)))), 500, "exception")
    assert tagged(http, tag) == 0
    created = http.post("/fhir/Observation", json=observation(tag), headers=HEADERS)
    assert created.status_code == 201
    assert http.get("/_faults").json()["injected"]["server_error"] == 1


def test_the_default_write_plan_covers_transactions(http: httpx.Client) -> None:
    tag = f"default-{uuid.uuid4().hex[:8]}"
    set_plan(http, throttle={"probability": 1, "retry_after_seconds": 3})
    throttled = send(http, transaction(post_entry(observation(tag))))
    assert_outcome(throttled, 429, "throttled")
    assert throttled.headers["Retry-After"] == "3"
    set_plan(http, schedule=[{"fault": "unavailable"}])
    assert_outcome(send(http, transaction(post_entry(observation(tag)))), 503, "transient")
    set_plan(http, reject={"probability": 1, "status": 422})
    assert_outcome(send(http, transaction(post_entry(observation(tag)))), 422, "business-rule")
    assert tagged(http, tag) == 0


def test_a_transaction_dropped_after_commit_is_stored_and_a_resend_finds_it(
    http: httpx.Client, plain_store: StoreProcess
) -> None:
    tag = f"drop-{uuid.uuid4().hex[:8]}"
    full_url = urn()
    bundle = transaction(
        post_entry(observation(tag), full_url, ifNoneExist=f"identifier={SYSTEM}|{tag}"),
        post_entry(provenance(full_url)),
    )
    set_plan(http, schedule=[{"fault": "drop_after_commit", "interactions": ["transaction"]}])
    with pytest.raises(httpx.TransportError):
        send(http, bundle)
    assert tagged(http, tag) == 1  # committed though never answered
    entries = committed(send(http, bundle))
    assert entries[0]["response"]["status"] == "200 OK"
    assert tagged(http, tag) == 1


def test_a_transaction_dropped_before_commit_stores_nothing(http: httpx.Client) -> None:
    tag = f"dropb-{uuid.uuid4().hex[:8]}"
    set_plan(http, schedule=[{"fault": "drop_before_commit", "interactions": ["transaction"]}])
    with pytest.raises(httpx.TransportError):
        send(http, transaction(post_entry(observation(tag))))
    assert tagged(http, tag) == 0


def test_alter_changes_what_a_transaction_stores(http: httpx.Client) -> None:
    tag = f"alter-{uuid.uuid4().hex[:8]}"
    change = {"path": "entry[0].resource.valueString", "op": "truncate", "length": 2}
    set_plan(http, alter={"probability": 1, "interactions": ["transaction"], "changes": [change]})
    entries = committed(send(http, transaction(post_entry(observation(tag)))))
    assert entries[0]["resource"]["valueString"] == "72"


def test_a_deep_body_under_the_alter_fault_is_still_refused_cleanly(http: httpx.Client) -> None:
    set_plan(http, alter={"probability": 1, "interactions": ["transaction"], "changes": []})
    assert_outcome(send(http, b"[" * 100_000 + b"]" * 100_000), 400, "structure")


# -- vendor mode -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def epic_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    running = _start(tmp_path_factory.mktemp("transaction-epic"), "--behave-like", "epic")
    yield running
    running.stop()


def test_a_vendor_without_transactions_refuses_them_as_an_unsupported_write(
    epic_store: StoreProcess,
) -> None:
    epic = get_profile("epic")
    assert epic.conditionals.transactions is False  # the premise of this test
    with httpx.Client(base_url=epic_store.origin, timeout=10.0) as http:
        tag = "vendor"
        response = send(http, transaction(post_entry(observation(tag))))
        outcome = assert_outcome(response, epic.errors.unsupported_write_status, "not-supported")
        assert outcome["issue"][0]["diagnostics"].startswith("Epic does not accept transaction")
        assert count(http, "Observation") == 0
        rest = http.get("/fhir/metadata").json()["rest"][0]
        assert "transaction" not in [i["code"] for i in rest.get("interaction", [])]


def _vendor(name: str, **conditionals: bool) -> VendorMode:
    profile = get_profile(name)
    changed = profile.conditionals.model_copy(update=conditionals)
    return VendorMode(profile.model_copy(update={"conditionals": changed}))


def test_a_vendor_with_transactions_still_refuses_each_entry_as_it_would_alone(
    tmp_path: Path,
) -> None:
    storage = Storage(tmp_path / "db.sqlite3")
    vendor = _vendor("epic", transactions=True, conditional_create=False)
    context = Context(base_url="http://store/fhir", preferences=Preferences(), vendor=vendor)

    def run(bundle: dict[str, Any]) -> FhirError:
        with pytest.raises(FhirError) as raised:
            execute(storage, json.dumps(bundle).encode(), FHIR_JSON, context)
        return raised.value

    try:
        unsupported = run(transaction(post_entry({"resourceType": "Immunization"})))
        assert unsupported.status == vendor.profile.errors.unsupported_write_status
        assert unsupported.issues[0].diagnostics.startswith("Bundle.entry[0]: Epic does not accept")
        conditional = run(transaction(post_entry(observation("v"), ifNoneExist="identifier=a|b")))
        assert conditional.status == 400
        assert "conditional create" in conditional.issues[0].diagnostics
        assert storage.current("Observation") == []
    finally:
        storage.close()


# -- the connection survives hostile input ------------------------------------------------------


def test_the_store_keeps_serving_after_hostile_transactions(
    http: httpx.Client, plain_store: StoreProcess
) -> None:
    """A raw socket: a body that lies about its length must not take the store down."""
    with socket.create_connection((plain_store.host, plain_store.port), timeout=5) as raw:
        raw.sendall(
            b"POST /fhir HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
            b'Content-Length: 10\r\nConnection: close\r\n\r\n{"a":'
        )
        raw.shutdown(socket.SHUT_WR)
        raw.recv(65536)
    assert http.get("/fhir/metadata").status_code == 200


# -- storage: one SQLite transaction ---------------------------------------------------------------


def _write_then_fail(storage: Storage) -> None:
    with storage.transaction() as writes:
        writes.create("Observation", observation("rolled-back"))
        writes.update("Observation", "kept-out", observation("rolled-back", id="kept-out"))
        raise RuntimeError("the second entry failed")


def test_storage_transaction_commits_all_or_rolls_back_all(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite3")
    try:
        with pytest.raises(RuntimeError):
            _write_then_fail(storage)
        assert storage.current("Observation") == []
        assert storage.latest("Observation", "kept-out") is None
        with storage.transaction() as writes:
            created = writes.create("Observation", observation("one"), resource_id="chosen-id")
            assert writes.next_version("Observation", "chosen-id") == (2, False)
            writes.update("Observation", "chosen-id", observation("one", id="chosen-id"))
        assert created.version.resource_id == "chosen-id"
        assert [v.version_id for v in storage.current("Observation")] == [2]
    finally:
        storage.close()


def test_the_base_with_a_trailing_slash_is_not_the_base(http: httpx.Client) -> None:
    """http.html#root: [base] has no trailing slash; POST [base]/ is neither served nor redirected."""
    assert_outcome(send(http, transaction(), path="/fhir/"), 404, "not-found")
