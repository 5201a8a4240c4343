"""A small client of chartgate.v1.Review for the CLI, the demo and the tests: one bearer token, typed calls."""

from __future__ import annotations

from typing import Any

import grpc

from chartgate.rpc_errors import error_reason
from chartgate.v1 import gateway_pb2, review_pb2, review_pb2_grpc

REJECTION_CODES = {
    "wrong_patient": review_pb2.REJECTION_CODE_WRONG_PATIENT,
    "not_supported_by_evidence": review_pb2.REJECTION_CODE_NOT_SUPPORTED_BY_EVIDENCE,
    "clinically_inappropriate": review_pb2.REJECTION_CODE_CLINICALLY_INAPPROPRIATE,
    "duplicate": review_pb2.REJECTION_CODE_DUPLICATE,
    "incomplete": review_pb2.REJECTION_CODE_INCOMPLETE,
    "other": review_pb2.REJECTION_CODE_OTHER,
}
TIERS = {
    "approval": gateway_pb2.TIER_APPROVAL,
    "dual_approval": gateway_pb2.TIER_DUAL_APPROVAL,
}


class ReviewRefused(Exception):
    """A Review call ended with an error status: code, message, reason, field violations."""

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str, violations: list[tuple[str, str]]
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = violations


class ReviewClient:
    """One reviewer's session against the Review API of any replica."""

    def __init__(self, target: str, token: str, timeout_seconds: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = review_pb2_grpc.ReviewStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout_seconds

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            reason, violations = error_reason(exc)
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNAVAILABLE
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise ReviewRefused(code, details or "", reason, violations) from None

    def list_pending(self, **filters: Any) -> list[review_pb2.ReviewItem]:
        tier = filters.pop("tier", None)
        request = review_pb2.ListPendingRequest(
            tier=TIERS.get(tier or "", gateway_pb2.TIER_UNSPECIFIED), **filters
        )
        response: review_pb2.ListPendingResponse = self._call(self._stub.ListPending, request)
        return list(response.items)

    def mismatches(self, **filters: Any) -> list[review_pb2.ReviewItem]:
        """Written resources the EHR stored differently than intended (ListMismatches)."""
        tier = filters.pop("tier", None)
        request = review_pb2.ListPendingRequest(
            tier=TIERS.get(tier or "", gateway_pb2.TIER_UNSPECIFIED), **filters
        )
        response: review_pb2.ListPendingResponse = self._call(self._stub.ListMismatches, request)
        return list(response.items)

    def show(self, proposal_id: str) -> review_pb2.ReviewItem:
        item: review_pb2.ReviewItem = self._call(
            self._stub.GetReview, review_pb2.GetReviewRequest(proposal_id=proposal_id)
        )
        return item

    def approve(self, proposal_id: str, payload_sha256: str | None = None) -> review_pb2.ReviewItem:
        """Approve the payload seen (by default: the one `show` returns now)."""
        seen = payload_sha256 or self.show(proposal_id).proposal.payload_sha256
        item: review_pb2.ReviewItem = self._call(
            self._stub.Approve,
            review_pb2.ApproveRequest(proposal_id=proposal_id, payload_sha256=seen),
        )
        return item

    def reject(self, proposal_id: str, code: str, message: str = "") -> review_pb2.ReviewItem:
        item: review_pb2.ReviewItem = self._call(
            self._stub.Reject,
            review_pb2.RejectRequest(
                proposal_id=proposal_id,
                code=REJECTION_CODES.get(code, review_pb2.REJECTION_CODE_UNSPECIFIED),
                message=message,
            ),
        )
        return item

    def amend(self, proposal_id: str, resource_json: str) -> review_pb2.AmendResponse:
        response: review_pb2.AmendResponse = self._call(
            self._stub.Amend,
            review_pb2.AmendRequest(proposal_id=proposal_id, resource_json=resource_json),
        )
        return response

    def history(self, proposal_id: str) -> list[review_pb2.HistoryEvent]:
        response: review_pb2.History = self._call(
            self._stub.GetHistory, review_pb2.GetHistoryRequest(proposal_id=proposal_id)
        )
        return list(response.events)

    def dead_letters(self, tenant_id: str = "", limit: int = 100) -> list[review_pb2.DeadLetter]:
        response: review_pb2.ListDeadLettersResponse = self._call(
            self._stub.ListDeadLetters,
            review_pb2.ListDeadLettersRequest(tenant_id=tenant_id, limit=limit),
        )
        return list(response.items)

    def dead_letter(self, action: str, proposal_id: str) -> review_pb2.DeadLetter:
        """`show`, `replay` or `discard` one dead letter."""
        method = {
            "show": self._stub.GetDeadLetter,
            "replay": self._stub.ReplayDeadLetter,
            "discard": self._stub.DiscardDeadLetter,
        }[action]
        item: review_pb2.DeadLetter = self._call(
            method, review_pb2.DeadLetterRequest(proposal_id=proposal_id)
        )
        return item

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ReviewClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
