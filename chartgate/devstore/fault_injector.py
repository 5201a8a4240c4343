"""ASGI middleware that injects the FaultPlan's faults into FHIR interactions (issue 9; RFC 9110, RFC 6585 section 4).

It wraps the whole Starlette app, outside its error handling: a dropped connection must not be
turned into a 500 by a layer that catches exceptions, and the socket is reachable only from the
server's own `send` callable (uvicorn's request cycle keeps the transport on it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chartgate.devstore.faults import (
    Alter,
    Drop,
    Fault,
    FaultState,
    Reject,
    Slow,
    Throttle,
    Unavailable,
    apply_changes,
)
from chartgate.devstore.http_headers import RESPONSE_CONTENT_TYPE
from chartgate.devstore.interactions import classify
from chartgate.devstore.outcome import Issue, IssueCode, operation_outcome

log: Final = logging.getLogger("chartgate.devstore.faults")


class DropUnsupported(RuntimeError):
    """The ASGI server does not expose the connection, so a drop cannot be injected."""


class FaultInjector:
    """Decides each FHIR interaction's fault from the shared FaultState and carries it out."""

    def __init__(self, app: ASGIApp, state: FaultState, base: str) -> None:
        self.app = app
        self.state = state
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        classified = classify(scope["method"], scope["path"], self.base)
        interaction = classified[0] if classified else None
        fault = self.state.decide(interaction) if interaction is not None else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        # Method and path only: the query string can carry identifiers (PHI).
        # %r: the path arrives percent-decoded, and a line break in it must not forge a log line.
        log.info("fault %s injected: %s %r", fault.kind, scope["method"], scope["path"][:200])
        await self._inject(fault, scope, receive, send)

    async def _inject(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        rule = fault.rule
        if fault.kind == "server_error":
            await _drain(receive)
            await _answer(send, 500, "exception", "injected fault: internal server error", {})
        elif fault.kind == "unavailable":
            assert isinstance(rule, Unavailable)
            headers = {}
            if rule.retry_after_seconds is not None:
                headers["retry-after"] = str(rule.retry_after_seconds)
            await _drain(receive)
            await _answer(send, 503, "transient", "injected fault: service unavailable", headers)
        elif fault.kind == "throttle":
            assert isinstance(rule, Throttle)
            await _drain(receive)
            await _answer(
                send,
                429,
                "throttled",
                "injected fault: too many requests",
                {"retry-after": str(rule.retry_after_seconds)},
            )
        elif fault.kind == "slow":
            assert isinstance(rule, Slow)
            await self._slow(rule, scope, receive, send)
        elif fault.kind == "drop_before_commit":
            assert isinstance(rule, Drop)
            await _drain(receive)  # the whole request was sent: "sent, no answer"
            await _drop(send, reset=rule.reset)
        elif fault.kind == "alter":
            assert isinstance(rule, Alter)
            await self.app(scope, _altered(receive, rule), send)
        elif fault.kind == "reject":
            assert isinstance(rule, Reject)
            await _drain(receive)
            await _answer(send, rule.status, "business-rule", rule.diagnostics, {})
        else:  # drop_after_commit
            assert isinstance(rule, Drop)
            await self.app(scope, receive, _discard)  # handled in full: a write commits
            await _drop(send, reset=rule.reset)

    async def _slow(self, rule: Slow, scope: Scope, receive: Receive, send: Send) -> None:
        if rule.phase == "before":
            await asyncio.sleep(rule.delay_seconds)
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        await asyncio.sleep(rule.delay_seconds)
        for message in held:
            await send(message)


async def _discard(message: Message) -> None:
    """The answer of a request whose connection is about to be dropped: nobody will read it."""


def _altered(receive: Receive, rule: Alter) -> Receive:
    """A `receive` that hands the app the request body with the plan's changes applied."""
    done = False

    async def altered() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        done = True
        body = b"".join(chunks)
        try:
            resource = json.loads(body)
        except (ValueError, RecursionError):  # the app answers a body it cannot read, not us
            return {"type": "http.request", "body": body, "more_body": False}
        if isinstance(resource, dict):
            for target in _resources_of(resource):
                apply_changes(target, rule.changes)
            body = json.dumps(resource).encode()
        return {"type": "http.request", "body": body, "more_body": False}

    return altered


def _resources_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What an EHR would alter: the resource sent, or each resource a transaction carries (the
    changes' paths are the resource's, e.g. `note[0].text`; the Bundle itself is a change too,
    so `entry[0].resource...` paths still apply)."""
    if body.get("resourceType") != "Bundle" or body.get("type") != "transaction":
        return [body]
    entries = body.get("entry")
    inner = [
        e["resource"]
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    return [body, *inner]


async def _drain(receive: Receive) -> None:
    """Read the request body to its end, so the client has finished sending before we answer."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _answer(
    send: Send, status: int, code: IssueCode, diagnostics: str, headers: dict[str, str]
) -> None:
    body = json.dumps(operation_outcome([Issue("error", code, diagnostics)])).encode()
    raw = [
        (b"content-type", RESPONSE_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send, *, reset: bool) -> None:
    """Close the client's connection with no HTTP response, then wait until the server knows.

    uvicorn's `send` is a method of its request cycle, which holds the asyncio transport. Once
    connection_lost has marked the cycle disconnected, returning without a response is silent
    (otherwise uvicorn would answer 500 itself, which is exactly what must not reach the client).
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "close"):
        raise DropUnsupported("dropping a connection needs uvicorn's h11 or httptools protocol")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER on, timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    for _ in range(1000):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)
