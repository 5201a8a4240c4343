"""The dev issuer over HTTP (Starlette): OIDC Discovery §3-4, a JWKS, and the code flow (OIDC Core §3.1) with PKCE S256.

A development target, not a product: anyone who can reach it can sign in as any configured user
by clicking a name. `serve` binds loopback unless told otherwise.
"""

from __future__ import annotations

import html
import logging
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from chartgate.devissuer.codes import S256_CHALLENGE, CodeStore, verifier_matches
from chartgate.devissuer.issuer import DevClient, DevIssuer, DevUser
from chartgate.devissuer.keys import ALGORITHM

log: Final = logging.getLogger("chartgate.devissuer")

TOKEN_LIFETIME_SECONDS: Final = 300
MAX_QUERY_BYTES: Final = 4096
MAX_FORM_BYTES: Final = 8192
MAX_PARAMETER_LENGTH: Final = 512
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1
HTML_HEADERS: Final = {
    **NO_STORE,
    # The page shows a form and nothing else: no scripts, no framing (clickjacking), no referrer
    # (the URL carries the request's state and PKCE challenge).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CLAIMS_SUPPORTED: Final = (
    *("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "auth_time", "nonce", "azp"),
    *("name", "roles", "tenant", "fhirUser"),
)
_AUTHORIZE_FIELDS: Final[tuple[str, ...]] = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)


class _BadRequest(Exception):
    """A request we answer ourselves: the client or redirect URI is not trusted, or the form is bad."""


class _RedirectError(Exception):
    """RFC 6749 §4.1.2.1: an error reported to the (verified) client by redirecting to it."""

    def __init__(self, redirect_uri: str, error: str, description: str, state: str | None) -> None:
        super().__init__(description)
        self.redirect_uri = redirect_uri
        self.error = error
        self.description = description
        self.state = state


class _TokenError(Exception):
    """RFC 6749 §5.2 error response from the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class DevIssuerApi:
    """The handlers; all state is the issuer (keys, users, clients) and the outstanding codes."""

    def __init__(self, issuer: DevIssuer) -> None:
        self.issuer = issuer
        self.codes = CodeStore(issuer.clock)

    async def discovery(self, _: Request) -> Response:
        """OIDC Discovery §3: the provider metadata; `issuer` is exactly the URL it is served under."""
        iss = self.issuer.issuer
        return JSONResponse(
            {
                "issuer": iss,
                "authorization_endpoint": f"{iss}/authorize",
                "token_endpoint": f"{iss}/token",
                "jwks_uri": f"{iss}/jwks",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "scopes_supported": ["openid", "profile", "fhirUser"],
                "claims_supported": list(CLAIMS_SUPPORTED),
                "authorization_response_iss_parameter_supported": True,  # RFC 9207
            }
        )

    async def jwks(self, _: Request) -> Response:
        """RFC 7517 §5; read from disk on each request so a rotation elsewhere shows at once."""
        return JSONResponse(self.issuer.keys.jwks(), headers={"Cache-Control": "max-age=60"})

    async def authorize_page(self, request: Request) -> Response:
        """GET /authorize: check the request, then show a form to pick a dev user."""
        try:
            if len(request.url.query) > MAX_QUERY_BYTES:
                raise _BadRequest("the authorization request is too long")
            params = _single_values(parse_qsl(request.url.query, keep_blank_values=True))
            client, fields = self._authorization_request(params)
        except _BadRequest as exc:
            return _error_page(str(exc))
        except _RedirectError as exc:
            return self._redirect_error(exc)
        return HTMLResponse(
            _form_page(client, fields, self.issuer.users.values()), 200, HTML_HEADERS
        )

    async def authorize_submit(self, request: Request) -> Response:
        """POST /authorize: the form's answer; issue a one-use code and redirect to the client."""
        try:
            params = _single_values(await _read_form(request))
            client, fields = self._authorization_request(params)
            user = self.issuer.users.get(params.get("user", ""))
            if user is None:
                raise _BadRequest("pick one of the listed users")
        except _BadRequest as exc:
            return _error_page(str(exc))
        except _RedirectError as exc:
            return self._redirect_error(exc)
        code = self.codes.issue(
            client_id=client.client_id,
            redirect_uri=fields["redirect_uri"],
            code_challenge=fields["code_challenge"],
            subject=user.sub,
            scope=fields["scope"],
            nonce=fields.get("nonce") or None,
        )
        if code is None:
            return self._redirect_error(
                _RedirectError(
                    fields["redirect_uri"],
                    "temporarily_unavailable",
                    "too many outstanding codes",
                    fields.get("state"),
                )
            )
        log.info("code issued to client %s for user %s", client.client_id, user.sub)
        answer = {"code": code, "iss": self.issuer.issuer}
        if fields.get("state"):
            answer["state"] = fields["state"]
        return _redirect(fields["redirect_uri"], answer)

    async def token(self, request: Request) -> Response:
        """RFC 6749 §4.1.3 with RFC 7636 §4.5: code + code_verifier for an ID token and an access token."""
        try:
            params = _single_values(await _read_form(request))
            body = self._exchange(params)
        except _BadRequest as exc:
            body, status = {"error": "invalid_request", "error_description": str(exc)}, 400
        except _TokenError as exc:
            body, status = {"error": exc.error, "error_description": exc.description}, exc.status
        else:
            status = 200
        return JSONResponse(body, status, NO_STORE)

    def _authorization_request(self, params: dict[str, str]) -> tuple[DevClient, dict[str, str]]:
        """OIDC Core §3.1.2.1/§3.1.2.2 and RFC 7636 §4.3, S256 only."""
        for name, value in params.items():
            if len(value) > MAX_PARAMETER_LENGTH:
                raise _BadRequest(f"parameter {name} is longer than {MAX_PARAMETER_LENGTH}")
        # Until client and redirect URI are verified, errors are shown here, never redirected
        # (RFC 6749 §4.1.2.1): an open redirector would hand codes or errors to anyone.
        client = self.issuer.clients.get(params.get("client_id", ""))
        if client is None:
            raise _BadRequest("unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise _BadRequest("redirect_uri is not registered for this client (exact match)")
        state = params.get("state")

        def fail(error: str, description: str) -> _RedirectError:
            return _RedirectError(redirect_uri, error, description, state)

        if params.get("response_type") != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        if "openid" not in params.get("scope", "").split(" "):
            raise fail("invalid_scope", "scope must include openid")
        # RFC 7636 §4.3: a missing method means "plain", which this issuer refuses.
        if params.get("code_challenge_method") != "S256":
            raise fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
        if not S256_CHALLENGE.fullmatch(params.get("code_challenge", "")):
            raise fail("invalid_request", "code_challenge must be a base64url SHA-256 (43 chars)")
        fields = {k: params[k] for k in _AUTHORIZE_FIELDS if k in params}
        return client, fields

    def _exchange(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("grant_type") != "authorization_code":
            raise _TokenError("unsupported_grant_type", "only authorization_code is supported")
        client = self.issuer.clients.get(params.get("client_id", ""))
        if client is None:
            raise _TokenError("invalid_client", "unknown client_id", 401)
        grant = self.codes.redeem(params.get("code", ""))
        if grant is None:
            raise _TokenError("invalid_grant", "the code is unknown, used or expired")
        if grant.client_id != client.client_id:
            raise _TokenError("invalid_grant", "the code was issued to another client")
        if params.get("redirect_uri") != grant.redirect_uri:
            raise _TokenError(
                "invalid_grant", "redirect_uri differs from the authorization request"
            )
        if not verifier_matches(params.get("code_verifier", ""), grant.code_challenge):
            raise _TokenError("invalid_grant", "code_verifier does not match the code_challenge")
        user = self.issuer.users.get(grant.subject)
        if user is None:  # pragma: no cover - users are fixed for the app's lifetime
            raise _TokenError("invalid_grant", "the user is no longer configured")
        log.info("tokens issued to client %s for user %s", client.client_id, user.sub)
        return self._tokens(client, user, grant.scope, grant.nonce, grant.auth_time)

    def _tokens(
        self, client: DevClient, user: DevUser, scope: str, nonce: str | None, auth_time: int
    ) -> dict[str, Any]:
        id_claims: dict[str, Any] = {"azp": client.client_id, "auth_time": auth_time}
        if nonce is not None:
            id_claims["nonce"] = nonce  # OIDC Core §3.1.3.6: echoed so the client can bind it
        id_token = self.issuer.user_token(
            user,
            audience=client.client_id,  # OIDC Core §2: aud contains the client_id
            lifetime_seconds=TOKEN_LIFETIME_SECONDS,
            extra_claims=id_claims,
        )
        access_token = self.issuer.user_token(
            user,
            audience=client.audience,  # the Review API the console calls
            lifetime_seconds=TOKEN_LIFETIME_SECONDS,
            typ="at+jwt",  # RFC 9068 §2.1
            extra_claims={"client_id": client.client_id, "scope": scope, "auth_time": auth_time},
        )
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "id_token": id_token,
            "scope": scope,
        }

    def _redirect_error(self, exc: _RedirectError) -> Response:
        answer = {
            "error": exc.error,
            "error_description": exc.description,
            "iss": self.issuer.issuer,
        }
        if exc.state:
            answer["state"] = exc.state
        return _redirect(exc.redirect_uri, answer)


def _single_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 §3.1: parameters MUST NOT be included more than once."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _BadRequest(f"parameter {name} is repeated")
        params[name] = value
    return params


async def _read_form(request: Request) -> list[tuple[str, str]]:
    """An application/x-www-form-urlencoded body, read up to MAX_FORM_BYTES."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise _BadRequest("the body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _BadRequest("the form is too large")
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, max_num_fields=32)
    except ValueError:
        raise _BadRequest("the form is not valid") from None


def _redirect(uri: str, params: dict[str, str]) -> Response:
    separator = "&" if "?" in uri else "?"
    # 303: the browser follows with a GET, whether it arrived by GET or by the form's POST.
    return RedirectResponse(f"{uri}{separator}{urlencode(params)}", 303, NO_STORE)


def _error_page(message: str) -> Response:
    body = (
        "<!doctype html><title>Chartgate dev issuer</title>"
        f"<h1>Request refused</h1><p>{html.escape(message)}</p>"
    )
    return HTMLResponse(body, 400, HTML_HEADERS)


def _form_page(client: DevClient, fields: dict[str, str], users: Any) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    buttons = "".join(
        '<p><button type="submit" name="user" value="{sub}">{name}</button> '
        "{sub} &middot; roles: {roles} &middot; tenants: {tenants} &middot; {fhir}</p>".format(
            sub=html.escape(u.sub),
            name=html.escape(u.name),
            roles=html.escape(", ".join(u.roles) or "none"),
            tenants=html.escape(", ".join(u.tenants) or "none"),
            fhir=html.escape(u.fhir_user),
        )
        for u in users
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Chartgate dev issuer</title>"
        "<h1>Chartgate development issuer</h1>"
        "<p><strong>Development target, not a product:</strong> no passwords; pick who you are."
        f"</p><p>Signing in to <code>{html.escape(client.client_id)}</code>.</p>"
        f'<form method="post" action="authorize">{hidden}{buttons}</form>'
    )


def create_app(issuer: DevIssuer) -> Starlette:
    """The ASGI app for one issuer; codes live in memory for the app's lifetime."""
    api = DevIssuerApi(issuer)
    routes = [
        Route("/.well-known/openid-configuration", api.discovery, methods=["GET"]),
        Route("/jwks", api.jwks, methods=["GET"]),
        Route("/authorize", api.authorize_page, methods=["GET"]),
        Route("/authorize", api.authorize_submit, methods=["POST"]),
        Route("/token", api.token, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def serve(host: str, port: int, issuer: DevIssuer) -> None:
    """Run with uvicorn until SIGTERM/SIGINT (blocking)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    log.info(
        "dev issuer %s on http://%s:%d (JWKS %s/jwks; development target, not a product)",
        issuer.issuer,
        host,
        port,
        issuer.issuer,
    )
    # access_log=False: uvicorn's access line carries the query string, and /authorize's query
    # carries the client's state and the redirect's code. log_config=None keeps our logging.
    uvicorn.run(app=create_app(issuer), host=host, port=port, access_log=False, log_config=None)
