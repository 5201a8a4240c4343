"""The store's SMART Backend Services authorization server: token endpoint, bearer checks, discovery.

Implements, for a development target:
* SMART App Launch 2.2 backend-services.html: client_credentials (RFC 6749 section 4.4) with
  `system/` scopes, checked against what the client is registered for; access tokens short-lived
  (`expires_in` SHOULD NOT exceed 300); no refresh tokens.
* client-confidential-asymmetric.html: the client authenticates with a one-time JWT
  (RFC 7523 section 2.2, section 3) signed RS384 or ES384 under a registered `kid`, with
  `iss` = `sub` = client_id, `aud` = the token URL, `exp` no more than five minutes in the
  future, and a `jti` never seen before for that `iss` within the assertion's lifetime; any
  authentication failure is answered `invalid_client` (RFC 6749 section 5.2).
* RFC 6749 sections 5.1 and 5.2 for the answers (JSON, `Cache-Control: no-store`), and RFC 6750
  section 3 for the resource server: 401 with `WWW-Authenticate: Bearer` (`error="invalid_token"`
  for a bad token), 403 `insufficient_scope` naming the scope needed.
* discovery at `[base]/.well-known/smart-configuration` (conformance.html).

Access tokens are opaque and kept in memory: a restart revokes them all (clients fetch another on
their 401). Used `jti` values are kept in SQLite beside the store, so a restart does not reopen a
replay window.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard
from urllib.parse import parse_qsl

from joserfc import jws, jwt
from joserfc.errors import JoseError

from chartgate.devstore.interactions import PERMISSION, TypeInteraction
from chartgate.devstore.smart_clients import (
    ALGORITHMS,
    ClientKeys,
    SmartServerConfig,
    load_clients,
    parse_system_scope,
)
from chartgate.smart_scope import SmartScope

JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME: Final = 300  # seconds: "no more than five minutes in the future"
MAX_REQUEST_BYTES: Final = 16_384
MAX_ASSERTION_CHARS: Final = 8_192
REALM: Final = "chartgate-devstore"
_RECORDED: Final = 1_000  # assertions kept for the control endpoint's log

OAuthErrorCode = Literal[
    "invalid_request", "invalid_client", "invalid_grant", "invalid_scope", "unsupported_grant_type"
]
# RFC 6749 section 5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (no `"` or `\`).
_NOT_DESCRIPTION: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_BEARER: Final = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)


class OAuthError(Exception):
    """A token request refused per RFC 6749 section 5.2."""

    def __init__(self, error: OAuthErrorCode, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = _NOT_DESCRIPTION.sub("?", description)[:300]

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class BearerError(Exception):
    """A FHIR request refused by the resource server (RFC 6750 section 3)."""

    def __init__(
        self, status: int, error: str | None, description: str, scope: str | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = _NOT_DESCRIPTION.sub("?", description)[:300]
        self.scope = scope

    def challenge(self) -> str:
        """The WWW-Authenticate value. No error code when the request carried no token
        (RFC 6750 section 3.1)."""
        parts = [f'realm="{REALM}"']
        if self.error is not None:
            parts += [f'error="{self.error}"', f'error_description="{self.description}"']
        if self.scope is not None:
            parts.append(f'scope="{self.scope}"')
        return "Bearer " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class AccessGrant:
    client_id: str
    scopes: tuple[SmartScope, ...]
    expires_at: float


class SeenJti:
    """Used assertion ids per client, each kept until its assertion expires (SQLite)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen_jti (client_id TEXT NOT NULL, jti TEXT NOT NULL, "
            "expires_at INTEGER NOT NULL, PRIMARY KEY (client_id, jti))"
        )

    def first_use(self, client_id: str, jti: str, expires_at: int, now: float) -> bool:
        """Record the jti; False when it was already recorded and has not expired."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM seen_jti WHERE expires_at < ?", (int(now),))
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO seen_jti VALUES (?, ?, ?)", (client_id, jti, expires_at)
                ).rowcount
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return inserted == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


class AuthServer:
    """Token endpoint logic and bearer checks; no HTTP here, so it is testable on its own."""

    def __init__(
        self,
        config: SmartServerConfig,
        jti_path: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clients = load_clients(config)
        self._seen = SeenJti(jti_path)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, AccessGrant] = {}
        self._recorded: deque[dict[str, Any]] = deque(maxlen=_RECORDED)
        self._token_requests = 0
        self._issued = 0

    def close(self) -> None:
        self._seen.close()

    def token_url(self, derived: str) -> str:
        return self._config.token_url or derived

    def smart_configuration(self, token_url: str) -> dict[str, Any]:
        """`.well-known/smart-configuration` for a backend-services-only server."""
        scopes = sorted({s for c in self._config.clients for s in c.scopes})
        return {
            "token_endpoint": token_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
            "scopes_supported": scopes,
            "capabilities": ["client-confidential-asymmetric"],
        }

    # -- token endpoint ---------------------------------------------------------------------

    def token_request(
        self, content_type: str, body: bytes, token_url: str
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for one POST to the token endpoint."""
        with self._lock:
            self._token_requests += 1
        try:
            params = _form(content_type, body)
            grant_type = params.get("grant_type")
            if grant_type is None:
                raise OAuthError("invalid_request", "grant_type is required")
            if grant_type != "client_credentials":
                raise OAuthError(
                    "unsupported_grant_type", "only grant_type=client_credentials is supported"
                )
            assertion = params.get("client_assertion")
            assertion_type = params.get("client_assertion_type")
            if assertion is None or assertion_type is None:
                raise OAuthError(
                    "invalid_client",
                    "no client authentication: client_assertion_type and client_assertion "
                    "(private_key_jwt) are required",
                )
            if assertion_type != JWT_BEARER:
                raise OAuthError("invalid_client", f"client_assertion_type must be {JWT_BEARER}")
            scope = params.get("scope")
            if scope is None:
                raise OAuthError("invalid_request", "scope is required")
            client = self._authenticate(assertion, token_url, params.get("client_id"))
            granted = _grant(client, scope)
            return 200, self._issue(client, granted, scope)
        except OAuthError as exc:
            return 400, exc.body()

    def _authenticate(self, assertion: str, token_url: str, client_id: str | None) -> ClientKeys:
        """RFC 7523 section 3 and client-confidential-asymmetric.html, "Signature Verification"."""
        record: dict[str, Any] = {"received_at": self._clock()}
        try:
            client = self._verify(assertion, token_url, client_id, record)
        except OAuthError as exc:
            record.update(outcome=exc.error, description=exc.description)
            with self._lock:
                self._recorded.append(record)
            raise
        record["outcome"] = "accepted"
        with self._lock:
            self._recorded.append(record)
        return client

    def _verify(
        self, assertion: str, token_url: str, client_id: str | None, record: dict[str, Any]
    ) -> ClientKeys:
        if len(assertion) > MAX_ASSERTION_CHARS:
            raise OAuthError("invalid_client", "client_assertion is too long")
        try:
            compact = jws.extract_compact(assertion.encode("ascii"))
            unverified = json.loads(compact.payload)
        except (JoseError, ValueError, UnicodeError, RecursionError):
            # RecursionError: a payload of nested arrays within the size limit (not a 500).
            raise OAuthError("invalid_client", "client_assertion is not a signed JWT") from None
        header = compact.protected
        if not isinstance(unverified, dict):
            raise OAuthError("invalid_client", "client_assertion claims are not a JSON object")
        record.update(
            alg=_short(header.get("alg")),
            kid=_short(header.get("kid")),
            client_id=_short(unverified.get("iss")),
            jti=_short(unverified.get("jti")),
            **{k: unverified.get(k) for k in ("iat", "nbf", "exp") if _is_int(unverified.get(k))},
        )
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OAuthError(
                "invalid_client",
                f"assertion alg {_short(alg)!r} is not accepted: sign with RS384 or ES384",
            )
        if header.get("typ") != "JWT":
            raise OAuthError("invalid_client", "assertion header typ must be JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise OAuthError("invalid_client", "assertion header kid is required")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise OAuthError("invalid_client", "assertion iss (the client_id) is required")
        client = self._clients.get(issuer)
        if client is None:
            raise OAuthError("invalid_client", f"client {_short(issuer)!r} is not registered")
        if client_id is not None and client_id != issuer:
            raise OAuthError("invalid_client", "client_id does not match the assertion's iss")
        key = client.key_for(kid, alg)
        if key is None:
            raise OAuthError(
                "invalid_client",
                f"kid {_short(kid)!r} names no {alg} key registered for client {issuer!r}",
            )
        try:
            claims = jwt.decode(assertion, key, algorithms=[alg]).claims
        except (JoseError, ValueError):
            raise OAuthError("invalid_client", "assertion signature does not verify") from None
        self._check_claims(claims, issuer, token_url)
        exp = int(claims["exp"])
        skew = self._config.clock_skew_seconds
        if not self._seen.first_use(issuer, str(claims["jti"]), exp + skew, self._clock()):
            raise OAuthError("invalid_client", "assertion jti was already used (replay refused)")
        return client

    def _check_claims(self, claims: Mapping[str, Any], client_id: str, token_url: str) -> None:
        now = self._clock()
        skew = self._config.clock_skew_seconds
        if claims.get("sub") != client_id:
            raise OAuthError("invalid_client", "assertion sub must equal iss (the client_id)")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if token_url not in audiences:
            raise OAuthError("invalid_client", f"assertion aud must be the token URL {token_url}")
        exp = claims.get("exp")
        if not _is_int(exp):
            raise OAuthError("invalid_client", "assertion exp is required (seconds since epoch)")
        if exp <= now - skew:
            raise OAuthError("invalid_client", "assertion has expired")
        if exp - now > MAX_ASSERTION_LIFETIME:
            raise OAuthError(
                "invalid_client",
                f"assertion exp is {int(exp - now)} s in the future; at most "
                f"{MAX_ASSERTION_LIFETIME} s is allowed",
            )
        for name in ("iat", "nbf"):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_int(value):
                raise OAuthError("invalid_client", f"assertion {name} must be a number")
            if value > now + skew:
                raise OAuthError("invalid_client", f"assertion {name} is in the future")
        iat = claims.get("iat")
        if iat is not None and exp - iat > MAX_ASSERTION_LIFETIME:
            raise OAuthError(
                "invalid_client",
                f"assertion lifetime (exp - iat) is {int(exp - iat)} s; at most "
                f"{MAX_ASSERTION_LIFETIME} s is allowed",
            )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 255:
            raise OAuthError("invalid_client", "assertion jti is required (a nonce, 1-255 chars)")

    def _issue(
        self, client: ClientKeys, scopes: tuple[SmartScope, ...], scope: str
    ) -> dict[str, Any]:
        lifetime = (
            client.client.access_token_lifetime_seconds
            or self._config.access_token_lifetime_seconds
        )
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            for stale in [t for t, g in self._tokens.items() if g.expires_at <= now]:
                del self._tokens[stale]
            self._tokens[token] = AccessGrant(client.client.client_id, scopes, now + lifetime)
            self._issued += 1
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": " ".join(s.text for s in scopes),
        }

    # -- resource server --------------------------------------------------------------------

    def check(
        self, authorization: str | None, resource_type: str, interaction: TypeInteraction | None
    ) -> None:
        """Raise BearerError unless the token is live and a scope grants the interaction.
        interaction None (an unsupported request under a type): any live token will do."""
        if authorization is None or not authorization.lower().startswith("bearer "):
            raise BearerError(401, None, "an access token is required (Authorization: Bearer)")
        match = _BEARER.fullmatch(authorization.strip())
        if match is None:
            raise BearerError(401, "invalid_token", "the Authorization header is malformed")
        with self._lock:
            grant = self._tokens.get(match.group(1))
        if grant is None:
            raise BearerError(401, "invalid_token", "the access token is unknown or revoked")
        if grant.expires_at <= self._clock():
            raise BearerError(401, "invalid_token", "the access token has expired")
        if interaction is None:
            return
        letter = PERMISSION[interaction]
        for scope in grant.scopes:
            if scope.resource_type in ("*", resource_type) and scope.grants(letter):
                return
        needed = f"system/{resource_type}.{letter}"
        raise BearerError(
            403, "insufficient_scope", f"the token's scopes do not grant {needed}", needed
        )

    # -- control (tests) --------------------------------------------------------------------

    def revoke(self, client_id: str | None = None) -> int:
        """Revoke every live token (of one client); how many were revoked."""
        with self._lock:
            doomed = [t for t, g in self._tokens.items() if client_id in (None, g.client_id)]
            for token in doomed:
                del self._tokens[token]
        return len(doomed)

    def report(self) -> dict[str, Any]:
        """Counts and the assertions received (claims that identify, never the JWT itself)."""
        with self._lock:
            return {
                "token_requests": self._token_requests,
                "issued": self._issued,
                "live_tokens": len(self._tokens),
                "assertions": list(self._recorded),
            }


def _grant(client: ClientKeys, scope: str) -> tuple[SmartScope, ...]:
    """backend-services.html, "Evaluate Requested Access": every requested scope must lie within
    one the client is registered for (same or `*` type, a subset of its permissions)."""
    texts = scope.split(" ")
    if not scope or any(not t for t in texts):
        raise OAuthError("invalid_scope", "scope must be one or more space-separated scopes")
    granted: list[SmartScope] = []
    for text in texts:
        try:
            requested = parse_system_scope(text)
        except ValueError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        if not any(
            allowed.resource_type in ("*", requested.resource_type)
            and set(requested.permissions) <= set(allowed.permissions)
            for allowed in client.allowed
        ):
            raise OAuthError(
                "invalid_scope",
                f"scope {_short(text)!r} exceeds what client "
                f"{client.client.client_id!r} is registered for",
            )
        granted.append(requested)
    return tuple(granted)


def _form(content_type: str, body: bytes) -> dict[str, str]:
    """RFC 6749 section 4.4.2: form-encoded; a parameter sent twice is invalid_request (3.2)."""
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request", "the token request must be application/x-www-form-urlencoded"
        )
    if len(body) > MAX_REQUEST_BYTES:
        raise OAuthError("invalid_request", "the token request is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeError, ValueError):
        raise OAuthError("invalid_request", "the token request body is not a valid form") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise OAuthError("invalid_request", f"parameter {_short(name)!r} is repeated")
        params[name] = value
    return params


def _is_int(value: Any) -> TypeGuard[int | float]:
    """A finite JSON number (a NumericDate, RFC 7519 section 2), not a boolean: NaN and Infinity
    are not JSON numbers, and would fail every comparison or conversion later."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any, limit: int = 64) -> str | None:
    """An attacker-supplied value, bounded, for a message or the log."""
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
