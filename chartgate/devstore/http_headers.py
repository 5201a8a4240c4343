"""FHIR REST HTTP headers: media types, ETag/If-Match, Last-Modified, Prefer (R4 http.html#mime-type, #concurrency)."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from chartgate.devstore.outcome import fhir_error

FHIR_JSON: Final = "application/fhir+json"
RESPONSE_CONTENT_TYPE: Final = "application/fhir+json; charset=utf-8"

# http.html#mime-type: application/fhir+json is the type; application/json is accepted as the
# same thing, and application/json+fhir is the DSTU2 name some clients still send.
_JSON_TYPES: Final = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
_FORMAT_ALIASES: Final = frozenset({"json", *_JSON_TYPES})
_ANY: Final = frozenset({"*/*", "application/*"})

_ETAG: Final = re.compile(r'\s*(?:W/)?"(\d{1,18})"\s*')

ReturnPreference = Literal["minimal", "representation", "OperationOutcome"]
HandlingPreference = Literal["strict", "lenient"]
_RETURN: Final[dict[str, ReturnPreference]] = {
    "minimal": "minimal",
    "representation": "representation",
    "OperationOutcome": "OperationOutcome",
}
_HANDLING: Final[dict[str, HandlingPreference]] = {"strict": "strict", "lenient": "lenient"}


def etag(version_id: int) -> str:
    """A weak ETag whose value is the versionId (http.html#versioning)."""
    return f'W/"{version_id}"'


def http_date(moment: datetime) -> str:
    """An RFC 9110 HTTP-date for Last-Modified."""
    return email.utils.format_datetime(moment, usegmt=True)


def parse_if_match(value: str) -> int | Literal["*"]:
    """The versionId an If-Match header requires (`W/"3"`, `"3"`), or "*" (any current version)."""
    if value.strip() == "*":
        return "*"
    match = _ETAG.fullmatch(value)
    if match is None:
        raise fhir_error(400, "invalid", 'If-Match must be a single ETag such as W/"3"')
    return int(match.group(1))


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def require_json_body(content_type: str | None) -> None:
    """415 for a body that is not JSON; a missing Content-Type is taken as JSON (lenient)."""
    kind = media_type(content_type)
    if kind and kind not in _JSON_TYPES:
        raise fhir_error(415, "not-supported", "only application/fhir+json bodies are supported")


def require_json_response(accept: str | None, format_param: str | None) -> None:
    """406 when the client asks (_format or Accept) only for something other than JSON."""
    if format_param is not None and format_param.strip().lower() not in _FORMAT_ALIASES:
        raise fhir_error(406, "not-supported", "only the JSON format is supported (_format)")
    if accept:
        offered = {media_type(part) for part in accept.split(",")}
        if offered and not offered & (_JSON_TYPES | _ANY):
            raise fhir_error(406, "not-supported", "only application/fhir+json is produced")


@dataclass(frozen=True, slots=True)
class Preferences:
    """The RFC 7240 Prefer header values FHIR defines (http.html#ops, search.html#errors)."""

    return_: ReturnPreference = "representation"
    handling: HandlingPreference = "lenient"


def parse_prefer(values: Iterable[str]) -> Preferences:
    """Read every Prefer header; unknown or malformed preferences are ignored, as RFC 7240 says."""
    return_: ReturnPreference = "representation"
    handling: HandlingPreference = "lenient"
    for header in values:
        for preference in header.split(","):
            name, _, value = preference.split(";", 1)[0].partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "return":
                return_ = _RETURN.get(value, return_)
            elif name == "handling":
                handling = _HANDLING.get(value, handling)
    return Preferences(return_, handling)
