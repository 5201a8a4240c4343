"""In-process checks of the store's parts: search parsing, headers, and documents valid per fhir.resources."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from chartgate.devstore.bundle import searchset
from chartgate.devstore.capability import capability_statement
from chartgate.devstore.http_headers import parse_if_match, parse_prefer
from chartgate.devstore.outcome import FhirError, Issue, operation_outcome
from chartgate.devstore.resource_types import RESOURCE_TYPES
from chartgate.devstore.search import Token, parse_condition, parse_search
from chartgate.devstore.storage import Storage, StoredVersion, VersionConflict

BASE = "http://127.0.0.1:1/fhir"


def _observation(**elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "heart rate"},
        **elements,
    }


def test_every_listed_type_has_an_r4b_model_module() -> None:
    missing = [
        t
        for t in RESOURCE_TYPES
        if importlib.util.find_spec(f"fhir.resources.R4B.{t.lower()}") is None
    ]
    assert missing == []
    assert len(set(RESOURCE_TYPES)) == len(RESOURCE_TYPES) == 128
    assert get_fhir_model_class("Observation").__name__ == "Observation"


def test_capability_statement_and_documents_validate_as_r4b() -> None:
    statement = capability_statement(BASE, datetime.now(UTC), "0.1.0")
    get_fhir_model_class("CapabilityStatement").model_validate(statement)
    outcome = operation_outcome([Issue("error", "invalid", "x", ("Observation.status",))])
    get_fhir_model_class("OperationOutcome").model_validate(outcome)
    version = StoredVersion("Observation", "o1", 1, datetime.now(UTC), _observation(status="final"))
    query = parse_search("Observation", [("colour", "red")], base_url=BASE, strict=False)
    bundle = searchset(BASE, "Observation", query, [version])
    get_fhir_model_class("Bundle").model_validate(bundle)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("v", Token(None, "v")),
        ("s|v", Token("s", "v")),
        ("|v", Token("", "v")),
        ("s|", Token("s", None)),
        (r"urn:a\|b|v\,w", Token("urn:a|b", "v,w")),
    ],
)
def test_token_forms(text: str, token: Token) -> None:
    query = parse_search("Observation", [("identifier", text)], base_url=BASE, strict=True)
    (criterion,) = query.criteria
    assert criterion.tokens == (token,)  # type: ignore[attr-defined]


def test_token_matching_rules() -> None:
    with_system = _observation(identifier=[{"system": "s", "value": "v"}])
    without_system = _observation(identifier=[{"value": "v"}])
    cases = {"v": (True, True), "s|v": (True, False), "|v": (False, True), "s|": (True, False)}
    for text, expected in cases.items():
        query = parse_search("Observation", [("identifier", text)], base_url=BASE, strict=True)
        assert (query.matches(with_system), query.matches(without_system)) == expected, text


def test_reference_matching() -> None:
    local = _observation(subject={"reference": "Patient/p1"})
    absolute = _observation(subject={"reference": f"{BASE}/Patient/p1"})
    group = _observation(subject={"reference": "Group/p1"})
    for name, value, expected in [
        ("patient", "p1", (True, True, False)),
        ("patient", "Patient/p1", (True, True, False)),
        ("patient", f"{BASE}/Patient/p1", (True, True, False)),
        ("subject", "p1", (True, True, True)),
        ("subject:Patient", "p1", (True, True, False)),
        ("subject", "Group/p1", (False, False, True)),
        ("patient:missing", "true", (False, False, True)),
    ]:
        query = parse_search("Observation", [(name, value)], base_url=BASE, strict=True)
        assert tuple(query.matches(r) for r in (local, absolute, group)) == expected, (name, value)


def test_patient_parameter_uses_the_patient_element_where_there_is_one() -> None:
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}}
    query = parse_search("AllergyIntolerance", [("patient", "p1")], base_url=BASE, strict=True)
    assert query.matches(allergy)


def test_if_none_exist_parsing() -> None:
    query = parse_condition("Observation", "identifier=s%7Cv", base_url=BASE)
    assert query.matches(_observation(identifier=[{"system": "s", "value": "v"}]))
    assert parse_condition("Observation", "Observation?_id=o1", base_url=BASE).matches(
        _observation()
    )
    for header in ("", "identifier=", "Patient?_id=1", "colour=red", "_count=1&_id=1"):
        with pytest.raises(FhirError) as raised:
            parse_condition("Observation", header, base_url=BASE)
        assert raised.value.status == 400, header


def test_prefer_and_if_match_headers() -> None:
    assert parse_prefer([]).return_ == "representation"
    both = parse_prefer(["return=minimal, handling=strict"])
    assert (both.return_, both.handling) == ("minimal", "strict")
    assert parse_prefer(["return=OperationOutcome", "bogus"]).return_ == "OperationOutcome"
    assert parse_prefer(["return=everything"]).return_ == "representation"
    assert parse_if_match('W/"12"') == 12
    assert parse_if_match('"3"') == 3
    assert parse_if_match("*") == "*"
    with pytest.raises(FhirError):
        parse_if_match("12")


def test_result_parameters_must_be_ascii_integers() -> None:
    for value in ("-1", "²", "1.5", "ten"):
        with pytest.raises(FhirError) as raised:
            parse_search("Observation", [("_count", value)], base_url=BASE, strict=False)
        assert raised.value.status == 400, value


def test_storage_versions_survive_delete_and_recreate(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db" / "store.sqlite3")
    try:
        first = storage.create("Patient", {"resourceType": "Patient", "active": True})
        resource_id = first.version.resource_id
        deletion = storage.delete("Patient", resource_id)
        assert deletion is not None
        assert (deletion.version_id, deletion.deleted) == (2, True)
        assert storage.current("Patient") == []
        again = storage.update(
            "Patient", resource_id, {"resourceType": "Patient", "id": resource_id}
        )
        assert (again.version.version_id, again.created) == (3, True)
        latest = storage.latest("Patient", resource_id)
        assert latest is not None
        assert latest.resource is not None
        assert latest.resource["meta"]["versionId"] == "3"
        assert storage.version("Patient", resource_id, 1) == first.version
        with pytest.raises(VersionConflict):
            storage.update("Patient", resource_id, {"resourceType": "Patient"}, if_match=1)
    finally:
        storage.close()
