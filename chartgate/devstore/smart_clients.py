"""The store's registered SMART Backend Services clients (`--clients FILE`): client_id, public JWKS, scopes.

SMART App Launch 2.2, client-confidential-asymmetric.html, "Registering a client": each client
registers a JWK Set whose keys carry `kty` and `kid` as bare public keys (RSA `n`/`e`, EC
`crv`/`x`/`y`). This store takes the JWK Set inline or from a file beside the clients file (the
"JWK Set directly" option; a JWKS URL is not fetched by a development store).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chartgate.smart_scope import ScopeError, SmartScope, parse_scope

# The algorithms SMART names (client-confidential-asymmetric.html): the server must verify at
# least one of them; this one verifies both and nothing else.
ALGORITHMS: Final = ("RS384", "ES384")
_KEY_TYPE: Final = {"RS384": "RSA", "ES384": "EC"}
_MIN_RSA_BITS: Final = 2048


class RegisteredClient(BaseModel):
    """One client. `scopes` are what it is pre-authorized for (backend-services.html)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    jwks: dict[str, Any] | None = None
    jwks_path: Path | None = None
    scopes: tuple[str, ...] = Field(min_length=1)
    access_token_lifetime_seconds: int | None = Field(default=None, ge=1, le=3600)

    @field_validator("scopes")
    @classmethod
    def _system_scopes(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        for text in scopes:
            parse_system_scope(text)
        return scopes

    @model_validator(mode="after")
    def _one_jwks(self) -> RegisteredClient:
        if (self.jwks is None) == (self.jwks_path is None):
            raise ValueError("give exactly one of jwks (inline) and jwks_path")
        return self


class SmartServerConfig(BaseModel):
    """The clients file. `token_url`, when set, is the exact `aud` assertions must carry;
    otherwise it is derived from each request's own URL (scheme, Host, path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: str | None = None
    access_token_lifetime_seconds: int = Field(default=300, ge=1, le=3600)
    clock_skew_seconds: int = Field(default=5, ge=0, le=60)
    clients: tuple[RegisteredClient, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> SmartServerConfig:
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("client_id values must be unique")
        return self

    @classmethod
    def load(cls, path: Path) -> SmartServerConfig:
        """Read the clients file; a relative jwks_path is relative to the file's directory."""
        try:
            config = cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"cannot read clients file {path}: {exc.strerror}") from None
        except ValidationError as exc:
            raise ValueError(f"clients file {path} is invalid: {exc}") from None
        clients = tuple(
            c.model_copy(update={"jwks_path": path.parent / c.jwks_path})
            if c.jwks_path is not None and not c.jwks_path.is_absolute()
            else c
            for c in config.clients
        )
        return config.model_copy(update={"clients": clients})


class ClientKeyError(ValueError):
    """A registered JWK Set that SMART's rules refuse."""


def parse_system_scope(text: str) -> SmartScope:
    """A `system/<Type or *>.<cruds>` scope without a query: what this store can enforce."""
    try:
        scope = parse_scope(text)
    except ScopeError as exc:
        raise ValueError(f"scope {_bounded(text)!r}: {exc}") from None
    if scope.context != "system":
        raise ValueError(f"scope {_bounded(text)!r}: backend services use system/ scopes")
    if scope.filter:
        raise ValueError(f"scope {_bounded(text)!r}: scope queries are not supported here")
    return scope


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A client's verified registration: its keys by kid, and its parsed allowed scopes."""

    client: RegisteredClient
    keys: dict[str, RSAKey | ECKey]
    allowed: tuple[SmartScope, ...]

    def key_for(self, kid: str, alg: str) -> RSAKey | ECKey | None:
        """The key with this kid whose kty suits alg (client-confidential-asymmetric.html,
        "Signature Verification", step 3), else None."""
        key = self.keys.get(kid)
        if key is None or key.key_type != _KEY_TYPE.get(alg):
            return None
        if isinstance(key, ECKey) and key.curve_name != "P-384":
            return None  # ES384 is ECDSA on P-384 (RFC 7518 section 3.4)
        return key


def load_clients(config: SmartServerConfig) -> dict[str, ClientKeys]:
    """Import every client's JWK Set, refusing private keys, keys without kid, other types."""
    loaded: dict[str, ClientKeys] = {}
    for client in config.clients:
        if client.jwks_path is not None:
            try:
                document = json.loads(client.jwks_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ClientKeyError(
                    f"client {client.client_id}: cannot read JWKS {client.jwks_path}: "
                    f"{type(exc).__name__}"
                ) from None
        else:
            document = client.jwks
        loaded[client.client_id] = ClientKeys(
            client,
            _import_jwks(client.client_id, document),
            tuple(parse_system_scope(s) for s in client.scopes),
        )
    return loaded


def _import_jwks(client_id: str, document: Any) -> dict[str, RSAKey | ECKey]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ClientKeyError(f"client {client_id}: the JWKS must be {{'keys': [...]}}, not empty")
    keys: dict[str, RSAKey | ECKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            raise ClientKeyError(f"client {client_id}: every JWK needs a kid")
        kid = entry["kid"]
        if kid in keys:
            raise ClientKeyError(f"client {client_id}: kid {kid!r} appears twice")
        if "d" in entry:
            raise ClientKeyError(f"client {client_id}: register public keys only (kid {kid!r})")
        try:
            if entry.get("kty") == "RSA":
                key: RSAKey | ECKey = RSAKey.import_key(entry)
                if key.public_key.key_size < _MIN_RSA_BITS:
                    raise ClientKeyError(f"client {client_id}: RSA key {kid!r} under 2048 bits")
            elif entry.get("kty") == "EC":
                key = ECKey.import_key(entry)
            else:
                raise ClientKeyError(f"client {client_id}: key {kid!r} is not RSA or EC")
        except (JoseError, ValueError, TypeError) as exc:
            if isinstance(exc, ClientKeyError):
                raise
            raise ClientKeyError(f"client {client_id}: key {kid!r} is malformed") from None
        keys[kid] = key
    return keys


def _bounded(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
