"""The console's configuration: where reviewers sign in, where the Review API is, how sessions behave."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from console.defaults import CALLBACK_PATH, DEFAULT_CLIENT_ID, DEFAULT_LISTEN, DEFAULT_REDIRECT_URI

__all__ = [
    "CALLBACK_PATH",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_LISTEN",
    "DEFAULT_REDIRECT_URI",
    "ConsoleConfig",
    "is_loopback",
    "split_host_port",
]


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) as (host, port); ValueError otherwise."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _https_or_loopback(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"{what} must be an absolute URL without query or fragment")
    if parts.scheme == "https":
        return value
    # Plain http would carry codes, tokens and the session cookie in the clear; only this
    # machine's own traffic (the development issuer, tests) may use it.
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return value
    raise ValueError(f"{what} must be https (http only on a loopback host)")


class ConsoleConfig(BaseModel):
    """Everything `chartgate console` needs; from a JSON file, flags, or both (docs/console.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        min_length=1,
        max_length=512,
        description="The OpenID Connect issuer URL (its discovery document's `issuer`, exactly).",
    )
    client_id: str = Field(default=DEFAULT_CLIENT_ID, min_length=1, max_length=255)
    redirect_uri: str = Field(
        default=DEFAULT_REDIRECT_URI,
        max_length=2048,
        description="This console's public callback URL, registered at the issuer; its origin "
        "is the console's public origin.",
    )
    review_target: str = Field(
        min_length=3, max_length=512, description="HOST:PORT of a sidecar's Review API."
    )
    listen: str = Field(default=DEFAULT_LISTEN, description="HOST:PORT to bind.")
    scope: str = Field(default="openid profile fhirUser", max_length=512)
    audit_logs: tuple[Path, ...] = Field(
        default=(),
        max_length=64,
        description="Audit logs whose index the search page reads (every proposal, decided ones "
        "included); none: search covers pending proposals only.",
    )
    roles_claim: str = Field(default="roles", min_length=1, max_length=64)
    tenants_claim: str = Field(default="tenant", min_length=1, max_length=64)
    fhir_user_claim: str = Field(default="fhirUser", min_length=1, max_length=64)
    algorithms: tuple[str, ...] = Field(default=("RS256", "ES256", "EdDSA"), min_length=1)
    cookie_secure: bool | None = Field(
        default=None,
        description="Mark cookies Secure; default: yes unless the redirect URI is http on loopback.",
    )
    session_idle_seconds: int = Field(default=900, ge=60, le=86_400)
    session_max_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 86_400)
    max_sessions: int = Field(default=10_000, ge=1, le=1_000_000)
    review_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Host header values accepted (DNS-rebinding guard); default: the redirect "
        "URI's host.",
    )

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        return _https_or_loopback(value, "issuer")

    @field_validator("redirect_uri")
    @classmethod
    def _redirect(cls, value: str) -> str:
        _https_or_loopback(value, "redirect_uri")
        if urlsplit(value).path != CALLBACK_PATH:
            raise ValueError(f"redirect_uri's path must be {CALLBACK_PATH} (the console's route)")
        return value

    @field_validator("listen", "review_target")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @model_validator(mode="after")
    def _lifetimes(self) -> ConsoleConfig:
        if self.session_idle_seconds > self.session_max_seconds:
            raise ValueError("session_idle_seconds must not exceed session_max_seconds")
        return self

    @property
    def public_origin(self) -> str:
        """scheme://host[:port] reviewers' browsers use: the Origin of every form post."""
        parts = urlsplit(self.redirect_uri)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def secure_cookies(self) -> bool:
        """Secure cookies everywhere but plain-http loopback (a browser would drop them there)."""
        if self.cookie_secure is not None:
            return self.cookie_secure
        parts = urlsplit(self.redirect_uri)
        return not (parts.scheme == "http" and is_loopback(parts.hostname or ""))

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host names the console answers to."""
        return self.allowed_hosts or (urlsplit(self.redirect_uri).hostname or "",)

    @classmethod
    def load(cls, path: Path | None, **overrides: object) -> ConsoleConfig:
        """A JSON file's settings (if any), with `overrides` (flags given) taking precedence."""
        data = json.loads(path.read_text()) if path is not None else {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.model_validate({**data, **overrides})
