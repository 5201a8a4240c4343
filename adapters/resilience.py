"""What keeps one adapter from overrunning its EHR: a token-bucket rate limit and a circuit breaker.

Both decide before anything is sent, so what they refuse is safe to retry (the TRANSPORT-like
classes THROTTLED and CIRCUIT_OPEN, with the time to wait). The breaker is the classic one
(closed → open after consecutive failures → half-open after a cool-down, admitting one probe
whose result closes or reopens it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    """`rate` requests a second on average, bursts of `burst`; `take()` returns 0 when a request
    may go now, else the seconds until one may."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self._rate


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a request may go to the EHR now; if not, how long until it may."""

    allowed: bool
    wait_seconds: float = 0.0
    probe: bool = False


class CircuitBreaker:
    """Opens after `threshold` consecutive failures (transport, ambiguous, 5xx, 429); stays open
    `cool_down` seconds; then admits one probe at a time until a success closes it."""

    def __init__(
        self,
        threshold: int = 5,
        cool_down: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cool_down = cool_down
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self._clock() - self._opened_at >= self._cool_down else "open"

    def admit(self) -> Admission:
        with self._lock:
            if self._opened_at is None:
                return Admission(True)
            waited = self._clock() - self._opened_at
            if waited < self._cool_down:
                return Admission(False, self._cool_down - waited)
            if self._probing:  # one probe at a time while half-open
                return Admission(False, min(1.0, self._cool_down))
            self._probing = True
            return Admission(True, probe=True)

    def release(self) -> None:
        """A probe that never reached the EHR (held back by the rate limit): the next may go,
        and the breaker stays as it was."""
        with self._lock:
            self._probing = False

    def record(self, success: bool) -> None:
        with self._lock:
            self._probing = False
            if success:
                self._failures = 0
                self._opened_at = None
                return
            self._failures += 1
            if self._opened_at is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
