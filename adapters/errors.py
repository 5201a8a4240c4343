"""Adapter failures, classified where they happen (DESIGN.md, "Idempotency") and carried to the sidecar as data."""

from __future__ import annotations

from enum import StrEnum

from chartgate.v1 import adapter_pb2


class FailureClass(StrEnum):
    """Only TRANSPORT, THROTTLED, CIRCUIT_OPEN (nothing sent) and SERVER_ERROR on a conditional
    create are safe to resend; AMBIGUOUS needs a look-up, not a resend; the rest are final."""

    TOKEN = "token"  # noqa: S105 - a failure class name, not a secret
    PAYLOAD = "payload"
    TRANSPORT = "transport"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    VALIDATION = "validation"
    AUTHORIZATION = "authorization"
    BUSINESS_RULE = "business_rule"
    CONFLICT = "conflict"
    AMBIGUOUS = "ambiguous"
    CIRCUIT_OPEN = "circuit_open"

    @property
    def proto(self) -> adapter_pb2.FailureClass:
        return _PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> FailureClass | None:
        return _FROM_PROTO.get(int(value))


_PROTO = {
    FailureClass.TOKEN: adapter_pb2.FAILURE_CLASS_TOKEN,
    FailureClass.PAYLOAD: adapter_pb2.FAILURE_CLASS_PAYLOAD,
    FailureClass.TRANSPORT: adapter_pb2.FAILURE_CLASS_TRANSPORT,
    FailureClass.THROTTLED: adapter_pb2.FAILURE_CLASS_THROTTLED,
    FailureClass.SERVER_ERROR: adapter_pb2.FAILURE_CLASS_SERVER_ERROR,
    FailureClass.VALIDATION: adapter_pb2.FAILURE_CLASS_VALIDATION,
    FailureClass.AUTHORIZATION: adapter_pb2.FAILURE_CLASS_AUTHORIZATION,
    FailureClass.BUSINESS_RULE: adapter_pb2.FAILURE_CLASS_BUSINESS_RULE,
    FailureClass.CONFLICT: adapter_pb2.FAILURE_CLASS_CONFLICT,
    FailureClass.AMBIGUOUS: adapter_pb2.FAILURE_CLASS_AMBIGUOUS,
    FailureClass.CIRCUIT_OPEN: adapter_pb2.FAILURE_CLASS_CIRCUIT_OPEN,
}
_FROM_PROTO: dict[int, FailureClass] = {int(value): key for key, value in _PROTO.items()}


class AdapterError(Exception):
    """A refused or failed attempt; `reason` is a stable code such as `token.replayed`.

    `message` is for the agent (an EHR's OperationOutcome diagnostics included, bounded); it is
    never logged, as diagnostics may quote the resource. `retry_after` is seconds, or None.
    """

    def __init__(
        self,
        failure: FailureClass,
        reason: str,
        message: str,
        *,
        http_status: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.reason = reason
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after


def token_error(reason: str, message: str) -> AdapterError:
    return AdapterError(FailureClass.TOKEN, reason, message)


def payload_error(reason: str, message: str) -> AdapterError:
    return AdapterError(FailureClass.PAYLOAD, reason, message)
