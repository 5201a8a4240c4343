"""The adapter's token bucket and circuit breaker, on a clock the test moves."""

from __future__ import annotations

import pytest

from adapters.resilience import CircuitBreaker, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_names_the_wait_then_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 100
    assert [bucket.take() for _ in range(4)][-1] > 0  # never more than the burst


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cool_down=10.0, clock=clock)
    for success in (False, False, True, False, False):
        assert breaker.admit().allowed
        breaker.record(success)
    assert breaker.state == "closed"  # a success in between resets the count
    breaker.record(False)
    assert breaker.state == "open"
    refused = breaker.admit()
    assert not refused.allowed
    assert refused.wait_seconds == pytest.approx(10.0)


def test_half_open_admits_one_probe_whose_result_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=5.0, clock=clock)
    breaker.record(False)
    clock.now += 5
    probe = breaker.admit()
    assert probe.allowed
    assert probe.probe
    assert not breaker.admit().allowed  # one probe at a time
    breaker.record(False)  # the probe failed: open again for a full cool-down
    assert breaker.state == "open"
    assert breaker.admit().wait_seconds == pytest.approx(5.0)
    clock.now += 5
    assert breaker.admit().probe
    breaker.record(True)
    assert breaker.state == "closed"
    assert breaker.admit().allowed


def test_a_probe_released_unsent_leaves_the_breaker_half_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=1.0, clock=clock)
    breaker.record(False)
    clock.now += 1
    assert breaker.admit().probe
    breaker.release()  # held back by the rate limit: it never reached the EHR
    assert breaker.state == "half_open"
    assert breaker.admit().probe


def test_a_probe_that_fails_unexpectedly_is_counted_so_the_breaker_recovers() -> None:
    # The adapter's one exchange (AdapterService._guarded): an EHR answer that breaks the
    # client in an unforeseen way must still report the probe, or the breaker stays half-open.
    from typing import Any, cast

    from adapters.server import AdapterService

    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cool_down=5.0, clock=clock)
    service = AdapterService(cast(Any, None), cast(Any, None), cast(Any, None), breaker=breaker)
    breaker.record(False)
    clock.now += 5

    def broken() -> None:
        raise TypeError("an answer of a shape nobody expected")

    with pytest.raises(TypeError):
        service._guarded(broken)
    assert breaker.state == "open"  # counted as a failure, not left half-open
    clock.now += 5
    assert service._guarded(lambda: "answered") == "answered"
    assert breaker.state == "closed"
