"""Plain FHIR R4 (the local store, or any server that does what the specification says)."""

from __future__ import annotations

from adapters.vendors.profile import (
    ANY_TYPE,
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
from adapters.vendors.profiles._standards import (
    FHIR_R4_HTTP,
    FHIR_R4_OUTCOME,
    RFC_6585,
    RFC_9110_405,
    SMART_ALGORITHMS,
    SMART_BACKEND,
    SMART_MAX_ASSERTION_SECONDS,
    UNSUPPORTED_WRITE_STATUS,
)

_SPEC = "the specification itself; a real server states its subset in its CapabilityStatement"

PROFILE = VendorProfile(
    name="generic",
    title="Generic FHIR R4",
    summary="Any FHIR R4 server that honours the specification, Chartgate's local store included.",
    writes=Writes(
        create=frozenset({ANY_TYPE}),
        update=frozenset({ANY_TYPE}),
        source=Source(url=FHIR_R4_HTTP, verification=Verification.VENDOR, note=_SPEC),
    ),
    conditionals=Conditionals(
        # Conditional create (http.html#ccreate) and transactions (http.html#transaction) are
        # optional in R4; this profile assumes both, as the local store serves them: the write
        # and its Provenance then go in one transaction. Conditional update is not used.
        conditional_create=True,
        conditional_update=False,
        transactions=True,
        source=Source(
            url=f"{FHIR_R4_HTTP}#transaction",
            verification=Verification.VENDOR,
            note="conditional create and transactions assumed: check the server's "
            "CapabilityStatement (rest.interaction transaction, resource.conditionalCreate)",
        ),
    ),
    requirements=Requirements(
        source=Source(
            url=FHIR_R4_HTTP,
            verification=Verification.VENDOR,
            note="the specification requires no identifier, extension or profile",
        )
    ),
    rate_limit=RateLimit(
        description="none defined by FHIR; a server's 429 and its Retry-After are honoured",
        source=Source(url=RFC_6585, verification=Verification.VENDOR, note="HTTP standard"),
    ),
    errors=ErrorReporting(
        format="OperationOutcome with the HTTP status of http.html (400, 404, 409, 412, 422, ...)",
        unsupported_write_status=UNSUPPORTED_WRITE_STATUS,
        source=Source(
            url=FHIR_R4_OUTCOME,
            verification=Verification.VENDOR,
            note=f"405 for a write not taken is Chartgate's HTTP reading ({RFC_9110_405})",
        ),
    ),
    token=TokenEndpoint(
        algorithms=SMART_ALGORITHMS,
        max_assertion_lifetime_seconds=SMART_MAX_ASSERTION_SECONDS,
        access_token_lifetime_seconds=300,
        notes="client_credentials with a private_key_jwt assertion; the token URL is the "
        "server's (.well-known/smart-configuration); access tokens SHOULD NOT exceed 300 s",
        source=Source(url=SMART_BACKEND, verification=Verification.VENDOR),
    ),
)
