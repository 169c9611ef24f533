"""Per-client token buckets (requests per second with a burst), on an injected clock.

Pure: no I/O, no framework. ``TokenBuckets.take(key)`` either spends one token of ``key``'s
bucket or raises :class:`RateLimited` saying how many whole seconds to wait. Memory is bounded:
at most ``max_clients`` buckets are kept, and when that is reached the ones that have refilled
to full (indistinguishable from a fresh bucket) are dropped first, then the least recently used.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from keyless.core.clock import Clock
from keyless.core.errors import RateLimited

DEFAULT_MAX_CLIENTS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Clock,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        if rate < 0 or burst < 0 or max_clients < 1:
            raise ValueError("rate and burst must be >= 0, max_clients >= 1")
        self.rate = rate
        self.burst = max(burst, 1) if rate > 0 else 0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> None:
        """Spend one token of ``key``, or raise RateLimited (with ``retry_after`` >= 1 s)."""
        if not self.enabled:
            return
        now = self.clock.now()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.at)  # a clock that steps back refills nothing
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = (1.0 - bucket.tokens) / self.rate
        raise RateLimited(
            f"too many token requests from this client (limit {self.rate:g}/s, "
            f"burst {self.burst}); retry in {math.ceil(wait)} s",
            retry_after=max(1, math.ceil(wait)),
        )

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_clients:
            return
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.at >= full_after]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)
