"""One-use authorization codes (RFC 6749 §4.1.2) bound to a PKCE S256 challenge (RFC 7636 §4.2, §4.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

CODE_LIFETIME_SECONDS: Final = 60
MAX_OUTSTANDING_CODES: Final = 1000
# RFC 7636 §4.1: code_verifier = 43*128 unreserved characters; §4.2: an S256 challenge is the
# base64url (no padding) of a SHA-256 digest, always 43 characters.
VERIFIER: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
S256_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6, S256 only (the plain method is refused at /authorize)."""
    if not VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code was issued for; the token request must present the same client and redirect."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    subject: str
    scope: str
    nonce: str | None
    auth_time: int
    expires_at: float


class CodeStore:
    """In-memory codes: each redeemed at most once, worthless after CODE_LIFETIME_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._codes: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def issue(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        code_challenge: str,
        subject: str,
        scope: str,
        nonce: str | None,
    ) -> str | None:
        """A fresh code, or None when too many are outstanding (bounded memory)."""
        now = self._clock()
        grant = Grant(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            subject=subject,
            scope=scope,
            nonce=nonce,
            auth_time=int(now),
            expires_at=now + CODE_LIFETIME_SECONDS,
        )
        with self._lock:
            if len(self._codes) >= MAX_OUTSTANDING_CODES:
                self._codes = {c: g for c, g in self._codes.items() if g.expires_at > now}
                if len(self._codes) >= MAX_OUTSTANDING_CODES:
                    return None
            code = secrets.token_urlsafe(32)
            self._codes[code] = grant
        return code

    def redeem(self, code: str) -> Grant | None:
        """The code's grant, removing the code whatever happens next; None if unknown or expired.

        A code is spent by any attempt to redeem it, a failed PKCE check included: a stolen code
        then cannot be tried against many guessed verifiers (RFC 6749 §10.5).
        """
        with self._lock:
            grant = self._codes.pop(code, None)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant
