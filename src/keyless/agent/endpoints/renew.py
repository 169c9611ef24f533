"""Credentials held per key and renewed ahead of expiry, so a client is never handed one about
to lapse and keyless is asked once per half lifetime, not once per client request.

A credential is renewed once half its lifetime has passed (botocore refreshes container
credentials 15 minutes before they expire and google-auth 3m45s before: both must see plenty
left). When a renewal fails (keyless unreachable, the token refused) the one held is still
handed out while it has at least ``MIN_LEFT`` seconds to live, and the failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from keyless.core.errors import KeylessError

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
MIN_LEFT = 60.0
log = logging.getLogger("keyless.agent")


@dataclass(frozen=True, slots=True)
class Held(Generic[T]):
    value: T
    fetched_at: float
    expires_at: float  # wall clock

    def stale(self, now: float) -> bool:
        return now >= self.fetched_at + (self.expires_at - self.fetched_at) / 2


class Renewing(Generic[K, T]):
    """``fetch(key)`` returns a credential and its expiry (wall clock)."""

    def __init__(
        self,
        what: str,
        fetch: Callable[[K], Awaitable[tuple[T, float]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._what = what
        self._fetch = fetch
        self._clock = clock
        self._held: dict[K, Held[T]] = {}
        self._lock = asyncio.Lock()

    async def get(self, key: K) -> Held[T]:
        async with self._lock:
            held = self._held.get(key)
            now = self._clock()
            if held is not None and not held.stale(now):
                return held
            try:
                value, expires_at = await self._fetch(key)
            except KeylessError as exc:
                if held is not None and held.expires_at - now >= MIN_LEFT:
                    log.warning(
                        "renewing the %s failed (%s); the one held is good for %d s more",
                        self._what,
                        exc.message,
                        held.expires_at - now,
                    )
                    return held
                raise
            fresh = Held(value, now, expires_at)
            self._held[key] = fresh
            return fresh
