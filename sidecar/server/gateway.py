"""chartgate.v1.ToolGateway: maps protobuf to the proposal pipeline and every failure to its row of the error table.

No call ends in `UNKNOWN` or `INTERNAL` (sidecar/errors.py, docs/errors.md): a ChartgateError
becomes its status and reason, any other exception `UNAVAILABLE` / `sidecar.fault`, and a request
that does not even parse as protobuf (e.g. a string field that is not UTF-8, which grpcio would
answer with INTERNAL) `INVALID_ARGUMENT` / `proposal.unparseable`: the handlers deserialize
requests themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from chartgate.rpc_errors import abort
from chartgate.v1 import gateway_pb2
from sidecar.errors import ChartgateError, SidecarFault, UnparseableRequest
from sidecar.proposals.lifecycle import State
from sidecar.proposals.service import ProposalService, ProposeCommand
from sidecar.review.service import approvals_counted
from sidecar.storage.records import ProposalContext, ProposalRecord

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
M = TypeVar("M", bound=Message)


class Unparseable:
    """A request body that is not a valid message of the method's type."""


# States a proposal leaves only through an operator (or never): a watch ends there.
SETTLED: Final = frozenset(
    {
        State.BLOCKED,
        State.REJECTED,
        State.EXPIRED,
        State.SUPERSEDED,
        State.ACCEPTED,
        State.FAILED_FINAL,
        State.DEAD_LETTERED,
        State.RECONCILED,
        State.MISMATCH,
        State.INVALID,
    }
)
WATCH_POLL_SECONDS: Final = 0.2
# A watch holds one of the server's worker threads: it ends after this long even if the proposal
# has not settled (a held one may wait a day), and the agent watches again.
WATCH_MAX_SECONDS: Final = 300.0


def to_message(record: ProposalRecord, approvals_given: int = 0) -> gateway_pb2.Proposal:
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
        approvals_required=record.approvals_required,
        approvals_given=approvals_given,
        expires_at=record.expires_at,
        supersedes=record.supersedes,
        superseded_by=record.superseded_by,
        decision_receipt=_receipt(record.receipt),
        reconciliation=_reconciliation(record.reconciliation),
    )


def _reconciliation(value: Mapping[str, Any]) -> gateway_pb2.Reconciliation | None:
    if not value.get("result"):
        return None
    lag = value.get("lag_seconds", 0.0)
    return gateway_pb2.Reconciliation(
        result=str(value["result"]),
        differences=[
            gateway_pb2.Difference(
                path=str(d.get("path", "")),
                severity=str(d.get("severity", "")),
                kind=str(d.get("kind", "")),
            )
            for d in value.get("differences", [])
            if isinstance(d, Mapping)
        ],
        checked_at=str(value.get("checked_at", "")),
        lag_seconds=float(lag) if isinstance(lag, int | float) else 0.0,
    )


def _receipt(value: Mapping[str, Any]) -> gateway_pb2.AuditReceipt | None:
    if not value:
        return None
    index = value.get("leaf_index", 0)
    return gateway_pb2.AuditReceipt(
        origin=str(value.get("origin", "")),
        leaf_index=index if isinstance(index, int) and index >= 0 else 0,
        leaf_hash=str(value.get("leaf_hash", "")),
        checkpoint=str(value.get("checkpoint", "")),
    )


def proposal_message(service: ProposalService, record: ProposalRecord) -> gateway_pb2.Proposal:
    """A record as the agent sees it, with the approvals counted while it is held."""
    given = 0
    if record.state is State.PENDING_APPROVAL:
        given = approvals_counted(record, service.store.approvals(record.proposal_id))
    return to_message(record, given)


class ToolGatewayService:
    """The agent-facing API over one ProposalService."""

    def __init__(self, service: ProposalService) -> None:
        self._service = service

    def Propose(
        self, request: gateway_pb2.ProposeRequest | Unparseable, context: grpc.ServicerContext
    ) -> gateway_pb2.Proposal:
        def run() -> ProposalRecord:
            if isinstance(request, Unparseable):
                raise _unparseable("ProposeRequest")
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
            return self._service.propose(command)

        record = _guard(context, run)
        log.info(
            "proposal %s state=%s tier=%s", record.proposal_id, record.state.value, record.tier
        )
        return _guard(context, lambda: proposal_message(self._service, record))

    def GetProposal(
        self, request: gateway_pb2.GetProposalRequest | Unparseable, context: grpc.ServicerContext
    ) -> gateway_pb2.Proposal:
        def run() -> ProposalRecord:
            if isinstance(request, Unparseable):
                raise _unparseable("GetProposalRequest")
            return self._service.get(request.proposal_id[:256])

        record = _guard(context, run)
        return _guard(context, lambda: proposal_message(self._service, record))

    def WatchProposal(
        self, request: gateway_pb2.WatchProposalRequest | Unparseable, context: grpc.ServicerContext
    ) -> Iterator[gateway_pb2.Proposal]:
        """The proposal now, then each change, read from the shared store (so a change made by
        another process is seen), until it settles or the caller goes away."""

        def first() -> ProposalRecord:
            if isinstance(request, Unparseable):
                raise _unparseable("WatchProposalRequest")
            return self._service.get(request.proposal_id[:256])

        record = _guard(context, first)
        seen = ""
        deadline = time.monotonic() + WATCH_MAX_SECONDS
        while context.is_active() and time.monotonic() < deadline:
            stamp = f"{record.state.value}|{record.updated_at}"
            if stamp != seen:
                seen = stamp
                yield _guard(context, lambda r=record: proposal_message(self._service, r))  # type: ignore[misc]
            if record.state in SETTLED:
                return
            time.sleep(WATCH_POLL_SECONDS)
            record = _guard(context, lambda r=record: self._service.get(r.proposal_id))  # type: ignore[misc]


def _unparseable(message_type: str) -> UnparseableRequest:
    return UnparseableRequest(
        f"the request is not a valid chartgate.v1.{message_type} (protobuf); string fields "
        "must be UTF-8"
    )


def _parser(message_type: type[M]) -> Callable[[bytes], M | Unparseable]:
    def parse(data: bytes) -> M | Unparseable:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError):
            return Unparseable()

    return parse


def add_gateway(servicer: ToolGatewayService, server: grpc.Server) -> None:
    """Register ToolGateway with deserializers that never raise (see the module docstring)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Propose": grpc.unary_unary_rpc_method_handler(
            servicer.Propose,
            request_deserializer=_parser(gateway_pb2.ProposeRequest),
            response_serializer=gateway_pb2.Proposal.SerializeToString,
        ),
        "GetProposal": grpc.unary_unary_rpc_method_handler(
            servicer.GetProposal,
            request_deserializer=_parser(gateway_pb2.GetProposalRequest),
            response_serializer=gateway_pb2.Proposal.SerializeToString,
        ),
        "WatchProposal": grpc.unary_stream_rpc_method_handler(
            servicer.WatchProposal,
            request_deserializer=_parser(gateway_pb2.WatchProposalRequest),
            response_serializer=gateway_pb2.Proposal.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _guard(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run a pipeline call; every failure becomes its row of the error table (sidecar/errors.py)."""
    error: ChartgateError
    try:
        return call()
    except ChartgateError as exc:
        error = exc
        log.info("refused: %s (%s)", exc.reason, exc.status.name)
    except Exception as exc:  # a defect: reported without internals, the state stays consistent
        log.exception("unexpected failure in the gateway (%s)", type(exc).__name__)
        error = SidecarFault(
            "the sidecar failed unexpectedly; what was stored is consistent, so retry with the "
            "same idempotency key"
        )
    details: dict[str, Any] = {"retryable": "true" if error.retryable else "false"}
    abort(
        context,
        error.status,
        error.message,
        reason=error.reason,
        metadata=details,
        violations=[(v.field, v.description, v.reason) for v in error.violations],
        retry_after_seconds=error.retry_after_seconds,
    )
