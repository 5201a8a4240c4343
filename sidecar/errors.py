"""Every failure the sidecar can report, one class each: the table of gRPC status and reason code.

`ERROR_TABLE` below is that table as data (docs/errors.md prints it); the gateway maps a
ChartgateError to its row and anything else to `SidecarFault`, so no call ever ends in `UNKNOWN`
or `INTERNAL` (gRPC status codes: https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One thing wrong with one request field (mapped to google.rpc.BadRequest.FieldViolation).

    `description` says what is expected; it never repeats the value sent (it may be PHI, huge,
    or crafted to mislead whoever reads the error). `reason` is a stable code for the kind of
    problem (e.g. `input.duplicate_key`, `reference.other_patient`; docs/errors.md), carried in
    FieldViolation.reason so an agent can branch on it.
    """

    field: str
    description: str
    reason: str = "input.invalid"


class ChartgateError(Exception):
    """Base class: carries the gRPC status code and a stable reason code an agent can branch on."""

    status: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    reason: str = "sidecar.fault"
    retryable: bool = True
    # When to retry (google.rpc.RetryInfo); 0: the caller decides.
    retry_after_seconds: float = 0.0

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations


class InvalidProposal(ChartgateError):
    """The proposal is malformed; the violations say which field and how to fix it."""

    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "proposal.invalid"
    retryable = False


class UnparseableRequest(InvalidProposal):
    """The request is not a valid protobuf message of its method's type (e.g. a string field
    that is not UTF-8)."""

    reason = "proposal.unparseable"


class IdempotencyConflict(ChartgateError):
    """The idempotency key was already used for a different payload."""

    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "idempotency.key_reused"
    retryable = False


class ProposalNotFound(ChartgateError):
    """No proposal with that id exists for this agent."""

    status = grpc.StatusCode.NOT_FOUND
    reason = "proposal.not_found"
    retryable = False


class IllegalTransition(ChartgateError):
    """A proposal was asked to move between states the lifecycle table does not allow."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "proposal.illegal_transition"
    retryable = False


class ReviewerUnauthenticated(ChartgateError):
    """The reviewer's bearer token is missing or not valid (the violation's reason says which
    check failed, e.g. `reviewer.expired`); get a fresh token from the configured issuer."""

    status = grpc.StatusCode.UNAUTHENTICATED
    reason = "reviewer.unauthenticated"
    retryable = False


class ReviewForbidden(ChartgateError):
    """The reviewer may not decide this proposal: they hold none of the roles policy names."""

    status = grpc.StatusCode.PERMISSION_DENIED
    reason = "review.forbidden"
    retryable = False


class ReviewNotPossible(ChartgateError):
    """The review cannot be done in the proposal's state: not held, expired, decided meanwhile,
    or the payload reviewed is not the proposal's."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "review.not_possible"
    retryable = False


class WritesThrottled(ChartgateError):
    """The EHR connection asked for a pause (throttled, circuit open) and this agent's queue of
    waiting writes is full: nothing was recorded; retry after the hint (RetryInfo and the
    `retry_after_seconds` metadata)."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "delivery.backpressure"

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DeliveryUnavailable(ChartgateError):
    """The EHR could not be asked whether a write is there (the look-up got no answer), so an
    operator's replay or discard changed nothing; try again."""

    status = grpc.StatusCode.UNAVAILABLE
    reason = "delivery.lookup_unavailable"


class AuditUnavailable(ChartgateError):
    """The audit log could not make a record durable; nothing after that step happened."""

    status = grpc.StatusCode.UNAVAILABLE
    reason = "audit.unavailable"


class LedgerUnavailable(ChartgateError):
    """The proposal ledger could not be read or written."""

    status = grpc.StatusCode.UNAVAILABLE
    reason = "ledger.unavailable"


class SidecarFault(ChartgateError):
    """A defect: something failed that has no row of its own. What was stored stays consistent,
    and a retry with the same idempotency key continues the proposal where it stopped."""

    status = grpc.StatusCode.UNAVAILABLE
    reason = "sidecar.fault"


class PolicyError(Exception):
    """Base of policy-engine failures. They never reach an agent as errors: the engine seam turns
    each into a denying decision with a `policy.*` reason (fail closed)."""


class PolicyLoadError(PolicyError):
    """The policy directory cannot be served: unreadable, invalid, or it does not compile."""


class PolicyUndefined(PolicyError):
    """The queried rule is undefined for this input."""


class PolicyEvaluationError(PolicyError):
    """The engine reported an error while evaluating (e.g. a builtin error, strict mode)."""


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """One row of the error table."""

    reason: str
    status: grpc.StatusCode
    retryable: bool
    meaning: str


ERRORS: tuple[type[ChartgateError], ...] = (
    InvalidProposal,
    UnparseableRequest,
    IdempotencyConflict,
    ProposalNotFound,
    IllegalTransition,
    ReviewerUnauthenticated,
    ReviewForbidden,
    ReviewNotPossible,
    WritesThrottled,
    DeliveryUnavailable,
    AuditUnavailable,
    LedgerUnavailable,
    SidecarFault,
)

ERROR_TABLE: tuple[ErrorRow, ...] = tuple(
    ErrorRow(
        cls.reason,
        cls.status,
        cls.retryable,
        " ".join((cls.__doc__ or "").split()),
    )
    for cls in ERRORS
)
