"""Reading a request body as one FHIR JSON resource (R4 json.html, http.html#create, #update)."""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn

from chartgate.devstore.http_headers import require_json_body
from chartgate.devstore.outcome import fhir_error

MAX_BODY_BYTES: Final = 16 * 1024 * 1024


def parse_resource(raw: bytes, content_type: str | None, resource_type: str) -> dict[str, Any]:
    """The body as a JSON object whose resourceType is the URL's type; 400/413/415 otherwise."""
    require_json_body(content_type)
    if len(raw) > MAX_BODY_BYTES:
        raise fhir_error(413, "too-long", f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # Position only: the message's excerpt of the document could be patient data.
        raise fhir_error(
            400, "structure", f"the body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError:  # not UTF-8, or NaN/Infinity (not JSON numbers, json.html)
        raise fhir_error(400, "structure", "the body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise fhir_error(400, "structure", "the body must be a JSON object (one resource)")
    if data.get("resourceType") != resource_type:
        raise fhir_error(
            400,
            "invalid",
            f"the body's resourceType must be {resource_type}, the type in the URL",
            expression=("resourceType",),
        )
    return data


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")
