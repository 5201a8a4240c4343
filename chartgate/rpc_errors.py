"""Rich gRPC errors (google.rpc.Status with ErrorInfo and BadRequest details, AIP-193) for both hops."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "chartgate.v1"


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    violations: Iterable[tuple[str, str]] = (),
) -> NoReturn:
    """End the call with `code`, a human message, an ErrorInfo reason and field violations."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    violation_list = list(violations)
    if violation_list:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violation_list
            ]
        )
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        details.append(packed_bad)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
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
