"""eClinicalWorks (FHIR R4): create of a few clinical types, update of Patient only; 250 calls a minute per practice."""

from __future__ import annotations

from adapters.vendors.profile import (
    Conditionals,
    ErrorReporting,
    ErrorRule,
    RateLimit,
    Requirements,
    Source,
    TokenEndpoint,
    VendorProfile,
    Verification,
    Writes,
)
from adapters.vendors.profiles._standards import UNSUPPORTED_WRITE_STATUS

_PORTAL = "https://fhir.eclinicalworks.com/ecwopendev"
_COBALT = "https://explorer.usecobalt.com/ehr/eclinicalworks"
_ENDPOINTS = "https://app2.doordoc.com/docs/endpoints"
_CONSTRAINTS = "https://app2.doordoc.com/docs/constraints"

PROFILE = VendorProfile(
    name="eclinicalworks",
    title="eClinicalWorks",
    summary="eClinicalWorks FHIR R4: create of a few clinical types (each under a separate "
    "write contract), update of Patient only; 250 calls a minute per practice.",
    writes=Writes(
        create=frozenset(
            {
                "AllergyIntolerance",
                "Condition",
                "DocumentReference",
                "Encounter",
                "Immunization",
                "MedicationRequest",
                "Patient",
            }
        ),
        update=frozenset({"Patient"}),
        source=Source(
            url=_COBALT,
            verification=Verification.THIRD_PARTY,
            note="a third party's capability matrix: AllergyIntolerance and Condition create "
            "only (no update), Encounter create makes telephone encounters, Patient create and "
            f"update on v12.0.2/v12.0.3; the vendor's portal ({_PORTAL}) was not readable here",
        ),
    ),
    conditionals=Conditionals(
        conditional_create=False,
        conditional_update=False,
        transactions=False,
        source=Source(
            url=_PORTAL,
            verification=Verification.UNVERIFIED,
            note="no public statement found; assumed absent",
        ),
    ),
    requirements=Requirements(
        source=Source(
            url=_PORTAL,
            verification=Verification.UNVERIFIED,
            note="no required identifier, extension or profile found",
        )
    ),
    rate_limit=RateLimit(
        requests=250,
        per_seconds=60.0,
        scope="per base URL (practice code), FHIR calls, /authorize and /token together",
        description="over the limit: 429, and every request of the app refused until the minute "
        "ends (the counter resets at the start of each minute); effective 2025-10-07",
        source=Source(url=_ENDPOINTS, verification=Verification.THIRD_PARTY),
    ),
    errors=ErrorReporting(
        format="OperationOutcome (assumed)",
        unsupported_write_status=UNSUPPORTED_WRITE_STATUS,
        rules=(
            ErrorRule(
                status=429,
                failure="throttled",
                reason="vendor.throttled",
                # Blocked for the rest of the minute: without a Retry-After, the next minute.
                retry_after="next-minute",
                source=Source(url=_ENDPOINTS, verification=Verification.THIRD_PARTY),
            ),
        ),
        source=Source(url=_PORTAL, verification=Verification.UNVERIFIED),
    ),
    token=TokenEndpoint(
        algorithms=frozenset({"RS384"}),
        max_assertion_lifetime_seconds=300,
        access_token_lifetime_seconds=300,
        notes="RS384 only; the token URL is {iss}/oauth2/token; backend access tokens last "
        "300 s with no refresh token; the JWK Set URL must be allow-listed by eClinicalWorks",
        source=Source(url=_CONSTRAINTS, verification=Verification.THIRD_PARTY),
    ),
)
