"""OperationOutcome builders and the error every handler raises (FHIR R4 operationoutcome.html, http.html#errors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]

# The codes of http://hl7.org/fhir/R4/valueset-issue-type.html this server uses.
IssueCode = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "processing",
    "not-supported",
    "multiple-matches",
    "not-found",
    "deleted",
    "conflict",
    "too-long",
    "exception",
    "informational",
    "login",  # 401: no or a bad access token
    "forbidden",  # 403: the token's scopes do not cover the interaction
    "transient",  # 503: try again later
    "throttled",  # 429: too many requests
    "business-rule",  # 422: the EHR's own rules refuse the content
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue. `diagnostics` names elements and parameters, never their values."""

    severity: Severity
    code: IssueCode
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information(diagnostics: str) -> dict[str, Any]:
    """The body for `Prefer: return=OperationOutcome` after a successful write."""
    return operation_outcome([Issue("information", "informational", diagnostics)])


class FhirError(Exception):
    """An HTTP error answered with an OperationOutcome; raised anywhere, rendered by the app."""

    def __init__(
        self,
        status: int,
        issues: Iterable[Issue],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.issues = tuple(issues)
        self.headers = dict(headers or {})
        super().__init__(f"HTTP {status}: " + "; ".join(i.diagnostics for i in self.issues))

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def fhir_error(
    status: int,
    code: IssueCode,
    diagnostics: str,
    *,
    expression: tuple[str, ...] = (),
    headers: Mapping[str, str] | None = None,
) -> FhirError:
    """A one-issue error (severity `error`), the common case."""
    return FhirError(status, [Issue("error", code, diagnostics, expression)], headers)
