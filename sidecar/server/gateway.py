"""chartgate.v1.ToolGateway: maps protobuf to the proposal pipeline and pipeline errors to gRPC status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from chartgate.rpc_errors import abort
from chartgate.v1 import gateway_pb2, gateway_pb2_grpc
from sidecar.errors import ChartgateError
from sidecar.policy.input import ProposalContext
from sidecar.proposals.service import ProposalService, ProposeCommand
from sidecar.storage.ledger import ProposalRecord

log = logging.getLogger("chartgate.sidecar")

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["ToolGateway"].full_name

_MODE = {
    gateway_pb2.MODE_UNSPECIFIED: "live",
    gateway_pb2.MODE_LIVE: "live",
    gateway_pb2.MODE_BATCH: "batch",
}
_TIER = {
    "autonomous": gateway_pb2.TIER_AUTONOMOUS,
    "approval": gateway_pb2.TIER_APPROVAL,
    "dual_approval": gateway_pb2.TIER_DUAL_APPROVAL,
    "blocked": gateway_pb2.TIER_BLOCKED,
}

T = TypeVar("T")


def to_message(record: ProposalRecord) -> gateway_pb2.Proposal:
    return gateway_pb2.Proposal(
        proposal_id=record.proposal_id,
        idempotency_key=record.idempotency_key,
        state=f"PROPOSAL_STATE_{record.state.name}",
        tier=_TIER.get(record.tier, gateway_pb2.TIER_UNSPECIFIED),
        reasons=[
            gateway_pb2.Reason(code=r["code"], message=r["message"], rule=r.get("rule", ""))
            for r in record.reasons
        ],
        payload_sha256=record.payload_sha256,
        policy_revision=record.policy_revision,
        fhir_id=record.fhir_id,
        fhir_version=record.fhir_version,
        resource_type=record.resource_type,
        tool=record.tool,
        trace_id=record.trace_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


class ToolGatewayService(gateway_pb2_grpc.ToolGatewayServicer):
    def __init__(self, service: ProposalService) -> None:
        self._service = service

    def Propose(
        self, request: gateway_pb2.ProposeRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.Proposal:
        command = ProposeCommand(
            idempotency_key=request.idempotency_key,
            tool=request.tool,
            resource_type=request.resource_type,
            resource_json=request.resource_json,
            context=ProposalContext(
                patient_id=request.patient_id,
                encounter_id=request.encounter_id,
                purpose_of_use=request.purpose_of_use,
                on_behalf_of=request.on_behalf_of,
                model_version=request.model_version,
                prompt_version=request.prompt_version,
                confidence=request.confidence,
                mode=_MODE.get(request.mode, "unknown"),
                evidence_refs=tuple(request.evidence_refs),
                trace_id=request.trace_id,
            ),
        )
        record = _guard(context, lambda: self._service.propose(command))
        log.info(
            "proposal %s state=%s tier=%s", record.proposal_id, record.state.value, record.tier
        )
        return to_message(record)

    def GetProposal(
        self, request: gateway_pb2.GetProposalRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.Proposal:
        return to_message(_guard(context, lambda: self._service.get(request.proposal_id)))


def _guard(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run a pipeline call; a ChartgateError becomes its gRPC status with machine-readable details."""
    try:
        return call()
    except ChartgateError as exc:
        log.info("refused: %s (%s)", exc.reason, exc.status.name)
        abort(
            context,
            exc.status,
            exc.message,
            reason=exc.reason,
            violations=[(v.field, v.description) for v in exc.violations],
        )
