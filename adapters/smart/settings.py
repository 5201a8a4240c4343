"""The adapter's SMART Backend Services settings (SMART backend-services.html): its EHR identity and signing.

The private key stays in a file (the adapter's configuration directory or a mounted Secret): the
settings hold its path, never its content, so a logged or printed settings object reveals nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# client-confidential-asymmetric.html: "exp ... SHALL be no more than five minutes in the future".
MAX_ASSERTION_LIFETIME_SECONDS: Final = 300

SigningAlgorithm = Literal["RS384", "ES384"]


class SmartSettings(BaseModel):
    """One EHR's token endpoint and this adapter's registration there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: str = Field(min_length=1, description="the EHR's token endpoint, also the aud")
    client_id: str = Field(min_length=1, max_length=255)
    private_key_path: Path = Field(description="PEM (PKCS#8 or traditional) or JWK file")
    alg: SigningAlgorithm = "RS384"
    kid: str | None = Field(
        default=None,
        min_length=1,
        description="the registered key id; default the JWK's kid, else its RFC 7638 thumbprint",
    )
    scope: str = Field(min_length=1, description="space-separated system/ scopes to request")
    assertion_lifetime_seconds: int = Field(default=60, ge=1, le=MAX_ASSERTION_LIFETIME_SECONDS)
    refresh_margin_seconds: float = Field(
        default=30.0, ge=0.0, description="fetch a new token this long before the cached expires"
    )
    timeout_seconds: float = Field(default=10.0, gt=0.0, description="token endpoint timeout")

    @classmethod
    def load(cls, path: Path) -> SmartSettings:
        """Read a settings JSON file; a relative private_key_path is relative to that file."""
        try:
            settings = cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"cannot read SMART settings {path}: {exc.strerror}") from None
        except ValidationError as exc:
            raise ValueError(f"SMART settings {path} are invalid: {exc}") from None
        if not settings.private_key_path.is_absolute():
            settings = settings.model_copy(
                update={"private_key_path": path.parent / settings.private_key_path}
            )
        return settings
