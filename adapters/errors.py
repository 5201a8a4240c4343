"""Adapter failures, classified (DESIGN.md, "Idempotency") and mapped to gRPC status codes."""

from __future__ import annotations

from enum import StrEnum

import grpc


class FailureClass(StrEnum):
    """Only TRANSPORT and THROTTLED are worth retrying; AMBIGUOUS needs a look-up, not a resend."""

    TOKEN = "token"  # noqa: S105 - a failure class name, not a secret
    PAYLOAD = "payload"
    TRANSPORT = "transport"
    THROTTLED = "throttled"
    VALIDATION = "validation"
    AUTHORIZATION = "authorization"
    BUSINESS_RULE = "business_rule"
    CONFLICT = "conflict"
    AMBIGUOUS = "ambiguous"


_STATUS = {
    FailureClass.TOKEN: grpc.StatusCode.UNAUTHENTICATED,
    FailureClass.PAYLOAD: grpc.StatusCode.PERMISSION_DENIED,
    FailureClass.TRANSPORT: grpc.StatusCode.UNAVAILABLE,
    FailureClass.THROTTLED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailureClass.VALIDATION: grpc.StatusCode.INVALID_ARGUMENT,
    FailureClass.AUTHORIZATION: grpc.StatusCode.PERMISSION_DENIED,
    FailureClass.BUSINESS_RULE: grpc.StatusCode.FAILED_PRECONDITION,
    FailureClass.CONFLICT: grpc.StatusCode.ABORTED,
    FailureClass.AMBIGUOUS: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class AdapterError(Exception):
    """A refused or failed write; `reason` is a stable code such as `token.replayed`."""

    def __init__(self, failure: FailureClass, reason: str, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.reason = reason
        self.message = message

    @property
    def status(self) -> grpc.StatusCode:
        return _STATUS[self.failure]


def token_error(reason: str, message: str) -> AdapterError:
    return AdapterError(FailureClass.TOKEN, reason, message)


def payload_error(reason: str, message: str) -> AdapterError:
    return AdapterError(FailureClass.PAYLOAD, reason, message)
