"""The adapter writes only what a valid one-write token covers: adversarial tokens through real processes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import httpx
import pytest
from joserfc import jwt

from adapters.provenance import provenance_id
from chartgate import keys
from chartgate.canonical import canonicalize, sha256_hex
from chartgate.stack import Stack, start_adapter, start_fhir_store
from chartgate.v1 import adapter_pb2, adapter_pb2_grpc
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.tokens.mint import TokenMinter, WriteGrant
from tests.support import fhir_search, seed_patient

PATIENT = "p-adapter"


@pytest.fixture(scope="module")
def adapter_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(workdir=tmp_path_factory.mktemp("adapter"))
    try:
        start_fhir_store(stack)
        start_adapter(stack)
        seed_patient(stack.fhir_base, PATIENT)
        seed_patient(stack.fhir_base, "p-other")
        yield stack
    finally:
        stack.stop()


def observation(patient: str = PATIENT, value: float = 1.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value},
    }


def grant_for(
    body: bytes,
    *,
    patient: str = PATIENT,
    scope: str = "patient/Observation.c",
    target: str = "Observation",
) -> WriteGrant:
    return WriteGrant(
        proposal_id=f"pr-{uuid.uuid4().hex}",
        tenant_id="t1",
        agent_id="agent-1",
        on_behalf_of="Practitioner/1",
        patient_id=patient,
        scope=scope,
        operation="create",
        target=target,
        payload_sha256=sha256_hex(body),
    )


def minter(stack: Stack, audience: str = "chartgate-adapter") -> TokenMinter:
    key = keys.load_private(stack.workdir / "keys" / "token-signing.jwk")
    return TokenMinter(key, issuer="chartgate-sidecar", audience=audience, ttl_seconds=60)


def write(stack: Stack, token: str, body: bytes) -> adapter_pb2.WriteResponse:
    with grpc.insecure_channel(stack.adapter_target) as channel:
        return adapter_pb2_grpc.AdapterStub(channel).Write(
            adapter_pb2.WriteRequest(token=token, resource_json=body), timeout=10
        )


def refused(stack: Stack, token: str, body: bytes) -> tuple[int, str]:
    """A refusal is an outcome, not an RPC error: nothing written, its failure class and reason
    as data (the sidecar settles the proposal by the class, never by re-deriving it)."""
    response = write(stack, token, body)
    assert not response.written
    assert not response.fhir_id
    return response.failure_class, response.reason


def stored_for(stack: Stack, grant: WriteGrant) -> list[dict[str, Any]]:
    return fhir_search(
        stack.fhir_base,
        "Observation",
        identifier=f"{PROPOSAL_IDENTIFIER_SYSTEM}|{grant.proposal_id}",
    )


def test_valid_token_writes_once_and_a_replay_is_refused(adapter_stack: Stack) -> None:
    body = canonicalize(observation(value=10))
    grant = grant_for(body)
    token = minter(adapter_stack).mint(grant).token
    response = write(adapter_stack, token, body)
    assert response.http_status == 201
    assert response.fhir_id
    assert response.fhir_version == "1"
    code, reason = refused(adapter_stack, token, body)
    assert (code, reason) == (adapter_pb2.FAILURE_CLASS_TOKEN, "token.replayed")
    assert len(stored_for(adapter_stack, grant)) == 1


def test_fresh_token_for_the_same_proposal_does_not_write_twice(adapter_stack: Stack) -> None:
    """A sidecar retry after an ambiguous outcome: conditional create finds the first write."""
    body = canonicalize(observation(value=11))
    grant = grant_for(body)
    first = write(adapter_stack, minter(adapter_stack).mint(grant).token, body)
    second = write(adapter_stack, minter(adapter_stack).mint(grant).token, body)
    assert second.already_existed
    assert second.fhir_id == first.fhir_id
    assert second.http_status == 200
    assert len(stored_for(adapter_stack, grant)) == 1


def test_token_for_another_audience_is_refused(adapter_stack: Stack) -> None:
    body = canonicalize(observation(value=12))
    grant = grant_for(body)
    token = minter(adapter_stack, audience="some-other-adapter").mint(grant).token
    assert refused(adapter_stack, token, body) == (
        adapter_pb2.FAILURE_CLASS_TOKEN,
        "token.wrong_audience",
    )
    assert stored_for(adapter_stack, grant) == []


def _custom_token(stack: Stack, grant: WriteGrant, **overrides: Any) -> str:
    key = keys.load_private(stack.workdir / "keys" / "token-signing.jwk")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "chartgate-sidecar",
        "aud": "chartgate-adapter",
        "sub": "Practitioner/1",
        "client_id": "agent-1",
        "iat": now,
        "exp": now + 30,
        "jti": uuid.uuid4().hex,
        "scope": grant.scope,
        "patient": grant.patient_id,
        "tenant": grant.tenant_id,
        "authorization_details": [
            {
                "type": "chartgate_fhir_write",
                "proposal_id": grant.proposal_id,
                "operation": grant.operation,
                "target": grant.target,
                "payload_sha256": grant.payload_sha256,
            }
        ],
    }
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid}
    header.update(overrides.pop("header", {}))
    signing = overrides.pop("signing_key", None) or key.jwk
    claims.update(overrides)
    return jwt.encode(header, claims, signing, algorithms=["EdDSA"])


def test_expired_token_is_refused(adapter_stack: Stack) -> None:
    body = canonicalize(observation(value=13))
    grant = grant_for(body)
    now = int(time.time())
    token = _custom_token(adapter_stack, grant, iat=now - 120, exp=now - 60)
    assert refused(adapter_stack, token, body) == (adapter_pb2.FAILURE_CLASS_TOKEN, "token.expired")
    assert stored_for(adapter_stack, grant) == []


def test_swapped_body_is_refused(adapter_stack: Stack) -> None:
    minted_for = canonicalize(observation(value=14))
    swapped = canonicalize(observation(value=999))
    grant = grant_for(minted_for)
    token = minter(adapter_stack).mint(grant).token
    assert refused(adapter_stack, token, swapped) == (
        adapter_pb2.FAILURE_CLASS_PAYLOAD,
        "payload.hash_mismatch",
    )
    assert stored_for(adapter_stack, grant) == []
    # The refused attempt did not burn the token: the right body still goes through once.
    assert write(adapter_stack, token, minted_for).http_status == 201


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"header": {"typ": "JWT"}}, "token.wrong_type"),
        ({"exp": int(time.time()) + 3600}, "token.lifetime"),
        ({"iss": "someone-else"}, "token.claims"),
        ({"scope": "patient/Condition.c"}, "token.scope"),
        ({"authorization_details": []}, "token.claims"),
    ],
    ids=["typ-not-at+jwt", "lifetime-over-60s", "wrong-issuer", "wrong-scope", "no-write-detail"],
)
def test_malformed_tokens_are_refused(
    adapter_stack: Stack, overrides: dict[str, Any], reason: str
) -> None:
    body = canonicalize(observation(value=15))
    grant = grant_for(body)
    token = _custom_token(adapter_stack, grant, **overrides)
    code, got = refused(adapter_stack, token, body)
    assert code == adapter_pb2.FAILURE_CLASS_TOKEN
    assert got == reason
    assert stored_for(adapter_stack, grant) == []


def test_token_signed_by_an_unknown_key_is_refused(adapter_stack: Stack) -> None:
    body = canonicalize(observation(value=16))
    grant = grant_for(body)
    forger = keys.generate("token")
    known_kid = keys.load_private(adapter_stack.workdir / "keys" / "token-signing.jwk").kid
    token = _custom_token(adapter_stack, grant, header={"kid": known_kid}, signing_key=forger.jwk)
    assert refused(adapter_stack, token, body) == (adapter_pb2.FAILURE_CLASS_TOKEN, "token.invalid")
    assert stored_for(adapter_stack, grant) == []


def test_body_for_another_patient_than_the_token_is_refused(adapter_stack: Stack) -> None:
    body = canonicalize(observation(patient="p-other", value=17))
    grant = grant_for(body, patient=PATIENT)
    token = minter(adapter_stack).mint(grant).token
    assert refused(adapter_stack, token, body) == (
        adapter_pb2.FAILURE_CLASS_PAYLOAD,
        "payload.wrong_patient",
    )
    assert stored_for(adapter_stack, grant) == []


def test_update_of_another_patients_resource_is_refused(adapter_stack: Stack) -> None:
    """An update naming only an id cannot reach into another chart: the adapter reads it first."""
    body = canonicalize({"resourceType": "Patient", "id": "p-other", "active": False})
    grant = WriteGrant(
        proposal_id=f"pr-{uuid.uuid4().hex}",
        tenant_id="t1",
        agent_id="agent-1",
        on_behalf_of="",
        patient_id=PATIENT,
        scope="patient/Patient.u",
        operation="update",
        target="Patient/p-other",
        payload_sha256=sha256_hex(body),
    )
    token = minter(adapter_stack).mint(grant).token
    code, reason = refused(adapter_stack, token, body)
    assert (code, reason) == (adapter_pb2.FAILURE_CLASS_PAYLOAD, "payload.wrong_patient")
    other = fhir_search(adapter_stack.fhir_base, "Patient", _id="p-other")[0]
    assert other["active"] is True


def read_current(stack: Stack, token: str, body: bytes) -> adapter_pb2.ReadResponse:
    with grpc.insecure_channel(stack.adapter_target) as channel:
        return adapter_pb2_grpc.AdapterStub(channel).ReadCurrent(
            adapter_pb2.LookupRequest(token=token, resource_json=body), timeout=10
        )


def update_grant(body: bytes, target: str, *, lookup: bool) -> WriteGrant:
    return WriteGrant(
        proposal_id=f"pr-{uuid.uuid4().hex}",
        tenant_id="t1",
        agent_id="agent-1",
        on_behalf_of="",
        patient_id=PATIENT,
        scope="patient/Patient.rs" if lookup else "patient/Patient.u",
        operation="update",
        target=target,
        payload_sha256=sha256_hex(body),
        lookup=lookup,
    )


def test_a_reviewer_diff_reads_the_current_version_once_and_only_in_the_patients_chart(
    adapter_stack: Stack,
) -> None:
    """ReadCurrent (the Review API's diff): a one-use look-up token, the token's patient only."""
    body = canonicalize({"resourceType": "Patient", "id": PATIENT, "active": False})
    token = minter(adapter_stack).mint(update_grant(body, f"Patient/{PATIENT}", lookup=True))
    current = read_current(adapter_stack, token.token, body)
    assert current.found
    assert json.loads(current.resource_json)["id"] == PATIENT
    assert current.fhir_version
    again = read_current(adapter_stack, token.token, body)
    assert (again.found, again.reason) == (False, "token.replayed")
    # A write token does not read; a look-up token for another patient's resource reads nothing.
    write_token = minter(adapter_stack).mint(update_grant(body, f"Patient/{PATIENT}", lookup=False))
    refused_write = read_current(adapter_stack, write_token.token, body)
    assert (refused_write.found, refused_write.reason) == (False, "token.scope")
    other = canonicalize({"resourceType": "Patient", "id": "p-other", "active": False})
    foreign = minter(adapter_stack).mint(update_grant(other, "Patient/p-other", lookup=True))
    answer = read_current(adapter_stack, foreign.token, other)
    assert (answer.found, answer.reason) == (False, "payload.wrong_patient")
    assert answer.resource_json == b""
    # And a look-up token never writes.
    fresh = minter(adapter_stack).mint(update_grant(body, f"Patient/{PATIENT}", lookup=True))
    assert refused(adapter_stack, fresh.token, body) == (
        adapter_pb2.FAILURE_CLASS_TOKEN,
        "token.scope",
    )
    assert (
        fhir_search(adapter_stack.fhir_base, "Patient", _id=PATIENT)[0].get("active") is not False
    )


def test_a_resent_create_keeps_the_first_attempts_provenance(adapter_stack: Stack) -> None:
    # The first attempt wrote the resource and its Provenance in one transaction; a clinician
    # then changed the resource. A resend of the same proposal finds the resource and must not
    # point the Provenance at the clinician's version.
    body = canonicalize(observation(value=11))
    grant = grant_for(body)
    first = write(adapter_stack, minter(adapter_stack).mint(grant).token, body)
    assert first.written
    assert not first.already_existed
    assert first.provenance_id == provenance_id(grant.proposal_id)
    prov_url = f"{adapter_stack.fhir_base}/Provenance/{first.provenance_id}"
    written = httpx.get(prov_url, timeout=10).json()
    assert written["target"][0]["reference"] == (
        f"Observation/{first.fhir_id}/_history/{first.fhir_version}"
    )
    [stored] = stored_for(adapter_stack, grant)
    edited = {**stored, "status": "amended"}
    httpx.put(
        f"{adapter_stack.fhir_base}/Observation/{first.fhir_id}", json=edited, timeout=10
    ).raise_for_status()
    again = write(adapter_stack, minter(adapter_stack).mint(replace(grant, attempt=2)).token, body)
    assert again.written
    assert again.already_existed
    assert again.provenance_id == ""
    assert httpx.get(prov_url, timeout=10).json() == written  # not rewritten, not re-versioned
    assert len(stored_for(adapter_stack, grant)) == 1


def test_a_resent_create_that_finds_nothing_writes_the_resource_and_its_provenance(
    adapter_stack: Stack,
) -> None:
    body = canonicalize(observation(value=12))
    grant = replace(grant_for(body), attempt=3)
    done = write(adapter_stack, minter(adapter_stack).mint(grant).token, body)
    assert done.written
    assert not done.already_existed
    assert done.provenance_id == provenance_id(grant.proposal_id)
    prov = httpx.get(f"{adapter_stack.fhir_base}/Provenance/{done.provenance_id}", timeout=10)
    assert prov.json()["target"] == [
        {"reference": f"Observation/{done.fhir_id}/_history/{done.fhir_version}"}
    ]


@pytest.mark.parametrize("attempt", [0, -1, True, "2", 1.5, 10**7])
def test_a_malformed_attempt_is_refused(adapter_stack: Stack, attempt: object) -> None:
    body = canonicalize(observation(value=13.5))
    grant = grant_for(body)
    detail = {
        "type": "chartgate_fhir_write",
        "proposal_id": grant.proposal_id,
        "operation": grant.operation,
        "target": grant.target,
        "payload_sha256": grant.payload_sha256,
        "attempt": attempt,
    }
    token = _custom_token(adapter_stack, grant, authorization_details=[detail])
    assert refused(adapter_stack, token, body) == (
        adapter_pb2.FAILURE_CLASS_TOKEN,
        "token.claims",
    )
    assert stored_for(adapter_stack, grant) == []


@pytest.mark.parametrize(
    ("fhir_id", "version"),
    [("o-1/_history/1?x=", "1"), ("..", "1"), ("o-1", "1/../../Patient/p-other"), ("", "1")],
)
def test_a_read_back_names_a_fhir_id_and_version_nothing_else(
    adapter_stack: Stack, fhir_id: str, version: str
) -> None:
    body = canonicalize(observation(value=14.5))
    grant = replace(grant_for(body), scope="patient/Observation.rs", lookup=True)
    token = minter(adapter_stack).mint(grant).token
    with grpc.insecure_channel(adapter_stack.adapter_target) as channel:
        answer = adapter_pb2_grpc.AdapterStub(channel).ReadBack(
            adapter_pb2.LookupRequest(
                token=token, resource_json=body, fhir_id=fhir_id, fhir_version=version
            ),
            timeout=10,
        )
    assert not answer.found
    assert answer.reason == "payload.no_version"
