"""Fault injection in the FHIR store over real HTTP: each kind's effect, seeded reproducibility, control, restart."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chartgate.devstore.faults import FAULT_KINDS, FaultPlan, FaultState, draw
from chartgate.devstore.interactions import classify
from tests.devstore.conftest import FHIR_JSON, StoreProcess

SYSTEM = "urn:chartgate:test:faults"


@pytest.fixture(scope="module")
def control_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    """One store with the control endpoint for the whole module: each test sets its own plan."""
    tmp = tmp_path_factory.mktemp("faults")
    running = StoreProcess(
        db=tmp / "fhir.sqlite3", log_path=tmp / "store.log", args=["--allow-fault-control"]
    )
    running.start()
    yield running
    running.stop()


@pytest.fixture
def http(control_store: StoreProcess) -> Iterator[httpx.Client]:
    """A client on the store's origin with no plan in force."""
    with httpx.Client(
        base_url=control_store.origin, headers={"Accept": FHIR_JSON}, timeout=10.0
    ) as client:
        assert client.delete("/_faults").status_code == 200
        yield client


def set_plan(http: httpx.Client, **plan: Any) -> dict[str, Any]:
    response = http.post("/_faults", json=plan)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def injected(http: httpx.Client) -> dict[str, int]:
    counts: dict[str, int] = http.get("/_faults").json()["injected"]
    return counts


def observation(tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": SYSTEM, "value": tag}],
        **extra,
    }


def create(http: httpx.Client, tag: str, **headers: str) -> httpx.Response:
    return http.post(
        "/fhir/Observation",
        content=json.dumps(observation(tag)),
        headers={"Content-Type": FHIR_JSON, **headers},
    )


def stored(http: httpx.Client, tag: str) -> int:
    """How many Observations carry this tag (searches are not faulted by write-only plans)."""
    response = http.get("/fhir/Observation", params={"identifier": f"{SYSTEM}|{tag}"})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def tag() -> str:
    return uuid.uuid4().hex


def assert_outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    assert "injected fault" in body["issue"][0]["diagnostics"]


# -- each kind, exactly its effect ------------------------------------------------------------


def test_server_error_answers_500_and_stores_nothing(http: httpx.Client) -> None:
    set_plan(http, server_error={"probability": 1})
    t = tag()
    assert_outcome(create(http, t), 500, "exception")
    assert stored(http, t) == 0  # reads and searches are not writes: unaffected by default
    assert injected(http)["server_error"] == 1


def test_unavailable_answers_503_with_optional_retry_after(http: httpx.Client) -> None:
    set_plan(http, unavailable={"probability": 1, "retry_after_seconds": 7})
    t = tag()
    response = create(http, t)
    assert_outcome(response, 503, "transient")
    assert response.headers["Retry-After"] == "7"
    set_plan(http, unavailable={"probability": 1})
    response = create(http, t)
    assert_outcome(response, 503, "transient")
    assert "Retry-After" not in response.headers
    assert stored(http, t) == 0


def test_throttle_answers_429_with_retry_after(http: httpx.Client) -> None:
    set_plan(http, throttle={"probability": 1, "retry_after_seconds": 3})
    t = tag()
    response = create(http, t)
    assert_outcome(response, 429, "throttled")
    assert response.headers["Retry-After"] == "3"
    assert stored(http, t) == 0
    assert injected(http)["throttle"] == 1


def test_slow_after_commits_then_answers_late(http: httpx.Client) -> None:
    set_plan(http, slow={"probability": 1, "delay_seconds": 0.3})
    t = tag()
    started = time.monotonic()
    response = create(http, t)
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    assert 0.3 <= elapsed < 2.0
    # A client that gives up first: the write is stored all the same (the ambiguous timeout).
    t2 = tag()
    with pytest.raises(httpx.ReadTimeout):
        create_with_timeout(http, t2, timeout=0.1)
    assert stored(http, t2) == 1


def test_slow_before_a_client_that_gave_up_stores_nothing(http: httpx.Client) -> None:
    set_plan(http, slow={"probability": 1, "delay_seconds": 0.3, "phase": "before"})
    t = tag()
    with pytest.raises(httpx.ReadTimeout):
        create_with_timeout(http, t, timeout=0.1)
    time.sleep(0.4)  # past the delay: the request was handled (and found its client gone)
    assert stored(http, t) == 0
    started = time.monotonic()
    assert create(http, t).status_code == 201
    assert time.monotonic() - started >= 0.3


def create_with_timeout(http: httpx.Client, t: str, *, timeout: float) -> httpx.Response:
    return http.post(
        "/fhir/Observation",
        content=json.dumps(observation(t)),
        headers={"Content-Type": FHIR_JSON},
        timeout=timeout,
    )


def test_drop_after_commit_closes_without_a_response_and_keeps_the_write(
    http: httpx.Client, control_store: StoreProcess
) -> None:
    set_plan(http, drop_after_commit={"probability": 1})
    t = tag()
    condition = {"If-None-Exist": f"identifier={SYSTEM}|{t}"}
    with pytest.raises(httpx.RemoteProtocolError):  # a transport error, not an HTTP status
        create(http, t, **condition)
    http.delete("/_faults")
    assert stored(http, t) == 1
    # How a writer settles it: the same conditional create finds the write, creates nothing.
    again = create(http, t, **condition)
    assert again.status_code == 200
    assert stored(http, t) == 1

    # A reset instead of an orderly close: the client reads ECONNRESET.
    set_plan(http, drop_after_commit={"probability": 1, "reset": True})
    t2 = tag()
    with pytest.raises(httpx.ReadError):
        create(http, t2)
    assert stored(http, t2) == 1

    # An update too: committed as the next version, no answer.
    http.delete("/_faults")
    created = create(http, tag())
    assert created.status_code == 201
    body = created.json()
    set_plan(http, drop_after_commit={"probability": 1, "interactions": ["update"]})
    with pytest.raises(httpx.TransportError):
        http.put(f"/fhir/Observation/{body['id']}", json={**body, "status": "amended"})
    current = http.get(f"/fhir/Observation/{body['id']}").json()
    assert (current["status"], current["meta"]["versionId"]) == ("amended", "2")
    assert injected(http)["drop_after_commit"] == 1
    # uvicorn must not have answered (or tried to answer) on our behalf.
    log = control_store.log()
    assert "ASGI callable returned without" not in log
    assert "Exception in ASGI application" not in log


def test_drop_before_commit_closes_without_a_response_or_a_write(http: httpx.Client) -> None:
    set_plan(http, drop_before_commit={"probability": 1})
    t = tag()
    with pytest.raises(httpx.RemoteProtocolError):
        create(http, t)
    http.delete("/_faults")
    assert stored(http, t) == 0
    set_plan(http, drop_before_commit={"probability": 1, "reset": True})
    with pytest.raises(httpx.ReadError):
        create(http, t)
    http.delete("/_faults")
    assert stored(http, t) == 0


def test_faults_apply_to_the_interactions_named(http: httpx.Client) -> None:
    t = tag()
    created = create(http, t).json()
    set_plan(http, server_error={"probability": 1, "interactions": ["read"]})
    assert_outcome(http.get(f"/fhir/Observation/{created['id']}"), 500, "exception")
    assert_outcome(http.get(f"/fhir/Observation/{created['id']}/_history/1"), 500, "exception")
    assert stored(http, t) == 1  # search is not read
    assert create(http, tag()).status_code == 201
    set_plan(http, throttle={"probability": 1, "interactions": ["search"]})
    assert_outcome(http.get("/fhir/Observation"), 429, "throttled")
    assert_outcome(http.post("/fhir/Observation/_search", data={"_id": "x"}), 429, "throttled")
    assert http.get(f"/fhir/Observation/{created['id']}").status_code == 200
    assert http.get("/fhir/metadata").status_code == 200  # never faulted
    assert injected(http) == {**dict.fromkeys(FAULT_KINDS, 0), "throttle": 2}


# -- reproducible from a seed ------------------------------------------------------------------

_STATUS = {
    None: 201,
    "server_error": 500,
    "unavailable": 503,
    "throttle": 429,
}


def test_a_seeded_plan_reproduces_its_sequence(http: httpx.Client) -> None:
    plan = {
        "seed": 7,
        "server_error": {"probability": 0.25},
        "unavailable": {"probability": 0.1},
        "throttle": {"probability": 0.25},
    }

    def run() -> list[int]:
        set_plan(http, **plan)
        statuses = [create(http, tag()).status_code for _ in range(40)]
        # Reads between writes do not move the writes' draws (a write-only plan counts writes).
        http.get("/fhir/Observation", params={"_count": "0"})
        return statuses

    first = run()
    assert run() == first
    # The same sequence, computed in-process from (seed, n): the server draws exactly so.
    state = FaultState(FaultPlan.model_validate(plan))
    expected = []
    for _ in range(40):
        fault = state.decide("create")
        expected.append(_STATUS[fault.kind if fault else None])
    assert first == expected
    assert 5 <= first.count(201) <= 35  # all four outcomes in proportions near 40/10/25/25 %
    assert {500, 503, 429, 201} <= set(first)
    counts = injected(http)
    assert counts["server_error"] == first.count(500)
    assert counts["throttle"] == first.count(429)
    assert counts["unavailable"] == first.count(503)
    set_plan(http, **{**plan, "seed": 8})
    assert [create(http, tag()).status_code for _ in range(40)] != first


def test_schedule_and_max_faults_are_exact(http: httpx.Client) -> None:
    set_plan(
        http,
        unavailable={"retry_after_seconds": 1},
        schedule=[{"fault": "none", "count": 1}, {"fault": "unavailable", "count": 2}],
    )
    statuses = [create(http, tag()).status_code for _ in range(4)]
    assert statuses == [201, 503, 503, 201]
    report = http.get("/_faults").json()
    assert report["injected"]["unavailable"] == 2
    assert report["schedule_left"] == []

    set_plan(http, server_error={"probability": 1}, max_faults=2)
    assert [create(http, tag()).status_code for _ in range(4)] == [500, 500, 201, 201]

    # A scheduled search fault leaves writes alone and waits for a search.
    set_plan(http, schedule=[{"fault": "throttle", "interactions": ["search"]}])
    assert create(http, tag()).status_code == 201
    assert http.get("/fhir/Observation").status_code == 429
    assert http.get("/fhir/Observation").status_code == 200


@pytest.mark.parametrize(
    "plan",
    [
        {"server_error": {"probability": 2}},
        {"server_error": {"probability": 0.6}, "throttle": {"probability": 0.6}},
        {"bogus": {}},
        {"schedule": [{"fault": "explode"}]},
        {"slow": {"probability": 1, "delay_seconds": 0}},
        {"throttle": {"interactions": ["patch"]}},
    ],
)
def test_an_invalid_plan_is_refused_and_the_old_one_stays(
    http: httpx.Client, plan: dict[str, Any]
) -> None:
    set_plan(http, throttle={"probability": 1})
    response = http.post("/_faults", json=plan)
    assert response.status_code == 400, response.text
    assert response.json()["problems"]
    assert create(http, tag()).status_code == 429


# -- the control endpoint's gate, restart ------------------------------------------------------


def test_control_is_refused_when_not_enabled_and_a_file_plan_restarts_with_the_process(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"schedule": [{"fault": "none", "count": 1}, {"fault": "drop_after_commit"}]})
    )
    running = StoreProcess(
        db=tmp_path / "fhir.sqlite3", log_path=tmp_path / "store.log", args=["--faults", str(plan)]
    )
    running.start()
    try:
        with httpx.Client(base_url=running.origin, timeout=10.0) as http:
            for method in ("GET", "POST", "DELETE"):
                refused = http.request(method, "/_faults", json={})
                assert refused.status_code == 403
                assert "--allow-fault-control" in refused.json()["error"]
            assert http.post("/_auth/revoke").status_code == 403
            a, b = tag(), tag()
            assert create(http, a).status_code == 201
            with pytest.raises(httpx.TransportError):
                create(http, b)
            assert (stored(http, a), stored(http, b)) == (1, 1)
        # A crash (SIGKILL), then a start on the same port and workdir: every committed write is
        # there, and the plan starts over from its first request.
        port = running.port
        running.kill()
        running.start()
        assert running.port == port
        with httpx.Client(base_url=running.origin, timeout=10.0) as http:
            assert (stored(http, a), stored(http, b)) == (1, 1)
            c, d = tag(), tag()
            assert create(http, c).status_code == 201
            with pytest.raises(httpx.TransportError):
                create(http, d)
            assert (stored(http, c), stored(http, d)) == (1, 1)
    finally:
        running.stop()


def _non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address: str = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_control_refuses_a_client_that_is_not_on_loopback(tmp_path: Path) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    running = StoreProcess(
        db=tmp_path / "fhir.sqlite3",
        log_path=tmp_path / "store.log",
        args=["--allow-fault-control"],
        host=address,
    )
    running.start()
    try:
        with httpx.Client(base_url=running.origin, timeout=10.0) as http:
            refused = http.post("/_faults", json={"server_error": {"probability": 1}})
            assert refused.status_code == 403
            assert "loopback" in refused.json()["error"]
            assert http.get("/_faults").status_code == 403
            assert create(http, tag()).status_code == 201  # the plan did not change
    finally:
        running.stop()


# -- in-process units ----------------------------------------------------------------------------


def test_draws_are_uniform_and_fixed() -> None:
    values = [draw(1, n) for n in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55
    assert draw(1, 0) == draw(1, 0) != draw(2, 0)


def test_each_kind_strikes_with_its_probability() -> None:
    state = FaultState(
        FaultPlan.model_validate(
            {"seed": 3, "server_error": {"probability": 0.2}, "throttle": {"probability": 0.3}}
        )
    )
    kinds = [getattr(state.decide("update"), "kind", None) for _ in range(5000)]
    assert 0.17 < kinds.count("server_error") / 5000 < 0.23
    assert 0.27 < kinds.count("throttle") / 5000 < 0.33
    assert state.decide("read") is None  # not a write: never drawn, never counted
    assert state.counters()["drawn"] == 5000


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/fhir/Observation", ("create", "Observation")),
        ("GET", "/fhir/Observation", ("search", "Observation")),
        ("POST", "/fhir/Observation/_search", ("search", "Observation")),
        ("GET", "/fhir/Observation/1", ("read", "Observation")),
        ("GET", "/fhir/Observation/1/_history/2", ("read", "Observation")),
        ("PUT", "/fhir/Observation/1", ("update", "Observation")),
        ("DELETE", "/fhir/Observation/1", ("delete", "Observation")),
        ("PATCH", "/fhir/Observation/1", (None, "Observation")),
        ("GET", "/fhir/metadata", None),
        ("POST", "/fhir/auth/token", None),
        ("GET", "/fhir/.well-known/smart-configuration", None),
        ("GET", "/_faults", None),
        ("GET", "/fhirObservation", None),
    ],
)
def test_classify(method: str, path: str, expected: tuple[str | None, str] | None) -> None:
    assert classify(method, path, "/fhir") == expected
