"""Epic (Epic on FHIR, R4): writes per its sandbox CapabilityStatement, backend OAuth per its OAuth 2.0 guide."""

from __future__ import annotations

from adapters.vendors.profile import (
    Conditionals,
    ErrorReporting,
    RateLimit,
    Requirements,
    Source,
    TokenEndpoint,
    VendorProfile,
    Verification,
    Writes,
)
from adapters.vendors.profiles._standards import UNSUPPORTED_WRITE_STATUS

_METADATA = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4/metadata"
_OAUTH = "https://fhir.epic.com/Documentation?docId=oauth2"
_VITALS_CREATE = "https://fhir.epic.com/Sandbox?api=963"
_DOCS = "https://fhir.epic.com/Documentation"

PROFILE = VendorProfile(
    name="epic",
    title="Epic",
    summary="Epic on FHIR R4: create and update of a listed subset; each organization enables "
    "its own APIs, so the list is an upper bound.",
    writes=Writes(
        create=frozenset(
            {
                "AllergyIntolerance",
                "BodyStructure",
                "Communication",
                "ConceptMap",
                "Condition",
                "DocumentReference",
                "Observation",
                "Patient",
                "Procedure",
                "QuestionnaireResponse",
                "ServiceRequest",
            }
        ),
        update=frozenset(
            {
                "BodyStructure",
                "DiagnosticReport",
                "DocumentReference",
                "Observation",
                "Procedure",
                "ServiceRequest",
                "Task",
            }
        ),
        source=Source(
            url=_METADATA,
            verification=Verification.THIRD_PARTY,
            note="the sandbox CapabilityStatement's interactions as listed by "
            "github.com/ballerina-platform/module-ballerinax-health.clients emr/epic/README.md",
        ),
    ),
    conditionals=Conditionals(
        # Nothing public says Epic honours If-None-Exist, so it is not relied on: a server that
        # ignored the header would store a retry twice. The adapter emulates it instead.
        conditional_create=False,
        conditional_update=False,
        transactions=False,
        source=Source(
            url=_DOCS,
            verification=Verification.UNVERIFIED,
            note="no public statement of conditional create, conditional update or "
            "transaction support was found; assumed absent",
        ),
    ),
    requirements=Requirements(
        elements={
            "Observation": (
                "status",
                "category",
                "code",
                "effectiveDateTime",
                "subject",
                "valueString",
            )
        },
        fixed={"Observation": {"status": "final"}},
        source=Source(
            url=_VITALS_CREATE,
            verification=Verification.THIRD_PARTY,
            note="Observation.Create (Vitals) as quoted by third-party tool definitions: only "
            "status final is filed, the value travels as valueString, and code names an "
            "organization-specific flowsheet row (not checked here)",
        ),
    ),
    rate_limit=RateLimit(
        description="no published limit found",
        source=Source(url=_DOCS, verification=Verification.UNVERIFIED),
    ),
    errors=ErrorReporting(
        format="OperationOutcome (assumed; no public error catalogue was read)",
        unsupported_write_status=UNSUPPORTED_WRITE_STATUS,
        source=Source(url=_DOCS, verification=Verification.UNVERIFIED),
    ),
    token=TokenEndpoint(
        url="https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token",
        algorithms=frozenset({"RS256", "RS384", "RS512", "ES256", "ES384"}),
        max_assertion_lifetime_seconds=300,
        access_token_lifetime_seconds=3600,
        notes="client_credentials + client_assertion (jwt-bearer); EC keys only from a JWK Set "
        "URL, which backend apps must host from February 2026 (Q-7365177); jti at most 151 "
        "characters, a string, never reused while valid; exp, nbf and iat within 5 minutes; "
        "the organization maps the client to an Epic user before any token is issued; the "
        "URL above is the sandbox's (each organization has its own)",
        source=Source(
            url=_OAUTH,
            verification=Verification.VENDOR,
            note="expires_in 3600 is the documented example, not a promise",
        ),
    ),
)
