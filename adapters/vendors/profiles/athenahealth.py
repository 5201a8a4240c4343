"""athenahealth (athenaOne FHIR R4): read-mostly; every resource names its practice with the ah-practice extension."""

from __future__ import annotations

from adapters.vendors.profile import (
    ANY_TYPE,
    Conditionals,
    ErrorReporting,
    ErrorRule,
    ExtensionRule,
    RateLimit,
    Requirements,
    Setting,
    Source,
    TokenEndpoint,
    VendorProfile,
    Verification,
    Writes,
)
from adapters.vendors.profiles._standards import (
    SMART_ALGORITHMS,
    SMART_MAX_ASSERTION_SECONDS,
    UNSUPPORTED_WRITE_STATUS,
)

_METADATA = "https://api.preview.platform.athenahealth.com/fhir/r4/metadata"
_PRACTICE = "https://fhir.athena.io/athenacoreext/StructureDefinition-ah-practice.html"
_BEST_PRACTICES = "https://docs.athenahealth.com/api/guides/best-practices"
_COBALT = "https://explorer.usecobalt.com/ehr/athenahealth"
_TOKEN_BLOG = "https://cloudista.org/blog/athena-health-api-python"  # noqa: S105 - a URL

_THROTTLE_NOTE = (
    "a third party reports athenahealth's limits as enforced with 403; the 'Developer Over "
    "Qps' / 'Developer Over Rate' wording is the API gateway's (athenahealth's own page "
    "quotes its 'Developer Inactive' 401), unverified for the FHIR API"
)

PROFILE = VendorProfile(
    name="athenahealth",
    title="athenahealth",
    summary="athenaOne FHIR R4: read and search, and create of QuestionnaireResponse only; "
    "other writes go through athenahealth's proprietary API.",
    writes=Writes(
        create=frozenset({"QuestionnaireResponse"}),
        source=Source(
            url=_METADATA,
            verification=Verification.THIRD_PARTY,
            note="the preview CapabilityStatement's interactions as listed by "
            "github.com/ballerina-platform/module-ballerinax-health.clients emr/athena/README.md",
        ),
    ),
    conditionals=Conditionals(
        conditional_create=False,
        conditional_update=False,
        transactions=False,
        source=Source(
            url=_METADATA,
            verification=Verification.UNVERIFIED,
            note="no conditional interaction is listed; assumed absent",
        ),
    ),
    requirements=Requirements(
        extensions=(
            ExtensionRule(
                url="https://fhir.athena.io/StructureDefinition/ah-practice",
                value_reference="Organization/a-1.Practice-{practice_id}",
                resource_types=frozenset({ANY_TYPE}),
            ),
        ),
        source=Source(
            url=_PRACTICE,
            verification=Verification.UNVERIFIED,
            note="the extension, its URL and the a-1.Practice-{id} reference are athenahealth's "
            "published definition (a resource-level extension naming the practice of every "
            "athenahealth resource); that a create must carry it is Chartgate's inference",
        ),
    ),
    rate_limit=RateLimit(
        scope="per app: a daily quota of API requests, a per-minute limit of OAuth requests",
        description="quotas and what remains are returned in response headers; the numbers are "
        "set per app and not published",
        source=Source(url=_BEST_PRACTICES, verification=Verification.VENDOR),
    ),
    errors=ErrorReporting(
        format="OperationOutcome from the FHIR API (assumed); plain-text gateway errors",
        unsupported_write_status=UNSUPPORTED_WRITE_STATUS,
        rules=(
            ErrorRule(
                status=403,
                contains="over qps",
                failure="throttled",
                reason="vendor.throttled",
                source=Source(
                    url=_COBALT, verification=Verification.THIRD_PARTY, note=_THROTTLE_NOTE
                ),
            ),
            ErrorRule(
                status=403,
                contains="over rate",
                failure="throttled",
                reason="vendor.quota_exhausted",
                source=Source(
                    url=_COBALT, verification=Verification.THIRD_PARTY, note=_THROTTLE_NOTE
                ),
            ),
        ),
        source=Source(url=_BEST_PRACTICES, verification=Verification.UNVERIFIED),
    ),
    token=TokenEndpoint(
        url="https://api.platform.athenahealth.com/oauth2/v1/token",
        algorithms=SMART_ALGORITHMS,
        max_assertion_lifetime_seconds=SMART_MAX_ASSERTION_SECONDS,
        notes="2-legged client_credentials; apps hold secrets or JWKs (athenahealth's best "
        "practices page); the token URL is from a third-party account, the algorithms are "
        "SMART's, unverified",
        source=Source(url=_TOKEN_BLOG, verification=Verification.THIRD_PARTY),
    ),
    settings=(
        Setting(
            name="practice_id",
            description="the athenahealth practice (tenant) id written into ah-practice",
            pattern=r"[0-9]{1,10}",
            example="195900",
        ),
    ),
)
