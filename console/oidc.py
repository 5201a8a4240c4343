"""The console as an OpenID Connect relying party: discovery, the code flow with PKCE S256, ID token checks.

Standards: OIDC Core 1.0 §3.1 (authorization code flow), OIDC Discovery 1.0 §4, RFC 7636 (PKCE,
S256 only), RFC 9207 (the `iss` authorization response parameter, against mix-up), RFC 6749 §5.

The ID token's signature and registered claims are checked by the same authenticator the Review
API uses (sidecar/review/auth.py), configured with this client's id as the audience, so the
roles, tenants and `fhirUser` the console shows are read exactly as the Review API reads them.
What OIDC adds for a relying party (`nonce`, `azp`) is checked here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import httpx

from console.config import ConsoleConfig, is_loopback
from console.sessions import LoginAttempt
from sidecar.review.auth import IssuerConfig, Reviewer, ReviewerAuthenticator, ReviewerAuthError

log: Final = logging.getLogger("chartgate.console.oidc")

HTTP_TIMEOUT_SECONDS: Final = 5.0
MAX_TOKEN_LENGTH: Final = 16 * 1024
MAX_DISCOVERY_BYTES: Final = 64 * 1024
MAX_TOKEN_LIFETIME_SECONDS: Final = 24 * 3600


class SignInError(Exception):
    """Sign-in failed; the message is ours (never the issuer's or the token's words) and safe to show."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document the console uses (OIDC Discovery §3)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    iss_parameter_supported: bool


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A completed sign-in: the reviewer (from the ID token) and the access token for the Review API."""

    reviewer: Reviewer
    name: str
    access_token: str
    expires_in: int


def code_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _endpoint(metadata: dict[str, Any], name: str) -> str:
    value = metadata.get(name)
    if not isinstance(value, str):
        raise SignInError(f"the issuer's discovery document has no {name}")
    parts = urlsplit(value)
    if parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname)
    ):
        return value
    raise SignInError(f"the issuer's {name} is not https (http only on loopback)")


def _claims_of(token: str) -> dict[str, Any]:
    """The payload of a compact JWS whose signature has already been verified."""
    segment = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(claims, dict):  # pragma: no cover - the authenticator refused it already
        raise SignInError("the ID token's payload is not an object")
    return claims


class OidcClient:
    """One relying party for one issuer; discovery and the key set are fetched on first use and kept."""

    def __init__(self, config: ConsoleConfig, http: httpx.Client | None = None) -> None:
        self._config = config
        self._http = http or httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False)
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._verifier: ReviewerAuthenticator | None = None

    def close(self) -> None:
        self._http.close()
        if self._verifier is not None:
            self._verifier.close()

    def metadata(self) -> ProviderMetadata:
        """OIDC Discovery §4: fetched once; `issuer` must equal the configured issuer exactly."""
        with self._lock:
            if self._metadata is not None:
                return self._metadata
        url = f"{self._config.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            response = self._http.get(url)
        except httpx.HTTPError:
            raise SignInError("the identity provider cannot be reached") from None
        if response.status_code != 200 or len(response.content) > MAX_DISCOVERY_BYTES:
            raise SignInError("the identity provider's discovery document is unavailable")
        try:
            document = response.json()
        except ValueError:
            raise SignInError("the identity provider's discovery document is not JSON") from None
        if not isinstance(document, dict) or document.get("issuer") != self._config.issuer:
            # §4.3: a document naming another issuer must not be used (impersonation).
            raise SignInError("the discovery document names another issuer than configured")
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise SignInError("the identity provider does not support PKCE S256")
        metadata = ProviderMetadata(
            issuer=self._config.issuer,
            authorization_endpoint=_endpoint(document, "authorization_endpoint"),
            token_endpoint=_endpoint(document, "token_endpoint"),
            jwks_uri=_endpoint(document, "jwks_uri"),
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported")
            is True,
        )
        verifier = ReviewerAuthenticator(
            [
                IssuerConfig(
                    issuer=self._config.issuer,
                    audience=self._config.client_id,  # OIDC Core §3.1.3.7 step 3
                    jwks_url=metadata.jwks_uri,
                    roles_claim=self._config.roles_claim,
                    tenants_claim=self._config.tenants_claim,
                    fhir_user_claim=self._config.fhir_user_claim,
                    algorithms=self._config.algorithms,
                )
            ]
        )
        with self._lock:
            if self._metadata is None:
                self._metadata, self._verifier = metadata, verifier
            else:
                verifier.close()
            return self._metadata

    def authorization_url(self, attempt: LoginAttempt) -> str:
        """OIDC Core §3.1.2.1 with RFC 7636 §4.3: where the browser goes to sign in."""
        metadata = self.metadata()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._config.client_id,
                "redirect_uri": self._config.redirect_uri,
                "scope": self._config.scope,
                "state": attempt.state,
                "nonce": attempt.nonce,
                "code_challenge": code_challenge(attempt.code_verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if urlsplit(metadata.authorization_endpoint).query else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}"

    def complete(self, attempt: LoginAttempt, code: str, iss: str | None) -> SignedIn:
        """The callback's second half: RFC 9207 `iss`, the code exchanged (RFC 6749 §4.1.3 with
        the PKCE verifier), and the ID token verified (OIDC Core §3.1.3.7)."""
        metadata = self.metadata()
        if iss is not None and iss != metadata.issuer:
            raise SignInError("the authorization response came from another issuer")
        if iss is None and metadata.iss_parameter_supported:
            raise SignInError("the authorization response lacks the issuer (RFC 9207)")
        if not code or len(code) > 2048:
            raise SignInError("the authorization response carries no usable code")
        try:
            response = self._http.post(
                metadata.token_endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self._config.redirect_uri,
                    "client_id": self._config.client_id,
                    "code_verifier": attempt.code_verifier,
                },
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError:
            raise SignInError("the identity provider's token endpoint cannot be reached") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            log.info("token endpoint refused the code (HTTP %d)", response.status_code)
            raise SignInError("the identity provider refused the sign-in; sign in again")
        return self._signed_in(body, attempt.nonce)

    def _signed_in(self, body: dict[str, Any], nonce: str) -> SignedIn:
        id_token, access_token = body.get("id_token"), body.get("access_token")
        token_type, expires_in = body.get("token_type"), body.get("expires_in")
        if not (
            isinstance(id_token, str)
            and isinstance(access_token, str)
            and 0 < len(id_token) <= MAX_TOKEN_LENGTH
            and 0 < len(access_token) <= MAX_TOKEN_LENGTH
        ):
            raise SignInError("the token response lacks an ID token or an access token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise SignInError("the access token is not a Bearer token")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise SignInError("the token response does not say when the access token expires")
        with self._lock:
            verifier = self._verifier
        assert verifier is not None  # metadata() set it before any exchange
        try:
            reviewer = verifier.authenticate(f"Bearer {id_token}")
        except ReviewerAuthError as exc:
            log.info("ID token refused: %s", exc.reason)
            raise SignInError(f"the ID token was refused ({exc.reason})") from None
        claims = _claims_of(id_token)
        if claims.get("nonce") != nonce:
            # §3.1.3.7 step 11: the token answers this browser's request, not a replayed one.
            raise SignInError("the ID token does not answer this sign-in (nonce)")
        audience = claims.get("aud")
        azp = claims.get("azp")
        if (isinstance(audience, list) and len(audience) > 1 and azp is None) or (
            azp is not None and azp != self._config.client_id
        ):
            raise SignInError("the ID token was issued to another client (azp)")
        name = claims.get("name")
        display = name[:128] if isinstance(name, str) and name.strip() else reviewer.subject
        return SignedIn(
            reviewer=reviewer,
            name=display,
            access_token=access_token,
            expires_in=min(expires_in, MAX_TOKEN_LIFETIME_SECONDS),
        )
