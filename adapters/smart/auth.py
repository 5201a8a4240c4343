"""SMART Backend Services bearer auth for httpx: client_credentials + private_key_jwt (RFC 6749 4.4, RFC 7523).

SMART App Launch 2.2 backend-services.html: POST the token URL with grant_type=client_credentials,
scope, client_assertion_type and a fresh client_assertion; the answer carries access_token,
token_type bearer, expires_in (SHOULD NOT exceed 300 s) and scope, and no refresh token, so a new
access token is fetched with a new assertion. Each FHIR request then carries
`Authorization: Bearer` (RFC 6750 section 2.1).

The token is cached until `refresh_margin_seconds` before it expires. A 401 from the FHIR server
(a revoked or expired token) fetches one new token and retries that request once, never more:
a second 401 is the answer. One fetch at a time: the adapter serves gRPC from a thread pool, and N
threads meeting an expired token must cause one token request, not N.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from adapters.smart.assertion import JWT_BEARER, AssertionSigner
from adapters.smart.keys import load_signing_key
from adapters.smart.settings import SmartSettings

log: Final = logging.getLogger("chartgate.adapter.smart")

_MAX_ERROR: Final = 64
_MAX_DESCRIPTION: Final = 300
_MAX_TOKEN: Final = 8_192
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


class TokenEndpointError(Exception):
    """No access token: the EHR's token endpoint refused (its OAuth `error` and
    `error_description`, bounded and printable) or could not be reached. Never carries the
    assertion or a token. `retryable`: nothing was refused for a reason a retry cannot change
    (unreachable, no answer, 5xx, 429); an OAuth refusal is final until configuration changes."""

    def __init__(
        self, error: str, description: str, *, http_status: int | None, retryable: bool
    ) -> None:
        self.error = _printable(error, _MAX_ERROR) or "unknown_error"
        self.description = _printable(description, _MAX_DESCRIPTION)
        self.http_status = http_status
        self.retryable = retryable
        status = f" (HTTP {http_status})" if http_status is not None else ""
        detail = f": {self.description}" if self.description else ""
        super().__init__(f"SMART token endpoint: {self.error}{detail}{status}")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and when to stop using it; its repr hides the token."""

    value: str = field(repr=False)
    expires_in: int
    scope: str
    refresh_at: float  # on the auth's monotonic clock


class BackendServicesAuth(httpx.Auth):
    """httpx.Auth that adds a SMART Backend Services bearer token to every request."""

    requires_request_body = True  # a request retried after a 401 is sent again in full

    def __init__(
        self,
        signer: AssertionSigner,
        *,
        token_url: str,
        scope: str,
        refresh_margin_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._signer = signer
        self._token_url = token_url
        self._scope = scope
        self._margin = refresh_margin_seconds
        self._clock = clock
        # Its own client: the token request must not pass through this auth (no bearer there).
        self._http = httpx.Client(
            timeout=timeout_seconds, transport=transport, headers={"Accept": "application/json"}
        )
        self._lock = threading.Lock()
        self._cached: AccessToken | None = None
        self._token_requests = 0

    @classmethod
    def from_settings(
        cls, settings: SmartSettings, *, transport: httpx.BaseTransport | None = None
    ) -> BackendServicesAuth:
        """Load the private key named by the settings and build the auth (raises
        SigningKeyError for a bad key file, naming the file)."""
        key = load_signing_key(settings.private_key_path, settings.alg, settings.kid)
        signer = AssertionSigner(
            key,
            client_id=settings.client_id,
            token_url=settings.token_url,
            lifetime_seconds=settings.assertion_lifetime_seconds,
        )
        return cls(
            signer,
            token_url=settings.token_url,
            scope=settings.scope,
            refresh_margin_seconds=settings.refresh_margin_seconds,
            timeout_seconds=settings.timeout_seconds,
            transport=transport,
        )

    @property
    def token_requests(self) -> int:
        """How many token requests this auth has made (for metrics and tests)."""
        return self._token_requests

    def close(self) -> None:
        self._http.close()

    def token(self) -> AccessToken:
        """The cached token while it is fresh, else a new one."""
        with self._lock:
            cached = self._cached
            if cached is not None and self._clock() < cached.refresh_at:
                return cached
            return self._fetch_locked()

    def fetch_token(self) -> AccessToken:
        """A new token from the token endpoint, whatever is cached (it replaces the cache)."""
        with self._lock:
            return self._fetch_locked()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code != 401:
            return
        log.warning("FHIR server answered 401; fetching a new access token and retrying once")
        renewed = self._renew(token)
        request.headers["Authorization"] = f"Bearer {renewed.value}"
        yield request  # whatever this answers is the answer: no second refresh

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise RuntimeError("BackendServicesAuth serves sync httpx clients (the adapter's)")
        yield request  # pragma: no cover - makes this an async generator

    def _renew(self, stale: AccessToken) -> AccessToken:
        """After a 401 with `stale`: a token another thread fetched meanwhile, or a new one."""
        with self._lock:
            cached = self._cached
            if (
                cached is not None
                and cached.value != stale.value
                and self._clock() < cached.refresh_at
            ):
                return cached
            return self._fetch_locked()

    def _fetch_locked(self) -> AccessToken:
        self._cached = None
        self._token_requests += 1
        started = self._clock()
        form = {
            "grant_type": "client_credentials",
            "scope": self._scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self._signer.mint(),
        }
        try:
            response = self._http.post(self._token_url, data=form)
        except httpx.TransportError as exc:
            # Not an httpx error on purpose: the FHIR request was never sent, and a writer that
            # reads every httpx.TransportError as "sent, no answer" must not take this for one.
            error = "unreachable" if isinstance(exc, httpx.ConnectError) else "no_answer"
            raise TokenEndpointError(
                error, type(exc).__name__, http_status=None, retryable=True
            ) from None
        token = _parse_token(response, started, self._margin)
        self._cached = token
        log.info(
            "SMART access token obtained: expires_in=%d s, scope=%s",
            token.expires_in,
            _printable(token.scope, 300),  # the EHR's words: bounded, control characters out
        )
        return token


def _parse_token(response: httpx.Response, started: float, margin: float) -> AccessToken:
    """RFC 6749 section 5.1 (or 5.2 for a refusal) into an AccessToken or TokenEndpointError."""
    body = _json(response)
    if response.status_code != 200:
        error = body.get("error") if body is not None else None
        retryable = response.status_code >= 500 or response.status_code == 429
        if isinstance(error, str):
            description = body.get("error_description") if body is not None else None
            raise TokenEndpointError(
                error,
                description if isinstance(description, str) else "",
                http_status=response.status_code,
                retryable=retryable,
            )
        raise TokenEndpointError(
            "http_error",
            "the token endpoint answered without an OAuth error",
            http_status=response.status_code,
            retryable=retryable,
        )
    if body is None:
        raise _malformed(response, "the answer is not a JSON object")
    value = body.get("access_token")
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TOKEN:
        raise _malformed(response, "access_token is missing")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _malformed(response, "token_type is not bearer")
    expires_in = body.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        raise _malformed(response, "expires_in is missing or not a positive integer")
    scope = body.get("scope")
    # Measured from before the request left: the token may be a little older than we think,
    # never younger. Half the lifetime at most, so a short token is still used at all.
    refresh_at = started + expires_in - min(margin, expires_in / 2)
    return AccessToken(value, expires_in, scope if isinstance(scope, str) else "", refresh_at)


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _malformed(response: httpx.Response, problem: str) -> TokenEndpointError:
    return TokenEndpointError(
        "invalid_response", problem, http_status=response.status_code, retryable=False
    )


def _printable(text: str, limit: int) -> str:
    cleaned = _UNPRINTABLE.sub("?", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
