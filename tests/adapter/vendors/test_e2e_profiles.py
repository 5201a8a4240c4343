"""Each vendor profile through real processes: the store behaving like the vendor, the adapter using the profile."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from adapters.vendors.profile import INTERACTIONS, VendorProfile
from adapters.vendors.registry import get_profile, profile_names
from chartgate import keys
from chartgate.canonical import canonicalize, sha256_hex
from chartgate.compartment import PATIENT_ELEMENT
from chartgate.devstore.storage import Storage
from chartgate.stack import Stack, start_adapter, start_fhir_store
from chartgate.v1 import adapter_pb2, adapter_pb2_grpc
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from sidecar.tokens.mint import TokenMinter, WriteGrant
from tests.adapter.vendors.fake_ehr import body_for, examples
from tests.support import fhir_search

PATIENT = "p-vendor"
SEEDED = "obs-seed"
# Which write of each kind to show, in order of preference, among the types Chartgate writes.
CREATE_TYPES = ("Observation", "Condition", "AllergyIntolerance")
UPDATE_TYPES = ("Observation", "Patient")


@dataclass
class VendorStack:
    profile: VendorProfile
    stack: Stack
    minter: TokenMinter

    def write(
        self, operation: str, target: str, resource: dict[str, Any], proposal_id: str
    ) -> adapter_pb2.WriteResponse:
        body = canonicalize(resource)
        letter = "c" if operation == "create" else "u"
        grant = WriteGrant(
            proposal_id=proposal_id,
            tenant_id="t1",
            agent_id="agent-1",
            on_behalf_of="Practitioner/1",
            patient_id=PATIENT,
            scope=f"patient/{resource['resourceType']}.{letter}",
            operation=operation,
            target=target,
            payload_sha256=sha256_hex(body),
        )
        token = self.minter.mint(grant).token
        with grpc.insecure_channel(self.stack.adapter_target) as channel:
            answer: adapter_pb2.WriteResponse = adapter_pb2_grpc.AdapterStub(channel).Write(
                adapter_pb2.WriteRequest(token=token, resource_json=body), timeout=15
            )
        return answer

    def store_log(self) -> str:
        return self.stack.process("fhir-store").log_path.read_text(errors="replace")


@pytest.fixture(scope="module", params=profile_names())
def vendor(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VendorStack]:
    profile = get_profile(request.param)
    stack = Stack(workdir=tmp_path_factory.mktemp(f"vendor-{profile.name}"))
    # Seeded in the store's file before it starts: a vendor that takes no update of Patient
    # would refuse the seeding over HTTP, as it should.
    storage = Storage(stack.workdir / "fhir-store" / "store.sqlite3")
    storage.update("Patient", PATIENT, {"resourceType": "Patient", "id": PATIENT, "active": True})
    storage.update("Observation", SEEDED, {**body_for("Observation", PATIENT), "id": SEEDED})
    storage.close()
    settings = [f"--vendor-setting={k}={v}" for k, v in examples(profile).items()]
    try:
        start_fhir_store(stack, extra_args=["--behave-like", profile.name])
        start_adapter(stack, extra_args=["--vendor", profile.name, *settings])
        key = keys.load_private(stack.workdir / "keys" / "token-signing.jwk")
        minter = TokenMinter(
            key, issuer="chartgate-sidecar", audience="chartgate-adapter", ttl_seconds=60
        )
        yield VendorStack(profile, stack, minter)
    finally:
        stack.stop()


def test_the_store_behaves_like_the_vendor(vendor: VendorStack) -> None:
    statement = httpx.get(f"{vendor.stack.fhir_base}/metadata").json()
    assert f"behaving like {vendor.profile.title}" in statement["implementation"]["description"]


def test_a_create_is_written_exactly_once_with_the_profiles_identifiers(
    vendor: VendorStack,
) -> None:
    profile = vendor.profile
    kinds = [t for t in CREATE_TYPES if profile.accepts("create", t)]
    if not kinds:
        assert not any(profile.accepts("create", t) for t in PATIENT_ELEMENT)
        return  # this vendor takes no create Chartgate could send: see the refusal below
    resource_type = kinds[0]
    proposal = f"pr-{uuid.uuid4().hex}"
    first = vendor.write("create", resource_type, body_for(resource_type, PATIENT), proposal)
    assert first.written, (first.reason, first.message)
    assert (first.http_status, first.already_existed) == (201, False)
    # The sidecar's resend after an ambiguous outcome: a fresh token, the same proposal.
    again = vendor.write("create", resource_type, body_for(resource_type, PATIENT), proposal)
    assert again.written, (again.reason, again.message)
    assert again.already_existed
    assert again.fhir_id == first.fhir_id
    (stored,) = fhir_search(
        vendor.stack.fhir_base, resource_type, identifier=f"{PROPOSAL_IDENTIFIER_SYSTEM}|{proposal}"
    )
    assert stored["id"] == first.fhir_id
    for rule in profile.requirements.extensions:
        if profile.requirements.applies(rule.resource_types, resource_type):
            assert rule.url in json.dumps(stored.get("extension", []))


def test_an_update_is_written_once(vendor: VendorStack) -> None:
    profile = vendor.profile
    kinds = [t for t in UPDATE_TYPES if profile.accepts("update", t)]
    if not kinds:
        assert not any(profile.accepts("update", t) for t in PATIENT_ELEMENT)
        return
    resource_type = kinds[0]
    rid = PATIENT if resource_type == "Patient" else SEEDED
    change: dict[str, Any] = (
        {"active": False} if resource_type == "Patient" else {"valueString": "80"}
    )
    partial = {"resourceType": resource_type, "id": rid, **change}
    done = vendor.write("update", f"{resource_type}/{rid}", partial, f"pr-{uuid.uuid4().hex}")
    assert done.written, (done.reason, done.message)
    stored = httpx.get(f"{vendor.stack.fhir_base}/{resource_type}/{rid}").json()
    assert {k: stored[k] for k in change} == change
    assert stored["meta"]["versionId"] == done.fhir_version == "2"


def test_an_unsupported_write_is_refused_before_the_wire(vendor: VendorStack) -> None:
    profile = vendor.profile
    refused = [
        (interaction, t)
        for t in sorted(PATIENT_ELEMENT)
        for interaction in INTERACTIONS
        if not profile.accepts(interaction, t)
    ]
    if not refused:
        assert profile.writes.create == profile.writes.update == frozenset({"*"})
        return  # plain FHIR takes every write
    interaction, resource_type = refused[0]
    if interaction == "create":
        target, resource = resource_type, body_for(resource_type, PATIENT)
    else:
        rid = PATIENT if resource_type == "Patient" else "any-1"
        target, resource = f"{resource_type}/{rid}", {"resourceType": resource_type, "id": rid}
    answer = vendor.write(interaction, target, resource, f"pr-{uuid.uuid4().hex}")
    assert not answer.written
    assert answer.failure_class == adapter_pb2.FAILURE_CLASS_PAYLOAD
    assert answer.reason == "vendor.unsupported"
    assert answer.message.startswith(
        f"{profile.name} does not accept {interaction} of {resource_type}"
    )
    # Nothing reached the store: its access log (which has the readiness probes, so it is
    # being written) shows no request for the type at all, not even an update's read.
    log = vendor.store_log()
    assert "GET /fhir/metadata 200" in log
    assert f" /fhir/{resource_type}" not in log
