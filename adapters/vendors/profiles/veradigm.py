"""Veradigm (Veradigm and Altera FHIR API R4): read-only by the vendor's word; writes go through its Unity API."""

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

_OVERVIEW = "https://developer.veradigm.com/Fhir/ProcessOverview"
_INTRO = "https://developer.veradigm.com/Fhir/Introduction"
_READ_ONLY = (
    "'The Veradigm FHIR API is limited to read-only access'; reads and writes go through the "
    "proprietary, bidirectional Unity API"
)

PROFILE = VendorProfile(
    name="veradigm",
    title="Veradigm",
    summary="Veradigm (and Altera) FHIR API R4: read-only; no FHIR write. Writes need the "
    "proprietary Unity API, which Chartgate does not speak.",
    writes=Writes(
        source=Source(url=_OVERVIEW, verification=Verification.VENDOR, note=_READ_ONLY),
    ),
    conditionals=Conditionals(
        conditional_create=False,
        conditional_update=False,
        transactions=False,
        source=Source(url=_OVERVIEW, verification=Verification.VENDOR, note=_READ_ONLY),
    ),
    requirements=Requirements(
        source=Source(
            url=_OVERVIEW,
            verification=Verification.VENDOR,
            note="nothing to write, so nothing required",
        )
    ),
    rate_limit=RateLimit(
        description="no published limit found",
        source=Source(url=_INTRO, verification=Verification.UNVERIFIED),
    ),
    errors=ErrorReporting(
        format="OperationOutcome (assumed)",
        unsupported_write_status=UNSUPPORTED_WRITE_STATUS,
        source=Source(url=_INTRO, verification=Verification.UNVERIFIED),
    ),
    token=TokenEndpoint(
        algorithms=SMART_ALGORITHMS,
        max_assertion_lifetime_seconds=SMART_MAX_ASSERTION_SECONDS,
        notes="the token URL comes from the server's SMART configuration; the algorithms and "
        "lifetimes are SMART's, unverified",
        source=Source(url=_INTRO, verification=Verification.UNVERIFIED),
    ),
)
