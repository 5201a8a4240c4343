"""Structural validation of a resource with its fhir.resources R4B model (R4 validation.html, http.html#update)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pydantic
from pydantic_core import ErrorDetails

from chartgate.devstore.outcome import FhirError, Issue, IssueCode
from chartgate.devstore.resource_types import model_class

# pydantic error types mapped to the closest IssueType (valueset-issue-type.html); the rest are
# plain `invalid`.
_ISSUE_CODES: Final[Mapping[str, IssueCode]] = {
    "model_field_validation.missing": "required",
    "missing": "required",
    "extra_forbidden": "structure",
    "json_invalid": "structure",
    "model_type": "structure",
    "list_type": "structure",
    "dict_type": "structure",
    "value_error": "value",
    "string_pattern_mismatch": "value",
    "string_type": "value",
    "bool_type": "value",
    "int_type": "value",
    "decimal_type": "value",
    "float_type": "value",
}
_MAX_ISSUES: Final = 20


def validate_resource(resource: Mapping[str, Any]) -> None:
    """Raise 400 with one issue per problem (code, FHIRPath expression) when the resource is invalid.

    The caller has already checked resourceType against the URL and set id/meta.
    """
    resource_type = str(resource["resourceType"])
    try:
        model_class(resource_type).model_validate(dict(resource))
    except pydantic.ValidationError as exc:
        issues = [_issue(resource_type, error) for error in exc.errors()[:_MAX_ISSUES]]
        raise FhirError(400, issues) from None


def _issue(resource_type: str, error: ErrorDetails) -> Issue:
    expression = _fhirpath(resource_type, error["loc"])
    return Issue(
        "error",
        _ISSUE_CODES.get(error["type"], "invalid"),
        f"{expression}: {_message(error)}",
        (expression,),
    )


def _fhirpath(resource_type: str, loc: tuple[int | str, ...]) -> str:
    """pydantic's ('code', 'coding', 0, 'system') as FHIRPath `Observation.code.coding[0].system`."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "resource_type":  # the model's name for resourceType; the type is the root
            path += f".{part}"
    return path


def _message(error: ErrorDetails) -> str:
    """pydantic's message, minus the submitted value should a message ever quote it (PHI)."""
    message = error["msg"]
    value = error.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 3 and text in message:
            message = message.replace(text, "(value)")
    return message
