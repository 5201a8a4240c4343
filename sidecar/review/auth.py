"""Reviewer authentication: verify a bearer JWT (RFC 6750, 7515, 7517, 7519; OIDC Core 1.0 §2) from a configured issuer.

A reviewer's request carries `authorization: Bearer <JWT>`: an OpenID Connect ID token (OIDC Core
§2) or a JWT access token (RFC 9068) from one of the issuers the operator configured. The
authenticator selects the issuer by the token's `iss`, verifies the JWS signature (RFC 7515) only
against THAT issuer's JWKS (RFC 7517), then the JWT claims (RFC 7519 §4.1): `iss` exact, `aud`
contains the configured audience, `exp` in the future, `nbf` and `iat` not in the future (each with
a bounded leeway), `sub` (OIDC Core §2: at most 255 ASCII characters). It reads the reviewer's
roles, tenants and SMART `fhirUser` (SMART App Launch v2, "fhirUser" claim) and refuses, never
guesses, a claim of the wrong type.

Everything in a token is hostile until its signature is verified, and bounded after: no message
or log line repeats token content, so an error names what failed (`ReviewerAuthError.reason`) and
nothing else.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from joserfc import jws
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sidecar.validation.strict_json import loads_strict

log: Final = logging.getLogger("chartgate.review.auth")

# joserfc warns on every "EdDSA" token that RFC 9864 deprecates the polymorphic name. The curve is
# fixed by the issuer's JWK, not by the token, so the warning is noise here (as in
# chartgate/write_token.py, which installs the same filter).
warnings.filterwarnings("ignore", message="EdDSA is deprecated via RFC 9864")

# Bounds on hostile input. A real ID token is 1-3 KB; 16 KB leaves room for large role lists.
MAX_AUTHORIZATION_LENGTH: Final = 16 * 1024
MAX_SUBJECT_LENGTH: Final = 255  # OIDC Core §2: "MUST NOT exceed 255 ASCII characters"
MAX_KID_LENGTH: Final = 256
MAX_JTI_LENGTH: Final = 255
MAX_VALUES: Final = 64  # roles, tenants
MAX_VALUE_LENGTH: Final = 128  # one role or tenant
MAX_FHIR_USER_LENGTH: Final = 512
MAX_JWKS_BYTES: Final = 256 * 1024
MAX_JWKS_KEYS: Final = 64
# Largest NumericDate accepted: exp lands in storage as a signed 64-bit integer.
MAX_NUMERIC_DATE: Final = 2**63 - 1
JWKS_TIMEOUT_SECONDS: Final = 5.0
# After a failed JWKS fetch, wait this long (or jwks_refresh_seconds if shorter) before the next
# attempt, so a flood of tokens while the issuer is down is not a flood of fetches.
RETRY_AFTER_FAILURE_SECONDS: Final = 5.0

# Asymmetric signature algorithms only (RFC 7518 §3, RFC 8037, RFC 9864). `none` and HS* are never
# accepted: an HMAC "verified" with a public key is the classic algorithm-confusion forgery, and
# an issuer's JWKS is public.
SUPPORTED_ALGORITHMS: Final = frozenset(
    {
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA", "Ed25519", "Ed448",
    }
)  # fmt: skip

# RFC 7515 §3.1 compact serialization: three base64url segments. The signature may be empty here
# only so that an `alg: none` token is refused as alg_refused, by name, not as malformed.
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Visible ASCII, no spaces: subjects, roles and tenants are identifiers, and a value that differs
# from another only by whitespace or a control character would be a confusable identity.
_VISIBLE_ASCII: Final = re.compile(r"[\x21-\x7e]+")
# SMART App Launch v2 fhirUser: a (relative or absolute) URL of one of these resource types.
_FHIR_USER: Final = re.compile(
    r"(?:https?://[\x21-\x7e]+/)?"
    r"(?:Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9.-]{1,64}"
)
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class ReviewerAuthError(Exception):
    """A reviewer's credential was refused. `reason` is a stable code; neither field repeats the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class IssuerConfig(BaseModel):
    """One OpenID Connect issuer (or OAuth authorization server) whose tokens name reviewers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        min_length=1, max_length=512, description="The exact `iss` value (OIDC Core §2)."
    )
    audience: str = Field(
        min_length=1, max_length=255, description="The `aud` value a token must contain."
    )
    jwks_file: Path | None = Field(
        default=None, description="The issuer's public JWKS (RFC 7517 §5) as a file."
    )
    jwks_url: str | None = Field(
        default=None,
        max_length=2048,
        description="The issuer's jwks_uri; https, or http on a loopback host only.",
    )
    roles_claim: str = Field(default="roles", min_length=1, max_length=64)
    tenants_claim: str = Field(default="tenant", min_length=1, max_length=64)
    fhir_user_claim: str = Field(default="fhirUser", min_length=1, max_length=64)
    algorithms: tuple[str, ...] = Field(default=("RS256", "ES256", "EdDSA"), min_length=1)
    leeway_seconds: int = Field(default=30, ge=0, le=120)
    jwks_refresh_seconds: int = Field(default=300, ge=1, le=86_400)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [alg for alg in value if alg not in SUPPORTED_ALGORITHMS]
        if refused:
            raise ValueError(
                f"algorithms {refused} are not accepted; choose from {sorted(SUPPORTED_ALGORITHMS)}"
                " (none and HMAC are never accepted for a public-key issuer)"
            )
        return value

    @field_validator("jwks_url")
    @classmethod
    def _secure_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        # Plain http lets anyone on the path substitute keys; allow it only on this machine
        # (the development issuer, tests).
        if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
            return value
        raise ValueError("jwks_url must be an https URL (http only on a loopback host)")

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of jwks_file and jwks_url")
        return self


@dataclass(frozen=True, slots=True)
class Reviewer:
    """An authenticated reviewer: who (issuer + subject), what they may do (roles), and where (tenants)."""

    issuer: str
    subject: str
    roles: tuple[str, ...]
    tenants: tuple[str, ...]
    fhir_user: str
    token_id: str
    expires_at: int


class ReviewerAuthenticator:
    """Verifies `authorization: Bearer <JWT>` headers against the configured issuers. Thread-safe."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
    ) -> None:
        if not issuers:
            raise ValueError("configure at least one reviewer issuer")
        self._clock = clock
        self._http = http
        self._owns_http = http is None
        self._http_lock = threading.Lock()
        self._issuers: dict[str, _Issuer] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            source: _KeySource = (
                _FileKeys(config, clock)
                if config.jwks_file is not None
                else _UrlKeys(config, clock, self._client)
            )
            self._issuers[config.issuer] = _Issuer(config, source, clock)

    def _client(self) -> httpx.Client:
        # Created on first use: a sidecar with only file issuers never opens a client.
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False)
            return self._http

    def close(self) -> None:
        """Close the HTTP client this authenticator made (one passed in is the caller's)."""
        with self._http_lock:
            if self._owns_http and self._http is not None:
                self._http.close()
                self._http = None

    def authenticate(self, authorization_header: str) -> Reviewer:
        """The reviewer the header's bearer token names, or ReviewerAuthError saying what failed."""
        token = _bearer_token(authorization_header)
        header, claims, signed = _parse_unverified(token)
        issuer_value = claims.get("iss")
        if not isinstance(issuer_value, str):
            raise ReviewerAuthError("reviewer.claims_invalid", "the token has no string iss claim")
        issuer = self._issuers.get(issuer_value)
        if issuer is None:
            raise ReviewerAuthError(
                "reviewer.issuer_unknown", "the token's issuer is not a configured reviewer issuer"
            )
        return issuer.verify(header, claims, signed)


# --- one issuer ---------------------------------------------------------------------------------


class _Issuer:
    """One configured issuer: its algorithms, its keys, its claim rules."""

    def __init__(self, config: IssuerConfig, keys: _KeySource, clock: Callable[[], float]) -> None:
        self.config = config
        self.keys = keys
        # joserfc itself also refuses an alg outside this list (with no list it would accept its
        # "recommended" set, which includes HS256).
        self.registry = _registry(config.algorithms)
        self.claims_registry = JWTClaimsRegistry(
            now=lambda: int(clock()),
            leeway=config.leeway_seconds,
            # joserfc checks: presence of these, iss equality, aud membership (a string or an
            # array of strings), exp/nbf/iat as finite NumericDates against now +- leeway,
            # sub and jti as strings. It does not bound them; _reviewer does.
            iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "value": config.audience},
            exp={"essential": True},
            iat={"essential": True},  # OIDC Core §2 and RFC 9068 §2.2 both require iat
            sub={"essential": True},
        )

    def verify(self, header: dict[str, Any], claims: dict[str, Any], signed: _Signed) -> Reviewer:
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise ReviewerAuthError(
                "reviewer.alg_refused", "the token's alg is not one this issuer is configured for"
            )
        try:
            # RFC 7515 §4.1.11: an unknown `crit` parameter makes the JWS invalid; joserfc also
            # checks the types of the registered header parameters (kid a string, ...).
            self.registry.check_header(header)
        except JoseError:
            raise ReviewerAuthError(
                "reviewer.token_malformed", "the token's header parameters are invalid"
            ) from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH:
            # Without a kid joserfc would try a one-key set's only key; we want every token to
            # name its key, so rotation and refusal are unambiguous.
            raise ReviewerAuthError("reviewer.kid_unknown", "the token names no key id (kid)")
        keyset = self.keys.keys_for(kid)
        try:
            # joserfc picks the key by kid (and by alg/use when the JWK declares them), refuses a
            # key of the wrong type for alg (InvalidKeyTypeError), and compares signatures.
            valid = jws.validate_compact(signed.obj, keyset, registry=self.registry)
        except (JoseError, ValueError):  # ValueError: joserfc's guess_key on an unusable key
            valid = False
        if not valid:
            raise ReviewerAuthError(
                "reviewer.signature_invalid", "the token's signature does not verify"
            )
        self._check_claims(claims)
        return _reviewer(self.config, claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        # joserfc validates claims in the order the token lists them; put ours first so a token
        # wrong in several ways always reports the same reason.
        order = ("iss", "aud", "exp", "nbf", "iat", "sub", "jti")
        ordered = {k: claims[k] for k in order if k in claims} | claims
        try:
            self.claims_registry.validate(ordered)
        except MissingClaimError as exc:
            # exc.claim lists names from our own essential set, never token content.
            raise ReviewerAuthError(
                "reviewer.claims_invalid", f"the token lacks required claim(s): {exc.claim}"
            ) from None
        except ExpiredTokenError:
            raise ReviewerAuthError("reviewer.expired", "the token has expired") from None
        except InvalidClaimError as exc:
            raise _claim_error(exc.claim, claims.get(exc.claim)) from None


def _claim_error(claim: str, value: object) -> ReviewerAuthError:
    """Tell a wrong value (audience, time) from a wrong type; joserfc raises one class for both."""
    if claim == "aud" and (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    ):
        return ReviewerAuthError("reviewer.audience_mismatch", "the token is not for this audience")
    if claim in ("nbf", "iat") and _is_numeric_date(value):
        return ReviewerAuthError("reviewer.not_yet_valid", f"the token's {claim} is in the future")
    if claim in ("iss", "aud", "exp", "nbf", "iat", "sub", "jti"):
        return ReviewerAuthError("reviewer.claims_invalid", f"the token's {claim} claim is invalid")
    return ReviewerAuthError("reviewer.claims_invalid", "a token claim is invalid")


def _is_numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reviewer(config: IssuerConfig, claims: dict[str, Any]) -> Reviewer:
    """Bound and type-check what joserfc only checked for presence (or not at all)."""
    subject = claims["sub"]
    if not (
        isinstance(subject, str)
        and len(subject) <= MAX_SUBJECT_LENGTH
        and _VISIBLE_ASCII.fullmatch(subject)
    ):
        raise ReviewerAuthError(
            "reviewer.claims_invalid",
            f"sub must be 1..{MAX_SUBJECT_LENGTH} visible ASCII characters",
        )
    exp = claims["exp"]
    if exp > MAX_NUMERIC_DATE:
        raise ReviewerAuthError("reviewer.claims_invalid", "the token's exp is out of range")
    jti = claims.get("jti", "")
    if not isinstance(jti, str) or len(jti) > MAX_JTI_LENGTH:
        raise ReviewerAuthError(
            "reviewer.claims_invalid",
            f"jti must be a string of at most {MAX_JTI_LENGTH} characters",
        )
    fhir_user = claims.get(config.fhir_user_claim, "")
    if fhir_user != "" and not (
        isinstance(fhir_user, str)
        and len(fhir_user) <= MAX_FHIR_USER_LENGTH
        and _FHIR_USER.fullmatch(fhir_user)
    ):
        raise ReviewerAuthError(
            "reviewer.claims_invalid",
            f"claim {config.fhir_user_claim} must be a FHIR reference such as Practitioner/123",
        )
    return Reviewer(
        issuer=config.issuer,
        subject=subject,
        roles=_values(claims, config.roles_claim, space_separated=True),
        tenants=_values(claims, config.tenants_claim, space_separated=False),
        fhir_user=fhir_user,
        token_id=jti,
        expires_at=int(exp),
    )


def _values(claims: dict[str, Any], name: str, *, space_separated: bool) -> tuple[str, ...]:
    """A claim holding a JSON array of strings or one string; absent means none."""
    raw = claims.get(name)
    if raw is None:
        return ()
    items: list[object]
    if isinstance(raw, str):
        # Roles may be one space-separated string (as OAuth `scope` is, RFC 6749 §3.3); a tenant
        # string is one tenant id.
        items = [p for p in raw.split(" ") if p] if space_separated else [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ReviewerAuthError(
            "reviewer.claims_invalid", f"claim {name} must be a string or an array of strings"
        )
    if len(items) > MAX_VALUES:
        raise ReviewerAuthError(
            "reviewer.claims_invalid", f"claim {name} holds more than {MAX_VALUES} values"
        )
    values: list[str] = []
    for item in items:
        if not (
            isinstance(item, str)
            and len(item) <= MAX_VALUE_LENGTH
            and _VISIBLE_ASCII.fullmatch(item)
        ):
            raise ReviewerAuthError(
                "reviewer.claims_invalid",
                f"every value of claim {name} must be 1..{MAX_VALUE_LENGTH} visible ASCII characters",
            )
        if item not in values:
            values.append(item)
    return tuple(values)


# --- the token's unverified parts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signed:
    """The parsed compact JWS, kept so the signature is checked over exactly the bytes parsed."""

    obj: jws.CompactSignature


def _bearer_token(authorization_header: str) -> str:
    """RFC 6750 §2.1: `Bearer <token>`; the scheme name is case-insensitive (RFC 9110 §11.1)."""
    if not isinstance(authorization_header, str) or not authorization_header.strip():
        raise ReviewerAuthError("reviewer.token_missing", "no authorization header was sent")
    if len(authorization_header) > MAX_AUTHORIZATION_LENGTH:
        raise ReviewerAuthError(
            "reviewer.token_malformed",
            f"the authorization header exceeds {MAX_AUTHORIZATION_LENGTH} characters",
        )
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise ReviewerAuthError(
            "reviewer.token_malformed", "the authorization header is not a Bearer credential"
        )
    token = token.strip()
    if not token:
        raise ReviewerAuthError("reviewer.token_missing", "the Bearer credential is empty")
    if not _COMPACT_JWS.fullmatch(token):
        raise ReviewerAuthError(
            "reviewer.token_malformed", "the Bearer credential is not a compact JWS"
        )
    return token


def _parse_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], _Signed]:
    """Header and claims, unverified: enough to choose the issuer and key, trusted for nothing else."""
    try:
        obj = jws.extract_compact(token.encode("ascii"), registry=_registry())
    except (JoseError, RecursionError):
        raise ReviewerAuthError(
            "reviewer.token_malformed", "the token's header or payload is not base64url JSON"
        ) from None
    header = obj.headers()
    if not isinstance(header, dict):
        # joserfc only checks that "alg" is `in` the decoded header, which a list or a string
        # containing "alg" also satisfies.
        raise ReviewerAuthError("reviewer.token_malformed", "the token's header is not an object")
    alg = header.get("alg")
    # Refused before anything else so no configuration can reach joserfc's `none` (which it
    # verifies as "signature is empty" when a registry allows it) or an HMAC path.
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise ReviewerAuthError(
            "reviewer.alg_refused", "the token's alg is not an accepted signature algorithm"
        )
    if header.get("b64") is not None:
        # RFC 7797 unencoded payloads are not JWTs (RFC 7797 §7); joserfc would honour them.
        raise ReviewerAuthError("reviewer.token_malformed", "the token uses an unencoded payload")
    try:
        # A claim named twice (the last would silently win: another sub, roles or tenants) is
        # refused with the rest of what is not JSON.
        claims = loads_strict(obj.payload)
    except ValueError:
        raise ReviewerAuthError(
            "reviewer.token_malformed", "the token's payload is not a JSON object"
        ) from None
    if not isinstance(claims, dict):
        raise ReviewerAuthError(
            "reviewer.token_malformed", "the token's payload is not a JSON object"
        )
    return header, claims, _Signed(obj)


def _registry(algorithms: Sequence[str] | None = None) -> JWSRegistry:
    """A joserfc JWS registry with our bounds; with `algorithms`, joserfc refuses any other alg."""
    # strict_check_header is off because RFC 7515 §4 says header parameters a recipient does not
    # know are ignored unless listed in `crit`, and joserfc still refuses an unknown `crit`.
    registry = JWSRegistry(
        algorithms=list(algorithms) if algorithms else None, strict_check_header=False
    )
    # joserfc's default caps (header 512 bytes) would refuse an IdP header carrying x5t and a few
    # more parameters; the whole token is already bounded by MAX_AUTHORIZATION_LENGTH.
    registry.max_header_length = 4096
    registry.max_payload_length = MAX_AUTHORIZATION_LENGTH
    return registry


# --- keys ---------------------------------------------------------------------------------------


class _JwksError(Exception):
    """A JWKS could not be read or is not an acceptable set of public keys."""


class _KeySource:
    """An issuer's public keys, refreshed at most once per jwks_refresh_seconds on an unknown kid."""

    def __init__(self, config: IssuerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.Lock()
        self.keyset: KeySet | None = None
        self.kids: frozenset[str] = frozenset()
        self.loaded_at = float("-inf")  # last successful load
        self.attempted_at = float("-inf")  # last load attempt
        self.kid_refetch_at = float("-inf")  # last load caused by an unknown kid

    def load(self) -> KeySet:
        raise NotImplementedError

    def keys_for(self, kid: str) -> KeySet:
        """The key set, refreshed if stale or if it lacks kid (rate-limited); raise if kid is unknown."""
        with self.lock:
            now = self.clock()
            refresh = self.config.jwks_refresh_seconds
            if self.keyset is None or now - self.loaded_at >= refresh:
                self._try_load(now)
            elif kid not in self.kids and now - self.kid_refetch_at >= refresh:
                # An unknown kid may be a key the issuer just rotated in. One early refetch per
                # interval: a client spraying made-up kids costs the issuer one fetch, not one
                # per token.
                self.kid_refetch_at = now
                self._try_load(now)
            if self.keyset is None:
                raise ReviewerAuthError(
                    "reviewer.jwks_unavailable", "the issuer's signing keys cannot be fetched"
                )
            if kid not in self.kids:
                raise ReviewerAuthError(
                    "reviewer.kid_unknown", "the token's key id is not in the issuer's JWKS"
                )
            return self.keyset

    def _try_load(self, now: float) -> None:
        # While the issuer's JWKS cannot be fetched, keep the keys we have (tokens it issued
        # before remain verifiable) and retry only after a short pause.
        retry = min(RETRY_AFTER_FAILURE_SECONDS, float(self.config.jwks_refresh_seconds))
        if self.attempted_at > self.loaded_at and now - self.attempted_at < retry:
            return
        self.attempted_at = now
        try:
            keyset = self.load()
        except _JwksError as exc:
            log.warning("reviewer issuer %s: JWKS unavailable: %s", self.config.issuer, exc)
            return
        self.keyset = keyset
        self.kids = frozenset(str(k.kid) for k in keyset.keys)
        self.loaded_at = now


class _FileKeys(_KeySource):
    """Keys from a JWKS file (e.g. a mounted ConfigMap): read at startup, so a bad file fails it."""

    def __init__(self, config: IssuerConfig, clock: Callable[[], float]) -> None:
        super().__init__(config, clock)
        try:
            self.keyset = self.load()
        except _JwksError as exc:
            raise ValueError(f"reviewer issuer {config.issuer}: {exc}") from None
        self.kids = frozenset(str(k.kid) for k in self.keyset.keys)
        self.loaded_at = self.attempted_at = clock()

    def load(self) -> KeySet:
        assert self.config.jwks_file is not None
        try:
            with self.config.jwks_file.open("rb") as handle:
                data = handle.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise _JwksError(f"cannot read {self.config.jwks_file}: {exc.strerror}") from None
        return _parse_jwks(data)


class _UrlKeys(_KeySource):
    """Keys from the issuer's jwks_uri, fetched on first use (a sidecar starts while the IdP is down)."""

    def __init__(
        self, config: IssuerConfig, clock: Callable[[], float], client: Callable[[], httpx.Client]
    ) -> None:
        super().__init__(config, clock)
        self.client = client

    def load(self) -> KeySet:
        assert self.config.jwks_url is not None
        try:
            with self.client().stream(
                "GET", self.config.jwks_url, headers={"accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    raise _JwksError(f"HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise _JwksError(type(exc).__name__) from None
        return _parse_jwks(bytes(body))


def _parse_jwks(data: bytes) -> KeySet:
    """RFC 7517 §5: a JSON object with a `keys` array of public, asymmetric JWKs."""
    if len(data) > MAX_JWKS_BYTES:
        raise _JwksError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = loads_strict(data)
    except ValueError:
        raise _JwksError("JWKS is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _JwksError("JWKS is not an object with a keys array")
    entries = document["keys"]
    if len(entries) > MAX_JWKS_KEYS:
        raise _JwksError(f"JWKS holds more than {MAX_JWKS_KEYS} keys")
    for entry in entries:
        if not isinstance(entry, dict):
            raise _JwksError("a JWKS entry is not an object")
        # A verifier holds no secrets: a symmetric key would make HMAC verifiable with a value
        # the issuer publishes, and a private key in a public JWKS means the set is compromised.
        if entry.get("kty") == "oct" or "d" in entry:
            raise _JwksError("JWKS holds a symmetric or private key")
    try:
        # Keys of a kty joserfc does not understand are skipped (RFC 7517 §5); a key without a
        # kid gets its RFC 7638 thumbprint as kid.
        return KeySet.import_key_set({"keys": entries})
    except (JoseError, ValueError, TypeError) as exc:
        raise _JwksError(f"JWKS key is invalid ({type(exc).__name__})") from None


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
