"""Token buckets per client: burst, refill, Retry-After, disabled, bounded memory."""

from __future__ import annotations

import pytest

from keyless.core.clock import ManualClock
from keyless.core.errors import RateLimited
from keyless.core.ratelimit import TokenBuckets


def test_burst_then_refill_at_rate() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(2, 3, clock)
    for _ in range(3):
        buckets.take("a")
    with pytest.raises(RateLimited) as limited:
        buckets.take("a")
    assert limited.value.retry_after == 1
    buckets.take("b")  # another client has its own bucket
    clock.advance(0.5)
    buckets.take("a")  # 0.5 s at 2/s refilled one token
    with pytest.raises(RateLimited):
        buckets.take("a")
    clock.advance(100)
    for _ in range(3):  # refills to the burst, never above it
        buckets.take("a")
    with pytest.raises(RateLimited):
        buckets.take("a")


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    clock = ManualClock()
    slow = TokenBuckets(0.1, 1, clock)
    slow.take("a")
    with pytest.raises(RateLimited) as limited:
        slow.take("a")
    assert limited.value.retry_after == 10
    assert "retry in 10 s" in limited.value.message


def test_zero_rate_disables() -> None:
    buckets = TokenBuckets(0, 0, ManualClock())
    assert not buckets.enabled
    for _ in range(10_000):
        buckets.take("a")
    assert len(buckets) == 0


def test_clock_stepping_back_refills_nothing() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(1, 1, clock)
    buckets.take("a")
    clock.advance(-3600)
    with pytest.raises(RateLimited):
        buckets.take("a")


def test_memory_is_bounded_and_refilled_buckets_go_first() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(1, 2, clock, max_clients=100)
    for i in range(100):
        buckets.take(f"c{i}")
    clock.advance(10)  # all full again
    buckets.take("hot")
    buckets.take("hot")
    for i in range(1000):
        buckets.take(f"new{i}")
    assert len(buckets) <= 100
    with pytest.raises(ValueError):
        TokenBuckets(-1, 1, clock)
