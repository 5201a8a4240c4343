"""Test control endpoints (issue 9): `/_faults` (the fault plan, its counters) and `/_auth/*` (revoke, log).

Off unless the store was started with `--allow-fault-control`, and then answered only to loopback
peers: they change how the store fails and can revoke every token, so they are a test harness,
never something a network neighbour may reach. The peer is the TCP peer (the server runs without
proxy-header rewriting), so a forwarded-for header cannot claim to be local.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Final

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chartgate.devstore.faults import FaultPlan, FaultState
from chartgate.devstore.smart import AuthServer

FAULTS_PATH: Final = "/_faults"
REVOKE_PATH: Final = "/_auth/revoke"
AUTH_LOG_PATH: Final = "/_auth/log"
_MAX_BODY: Final = 65_536


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Control:
    """The handlers; every one passes the same gate first."""

    def __init__(self, *, enabled: bool, faults: FaultState, auth: AuthServer | None) -> None:
        self._enabled = enabled
        self._faults = faults
        self._auth = auth

    def routes(self) -> list[Route]:
        return [
            Route(FAULTS_PATH, self.faults, methods=["GET", "POST", "DELETE"]),
            Route(REVOKE_PATH, self.revoke, methods=["POST"]),
            Route(AUTH_LOG_PATH, self.auth_log, methods=["GET"]),
        ]

    def _refusal(self, request: Request) -> Response | None:
        if not self._enabled:
            return _error(
                403, "the control endpoints are off: start the store with --allow-fault-control"
            )
        if not is_loopback(request.client.host if request.client else None):
            return _error(403, "the control endpoints answer loopback clients only")
        return None

    async def faults(self, request: Request) -> Response:
        """GET: the plan and counters; POST: put a plan in force (counters restart); DELETE: none."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        if request.method == "POST":
            body = await request.body()
            if len(body) > _MAX_BODY:
                return _error(413, "the fault plan is too large")
            try:
                plan = FaultPlan.model_validate_json(body)
            except ValidationError as exc:
                problems = [
                    {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                    for e in exc.errors()
                ]
                return JSONResponse({"error": "invalid fault plan", "problems": problems}, 400)
            self._faults.replace(plan)
        elif request.method == "DELETE":
            self._faults.replace(FaultPlan())
        return JSONResponse(dict(self._faults.report()))

    async def revoke(self, request: Request) -> Response:
        """Revoke every live access token, or one client's (`{"client_id": ...}`)."""
        refused = self._refusal(request) or self._auth_off()
        if refused is not None:
            return refused
        assert self._auth is not None
        body = await request.body()
        client_id: Any = None
        if body:
            try:
                client_id = json.loads(body).get("client_id")
            except (ValueError, AttributeError):
                return _error(400, 'the body must be {"client_id": "..."} or empty')
        if client_id is not None and not isinstance(client_id, str):
            return _error(400, "client_id must be a string")
        return JSONResponse({"revoked": self._auth.revoke(client_id)})

    async def auth_log(self, request: Request) -> Response:
        """Token requests, tokens issued, and the assertions received (claims, never the JWT)."""
        refused = self._refusal(request) or self._auth_off()
        if refused is not None:
            return refused
        assert self._auth is not None
        return JSONResponse(self._auth.report())

    def _auth_off(self) -> Response | None:
        if self._auth is None:
            return _error(404, "this store runs without SMART auth (start it with --clients FILE)")
        return None


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status)
