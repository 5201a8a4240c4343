"""The suite every registered vendor profile must pass: one file, parametrized over the registry."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from adapters.errors import AdapterError, FailureClass
from adapters.vendors.profile import INTERACTIONS, Interaction, VendorProfile, Verification
from adapters.vendors.registry import all_profiles, profile_names
from adapters.vendors.transport import VendorTransport
from chartgate.compartment import PATIENT_ELEMENT
from chartgate.devstore.outcome import FhirError
from chartgate.devstore.resource_types import RESOURCE_TYPES
from chartgate.devstore.vendor_mode import VendorMode
from chartgate.write_token import PROPOSAL_IDENTIFIER_SYSTEM
from tests.adapter.vendors.fake_ehr import BASE, PATIENT, FakeEhr, body_for, client, examples

DOC = Path(__file__).resolve().parents[3] / "docs" / "adapters.md"
PROFILES = all_profiles()
# The types Chartgate writes (each names its patient), with every interaction.
WRITES = [(i, t) for t in sorted(PATIENT_ELEMENT) for i in INTERACTIONS]
JOSE_ALGORITHMS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"}


def by_name(profile: VendorProfile) -> str:
    return profile.name


pytestmark = pytest.mark.parametrize("profile", PROFILES, ids=by_name)


def test_is_registered_under_its_module_name(profile: VendorProfile) -> None:
    module = Path(__file__).resolve().parents[3] / "adapters" / "vendors" / "profiles"
    assert (module / f"{profile.name}.py").exists() or (module / profile.name).is_dir()
    assert profile.name in profile_names()


def test_every_fact_names_its_source(profile: VendorProfile) -> None:
    for fact, source in profile.sources():
        assert source.url.startswith("https://"), fact
        assert source.unverified == (source.verification is not Verification.VENDOR), fact
        if source.verification is Verification.UNVERIFIED:
            # What could not be verified says so, or says why, in the module.
            assert source.note or fact in ("rate_limit", "errors", "token"), fact


def test_docs_show_the_profile_and_every_source(profile: VendorProfile) -> None:
    text = DOC.read_text()
    assert f"`{profile.name}`" in text
    for fact, source in profile.sources():
        assert source.url in text, f"{profile.name} {fact}: {source.url} is not in docs/adapters.md"


def test_writes_name_fhir_r4_types(profile: VendorProfile) -> None:
    for types in (profile.writes.create, profile.writes.update):
        assert types <= {*RESOURCE_TYPES, "*"}


def test_settings_have_valid_examples_and_are_required(profile: VendorProfile) -> None:
    for setting in profile.settings:
        assert re.fullmatch(setting.pattern, setting.example), setting.name
        with pytest.raises(ValueError, match=setting.name):
            VendorTransport(profile, base_url=BASE, settings={})
    with pytest.raises(ValueError, match="takes no setting"):
        profile.check_settings({**examples(profile), "no_such_setting": "1"})


def test_token_facts_are_coherent(profile: VendorProfile) -> None:
    assert profile.token.algorithms
    assert profile.token.algorithms <= JOSE_ALGORITHMS
    assert 0 < profile.token.max_assertion_lifetime_seconds <= 300  # SMART's ceiling
    assert profile.token_mismatches(sorted(profile.token.algorithms)[0], 60) == []
    assert profile.token_mismatches("HS256", 60)


@pytest.mark.parametrize(("interaction", "resource_type"), WRITES)
def test_a_write_not_taken_never_reaches_the_wire(
    profile: VendorProfile, interaction: Interaction, resource_type: str
) -> None:
    ehr = FakeEhr(conditional_create=profile.conditionals.conditional_create)
    fhir = client(profile, ehr)
    # A Patient is its own patient: its id is the token's patient.
    target = PATIENT if resource_type == "Patient" else "r-1"

    def write(interaction: Interaction) -> None:
        if interaction == "create":
            fhir.create(body_for(resource_type), "pr-contract")
        else:
            fhir.update({"resourceType": resource_type, "id": target, "active": True}, PATIENT)

    if interaction == "update":
        ehr.stored[(resource_type, target)] = {
            **body_for(resource_type),
            "id": target,
            "meta": {"versionId": "1"},
        }
    if profile.accepts(interaction, resource_type):
        write(interaction)
        assert ehr.wire("POST" if interaction == "create" else "PUT")
        return
    with pytest.raises(AdapterError) as info:
        write(interaction)
    assert (info.value.failure, info.value.reason) == (FailureClass.PAYLOAD, "vendor.unsupported")
    assert info.value.message.startswith(f"{profile.name} does not accept {interaction} of")
    assert ehr.wire("POST") == []
    assert ehr.wire("PUT") == []


@pytest.mark.parametrize(("interaction", "resource_type"), WRITES)
def test_the_store_behaving_like_it_refuses_the_same(
    profile: VendorProfile, interaction: Interaction, resource_type: str
) -> None:
    mode = VendorMode(profile)
    if profile.accepts(interaction, resource_type):
        mode.check_interaction(interaction, resource_type)
        return
    with pytest.raises(FhirError) as info:
        mode.check_interaction(interaction, resource_type)
    assert info.value.status == profile.errors.unsupported_write_status
    assert profile.title in str(info.value)


def test_creates_once_with_its_identifiers(profile: VendorProfile) -> None:
    # A type Chartgate writes where there is one, else any the vendor takes (athenahealth's
    # QuestionnaireResponse): the transport does not care whose compartment it is.
    chartgate = sorted(t for t in PATIENT_ELEMENT if profile.accepts("create", t))
    creatable = chartgate or sorted(profile.writes.create - {"*"})
    if not creatable:
        assert not any(profile.accepts("create", t) for t in PATIENT_ELEMENT)
        return  # a read-only API: every create is refused (test above)
    resource_type = creatable[0]
    ehr = FakeEhr(conditional_create=profile.conditionals.conditional_create)
    fhir = client(profile, ehr)
    first = fhir.create(body_for(resource_type), "pr-once")
    again = fhir.create(body_for(resource_type), "pr-once")
    assert (first.already_existed, again.already_existed) == (False, True)
    assert again.fhir_id == first.fhir_id
    (stored,) = ehr.of_type(resource_type)
    assert {"system": PROPOSAL_IDENTIFIER_SYSTEM, "value": "pr-once"} in stored["identifier"]
    required = profile.requirements
    for rule in required.extensions:
        if required.applies(rule.resource_types, resource_type):
            assert any(e["url"] == rule.url for e in stored["extension"])
    if profile.conditionals.conditional_create:
        assert all("If-None-Exist" in r.headers for r in ehr.wire("POST"))
    else:
        # Emulated: a search first, one create, and the header never sent.
        assert [r.method for r in ehr.requests] == ["GET", "POST", "GET"]
        assert all("If-None-Exist" not in r.headers for r in ehr.requests)


def test_each_error_rule_means_its_class(profile: VendorProfile) -> None:
    for rule in profile.errors.rules:
        said = f"<h1>{rule.contains or 'refused'}</h1>"

        def answer(
            request: httpx.Request, status: int = rule.status, text: str = said
        ) -> httpx.Response:
            return httpx.Response(status, text=text)

        with pytest.raises(AdapterError) as info:
            client(profile, answer).find_created("Observation", "pr-rule")
        assert (info.value.failure.value, info.value.reason) == (rule.failure, rule.reason)
        assert info.value.message.startswith(f"{profile.name}: HTTP {rule.status}")
        assert info.value.http_status == rule.status


def test_other_errors_keep_their_http_meaning(profile: VendorProfile) -> None:
    """An answer no rule matches is classified by adapters/fhir_client.py, as for any server."""
    for status, failure in ((400, FailureClass.VALIDATION), (409, FailureClass.CONFLICT)):

        def answer(request: httpx.Request, status: int = status) -> httpx.Response:
            return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": []})

        with pytest.raises(AdapterError) as info:
            client(profile, answer).find_created("Observation", "pr-plain")
        assert info.value.failure is failure
        assert info.value.reason.startswith("fhir.")
