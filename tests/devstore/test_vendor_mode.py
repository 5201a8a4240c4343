"""`--behave-like NAME`: the store refuses what that vendor profile refuses, and nothing else changes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.vendors.profile import IdentifierRule
from adapters.vendors.registry import get_profile
from chartgate.devstore.outcome import FhirError
from chartgate.devstore.vendor_mode import VendorMode
from tests.devstore.conftest import FHIR_JSON, REPO, StoreProcess

HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
PRACTICE_URL = "https://fhir.athena.io/StructureDefinition/ah-practice"


def vitals(**changes: Any) -> dict[str, Any]:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
        "subject": {"reference": "Patient/p-1"},
        "valueString": "72",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


Start = Callable[[str], httpx.Client]


@pytest.fixture(scope="module")
def behaving_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Start]:
    """A client of a store process behaving like the vendor named (`plain`: no option); one
    process per name for the module, started on first use."""
    running: dict[str, tuple[StoreProcess, httpx.Client]] = {}

    def start(name: str) -> httpx.Client:
        if name not in running:
            folder = tmp_path_factory.mktemp(f"store-{name}")
            store = StoreProcess(
                db=folder / "db.sqlite3",
                log_path=folder / "store.log",
                args=[] if name == "plain" else ["--behave-like", name],
            )
            store.start()
            running[name] = store, httpx.Client(base_url=store.origin, headers=HEADERS)
        return running[name][1]

    yield start
    for store, client in running.values():
        client.close()
        store.stop()


def issue(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    first: dict[str, Any] = body["issue"][0]
    return first


def test_a_write_the_vendor_does_not_take_is_refused_as_it_says(behaving_like: Start) -> None:
    epic = behaving_like("epic")
    response = epic.post("/fhir/Immunization", json={"resourceType": "Immunization"})
    assert response.status_code == 405
    said = issue(response)
    assert said["code"] == "not-supported"
    assert said["diagnostics"].startswith("Epic does not accept create of Immunization")
    update = epic.put("/fhir/Condition/c-1", json={"resourceType": "Condition", "id": "c-1"})
    assert update.status_code == 405


def test_if_none_exist_is_refused_where_the_vendor_has_no_conditional_create(
    behaving_like: Start,
) -> None:
    epic = behaving_like("epic")
    response = epic.post(
        "/fhir/Observation",
        json=vitals(),
        headers={**HEADERS, "If-None-Exist": "identifier=urn:x|1"},
    )
    assert response.status_code == 400
    assert "If-None-Exist" in issue(response)["diagnostics"]
    assert epic.post("/fhir/Observation", json=vitals()).status_code == 201


def test_required_elements_and_fixed_values(behaving_like: Start) -> None:
    epic = behaving_like("epic")
    missing = epic.post("/fhir/Observation", json=vitals(valueString=None))
    assert missing.status_code == 400
    assert issue(missing)["expression"] == ["Observation.valueString"]
    draft = epic.post("/fhir/Observation", json=vitals(status="preliminary"))
    assert (draft.status_code, issue(draft)["code"]) == (400, "value")


def test_athena_requires_the_practice_extension(behaving_like: Start) -> None:
    athena = behaving_like("athenahealth")
    body: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": {"reference": "Patient/p-1"},
    }
    bare = athena.post("/fhir/QuestionnaireResponse", json=body)
    assert bare.status_code == 400
    assert PRACTICE_URL in issue(bare)["diagnostics"]
    body["extension"] = [
        {"url": PRACTICE_URL, "valueReference": {"reference": "Organization/a-1.Practice-1"}}
    ]
    assert athena.post("/fhir/QuestionnaireResponse", json=body).status_code == 201


def test_a_read_only_vendor_takes_no_write_but_still_reads(behaving_like: Start) -> None:
    veradigm = behaving_like("veradigm")
    assert veradigm.post("/fhir/Observation", json=vitals()).status_code == 405
    assert veradigm.get("/fhir/Observation").status_code == 200


def test_the_capability_statement_says_what_the_vendor_takes(behaving_like: Start) -> None:
    statement = behaving_like("epic").get("/fhir/metadata").json()
    entries = {e["type"]: e for e in statement["rest"][0]["resource"]}
    codes = {t: {i["code"] for i in e["interaction"]} for t, e in entries.items()}
    assert "create" in codes["Observation"]
    assert "update" in codes["Observation"]
    assert "create" not in codes["Immunization"]
    assert "read" in codes["Immunization"]
    assert entries["Observation"]["conditionalCreate"] is False
    assert "Epic" in statement["implementation"]["description"]


def test_without_the_option_the_store_is_plain_fhir(behaving_like: Start) -> None:
    plain = behaving_like("plain")
    immunization = {"resourceType": "Immunization", "status": "completed"}
    created = plain.post(
        "/fhir/Immunization",
        json={**immunization, "vaccineCode": {"text": "x"}, "patient": {"reference": "Patient/p"}}
        | {"occurrenceDateTime": "2024-01-01"},
        headers={**HEADERS, "If-None-Exist": "identifier=urn:x|1"},
    )
    assert created.status_code == 201
    statement = plain.get("/fhir/metadata").json()
    assert statement["rest"][0]["resource"][0]["conditionalCreate"] is True


def test_the_command_line_option(tmp_path: Path) -> None:
    store = StoreProcess(
        db=tmp_path / "db.sqlite3", log_path=tmp_path / "store.log", args=["--behave-like", "epic"]
    )
    store.start()
    try:
        response = httpx.post(f"{store.base}/Immunization", json={"resourceType": "Immunization"})
        assert response.status_code == 405
    finally:
        store.stop()
    assert "behaves like epic" in store.log()


def test_an_unknown_vendor_stops_the_store_before_it_serves(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chartgate.devstore",
            "--db",
            str(tmp_path / "db.sqlite3"),
            "--port",
            "1",
            "--behave-like",
            "cerner",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown vendor 'cerner'" in done.stderr
    assert "epic" in done.stderr


def test_a_required_identifier_is_checked_by_system() -> None:
    """No shipped profile requires one yet; the store's check is ready for the one that will."""
    generic = get_profile("generic")
    required = generic.requirements.model_copy(
        update={"identifiers": (IdentifierRule(system="urn:example:site", value="{site}"),)}
    )
    mode = VendorMode(generic.model_copy(update={"requirements": required}))
    with pytest.raises(FhirError) as info:
        mode.check_create("Condition", {"resourceType": "Condition"}, None)
    assert info.value.status == 400
    mode.check_create(
        "Condition", {"identifier": [{"system": "urn:example:site", "value": "x"}]}, None
    )
