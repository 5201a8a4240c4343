"""HTTP routes of the store's SMART server: `[base]/auth/token`, `[base]/.well-known/smart-configuration`.

RFC 6749 section 5.1: token answers are JSON with `Cache-Control: no-store` and `Pragma: no-cache`.
SMART App Launch 2.2 conformance.html: discovery is JSON at `[base]/.well-known/smart-configuration`.
"""

from __future__ import annotations

from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chartgate.devstore.outcome import fhir_error
from chartgate.devstore.smart import MAX_REQUEST_BYTES, AuthServer

TOKEN_PATH: Final = "/auth/token"  # noqa: S105 - a URL path, not a secret
DISCOVERY_PATH: Final = "/.well-known/smart-configuration"
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def smart_routes(auth: AuthServer | None, base: str) -> list[Route]:
    """The two routes; with auth off they answer 404 saying how to turn it on."""

    def token_url(request: Request) -> str:
        return (
            auth.token_url(f"{request.url.scheme}://{request.url.netloc}{base}{TOKEN_PATH}")
            if auth
            else ""
        )

    def require_auth() -> AuthServer:
        if auth is None:
            raise fhir_error(
                404,
                "not-found",
                "this store runs without SMART auth (start it with --clients FILE)",
            )
        return auth

    async def token(request: Request) -> Response:
        server = require_auth()
        body = await _bounded_body(request)
        status, answer = await run_in_threadpool(
            server.token_request, request.headers.get("content-type", ""), body, token_url(request)
        )
        return JSONResponse(answer, status, headers=_NO_STORE)

    async def discovery(request: Request) -> Response:
        server = require_auth()
        return JSONResponse(server.smart_configuration(token_url(request)))

    return [
        Route(f"{base}{TOKEN_PATH}", token, methods=["POST"]),
        Route(f"{base}{DISCOVERY_PATH}", discovery, methods=["GET"]),
    ]


async def _bounded_body(request: Request) -> bytes:
    """The body, or as much as proves it too large (the token logic then refuses it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            break
    return b"".join(chunks)
