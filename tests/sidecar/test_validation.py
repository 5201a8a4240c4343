"""Proposal validation: every malformed write meets a violation naming the field to fix."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from chartgate.canonical import canonicalize, sha256_hex
from sidecar.errors import FieldViolation, InvalidProposal
from sidecar.validation.fhir import (
    MAX_MODEL_VIOLATIONS,
    _error_description,
    summarize,
    validate_write,
)


def obs(**changes: Any) -> dict[str, Any]:
    base = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
        },
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 70},
    }
    base.update(changes)
    return base


def violations(**kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidProposal) as info:
        validate_write(**kwargs)
    return {v.field: v.description for v in info.value.violations}


def test_valid_create_is_canonicalized_once_with_fields_and_a_phi_free_summary() -> None:
    text = json.dumps(obs(), indent=4)
    write = validate_write(
        tool="fhir.create", resource_type="Observation", resource_json=text, patient_id="p1"
    )
    assert write.operation == "create"
    assert write.target == "Observation"
    assert write.payload.canonical == canonicalize(json.loads(text))
    assert write.payload.sha256 == sha256_hex(write.payload.canonical)
    assert write.fields == ("code", "status", "subject", "valueQuantity")
    assert write.summary == {
        "status": "final",
        "category": [],
        "code": [{"system": "http://loinc.org", "code": "8867-4"}],
    }
    assert "Heart rate" not in json.dumps(write.summary)


def test_whitespace_and_key_order_do_not_change_the_hash() -> None:
    a = validate_write(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(obs()),
        patient_id="p1",
    )
    reordered = dict(reversed(list(obs().items())))
    b = validate_write(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(reordered, indent=2),
        patient_id="p1",
    )
    assert a.payload.sha256 == b.payload.sha256


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resource_json": "{"}, "resource_json"),
        ({"resource_json": "[1, 2]"}, "resource_json"),
        (
            {"resource_json": json.dumps(obs(resourceType="Condition"))},
            "resource_json.resourceType",
        ),
        ({"tool": "fhir.patch"}, "tool"),
        ({"resource_type": "Account"}, "resource_type"),
        (
            {"resource_json": json.dumps(obs(subject={"reference": "Patient/p2"}))},
            "resource_json.subject.reference",
        ),
        (
            {"resource_json": json.dumps({k: v for k, v in obs().items() if k != "subject"})},
            "resource_json.subject",
        ),
        ({"resource_json": json.dumps(obs(id="x1"))}, "resource_json.id"),
        ({"resource_json": json.dumps(obs(status="made-up", bogus=1))}, "resource_json.bogus"),
        ({"patient_id": ""}, "patient_id"),
    ],
)
def test_malformed_writes_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    args = {
        "tool": "fhir.create",
        "resource_type": "Observation",
        "resource_json": json.dumps(obs()),
        "patient_id": "p1",
        **kwargs,
    }
    assert field in violations(**args)


def test_errors_do_not_echo_the_submitted_values() -> None:
    secret = "patient says: chest pain since Tuesday"
    found = violations(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(obs(valueQuantity={"value": secret})),
        patient_id="p1",
    )
    assert found
    assert all(secret not in text for text in found.values())


def test_update_may_leave_out_required_elements_but_not_the_id() -> None:
    write = validate_write(
        tool="fhir.update",
        resource_type="Observation",
        resource_json=json.dumps({"resourceType": "Observation", "id": "o1", "status": "amended"}),
        patient_id="p1",
    )
    assert write.target == "Observation/o1"
    assert write.fields == ("status",)
    assert "resource_json.id" in violations(
        tool="fhir.update",
        resource_type="Observation",
        resource_json=json.dumps({"resourceType": "Observation", "status": "amended"}),
        patient_id="p1",
    )


def test_patient_update_must_be_the_named_patient_and_patients_are_not_created() -> None:
    assert "resource_json.id" in violations(
        tool="fhir.update",
        resource_type="Patient",
        resource_json=json.dumps({"resourceType": "Patient", "id": "p2", "active": True}),
        patient_id="p1",
    )
    assert "resource_type" in violations(
        tool="fhir.create",
        resource_type="Patient",
        resource_json=json.dumps({"resourceType": "Patient", "active": True}),
        patient_id="p1",
    )


def test_r4_instances_of_accepted_types_parse_with_the_r4b_models() -> None:
    samples = [
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/p1"},
            "code": {"text": "x"},
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
        },
        {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": "Patient/p1"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        },
        {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}},
    ]
    for sample in samples:
        write = validate_write(
            tool="fhir.create",
            resource_type=sample["resourceType"],
            resource_json=json.dumps(sample),
            patient_id="p1",
        )
        assert write.resource_type == sample["resourceType"]


# --- strict parsing and bounds: what an attacker sent, and what it must meet -----------------


def reasons(**kwargs: Any) -> dict[str, str]:
    args = {
        "tool": "fhir.create",
        "resource_type": "Observation",
        "resource_json": json.dumps(obs()),
        "patient_id": "p1",
        **kwargs,
    }
    with pytest.raises(InvalidProposal) as info:
        validate_write(**args)
    for violation in info.value.violations:
        assert len(violation.description) <= 200
        assert violation.reason != "input.invalid", "every violation carries a specific reason"
    return {v.field: v.reason for v in info.value.violations}


def nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"url": "http://x/e", "valueString": "leaf"}
    for _ in range(depth):
        inner = {"url": "http://x/e", "extension": [inner]}
    return inner


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
            '"subject":{"reference":"Patient/p1"},"subject":{"reference":"Patient/p2"}}',
            "resource_json",
            "input.duplicate_key",
        ),
        (
            '{"resourceType":"Condition","resourceType":"Observation","status":"final",'
            '"code":{"text":"x"},"subject":{"reference":"Patient/p1"}}',
            "resource_json",
            "input.duplicate_key",
        ),
        (
            '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
            '"subject":{"reference":"Patient/p1","reference":"Patient/p2"}}',
            "resource_json",
            "input.duplicate_key",
        ),
        ("[" * 100_000 + "]" * 100_000, "resource_json", "input.too_deep"),
        ('{"a":' * 20_000 + "1" + "}" * 20_000, "resource_json", "input.too_deep"),
        (json.dumps(obs(valueString="x" * 300_000)), "resource_json", "input.too_large"),
        (json.dumps(obs(valueString="é" * 130_000)), "resource_json", "input.too_large"),
        (json.dumps(obs(valueString="x" * 140_000)), "resource_json.valueString", "input.too_long"),
        (json.dumps(obs(**{"a" * 65: 1})), "resource_json", "input.too_long"),
        (json.dumps(obs(note=[{"text": "n"}] * 1_001)), "resource_json.note", "input.too_many"),
        (
            json.dumps(obs(component=[{"a": list(range(900))} for _ in range(25)])),
            "resource_json",
            "input.too_many",
        ),
        (json.dumps(obs(valueInteger=2**53)), "resource_json.valueInteger", "input.out_of_range"),
        (json.dumps(obs()).replace("70", "7" * 5_000), "resource_json", "input.out_of_range"),
        (
            json.dumps(obs()).replace("70", "1e400"),
            "resource_json.valueQuantity.value",
            "input.out_of_range",
        ),
        (json.dumps(obs()).replace("70", "NaN"), "resource_json", "input.not_json"),
        (json.dumps(obs()).replace("70", "-Infinity"), "resource_json", "input.not_json"),
        (
            json.dumps(obs(valueString="a\u0000b")),
            "resource_json.valueString",
            "input.invalid_char",
        ),
        (
            json.dumps(obs(valueString="bell\u0007")),
            "resource_json.valueString",
            "input.invalid_char",
        ),
        ('{"resourceType":"Observation","x\\u0001":1}', "resource_json", "input.invalid_char"),
        (json.dumps(obs(valueString="\ud800")), "resource_json.valueString", "input.invalid_char"),
        (
            json.dumps(obs(valueString="lone \udfff raw"), ensure_ascii=False),
            "resource_json.valueString",
            "input.invalid_char",
        ),
        ('{"resourceType": "Observation",', "resource_json", "input.not_json"),
        ("", "resource_json", "input.not_json"),
        ("[1, 2]", "resource_json", "input.not_a_resource"),
        ('"Observation"', "resource_json", "input.not_a_resource"),
    ],
    ids=[
        "duplicate-subject",
        "duplicate-resourceType",
        "duplicate-nested",
        "raw-deep-arrays",
        "raw-deep-objects",
        "too-many-bytes",
        "too-many-utf8-bytes",
        "long-string",
        "long-member-name",
        "long-array",
        "too-many-values",
        "integer-beyond-2^53",
        "integer-5000-digits",
        "float-overflow",
        "nan",
        "infinity",
        "nul",
        "bell",
        "control-in-member-name",
        "lone-surrogate-escape",
        "lone-surrogate-raw",
        "truncated",
        "empty",
        "array",
        "string",
    ],
)
def test_hostile_json_is_refused_with_a_reason(text: str, field: str, reason: str) -> None:
    assert reasons(resource_json=text) == {field: reason}


def test_nested_extensions_stop_at_the_depth_bound_before_the_model_sees_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_model(name: str) -> None:
        raise AssertionError("fhir.resources was asked to validate a document over the bounds")

    monkeypatch.setattr("sidecar.validation.fhir.get_fhir_model_class", no_model)
    found = reasons(resource_json=json.dumps(obs(extension=[nested(300)])))
    assert list(found.values()) == ["input.too_deep"]
    assert next(iter(found)).startswith("resource_json.extension[0].extension[0]")
    assert len(next(iter(found))) <= 200


def test_nesting_within_the_bound_is_validated_normally() -> None:
    write = validate_write(
        tool="fhir.create",
        resource_type="Observation",
        resource_json=json.dumps(obs(extension=[nested(10)])),
        patient_id="p1",
    )
    assert "extension" in write.fields


def test_an_oversized_document_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_parse(text: str, **kwargs: Any) -> None:
        raise AssertionError("parsed a document over max_bytes")

    monkeypatch.setattr("sidecar.validation.fhir.loads_strict", no_parse)
    assert reasons(resource_json="[" * 1_000_000) == {"resource_json": "input.too_large"}


def test_fields_include_meta_elements_and_narrative() -> None:
    def fields_of(**changes: Any) -> tuple[str, ...]:
        return validate_write(
            tool="fhir.create",
            resource_type="Observation",
            resource_json=json.dumps(obs(**changes)),
            patient_id="p1",
        ).fields

    narrative = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
    assert fields_of(
        meta={
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
            ],
            "tag": [{"code": "t"}],
            "profile": ["http://example.org/p"],
        },
        text=narrative,
    ) == (
        "code",
        "meta.profile",
        "meta.security",
        "meta.tag",
        "status",
        "subject",
        "text",
        "valueQuantity",
    )
    assert "meta" in fields_of(meta={})
    update = validate_write(
        tool="fhir.update",
        resource_type="Observation",
        resource_json=json.dumps(
            {"resourceType": "Observation", "id": "o1", "meta": {"security": [{"code": "R"}]}}
        ),
        patient_id="p1",
    )
    # resourceType and id say which resource; meta.security is what the write sets.
    assert update.fields == ("meta.security",)


def test_summary_always_has_its_three_keys_with_their_types() -> None:
    assert summarize({}) == {"status": "", "category": [], "code": []}
    assert summarize({"status": 5, "category": "x", "code": {"coding": "x"}}) == {
        "status": "",
        "category": [],
        "code": [],
    }
    assert summarize(
        {
            "status": "final",
            "category": [{"coding": [{"system": 1, "code": None}, "junk"]}, 7],
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "208"}]},
        }
    ) == {
        "status": "final",
        "category": [{"system": "", "code": ""}],
        "code": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "208"}],
    }


def test_no_description_repeats_tool_type_resource_type_or_patient() -> None:
    secret = "PHI-Jane-Doe-HIV-positive"
    with pytest.raises(InvalidProposal) as info:
        validate_write(
            tool=secret,
            resource_type=secret,
            resource_json=json.dumps(obs(resourceType=secret)),
            patient_id=secret * 40_000,  # a megabyte
        )
    assert {v.field for v in info.value.violations} == {"tool", "resource_type"}
    with pytest.raises(InvalidProposal) as mismatch:
        validate_write(
            tool="fhir.create",
            resource_type="Observation",
            resource_json=json.dumps(obs(resourceType=secret)),
            patient_id="p1",
        )
    other_patient = "x" * 1_000_000
    with pytest.raises(InvalidProposal) as wrong_patient:
        validate_write(
            tool="fhir.create",
            resource_type="Observation",
            resource_json=json.dumps(obs()),
            patient_id=other_patient,
        )
    for exc in (info.value, mismatch.value, wrong_patient.value):
        for violation in exc.violations:
            assert secret not in violation.description
            assert "xxxxxxxx" not in violation.description
            assert len(violation.description) <= 200


def test_model_messages_are_bounded_and_never_carry_the_input() -> None:
    echoing = {
        "type": "fhir-validation-wrong-resource-type",
        "msg": "expects resource type Observation, but got PHI-Jane-Doe",
        "input": "PHI-Jane-Doe",
    }
    assert "PHI" not in _error_description(echoing)
    # A future message that quotes its input is caught even for an unknown error type.
    quoting = {
        "type": "value_error",
        "msg": "bad value 'Jane Doe 1970'",
        "input": ["Jane Doe 1970"],
    }
    assert "Jane" not in _error_description(quoting)
    long_msg = {"type": "value_error", "msg": "x" * 5_000, "input": 1}
    assert len(_error_description(long_msg)) <= 200
    plain = {"type": "string_type", "msg": "Input should be a valid string", "input": 5}
    assert _error_description(plain) == "Input should be a valid string"


def test_an_unknown_member_name_is_not_repeated_in_the_field_path() -> None:
    found = reasons(resource_json=json.dumps(obs(**{"PHI Jane Doe": 1, "bogus": 2})))
    assert found == {
        "resource_json.*": "input.fhir_invalid",
        "resource_json.bogus": "input.fhir_invalid",
    }


def test_validator_crashes_on_contained_resources_become_violations() -> None:
    assert reasons(resource_json=json.dumps(obs(contained=[{"resourceType": "Zork"}]))) == {
        "resource_json.contained[0].resourceType": "input.fhir_invalid"
    }
    assert reasons(resource_json=json.dumps(obs(contained=[{"resourceType": 5}]))) == {
        "resource_json.contained[0].resourceType": "input.fhir_invalid"
    }
    nested_contained = {
        "resourceType": "Practitioner",
        "id": "c1",
        "contained": [{"resourceType": "Zork"}],
    }
    found = reasons(resource_json=json.dumps(obs(contained=[nested_contained])))
    assert set(found.values()) == {"input.fhir_invalid"}


def test_a_flood_of_model_errors_is_reported_bounded() -> None:
    found = reasons(resource_json=json.dumps(obs(note=[{"text": 5}] * 500)))
    assert len(found) <= MAX_MODEL_VIOLATIONS + 1
    assert found["resource_json"] == "input.too_many"


def test_update_ids_are_fhir_ids() -> None:
    found = reasons(
        tool="fhir.update",
        resource_json=json.dumps(
            {"resourceType": "Observation", "id": "o" * 65, "status": "final"}
        ),
    )
    assert found == {"resource_json.id": "input.format"}


def test_reasons_for_the_request_level_checks() -> None:
    assert reasons(tool="fhir.patch") == {"tool": "input.unsupported"}
    assert reasons(resource_type="Account") == {
        "resource_type": "input.unsupported",
        "resource_json.resourceType": "input.type_mismatch",
    }
    assert reasons(patient_id="") == {"patient_id": "input.required"}
    assert reasons(resource_json=json.dumps(obs(id="x1"))) == {
        "resource_json.id": "input.fhir_invalid"
    }
    assert reasons(
        tool="fhir.update", resource_json=json.dumps({"resourceType": "Observation", "id": "o1"})
    ) == {"resource_json": "input.not_a_resource"}


# --- property-style: random mutations of valid resources -------------------------------------

VALID_RESOURCES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "fhir.create",
        "Observation",
        obs(category=[{"coding": [{"system": "http://s", "code": "vital-signs"}]}]),
    ),
    (
        "fhir.create",
        "Condition",
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/p1"},
            "code": {"text": "x"},
        },
    ),
    (
        "fhir.create",
        "MedicationRequest",
        {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "medicationCodeableConcept": {"coding": [{"system": "http://rxnorm", "code": "1"}]},
            "subject": {"reference": "Patient/p1"},
            "note": [{"text": "take with food"}],
        },
    ),
    (
        "fhir.update",
        "Patient",
        {
            "resourceType": "Patient",
            "id": "p1",
            "telecom": [{"system": "phone", "value": "+1-555-0100"}],
        },
    ),
]


class Mutator:
    """Random hostile edits of a parsed resource; every string it invents carries a marker, so a
    description that repeats one is found."""

    # Resource type names it uses as values; descriptions name types in their own right.
    VOCABULARY = frozenset({"Patient", "Zork"})

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sent: list[str] = []

    def marker(self) -> str:
        text = f"MK{self.rng.randrange(10**12):012d}zq"
        self.sent.append(text)
        return text

    def hostile_value(self) -> Any:
        rng = self.rng
        kind = rng.randrange(12)
        if kind == 0:  # deep nesting, as lists, objects or extensions
            value: Any = self.marker()
            for _ in range(rng.choice([5, 15, 17, 100, 300])):
                value = rng.choice([[value], {"extension": [value]}, {"x": value}])
            return value
        if kind == 1:  # huge strings
            return self.marker() * rng.choice([1, 100, 5_000, 9_000, 20_000])
        if kind == 2:  # huge arrays
            return [self.marker()] * rng.choice([10, 999, 1_001, 30_000])
        if kind == 3:  # control characters
            return self.marker() + "".join(chr(rng.randrange(32)) for _ in range(5))
        if kind == 4:  # lone surrogates
            return self.marker() + chr(rng.randrange(0xD800, 0xE000))
        if kind == 5:  # wrong types
            return rng.choice([5, -1.5, True, None, [], {}, [1, "a"], {"a": {"b": []}}])
        if kind == 6:  # numbers JSON or I-JSON cannot carry
            return rng.choice([2**53, -(2**64), 10**400, 1e308 * 10])
        if kind == 7:  # references to other patients, in every form
            target = self.marker()
            return {
                "reference": rng.choice(
                    [
                        f"Patient/{target}",
                        f"https://x/Patient/{target}",
                        f"Patient?identifier={target}",
                        f"#{target}",
                    ]
                )
            }
        if kind == 8:
            return {self.marker(): self.marker()}
        if kind == 9:
            return "\u202e" + self.marker() + "<script>"
        if kind == 10:
            return {"resourceType": rng.choice(["Patient", "Zork", self.marker(), 7]), "id": "c"}
        return [self.hostile_value() for _ in range(rng.randrange(1, 4))]

    def mutate(self, resource: dict[str, Any]) -> Any:
        rng = self.rng
        value = copy.deepcopy(resource)
        for _ in range(rng.randrange(1, 4)):
            containers = [value]
            stack = [value]
            while stack:
                node = stack.pop()
                children = node.values() if isinstance(node, dict) else node
                for child in children:
                    if isinstance(child, (dict, list)):
                        containers.append(child)
                        stack.append(child)
            target = rng.choice(containers)
            if isinstance(target, dict):
                key = rng.choice([*target.keys(), "contained", "extension", "meta", self.marker()])
                target[key] = self.hostile_value()
            elif target:
                target[rng.randrange(len(target))] = self.hostile_value()
            else:
                target.append(self.hostile_value())
        if rng.random() < 0.1:
            value = self.hostile_value()
        return value

    def text(self, value: Any) -> str:
        rng = self.rng
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        roll = rng.random()
        if roll < 0.1 and text.startswith("{"):  # a duplicate member, first or last wins elsewhere
            text = '{"subject":{"reference":"Patient/' + self.marker() + '"},' + text[1:]
        elif roll < 0.15 and text.startswith("{"):
            text = '{"resourceType":"Patient",' + text[1:]
        elif roll < 0.2:  # cut short
            text = text[: rng.randrange(len(text) + 1)]
        elif roll < 0.25:  # a byte flipped
            at = rng.randrange(len(text) + 1)
            text = text[:at] + chr(rng.randrange(0x20, 0x7F)) + text[at:]
        elif roll < 0.3:
            text = text.replace("1", "NaN", 1)
        elif roll < 0.33:  # deeper than json.dumps could write it
            text = "[" * 100_000 + text + "]" * 100_000
        return text


def test_random_mutations_only_ever_raise_invalid_proposal_with_bounded_clean_messages() -> None:
    mutator = Mutator(seed=20_261_122)
    outcomes = {"valid": 0, "refused": 0}
    seen_reasons: set[str] = set()
    for round_ in range(500):
        tool, resource_type, resource = VALID_RESOURCES[round_ % len(VALID_RESOURCES)]
        mutated = mutator.mutate(resource)
        text = mutator.text(mutated)
        refusal = _refusal(tool, resource_type, text)
        if refusal is None:
            outcomes["valid"] += 1
            continue
        outcomes["refused"] += 1
        assert refusal, "a refusal names at least one violation"
        # Every string the mutation put there (the valid resource's own "final" or "proposal"
        # are words a description may use in its own right, e.g. "the proposal's patient").
        ordinary = set(_strings_in(resource)) | Mutator.VOCABULARY
        sent_strings = [s for s in _strings_in(mutated) if len(s) >= 4 and s not in ordinary]
        for violation in refusal:
            seen_reasons.add(violation.reason)
            assert len(violation.description) <= 200, violation
            assert len(violation.field) <= 200, violation
            assert not any(marker in violation.description for marker in mutator.sent), violation
            assert not any(s in violation.description for s in sent_strings), violation
    # The mutations reach the checks they are meant to: most refused, for many reasons.
    assert outcomes["refused"] > 400, outcomes
    assert {
        "input.too_deep",
        "input.too_long",
        "input.too_many",
        "input.invalid_char",
        "input.duplicate_key",
        "input.not_json",
        "input.fhir_invalid",
        "input.out_of_range",
        "reference.other_patient",
        "reference.unverifiable",
    } <= seen_reasons, seen_reasons


def _refusal(tool: str, resource_type: str, text: str) -> tuple[FieldViolation, ...] | None:
    """The violations of a refused write, None for an accepted one; any other exception fails."""
    try:
        validate_write(tool=tool, resource_type=resource_type, resource_json=text, patient_id="p1")
    except InvalidProposal as exc:
        return exc.violations
    return None


def _strings_in(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def test_docs_limits_lists_every_reason_code_the_validators_use() -> None:
    root = Path(__file__).resolve().parents[2]
    table = (root / "docs" / "limits.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `((?:input|reference)\.[a-z_]+)` \|", table, re.MULTILINE))
    used: set[str] = set()
    for module in ("fhir.py", "references.py", "request.py", "strict_json.py"):
        source = (root / "sidecar" / "validation" / module).read_text(encoding="utf-8")
        used |= set(re.findall(r'"((?:input|reference)\.[a-z_]+)"', source))
    assert used, "no reason codes found: the pattern no longer matches the sources"
    assert used <= listed, sorted(used - listed)
    assert listed <= used | {"input.invalid"}, sorted(listed - used)


# --- profiles and required bindings (docs/validation.md; the cases: test_profile_validation.py) --


@pytest.mark.parametrize("status", ["notastatus", "\ufefffinal"], ids=["outside", "bom"])
def test_a_status_outside_the_required_value_set_is_refused_before_anything_is_stored(
    status: str,
) -> None:
    violations = _refusal("fhir.create", "Observation", json.dumps(obs(status=status)))
    assert violations is not None
    assert [(v.field, v.reason) for v in violations] == [("resource_json.status", "fhir.binding")]
    assert "final" in violations[0].description
    assert status not in violations[0].description


def test_a_claimed_or_required_profile_is_checked() -> None:
    order = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
    }
    us_core = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"
    text = json.dumps(order)
    assert _refusal("fhir.create", "MedicationRequest", text) is None
    claimed = json.dumps({**order, "meta": {"profile": [us_core]}})
    required = [("resource_json.requester", "fhir.required")]
    found = _refusal("fhir.create", "MedicationRequest", claimed)
    assert [(v.field, v.reason) for v in found or ()] == required
    with pytest.raises(InvalidProposal) as info:
        validate_write(
            tool="fhir.create",
            resource_type="MedicationRequest",
            resource_json=text,
            patient_id="p1",
            profiles=[us_core],
        )
    assert [(v.field, v.reason) for v in info.value.violations] == required
