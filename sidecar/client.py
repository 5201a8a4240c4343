"""A small Python client for agents: propose a chart write to the sidecar on the pod's loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from chartgate.rpc_errors import error_reason, retry_delay
from chartgate.v1 import gateway_pb2, gateway_pb2_grpc


class ProposalRefused(Exception):
    """The sidecar refused the call; `reason` and `violations` say how to fix it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        violations: list[tuple[str, str]],
        retry_after_seconds: float = 0.0,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = violations
        # When the sidecar said to come back (google.rpc.RetryInfo); 0: it did not say.
        self.retry_after_seconds = retry_after_seconds


class ChartgateClient:
    def __init__(self, target: str = "127.0.0.1:50051", timeout_seconds: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = gateway_pb2_grpc.ToolGatewayStub(self._channel)
        self._timeout = timeout_seconds

    def propose(
        self,
        *,
        tool: str,
        resource: Mapping[str, Any] | str,
        patient_id: str,
        idempotency_key: str | None = None,
        encounter_id: str = "",
        purpose_of_use: str = "TREAT",
        on_behalf_of: str = "",
        model_version: str = "",
        prompt_version: str = "",
        confidence: float = 0.0,
        batch: bool = False,
        evidence_refs: Sequence[str] = (),
        trace_id: str = "",
        resource_type: str | None = None,
    ) -> gateway_pb2.Proposal:
        """Propose one write. Reuse `idempotency_key` on a retry of the same write."""
        text = resource if isinstance(resource, str) else json.dumps(resource)
        if resource_type is None:
            resource_type = (
                "" if isinstance(resource, str) else str(resource.get("resourceType", ""))
            )
        request = gateway_pb2.ProposeRequest(
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            tool=tool,
            resource_type=resource_type,
            resource_json=text,
            patient_id=patient_id,
            encounter_id=encounter_id,
            purpose_of_use=purpose_of_use,
            on_behalf_of=on_behalf_of,
            model_version=model_version,
            prompt_version=prompt_version,
            confidence=confidence,
            mode=gateway_pb2.MODE_BATCH if batch else gateway_pb2.MODE_LIVE,
            evidence_refs=list(evidence_refs),
            trace_id=trace_id or uuid.uuid4().hex,
        )
        return self._call(self._stub.Propose, request)

    def get(self, proposal_id: str) -> gateway_pb2.Proposal:
        return self._call(
            self._stub.GetProposal, gateway_pb2.GetProposalRequest(proposal_id=proposal_id)
        )

    def _call(self, method: Any, request: Any) -> gateway_pb2.Proposal:
        try:
            result: gateway_pb2.Proposal = method(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            reason, violations = error_reason(exc)
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise ProposalRefused(
                code, details or "", reason, violations, retry_delay(exc)
            ) from None
        return result

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ChartgateClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
