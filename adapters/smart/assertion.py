"""The client assertion: a one-time JWT authenticating the adapter at the token endpoint (RFC 7523 2.2, 3).

SMART App Launch 2.2 client-confidential-asymmetric.html, "Authenticating to the Token endpoint":
header `alg` (RS384 or ES384), `kid`, `typ` = JWT; claims `iss` = `sub` = client_id, `aud` = the
token URL, `exp` no more than five minutes in the future, and `jti` a nonce that identifies this
one JWT. `iat` and `nbf` are added (RFC 7519) so a server can check the lifetime too.

joserfc signs; this module only decides the claims. authlib's PrivateKeyJWT is not used: it signs
a one-hour assertion by default, and SMART forbids both that and any reuse of a jti.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Final

from joserfc import jwt

from adapters.smart.keys import SigningKey
from adapters.smart.settings import MAX_ASSERTION_LIFETIME_SECONDS

JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AssertionSigner:
    """Mints a fresh assertion per token request: new jti, exp = now + lifetime (<= 300 s)."""

    def __init__(
        self,
        key: SigningKey,
        *,
        client_id: str,
        token_url: str,
        lifetime_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < lifetime_seconds <= MAX_ASSERTION_LIFETIME_SECONDS:
            raise ValueError(
                f"assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME_SECONDS} s (SMART)"
            )
        self._key = key
        self._client_id = client_id
        self._token_url = token_url
        self._lifetime = lifetime_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return f"AssertionSigner(client_id={self._client_id!r}, kid={self._key.kid!r})"

    def mint(self) -> str:
        """One signed assertion, never minted before (a 256-bit random jti)."""
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self._token_url,
            "iat": now,
            "nbf": now,
            "exp": now + self._lifetime,
            "jti": self._new_jti(),
        }
        header = {"alg": self._key.alg, "kid": self._key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._key.key, algorithms=[self._key.alg])

    def _new_jti(self) -> str:
        return secrets.token_urlsafe(32)
