"""The console's only way to read or decide anything: the Review API, called with the signed-in reviewer's token."""

from __future__ import annotations

from typing import Final

import grpc

from sidecar.review.client import ReviewClient, ReviewRefused

__all__ = ["ReviewApi", "ReviewRefused", "http_status"]

# How a refusal of the Review API is answered to the browser.
_STATUS: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(refusal: ReviewRefused) -> int:
    return _STATUS.get(refusal.code, 502)


class ReviewApi:
    """Where the Review API is. The console holds no key and no role table: every read and every
    decision is the Review API's, made on the reviewer's own token, so what a reviewer may do in
    the console is by construction what the API lets them do."""

    def __init__(self, target: str, timeout_seconds: float) -> None:
        self.target = target
        self.timeout_seconds = timeout_seconds

    def client(self, access_token: str) -> ReviewClient:
        """A client for one request (gRPC reuses the connection to the target across channels)."""
        return ReviewClient(self.target, access_token, timeout_seconds=self.timeout_seconds)
