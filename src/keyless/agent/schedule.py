"""When the agent asks keyless again: the poll interval, jittered so that many pods started
together do not poll together, and a capped exponential backoff (with full jitter) while
keyless cannot be reached. Randomness is injected so that tests fix it.
"""

from __future__ import annotations

import random

from keyless.agent.config import Schedule


def jittered(interval: float, jitter: float, rng: random.Random) -> float:
    """``interval`` x a uniform factor in [1 - jitter, 1 + jitter]."""
    return interval * (1 + rng.uniform(-jitter, jitter))


class Backoff:
    """base, 2 base, 4 base, ... up to the cap; each wait drawn in [delay/2, delay] so that
    agents that lost keyless together do not come back together."""

    def __init__(self, schedule: Schedule, rng: random.Random) -> None:
        self.base = schedule.backoff_base
        self.cap = schedule.backoff_cap
        self.rng = rng
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.failures)
        self.failures = min(self.failures + 1, 64)
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0
