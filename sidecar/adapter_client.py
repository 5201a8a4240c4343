"""The sidecar's gRPC client for the adapter hop (chartgate.v1.Adapter/Write)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from chartgate.rpc_errors import error_reason
from chartgate.v1 import adapter_pb2, adapter_pb2_grpc


@dataclass(frozen=True, slots=True)
class AdapterOutcome:
    """What became of one write: stored (with id/version) or failed (with a gRPC status and reason)."""

    ok: bool
    fhir_id: str = ""
    fhir_version: str = ""
    already_existed: bool = False
    http_status: int = 0
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""
    message: str = ""


class AdapterClient:
    def __init__(self, target: str, timeout_seconds: float) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = adapter_pb2_grpc.AdapterStub(self._channel)
        self._timeout = timeout_seconds

    def write(self, token: str, canonical_payload: bytes) -> AdapterOutcome:
        """Send one write; never raises for an RPC failure, returns it as an outcome instead."""
        try:
            response = self._stub.Write(
                adapter_pb2.WriteRequest(token=token, resource_json=canonical_payload),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            reason, _ = error_reason(exc)
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else ""
            return AdapterOutcome(
                ok=False, code=code, reason=reason or "adapter.unavailable", message=details or ""
            )
        return AdapterOutcome(
            ok=True,
            fhir_id=response.fhir_id,
            fhir_version=response.fhir_version,
            already_existed=response.already_existed,
            http_status=response.http_status,
        )

    def close(self) -> None:
        self._channel.close()
