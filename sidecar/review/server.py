"""chartgate.v1.Review over gRPC: authenticates each call's bearer token, then maps protobuf to the ReviewService."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from chartgate.rpc_errors import abort
from chartgate.v1 import gateway_pb2, review_pb2
from sidecar.errors import (
    ChartgateError,
    ReviewerUnauthenticated,
    ReviewNotPossible,
    SidecarFault,
    UnparseableRequest,
)
from sidecar.proposals.delivery import Delivery
from sidecar.proposals.lifecycle import State
from sidecar.review.auth import Reviewer, ReviewerAuthenticator, ReviewerAuthError
from sidecar.review.deadletters import DeadLetterService
from sidecar.review.service import ReviewService, ReviewView, approvals_counted
from sidecar.server.gateway import to_message
from sidecar.storage.records import ProposalRecord

log = logging.getLogger("chartgate.review")

SERVICE_NAME: Final = review_pb2.DESCRIPTOR.services_by_name["Review"].full_name

_TIER_NAMES: Final = {
    gateway_pb2.TIER_AUTONOMOUS: "autonomous",
    gateway_pb2.TIER_APPROVAL: "approval",
    gateway_pb2.TIER_DUAL_APPROVAL: "dual_approval",
    gateway_pb2.TIER_BLOCKED: "blocked",
}
_REJECTION: Final = {
    review_pb2.REJECTION_CODE_WRONG_PATIENT: "wrong_patient",
    review_pb2.REJECTION_CODE_NOT_SUPPORTED_BY_EVIDENCE: "not_supported_by_evidence",
    review_pb2.REJECTION_CODE_CLINICALLY_INAPPROPRIATE: "clinically_inappropriate",
    review_pb2.REJECTION_CODE_DUPLICATE: "duplicate",
    review_pb2.REJECTION_CODE_INCOMPLETE: "incomplete",
    review_pb2.REJECTION_CODE_OTHER: "other",
}

T = TypeVar("T")
M = TypeVar("M", bound=Message)
_MAX_AGE_SECONDS: Final = 366 * 86400  # a year: older than any approval window
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def to_item(view: ReviewView) -> review_pb2.ReviewItem:
    record = view.record
    ctx = record.context
    return review_pb2.ReviewItem(
        proposal=to_message(record, approvals_counted(record, view.approvals)),
        resource_json=record.payload.decode("utf-8"),
        fields=list(record.fields),
        operation=record.operation,
        patient_id=record.patient_id,
        encounter_id=record.encounter_id,
        agent_id=record.agent_id,
        on_behalf_of=ctx.on_behalf_of,
        purpose_of_use=ctx.purpose_of_use,
        evidence_refs=list(ctx.evidence_refs),
        model_version=ctx.model_version,
        prompt_version=ctx.prompt_version,
        confidence=ctx.confidence,
        mode=gateway_pb2.MODE_BATCH if ctx.mode == "batch" else gateway_pb2.MODE_LIVE,
        approver_roles=list(record.approver_roles),
        approvals=[
            review_pb2.Approval(
                approval_id=a.approval_id,
                issuer=a.issuer,
                subject=a.subject,
                roles=list(a.roles),
                payload_sha256=a.payload_sha256,
                created_at=a.created_at,
            )
            for a in view.approvals
        ],
        seconds_to_expiry=view.seconds_to_expiry,
        escalated_at=record.escalated_at,
        may_approve=view.may_approve,
        current_resource_json=view.current_resource_json,
        current_resource_note=view.current_resource_note,
    )


def to_dead_letter(record: ProposalRecord) -> review_pb2.DeadLetter:
    delivery = Delivery.of(record.delivery)

    def number(value: object) -> int:
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    return review_pb2.DeadLetter(
        proposal=to_message(record, 0),
        tenant_id=record.tenant_id,
        agent_id=record.agent_id,
        resource_type=record.resource_type,
        operation=record.operation,
        attempts=delivery.attempts,
        history=[
            review_pb2.DeliveryAttempt(
                at=float(step.get("at", 0) or 0),
                attempt=number(step.get("attempt")),
                outcome=str(step.get("class", ""))[:64],
                reason=str(step.get("reason", "") or "")[:128],
                http_status=number(step.get("http_status")),
                result=str(step.get("result", ""))[:64],
            )
            for step in delivery.history
        ],
    )


class ReviewServicer:
    """The Review API: every call authenticated, every failure a row of the error table."""

    def __init__(
        self,
        service: ReviewService,
        authenticator: ReviewerAuthenticator,
        dead_letters: DeadLetterService | None = None,
    ) -> None:
        self._service = service
        self._auth = authenticator
        self._dead = dead_letters

    def _reviewer(self, context: grpc.ServicerContext) -> Reviewer:
        header = ""
        for key, value in context.invocation_metadata():
            if key == "authorization" and isinstance(value, str):
                header = value
        try:
            reviewer = self._auth.authenticate(header)
        except ReviewerAuthError as exc:
            error = ReviewerUnauthenticated(exc.message)
            error.check = exc.reason  # type: ignore[attr-defined]
            raise error from None
        names = (reviewer.issuer, reviewer.subject, reviewer.fhir_user, *reviewer.roles)
        if any(_CONTROL.search(name) for name in (*names, *reviewer.tenants)):
            # They are stored and audited: no control characters (PostgreSQL refuses NUL).
            error = ReviewerUnauthenticated("the token's identity claims hold control characters")
            error.check = "reviewer.claims_invalid"  # type: ignore[attr-defined]
            raise error
        return reviewer

    def ListPending(
        self, request: review_pb2.ListPendingRequest, context: grpc.ServicerContext
    ) -> review_pb2.ListPendingResponse:
        def run() -> review_pb2.ListPendingResponse:
            _parsed(request)
            views = self._service.list_pending(
                self._reviewer(context),
                tenant_id=request.tenant_id[:128] or None,
                tier=_TIER_NAMES.get(request.tier),
                patient_id=request.patient_id[:64] or None,
                resource_type=request.resource_type[:64] or None,
                min_age_seconds=min(max(0, request.min_age_seconds), _MAX_AGE_SECONDS),
                limit=request.limit or 100,
            )
            return review_pb2.ListPendingResponse(items=[to_item(v) for v in views])

        return _guard(context, run)

    def ListMismatches(
        self, request: review_pb2.ListPendingRequest, context: grpc.ServicerContext
    ) -> review_pb2.ListPendingResponse:
        def run() -> review_pb2.ListPendingResponse:
            _parsed(request)
            views = self._service.list_pending(
                self._reviewer(context),
                tenant_id=request.tenant_id[:128] or None,
                tier=_TIER_NAMES.get(request.tier),
                patient_id=request.patient_id[:64] or None,
                resource_type=request.resource_type[:64] or None,
                min_age_seconds=min(max(0, request.min_age_seconds), _MAX_AGE_SECONDS),
                limit=request.limit or 100,
                state=State.MISMATCH,
            )
            return review_pb2.ListPendingResponse(items=[to_item(v) for v in views])

        return _guard(context, run)

    def GetReview(
        self, request: review_pb2.GetReviewRequest, context: grpc.ServicerContext
    ) -> review_pb2.ReviewItem:
        return _guard(
            context,
            lambda: to_item(
                self._service.view(self._reviewer(context), _parsed(request).proposal_id)
            ),
        )

    def Approve(
        self, request: review_pb2.ApproveRequest, context: grpc.ServicerContext
    ) -> review_pb2.ReviewItem:
        def run() -> review_pb2.ReviewItem:
            parsed = _parsed(request)
            return to_item(
                self._service.approve(
                    self._reviewer(context), parsed.proposal_id, parsed.payload_sha256[:64]
                )
            )

        return _guard(context, run)

    def Reject(
        self, request: review_pb2.RejectRequest, context: grpc.ServicerContext
    ) -> review_pb2.ReviewItem:
        def run() -> review_pb2.ReviewItem:
            parsed = _parsed(request)
            return to_item(
                self._service.reject(
                    self._reviewer(context),
                    parsed.proposal_id,
                    _REJECTION.get(parsed.code, ""),
                    parsed.message[:2000],
                )
            )

        return _guard(context, run)

    def Amend(
        self, request: review_pb2.AmendRequest, context: grpc.ServicerContext
    ) -> review_pb2.AmendResponse:
        def run() -> review_pb2.AmendResponse:
            parsed = _parsed(request)
            original, amendment = self._service.amend(
                self._reviewer(context), parsed.proposal_id, parsed.resource_json
            )
            return review_pb2.AmendResponse(
                original=to_item(original), amendment=to_item(amendment)
            )

        return _guard(context, run)

    def GetHistory(
        self, request: review_pb2.GetHistoryRequest, context: grpc.ServicerContext
    ) -> review_pb2.History:
        def run() -> review_pb2.History:
            steps = self._service.history(self._reviewer(context), _parsed(request).proposal_id)
            return review_pb2.History(
                events=[
                    review_pb2.HistoryEvent(at=at, kind=kind, actor=actor, detail=detail)
                    for at, kind, actor, detail in steps
                ]
            )

        return _guard(context, run)

    def _dead_letters(self) -> DeadLetterService:
        if self._dead is None:
            raise ReviewNotPossible("this replica does not manage dead letters")
        return self._dead

    def ListDeadLetters(
        self, request: review_pb2.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> review_pb2.ListDeadLettersResponse:
        def run() -> review_pb2.ListDeadLettersResponse:
            parsed = _parsed(request)
            records = self._dead_letters().list(
                self._reviewer(context),
                tenant_id=parsed.tenant_id[:128] or None,
                limit=parsed.limit or 100,
            )
            return review_pb2.ListDeadLettersResponse(items=[to_dead_letter(r) for r in records])

        return _guard(context, run)

    def GetDeadLetter(
        self, request: review_pb2.DeadLetterRequest, context: grpc.ServicerContext
    ) -> review_pb2.DeadLetter:
        return _guard(
            context,
            lambda: to_dead_letter(
                self._dead_letters().show(self._reviewer(context), _parsed(request).proposal_id)
            ),
        )

    def ReplayDeadLetter(
        self, request: review_pb2.DeadLetterRequest, context: grpc.ServicerContext
    ) -> review_pb2.DeadLetter:
        return _guard(
            context,
            lambda: to_dead_letter(
                self._dead_letters().replay(self._reviewer(context), _parsed(request).proposal_id)
            ),
        )

    def DiscardDeadLetter(
        self, request: review_pb2.DeadLetterRequest, context: grpc.ServicerContext
    ) -> review_pb2.DeadLetter:
        return _guard(
            context,
            lambda: to_dead_letter(
                self._dead_letters().discard(self._reviewer(context), _parsed(request).proposal_id)
            ),
        )


class _Unparseable:
    """A request body that is not a valid message of the method's type."""


def _parsed(request: M | _Unparseable) -> M:
    if isinstance(request, _Unparseable):
        raise UnparseableRequest(
            "the request is not a valid chartgate.v1.Review message (protobuf)"
        )
    return request


def _parser(message_type: type[M]) -> Callable[[bytes], M | _Unparseable]:
    def parse(data: bytes) -> M | _Unparseable:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, RuntimeError):
            return _Unparseable()

    return parse


def add_review(servicer: ReviewServicer, server: grpc.Server) -> None:
    """Register Review with deserializers that never raise (as ToolGateway does)."""
    methods: dict[str, tuple[Any, type[Message], Any]] = {
        "ListPending": (
            servicer.ListPending,
            review_pb2.ListPendingRequest,
            review_pb2.ListPendingResponse,
        ),
        "ListMismatches": (
            servicer.ListMismatches,
            review_pb2.ListPendingRequest,
            review_pb2.ListPendingResponse,
        ),
        "GetReview": (servicer.GetReview, review_pb2.GetReviewRequest, review_pb2.ReviewItem),
        "Approve": (servicer.Approve, review_pb2.ApproveRequest, review_pb2.ReviewItem),
        "Reject": (servicer.Reject, review_pb2.RejectRequest, review_pb2.ReviewItem),
        "Amend": (servicer.Amend, review_pb2.AmendRequest, review_pb2.AmendResponse),
        "GetHistory": (servicer.GetHistory, review_pb2.GetHistoryRequest, review_pb2.History),
        "ListDeadLetters": (
            servicer.ListDeadLetters,
            review_pb2.ListDeadLettersRequest,
            review_pb2.ListDeadLettersResponse,
        ),
        "GetDeadLetter": (
            servicer.GetDeadLetter,
            review_pb2.DeadLetterRequest,
            review_pb2.DeadLetter,
        ),
        "ReplayDeadLetter": (
            servicer.ReplayDeadLetter,
            review_pb2.DeadLetterRequest,
            review_pb2.DeadLetter,
        ),
        "DiscardDeadLetter": (
            servicer.DiscardDeadLetter,
            review_pb2.DeadLetterRequest,
            review_pb2.DeadLetter,
        ),
    }
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=_parser(request_type),
            response_serializer=response_type.SerializeToString,
        )
        for name, (call, request_type, response_type) in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _guard(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run a review call; every failure becomes its row of the error table (sidecar/errors.py)."""
    error: ChartgateError
    try:
        return call()
    except ChartgateError as exc:
        error = exc
        log.info("review refused: %s (%s)", exc.reason, exc.status.name)
    except Exception as exc:
        log.exception("unexpected failure in the Review API (%s)", type(exc).__name__)
        error = SidecarFault("the review service failed unexpectedly; nothing was decided by it")
    metadata = {"retryable": "true" if error.retryable else "false"}
    check = getattr(error, "check", "")
    if check:
        metadata["check"] = str(check)
    abort(
        context,
        error.status,
        error.message,
        reason=error.reason,
        metadata=metadata,
        violations=[(v.field, v.description, v.reason) for v in error.violations],
        retry_after_seconds=error.retry_after_seconds,
    )
