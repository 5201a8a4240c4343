"""The CapabilityStatement served at [base]/metadata (R4 http.html#capabilities, capabilitystatement.html)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from chartgate.devstore.resource_types import RESOURCE_TYPES
from chartgate.devstore.storage import fhir_instant

_INTERACTIONS: Final = ("read", "vread", "update", "delete", "create", "search-type")

# Declared once for the whole server (CapabilityStatement.rest.searchParam) rather than per type:
# a parameter applies to each type that has the element, which the server reads from the type's
# model on first use instead of importing all 128 models to write this document.
_SEARCH_PARAMS: Final = (
    ("_id", "token", "The logical id of the resource."),
    (
        "identifier",
        "token",
        "Identifier: code, system|code, |code or system|. Types with an identifier.",
    ),
    ("patient", "reference", "The `patient` element, else `subject` when it refers to a Patient."),
    ("subject", "reference", "The `subject` element. Types with a subject."),
)


_TRANSACTION: Final = (
    "POST [base] with a Bundle of type transaction (http.html#transaction): entries with "
    "request.method POST (create; request.ifNoneExist for a conditional create) and PUT "
    "(update or update-as-create at Type/id; request.ifMatch), all stored in one database "
    "transaction or none. urn:uuid fullUrls are resolved in references (version-specific with "
    "the resolve-as-version-specific extension). DELETE, GET, HEAD and PATCH entries, "
    "conditional references (Type?search) and batch Bundles are refused with 400."
)


def capability_statement(base_url: str, started: datetime, software_version: str) -> dict[str, Any]:
    resource_entry = {
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "interaction": [{"code": code} for code in _INTERACTIONS],
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": fhir_instant(started),
        "publisher": "Chartgate",
        "kind": "instance",
        "software": {"name": "Chartgate devstore", "version": software_version},
        "implementation": {
            "description": "Chartgate local FHIR R4 store: a development and test target, not a product",
            "url": base_url,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "JSON only. Search is lenient by default (unknown parameters are ignored and "
                    "reported in an outcome entry); send Prefer: handling=strict to refuse them. "
                    "Pages with _count and _offset."
                ),
                "resource": [{"type": t, **resource_entry} for t in RESOURCE_TYPES],
                # CapabilityStatement.rest.interaction (system-restful-interaction).
                "interaction": [{"code": "transaction", "documentation": _TRANSACTION}],
                "searchParam": [
                    {"name": name, "type": kind, "documentation": doc}
                    for name, kind, doc in _SEARCH_PARAMS
                ],
            }
        ],
    }
