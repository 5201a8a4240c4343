"""The dev issuer's users, clients and tokens: OIDC Core §2 ID tokens and RFC 9068 access tokens for reviewers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from joserfc import jwt
from pydantic import BaseModel, ConfigDict, Field

from chartgate.devissuer.defaults import (
    DEFAULT_AUDIENCE,
    DEFAULT_CLIENT_ID,
    DEFAULT_ISSUER,
    DEFAULT_REDIRECT_URIS,
    DEFAULT_TENANT,
    MAX_LIFETIME_SECONDS,
)
from chartgate.devissuer.keys import ALGORITHM, IssuerKeys

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_CLIENTS",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_ISSUER",
    "DEFAULT_TENANT",
    "DEFAULT_USERS",
    "DevClient",
    "DevIssuer",
    "DevUser",
    "load_clients",
    "load_users",
]


_ID: Final = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"


class DevUser(BaseModel):
    """A person who can "sign in" by picking their name: no password, this is a development target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sub: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=128)
    roles: tuple[str, ...] = ()
    tenants: tuple[str, ...] = (DEFAULT_TENANT,)
    fhir_user: str = Field(min_length=1, max_length=256)


class DevClient(BaseModel):
    """An OAuth public client (RFC 6749 §2.1) using PKCE; redirect URIs are matched exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(pattern=_ID)
    redirect_uris: tuple[str, ...] = Field(min_length=1)
    audience: str = Field(
        default=DEFAULT_AUDIENCE,
        min_length=1,
        max_length=255,
        description="`aud` of the access tokens issued to this client (the Review API).",
    )


def _user(sub: str, role: str | None) -> DevUser:
    return DevUser(
        sub=sub,
        name=sub.capitalize(),
        roles=(role,) if role else (),
        fhir_user=f"Practitioner/{sub}",
    )


DEFAULT_USERS: Final = (
    _user("alice", "clinician"),
    _user("bob", "clinician"),
    _user("carol", "prescriber"),
    _user("dave", "registrar"),
    _user("mallory", None),
)
DEFAULT_CLIENTS: Final = (
    DevClient(
        client_id=DEFAULT_CLIENT_ID,
        redirect_uris=DEFAULT_REDIRECT_URIS,
    ),
)


def load_users(path: Path) -> tuple[DevUser, ...]:
    """`{"users": [{"sub", "name", "roles", "tenants", "fhir_user"}, ...]}`."""
    data = json.loads(path.read_text())
    users = tuple(DevUser.model_validate(u) for u in data["users"])
    if len({u.sub for u in users}) != len(users):
        raise ValueError(f"{path}: two users share a sub")
    return users


def load_clients(path: Path) -> tuple[DevClient, ...]:
    """`{"clients": [{"client_id", "redirect_uris", "audience"}, ...]}`."""
    data = json.loads(path.read_text())
    clients = tuple(DevClient.model_validate(c) for c in data["clients"])
    if len({c.client_id for c in clients}) != len(clients):
        raise ValueError(f"{path}: two clients share a client_id")
    return clients


class DevIssuer:
    """Signs reviewer tokens with the key kept in `directory` (created on first use)."""

    def __init__(
        self,
        directory: Path,
        issuer: str = DEFAULT_ISSUER,
        *,
        users: Sequence[DevUser] = DEFAULT_USERS,
        clients: Sequence[DevClient] = DEFAULT_CLIENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.keys = IssuerKeys(directory)
        self.users = {u.sub: u for u in users}
        self.clients = {c.client_id: c for c in clients}
        self.clock = clock

    @property
    def jwks_path(self) -> Path:
        """The public JWKS file, for an `IssuerConfig(jwks_file=...)`."""
        return self.keys.jwks_path

    def mint(
        self,
        subject: str,
        *,
        roles: Sequence[str],
        tenants: Sequence[str],
        fhir_user: str,
        audience: str = DEFAULT_AUDIENCE,
        lifetime_seconds: int = 300,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT naming a reviewer; `extra_claims` are added last and may override any claim."""
        claims = self.claims(
            subject,
            roles=roles,
            tenants=tenants,
            fhir_user=fhir_user,
            audience=audience,
            lifetime_seconds=lifetime_seconds,
        )
        return self.sign({**claims, **(extra_claims or {})})

    def claims(
        self,
        subject: str,
        *,
        roles: Sequence[str],
        tenants: Sequence[str],
        fhir_user: str,
        audience: str,
        lifetime_seconds: int,
    ) -> dict[str, Any]:
        """The registered claims (RFC 7519 §4.1) and the reviewer claims the sidecar reads."""
        if not 0 < lifetime_seconds <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME_SECONDS} s")
        now = int(self.clock())
        return {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
            "tenant": list(tenants),
            "fhirUser": fhir_user,  # SMART App Launch v2 fhirUser claim
        }

    def sign(self, claims: Mapping[str, Any], *, typ: str = "JWT") -> str:
        """Sign any claims as they are (tests use this to craft tokens a verifier must refuse)."""
        key = self.keys.signing_key()
        header = {"alg": ALGORITHM, "kid": str(key.kid), "typ": typ}
        return jwt.encode(header, dict(claims), key, algorithms=[ALGORITHM])

    def user_token(
        self,
        user: DevUser,
        *,
        audience: str,
        lifetime_seconds: int = 300,
        typ: str = "JWT",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A token for a configured user, carrying that user's roles, tenants and fhirUser."""
        claims = self.claims(
            user.sub,
            roles=user.roles,
            tenants=user.tenants,
            fhir_user=user.fhir_user,
            audience=audience,
            lifetime_seconds=lifetime_seconds,
        )
        return self.sign({**claims, "name": user.name, **(extra_claims or {})}, typ=typ)
