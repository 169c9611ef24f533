"""Per-client token buckets (requests per second with a burst), on an injected clock.

Pure: no I/O, no framework. ``TokenBuckets.take(key)`` either spends one token of ``key``'s
bucket or raises :class:`RateLimited` saying how many whole seconds to wait.

Bounded memory and bounded work per call, whatever the number of clients: buckets sit in an
LRU (``OrderedDict``, least recently used first). A call touches its own bucket, then looks at
no more than ``SWEEP`` buckets at the old end and drops those that have refilled to full (they
are indistinguishable from a fresh bucket, so dropping them forgets nothing); a new client
past ``max_clients`` evicts the least recently used bucket. Nothing ever walks the table.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from keyless.core.clock import Clock
from keyless.core.errors import RateLimited

DEFAULT_MAX_CLIENTS = 100_000
SWEEP = 2  # stale buckets looked at per call, at most


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
        what: str = "token requests",
    ) -> None:
        if rate < 0 or burst < 0 or max_clients < 1:
            raise ValueError("rate and burst must be >= 0, max_clients >= 1")
        self.rate = rate
        self.burst = max(burst, 1) if rate > 0 else 0
        self.clock = clock
        self.max_clients = max_clients
        self.what = what  # named in the RateLimited message
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
        self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
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
            f"too many {self.what} from this client (limit {self.rate:g}/s, "
            f"burst {self.burst}); retry in {math.ceil(wait)} s",
            retry_after=max(1, math.ceil(wait)),
        )

    def _sweep(self, now: float) -> None:
        """Drop up to ``SWEEP`` least recently used buckets that have refilled to full."""
        full_after = self.burst / self.rate
        for _ in range(SWEEP):
            if not self._buckets:
                return
            key, oldest = self._buckets.popitem(last=False)
            if now - oldest.at < full_after:  # still spending: put it back, stop looking
                self._buckets[key] = oldest
                self._buckets.move_to_end(key, last=False)
                return


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64 (one host is
    usually given a whole /64, and would otherwise get 2**64 buckets)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a Unix socket peer, or a test transport's name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
