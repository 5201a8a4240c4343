"""ASGI middleware that logs each request as method, path and status only, never resource content (PHI)."""

from __future__ import annotations

import json
import logging
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chartgate.devstore.http_headers import RESPONSE_CONTENT_TYPE
from chartgate.devstore.outcome import Issue, operation_outcome

log: Final = logging.getLogger("chartgate.devstore")


class AccessLog:
    """Logs `METHOD /path STATUS` (no query string: search values can be identifiers).

    Also the last stop for an unexpected exception: it is logged by type only, since a message or
    traceback can quote the resource, and answered with a 500 OperationOutcome.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:  # the boundary that must not leak detail
            log.error("%s %s raised %s", scope["method"], scope["path"], type(exc).__name__)
            if status == 0:
                status = 500
                await _internal_error(send)
        log.info("%s %s %d", scope["method"], scope["path"], status)


async def _internal_error(send: Send) -> None:
    body = json.dumps(
        operation_outcome([Issue("fatal", "exception", "internal server error")])
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", RESPONSE_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
