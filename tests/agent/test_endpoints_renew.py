"""Renewal of the credentials the endpoints hand out (agent/endpoints/renew.py), on an injected
clock: renewed at half their lifetime, the held one served through a failed renewal while it
has a minute left, the failure raised once it has not."""

from __future__ import annotations

import pytest

from keyless.agent.endpoints.podsecret import PodSecret
from keyless.agent.endpoints.renew import MIN_LEFT, Renewing
from keyless.core.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Issues ``cred-N`` for ``lifetime`` seconds, or fails while ``down``."""

    def __init__(self, clock: Clock, lifetime: float = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.down = False

    async def fetch(self, key: str) -> tuple[str, float]:
        if self.down:
            raise Unavailable("keyless is unreachable")
        self.calls += 1
        return f"{key}-{self.calls}", self.clock.now + self.lifetime


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_renewed_at_half_lifetime_not_per_request(clock: Clock) -> None:
    source = Source(clock)
    held = Renewing("test", source.fetch, clock)
    first = await held.get("k")
    clock.now += 1799
    assert (await held.get("k")).value == first.value == "k-1"
    clock.now += 1
    renewed = await held.get("k")
    assert renewed.value == "k-2" and renewed.expires_at == clock.now + 3600
    assert (await held.get("other")).value == "other-3"  # one credential per key


async def test_failed_renewal_serves_the_held_one_while_it_lasts(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    source = Source(clock)
    held = Renewing("test credential", source.fetch, clock)
    await held.get("k")
    source.down = True
    clock.now += 3600 - MIN_LEFT
    assert (await held.get("k")).value == "k-1"
    assert "renewing the test credential failed (keyless is unreachable)" in caplog.text
    clock.now += 1
    with pytest.raises(Unavailable):
        await held.get("k")
    source.down = False
    assert (await held.get("k")).value == "k-2"  # recovered at the next request


async def test_nothing_held_and_keyless_down_raises(clock: Clock) -> None:
    source = Source(clock)
    source.down = True
    with pytest.raises(Unavailable):
        await Renewing("test", source.fetch, clock).get("k")


def test_pod_secret_checks_and_hides() -> None:
    secret = PodSecret()
    assert len(secret.value) >= 43 and secret.value != PodSecret().value
    assert secret.check(secret.value) is None
    assert secret.check(None) == 401 and secret.check("") == 401
    assert secret.check(secret.value[:-1]) == 403
    assert secret.value not in repr(secret)
