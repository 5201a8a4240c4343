"""ASGI middleware: each FHIR interaction needs a live bearer token whose scopes cover it (RFC 6750 section 3).

SMART App Launch 2.2 backend-services.html, "Access FHIR API": the resource server SHALL validate
the access token, that it has not expired, and that its scope covers the requested resource.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from chartgate.devstore.http_headers import RESPONSE_CONTENT_TYPE
from chartgate.devstore.interactions import classify
from chartgate.devstore.outcome import FhirError, Issue, IssueCode, operation_outcome
from chartgate.devstore.smart import AuthServer, BearerError


class BearerAuth:
    """Refuses a FHIR request before it reaches a handler; metadata and discovery stay open."""

    def __init__(self, app: ASGIApp, auth: AuthServer, base: str) -> None:
        self.app = app
        self.auth = auth
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        classified = (
            classify(scope["method"], scope["path"], self.base) if scope["type"] == "http" else None
        )
        if classified is None:
            await self.app(scope, receive, send)
            return
        interaction, resource_type = classified
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        # A transaction's entries are checked one by one, each as the interaction it is alone,
        # by the handler once the Bundle is read (transaction.py); here only a live token.
        needed = None if interaction == "transaction" else interaction
        try:
            self.auth.check(authorization, resource_type or "", needed)
        except BearerError as exc:
            await _refuse(send, exc)
            return
        await self.app(scope, receive, send)


def bearer_error(exc: BearerError) -> FhirError:
    """The refusal as the handlers raise it: what _refuse sends, for a check made in a handler
    (a transaction's entries)."""
    code: IssueCode = "login" if exc.status == 401 else "forbidden"
    return FhirError(
        exc.status, [Issue("error", code, exc.description)], {"WWW-Authenticate": exc.challenge()}
    )


async def _refuse(send: Send, exc: BearerError) -> None:
    code: IssueCode = "login" if exc.status == 401 else "forbidden"
    body = json.dumps(operation_outcome([Issue("error", code, exc.description)])).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", RESPONSE_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", exc.challenge().encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
