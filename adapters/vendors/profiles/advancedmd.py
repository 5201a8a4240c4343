"""AdvancedMD (FHIR R4): its CapabilityStatement declares read and search only, so every FHIR write is refused."""

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
from adapters.vendors.profiles._standards import (
    SMART_ALGORITHMS,
    SMART_MAX_ASSERTION_SECONDS,
    UNSUPPORTED_WRITE_STATUS,
)

_METADATA = "https://providerapi.advancedmd.com/v1/r4/metadata"
_COPY = (
    "CapabilityStatement version 20220520, read from the copy harvested in "
    "github.com/api-evangelist/advancedmd fhir/advancedmd-fhir-r4-capabilitystatement.json"
)

PROFILE = VendorProfile(
    name="advancedmd",
    title="AdvancedMD",
    summary="AdvancedMD FHIR R4 (US Core, bulk data): read and search only; no FHIR write.",
    writes=Writes(
        source=Source(url=_METADATA, verification=Verification.VENDOR, note=_COPY),
    ),
    conditionals=Conditionals(
        conditional_create=False,
        conditional_update=False,
        transactions=False,
        source=Source(
            url=_METADATA,
            verification=Verification.VENDOR,
            note="no create, update or system interaction is declared; " + _COPY,
        ),
    ),
    requirements=Requirements(
        source=Source(
            url=_METADATA,
            verification=Verification.VENDOR,
            note="nothing to write, so nothing required; " + _COPY,
        )
    ),
    rate_limit=RateLimit(
        description="no published limit found",
        source=Source(url=_METADATA, verification=Verification.UNVERIFIED),
    ),
    errors=ErrorReporting(
        format="OperationOutcome (assumed)",
        unsupported_write_status=UNSUPPORTED_WRITE_STATUS,
        source=Source(url=_METADATA, verification=Verification.UNVERIFIED),
    ),
    token=TokenEndpoint(
        url="https://providerapi.advancedmd.com/v1/oauth2/token",
        algorithms=SMART_ALGORITHMS,
        max_assertion_lifetime_seconds=SMART_MAX_ASSERTION_SECONDS,
        notes="the token URL is the CapabilityStatement's oauth-uris; the algorithms and "
        "lifetimes are SMART's, unverified",
        source=Source(url=_METADATA, verification=Verification.UNVERIFIED, note=_COPY),
    ),
)
