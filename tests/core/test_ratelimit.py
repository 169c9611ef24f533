"""Token buckets per client: burst, refill, Retry-After, disabled, bounded memory and work."""

from __future__ import annotations

import time
from collections import OrderedDict

import pytest

from keyless.core.clock import ManualClock
from keyless.core.errors import RateLimited
from keyless.core.ratelimit import SWEEP, TokenBuckets, client_key


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


class NoScan(OrderedDict[str, object]):
    """A bucket table that fails the test if anything walks it."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the rate limiter walked its whole table")

    def keys(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the rate limiter walked its whole table")

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the rate limiter walked its whole table")

    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the rate limiter walked its whole table")


@pytest.mark.parametrize(
    "advance",
    [pytest.param(0.0, id="all-spending"), pytest.param(0.001, id="slow-clock"),
     pytest.param(10.0, id="all-refilled-between-calls")],
)  # fmt: skip
def test_100k_distinct_clients_bounded_memory_and_work(advance: float) -> None:
    clock = ManualClock()
    buckets = TokenBuckets(1, 2, clock, max_clients=1000)
    buckets._buckets = NoScan()  # type: ignore[assignment]
    largest = 0
    for i in range(100_000):
        buckets.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        largest = max(largest, len(buckets))
        clock.advance(advance)
    assert largest <= 1000
    assert len(buckets) <= 1000


def test_per_call_work_does_not_grow_with_clients() -> None:
    """A take() at capacity costs the same with 100 or 100,000 clients (no table walk)."""

    def cost(capacity: int) -> float:
        clock = ManualClock()
        buckets = TokenBuckets(1, 2, clock, max_clients=capacity)
        for i in range(capacity):
            buckets.take(f"fill{i}")
        start = time.perf_counter()
        for i in range(2000):
            buckets.take(f"new{i}")
        return time.perf_counter() - start

    small, large = min(cost(100) for _ in range(3)), min(cost(100_000) for _ in range(3))
    assert large < small * 5 + 0.01, (small, large)


def test_refilled_buckets_are_swept_a_few_per_call() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(1, 2, clock, max_clients=1000)
    for i in range(500):
        buckets.take(f"c{i}")
    assert len(buckets) == 500
    clock.advance(2)  # every bucket is full again: each later call drops up to SWEEP of them
    for _ in range(10):
        buckets.take("hot")
        clock.advance(1)  # hot refills as fast as it spends
    assert len(buckets) == 500 - 10 * SWEEP + 1
    for _ in range(500):
        buckets.take("hot")
        clock.advance(1)
    assert len(buckets) == 1  # idle clients are gone, without any walk of the table


def test_a_spending_client_keeps_its_bucket_under_churn() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(1, 2, clock, max_clients=100)
    buckets.take("hot")
    buckets.take("hot")
    for i in range(98):  # fewer new clients than the table holds
        buckets.take(f"new{i}")
    with pytest.raises(RateLimited):  # still limited: its empty bucket was kept
        buckets.take("hot")


def test_message_names_what_is_limited() -> None:
    buckets = TokenBuckets(1, 1, ManualClock(), what="discovery requests")
    buckets.take("a")
    with pytest.raises(RateLimited) as limited:
        buckets.take("a")
    assert "too many discovery requests" in limited.value.message


@pytest.mark.parametrize(
    ("host", "key"),
    [
        pytest.param("192.0.2.7", "192.0.2.7", id="ipv4"),
        pytest.param("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", id="ipv6-by-64"),
        pytest.param("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64", id="ipv6-same-64"),
        pytest.param("::ffff:192.0.2.7", "192.0.2.7", id="ipv4-mapped"),
        pytest.param("", "unknown", id="none"),
        pytest.param(None, "unknown", id="missing"),
        pytest.param("testclient", "testclient", id="not-an-address"),
    ],
)
def test_client_key(host: str | None, key: str) -> None:
    assert client_key(host) == key
