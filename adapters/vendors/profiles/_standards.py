"""Sources the profiles share: the FHIR R4 and SMART specifications and the HTTP RFCs (not a vendor)."""

from __future__ import annotations

from typing import Final

FHIR_R4_HTTP: Final = "https://hl7.org/fhir/R4/http.html"
FHIR_R4_OUTCOME: Final = "https://hl7.org/fhir/R4/operationoutcome.html"
SMART_BACKEND: Final = "https://hl7.org/fhir/smart-app-launch/backend-services.html"
RFC_6585: Final = "https://www.rfc-editor.org/rfc/rfc6585#section-4"
RFC_9110_405: Final = "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.6"

# What SMART Backend Services asks of a client assertion (backend-services.html; the adapter's
# adapters/smart/assertion.py follows it): the algorithms a server SHALL support and the
# longest lifetime, used where a vendor publishes nothing of its own.
SMART_ALGORITHMS: Final = frozenset({"RS384", "ES384"})
SMART_MAX_ASSERTION_SECONDS: Final = 300

# Chartgate's own choice where a vendor does not say how it refuses a write it does not take:
# 405, the HTTP answer for a method the target does not allow. Never a vendor fact.
UNSUPPORTED_WRITE_STATUS: Final = 405
