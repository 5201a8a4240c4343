"""Every error the sidecar reports to an agent, each with a stable code and the gRPC status it maps to."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One thing wrong with one request field (mapped to google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class ChartgateError(Exception):
    """Base class: carries the gRPC status code and a stable reason code an agent can branch on."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations


class InvalidProposal(ChartgateError):
    """The proposal is malformed; the violations say which field and how to fix it."""

    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "proposal.invalid"


class IdempotencyConflict(ChartgateError):
    """The idempotency key was already used for a different payload."""

    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "idempotency.key_reused"


class ProposalNotFound(ChartgateError):
    """No proposal with that id exists for this agent."""

    status = grpc.StatusCode.NOT_FOUND
    reason = "proposal.not_found"


class IllegalTransition(ChartgateError):
    """A proposal was asked to move between states the lifecycle table does not allow."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "proposal.illegal_transition"
