"""The agent's timing with its randomness fixed: the jittered interval, the capped backoff, and
a delivery loop that keeps the last good file while its source fails, driven by an in-process
source and a recording wait (the real loop against a real keyless: test_outage.py)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from keyless.agent.config import AgentConfig, FileOutput, Schedule
from keyless.agent.delivery import Delivery
from keyless.agent.keyvault import SecretValue
from keyless.agent.refs import SecretRef
from keyless.agent.schedule import Backoff, jittered
from keyless.core.errors import NotFound, Unavailable


def test_jitter_stays_within_its_fraction() -> None:
    rng = random.Random(7)
    delays = [jittered(60, 0.1, rng) for _ in range(1000)]
    assert all(54 <= d <= 66 for d in delays)
    assert max(delays) - min(delays) > 10  # spread, not constant
    assert jittered(60, 0, rng) == 60


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(Schedule(backoff_base=1, backoff_cap=8), random.Random(1))
    waits = [backoff.next() for _ in range(7)]
    ceilings = [1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1


class Script:
    """A secret source answering from a list of outcomes, one per round."""

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes

    async def read(self, ref: SecretRef) -> SecretValue:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return SecretValue(str(outcome), "v")


def test_the_loop_keeps_the_last_good_file_and_backs_off(tmp_path: Path) -> None:
    path = tmp_path / "f"
    down = Unavailable("keyless is unreachable")
    source = Script(["one", down, down, NotFound("gone"), "two"])
    config = AgentConfig(
        outputs=(FileOutput(path, SecretRef("billing", "db")),),
        schedule=Schedule(interval=10, jitter=0, backoff_base=1, backoff_cap=2),
    )
    stop = asyncio.Event()
    waits: list[float] = []
    contents: list[str] = []
    ready: list[int] = []

    async def wait(_: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        contents.append(path.read_text())
        if not source.outcomes:
            stop.set()

    delivery = Delivery(config, source, rng=random.Random(3), wait=wait, on_ready=ready.append)
    asyncio.run(delivery.run(stop))
    assert contents == ["one", "one", "one", "one", "two"]
    assert waits[0] == 10 and 0.5 <= waits[1] <= 1 and 1 <= waits[2] <= 2
    assert waits[3] == 10 and waits[4] == 10  # a missing secret is no outage: no backoff
    assert ready == [1]
