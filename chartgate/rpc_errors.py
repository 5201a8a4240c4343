"""Rich gRPC errors (google.rpc.Status with ErrorInfo and BadRequest details, AIP-193) for both hops.

Error details travel in the `grpc-status-details-bin` trailer, and a default client refuses
metadata over 8 KiB, so everything put there is bounded: a refusal an agent cannot read is no
refusal. Messages and violation texts are the server's own words (never a value the caller sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "chartgate.v1"

# Well under a default client's 8 KiB metadata limit, after base64 of the status details.
_MAX_MESSAGE = 512
_MAX_VIOLATIONS = 20
_MAX_FIELD = 160
_MAX_DESCRIPTION = 240
_MAX_REASON = 64


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    violations: Iterable[Sequence[str]] = (),
    retry_after_seconds: float = 0.0,
) -> NoReturn:
    """End the call with `code`, a human message, an ErrorInfo reason, field violations
    (`(field, description)` or `(field, description, reason)`), all bounded in size, and when
    to retry (RetryInfo, and `retry_after_seconds` in the ErrorInfo metadata for clients that
    read only that)."""
    details = []
    if retry_after_seconds > 0:
        metadata = {**(metadata or {}), "retry_after_seconds": f"{retry_after_seconds:.3f}"}
    info = error_details_pb2.ErrorInfo(
        reason=_bounded(reason, _MAX_REASON), domain=ERROR_DOMAIN, metadata=metadata or {}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    violation_list = list(violations)
    if violation_list:
        kept = violation_list[:_MAX_VIOLATIONS]
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_bounded(v[0], _MAX_FIELD),
                    description=_bounded(v[1], _MAX_DESCRIPTION),
                    reason=_bounded(v[2], _MAX_REASON) if len(v) > 2 else "",
                )
                for v in kept
            ]
        )
        if len(violation_list) > len(kept):
            message = f"{message} ({len(violation_list)} problems; the first {len(kept)} listed)"
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        details.append(packed_bad)
    if retry_after_seconds > 0:
        whole = int(retry_after_seconds)
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.seconds = whole
        retry.retry_delay.nanos = int((retry_after_seconds - whole) * 1e9)
        packed_retry = any_pb2.Any()
        packed_retry.Pack(retry)
        details.append(packed_retry)
    status = status_pb2.Status(
        code=code.value[0], message=_bounded(message, _MAX_MESSAGE), details=details
    )
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def error_reason(error: grpc.RpcError) -> tuple[str, list[tuple[str, str]]]:
    """The ErrorInfo reason and BadRequest field violations carried by a failed call."""
    status = rpc_status.from_call(error)
    reason = ""
    violations: list[tuple[str, str]] = []
    if status is None:
        return reason, violations
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return reason, violations


def retry_delay(error: grpc.RpcError) -> float:
    """The RetryInfo delay a failed call carries, in seconds (0 when it names none)."""
    status = rpc_status.from_call(error)
    if status is None:
        return 0.0
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay
            return float(delay.seconds) + float(delay.nanos) / 1e9
    return 0.0
