"""How a write is delivered: what each failure class means for it, and when to try again (backoff with full jitter).

Only what is safe to resend is resent: nothing reached the EHR (transport, the adapter's limits,
a 429), or a 5xx on a create (the conditional create turns a resend of a stored write into "already
there"). An ambiguous outcome (sent, no answer; a 5xx on an update) is settled by looking the
write up, and resent only once the look-up shows it absent. Everything else is final, with the
EHR's reason. Backoff: attempt n waits a random time in [0, min(cap, base * 2^(n-1))] ("full
jitter"), at least what the EHR's Retry-After asked, within a budget of attempts and total time;
past it the write is dead-lettered for an operator.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# Failure classes (proto chartgate.v1.FailureClass, lower case without the prefix).
RESEND: Final = frozenset({"transport", "throttled", "circuit_open"})
LOOK_UP: Final = frozenset({"ambiguous"})
FINAL: Final = frozenset(
    {"validation", "authorization", "conflict", "business_rule", "token", "payload"}
)
# The classes that say the EHR (or the way to it) is struggling: the sidecar then holds new
# writes back for the time the adapter named (backpressure).
BACKPRESSURE: Final = frozenset({"throttled", "circuit_open"})


def verdict(failure: str, operation: str) -> str:
    """`resend`, `look_up` or `final` for an attempt that failed with `failure`."""
    if failure in RESEND:
        return "resend"
    if failure == "server_error":
        # A create went out under If-None-Exist: resending cannot store a second copy. An update
        # may have been applied before the 5xx: look first.
        return "resend" if operation == "create" else "look_up"
    if failure in LOOK_UP:
        return "look_up"
    return "final"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The delivery budget (docs/configuration.md, `retry_*`)."""

    max_attempts: int = 8
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_total_seconds: float = 900.0
    # How long after an ambiguous attempt the EHR is given to make the write findable before a
    # look-up that finds nothing counts as "absent" (search indexes lag behind writes).
    index_delay_seconds: float = 2.0

    def delay(self, attempts: int, retry_after: float, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        jittered = (rng or random).uniform(0, ceiling)
        return max(jittered, retry_after)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The typed view of a record's `delivery` column."""

    attempts: int = 0
    first_attempt_at: float = 0.0
    last_attempt_at: float = 0.0
    next_attempt_at: float = 0.0
    jti: str = ""
    history: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Delivery:
        def number(key: str) -> float:
            item = value.get(key, 0)
            return float(item) if isinstance(item, int | float) else 0.0

        history = value.get("history", ())
        return cls(
            attempts=int(number("attempts")),
            first_attempt_at=number("first_attempt_at"),
            last_attempt_at=number("last_attempt_at"),
            next_attempt_at=number("next_attempt_at"),
            jti=str(value.get("jti", "")),
            history=tuple(h for h in history if isinstance(h, Mapping))
            if isinstance(history, list | tuple)
            else (),
        )

    @property
    def token_attempt(self) -> int:
        """The next attempt's number for its token (the adapter treats any but 1 as a resend).
        A replayed dead letter starts a fresh budget (`attempts` 0) but keeps its last token's
        `jti`: it was sent before, so it is never a first attempt again."""
        if self.attempts == 0 and self.jti:
            return 2
        return self.attempts + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "first_attempt_at": self.first_attempt_at,
            "last_attempt_at": self.last_attempt_at,
            "next_attempt_at": self.next_attempt_at,
            "jti": self.jti,
            # The latest 20 attempts are enough to see what happened; the audit log has them all.
            "history": [dict(h) for h in self.history[-20:]],
        }

    def exhausted(self, policy: RetryPolicy, now: float) -> bool:
        spent = now - self.first_attempt_at if self.first_attempt_at else 0.0
        return self.attempts >= policy.max_attempts or spent >= policy.max_total_seconds
