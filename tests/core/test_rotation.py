"""Key ring lifecycle with an injected clock, on both stores."""

from __future__ import annotations

import asyncio
import os

import jwt
import pytest

from keyless.core.clock import ManualClock
from keyless.core.envelope import RootKeys
from keyless.core.models import Tenant
from keyless.core.rotation import RotationManager
from keyless.store.sql import SqlStore

DAY = 86400
ROOT = RootKeys((os.urandom(32),))


def manager(store: SqlStore, clock: ManualClock, alg: str = "RS256") -> RotationManager:
    return RotationManager(store, ROOT, clock, alg=alg, period=30 * DAY, token_lifetime=3600)


@pytest.fixture
async def tenant(store: SqlStore) -> Tenant:
    return await store.create_tenant(Tenant("t-1", "default", 0.0))


def kids(jwks: dict) -> list[str]:
    return [k["kid"] for k in jwks["keys"]]


async def test_first_start_publishes_current_and_next(store: SqlStore, tenant: Tenant) -> None:
    clock = ManualClock()
    ring = await manager(store, clock).load(tenant.id)
    assert ring.upcoming is not None
    assert kids(ring.jwks()) == [ring.current.kid, ring.upcoming.kid]
    token = ring.sign({"sub": "x"})
    assert jwt.get_unverified_header(token)["kid"] == ring.current.kid


async def test_keys_survive_a_restart(database_url: str) -> None:
    clock = ManualClock()
    s1 = await SqlStore.open(database_url)
    await s1.create_tenant(Tenant("t-1", "default", 0.0))
    ring1 = await manager(s1, clock).load("t-1")
    token = ring1.sign({"sub": "x"})
    await s1.close()
    s2 = await SqlStore.open(database_url)
    ring2 = await manager(s2, clock).load("t-1")
    await s2.close()
    assert ring2.current.kid == ring1.current.kid
    assert ring2.jwks() == ring1.jwks()
    assert ring2.verify(token).payload == {"sub": "x"}


async def test_rotation_publishes_next_before_use_and_retires_until_expiry(
    store: SqlStore, tenant: Tenant
) -> None:
    clock = ManualClock()
    m = manager(store, clock)
    before = await m.load(tenant.id)
    old_token = before.sign({"sub": "x"})
    assert not await m.rotate(tenant.id)  # not due yet
    clock.advance(30 * DAY)
    assert await m.rotate(tenant.id)
    during = m.ring(tenant.id)
    assert before.upcoming is not None and during.upcoming is not None
    # The key now signing was published a whole period before it was used.
    assert during.current.kid == before.upcoming.kid
    assert kids(during.jwks()) == [during.current.kid, during.upcoming.kid, before.current.kid]
    assert during.verify(old_token).payload["sub"] == "x"
    # Once every token the retired key signed has expired, it leaves the JWKS.
    clock.advance(3600 + 301)
    await m.load(tenant.id)
    assert kids(m.ring(tenant.id).jwks()) == [during.current.kid, during.upcoming.kid]


async def test_two_processes_rotate_exactly_once(database_url: str) -> None:
    clock = ManualClock()
    a, b = await SqlStore.open(database_url), await SqlStore.open(database_url)
    try:
        await a.create_tenant(Tenant("t-1", "default", 0.0))
        ma, mb = manager(a, clock), manager(b, clock)
        await asyncio.gather(ma.load("t-1"), mb.load("t-1"))
        assert ma.ring("t-1").current.kid == mb.ring("t-1").current.kid
        clock.advance(31 * DAY)
        done = await asyncio.gather(ma.rotate("t-1"), mb.rotate("t-1"))
        assert sorted(done) == [False, True]
        assert ma.ring("t-1").jwks() == mb.ring("t-1").jwks()
        states = sorted(k.state for k in await a.list_signing_keys("t-1"))
        assert states == ["current", "next", "retired"]
    finally:
        await a.close()
        await b.close()


async def test_es256_selectable(store: SqlStore, tenant: Tenant) -> None:
    ring = await manager(store, ManualClock(), alg="ES256").load(tenant.id)
    assert ring.current.alg == "ES256" and ring.jwks()["keys"][0]["crv"] == "P-256"
    token = ring.sign({"sub": "y"})
    key = jwt.PyJWK(ring.jwks()["keys"][0]).key
    assert jwt.decode(token, key, algorithms=["ES256"])["sub"] == "y"
