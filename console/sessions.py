"""Server-side sessions and sign-in attempts: the browser holds only a random id, the server everything else."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sidecar.review.auth import Reviewer

LOGIN_LIFETIME_SECONDS: Final = 600
MAX_PENDING_LOGINS: Final = 1000
MAX_FLASHES: Final = 5


def _key(cookie_value: str) -> str:
    """Sessions are kept under the SHA-256 of the cookie value: the table itself (a heap dump, a
    debugger) yields nothing a browser could present."""
    return hashlib.sha256(cookie_value.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-time message shown on the next page: kind is "ok", "info" or "error"."""

    kind: str
    text: str


@dataclass(slots=True)
class Session:
    """A signed-in reviewer: who (from the verified ID token), their access token, their CSRF token."""

    reviewer: Reviewer
    name: str
    access_token: str
    csrf_token: str
    created_at: float
    expires_at: float
    last_seen: float
    flashes: list[Flash] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        self.flashes = [*self.flashes, Flash(kind, text)][-MAX_FLASHES:]

    def take_flashes(self) -> list[Flash]:
        taken, self.flashes = self.flashes, []
        return taken


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """One authorization request in flight (OIDC Core §3.1.2.1, RFC 7636): what the callback must match."""

    state: str
    nonce: str
    code_verifier: str
    return_to: str
    created_at: float


def csrf_matches(session: Session, submitted: str) -> bool:
    """The form's token is the session's (constant-time: no timing oracle on the comparison)."""
    return bool(submitted) and hmac.compare_digest(
        session.csrf_token.encode(), submitted.encode("utf-8", "replace")
    )


class SessionStore:
    """Sessions and sign-in attempts in memory, bounded, each with its own lifetime. Thread-safe.

    In memory because the console is one process per deployment and a restart only costs the
    reviewers a sign-in; several replicas would need a shared store (or sticky sessions).
    """

    def __init__(
        self,
        *,
        idle_seconds: int,
        max_seconds: int,
        max_sessions: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._idle = idle_seconds
        self._max = max_seconds
        self._max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._logins: dict[str, LoginAttempt] = {}
        self._lock = threading.Lock()

    # --- sign-in attempts ---------------------------------------------------------------------

    def begin_login(self, return_to: str) -> tuple[str, LoginAttempt] | None:
        """A new attempt and the cookie value binding it to this browser; None when too many are
        in flight (bounded memory: anyone can start a sign-in)."""
        now = self._clock()
        attempt = LoginAttempt(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),  # 86 characters of [A-Za-z0-9_-]
            return_to=return_to,
            created_at=now,
        )
        cookie = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._logins) >= MAX_PENDING_LOGINS:
                self._logins = {
                    k: a
                    for k, a in self._logins.items()
                    if a.created_at + LOGIN_LIFETIME_SECONDS > now
                }
                if len(self._logins) >= MAX_PENDING_LOGINS:
                    return None
            self._logins[_key(cookie)] = attempt
        return cookie, attempt

    def finish_login(self, cookie: str, state: str) -> LoginAttempt | None:
        """The attempt this browser started with this `state`, spent whatever happens next (a
        callback is answered once); None when unknown, expired or for another state."""
        with self._lock:
            attempt = self._logins.pop(_key(cookie), None)
        if attempt is None or attempt.created_at + LOGIN_LIFETIME_SECONDS <= self._clock():
            return None
        if not hmac.compare_digest(attempt.state.encode(), state.encode("utf-8", "replace")):
            return None
        return attempt

    # --- sessions -----------------------------------------------------------------------------

    def create(
        self, reviewer: Reviewer, name: str, access_token: str, token_expires_at: float
    ) -> tuple[str, Session] | None:
        """A fresh session (a new id at every sign-in: no fixation) ending no later than the
        access token does; None when the table is full of live sessions."""
        now = self._clock()
        session = Session(
            reviewer=reviewer,
            name=name,
            access_token=access_token,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=min(token_expires_at, now + self._max),
            last_seen=now,
        )
        cookie = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._sessions) >= self._max_sessions:
                self._sessions = {k: s for k, s in self._sessions.items() if self._live(s, now)}
                if len(self._sessions) >= self._max_sessions:
                    return None
            self._sessions[_key(cookie)] = session
        return cookie, session

    def get(self, cookie: str) -> Session | None:
        """The live session this cookie names (touching it), or None (an expired one is removed)."""
        if not cookie:
            return None
        now = self._clock()
        key = _key(cookie)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if not self._live(session, now):
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def delete(self, cookie: str) -> None:
        with self._lock:
            self._sessions.pop(_key(cookie), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _live(self, session: Session, now: float) -> bool:
        return now < session.expires_at and now < session.last_seen + self._idle
