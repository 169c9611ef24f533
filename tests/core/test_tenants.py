"""Tenant lookups: unknown names are answered from memory (bounded, short TTL), creation
forgets them at once, and names that cannot be a tenant never reach the store."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from keyless.core import tenants as tenants_module
from keyless.core.clock import ManualClock
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.models import Tenant
from keyless.core.tenants import NEGATIVE_MAX, NEGATIVE_TTL, Tenants


class CountingStore:
    """An in-memory TenantStore that counts lookups."""

    def __init__(self) -> None:
        self.rows: list[Tenant] = []
        self.lookups = 0

    async def get_tenant(self, id_or_alias: str) -> Tenant | None:
        self.lookups += 1
        return next((t for t in self.rows if id_or_alias in (t.id, t.alias)), None)

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        self.rows.append(tenant)
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        return list(self.rows)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def missing(tenants: Tenants, name: str) -> None:
    with pytest.raises(NotFound):
        run(tenants.get(name))


def test_unknown_tenant_is_looked_up_once_per_ttl() -> None:
    store, clock = CountingStore(), ManualClock()
    tenants = Tenants(store, clock)
    for _ in range(100):
        missing(tenants, "nope")
    assert store.lookups == 1
    clock.advance(NEGATIVE_TTL - 0.1)
    missing(tenants, "nope")
    assert store.lookups == 1
    clock.advance(0.2)  # past the TTL: asked again (another process may have created it)
    missing(tenants, "nope")
    assert store.lookups == 2


def test_creating_a_tenant_forgets_unknown_names_at_once() -> None:
    store, clock = CountingStore(), ManualClock()
    tenants = Tenants(store, clock)
    missing(tenants, "team-b")
    tenant, created = run(tenants.create("team-b"))
    assert created
    assert run(tenants.get("team-b")) == tenant
    assert run(tenants.get(tenant.id)) == tenant


def test_tenant_created_by_another_process_is_found_after_the_ttl() -> None:
    store, clock = CountingStore(), ManualClock()
    tenants = Tenants(store, clock)
    missing(tenants, "team-c")
    other = Tenant(str(uuid.uuid4()), "team-c", clock.now())
    store.rows.append(other)  # written by another replica
    missing(tenants, "team-c")  # still remembered as unknown, within the TTL
    clock.advance(NEGATIVE_TTL)
    assert run(tenants.get("team-c")) == other
    tenants.forget_unknown()  # what a sibling worker's change notification does
    missing(tenants, "team-d")
    store.rows.append(Tenant(str(uuid.uuid4()), "team-d", clock.now()))
    tenants.forget_unknown()
    assert run(tenants.get("team-d")).alias == "team-d"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("x" * 200, id="too-long"),
        pytest.param("Default", id="uppercase-alias"),
        pytest.param("a b", id="space"),
        pytest.param("default\n", id="trailing-newline"),
        pytest.param("\ndefault", id="leading-newline"),
        pytest.param("../etc", id="path"),
        pytest.param("", id="empty"),
        pytest.param("0f8fad5b-d9cb-469f-a165-70867728950e-x", id="uuid-with-tail"),
    ],
)
def test_names_that_cannot_be_tenants_never_reach_the_store(name: str) -> None:
    store = CountingStore()
    tenants = Tenants(store, ManualClock())
    missing(tenants, name)
    assert store.lookups == 0


def test_remembered_unknown_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenants_module, "NEGATIVE_MAX", 50)
    store, clock = CountingStore(), ManualClock()
    tenants = Tenants(store, clock)
    for i in range(1000):
        missing(tenants, f"n{i}")
    assert store.lookups == 1000
    missing(tenants, "n999")  # recent: remembered
    assert store.lookups == 1000
    missing(tenants, "n0")  # dropped long ago: asked again
    assert store.lookups == 1001
    assert len(tenants._unknown) <= 50


def test_default_bounds_are_small() -> None:
    assert NEGATIVE_TTL <= 10 and NEGATIVE_MAX <= 10_000


def test_the_adfs_alias_is_reserved() -> None:
    """Public URLs map ``adfs`` to the default tenant (api/tenancy.py): no tenant may take it."""
    store = CountingStore()
    tenants = Tenants(store, ManualClock())
    with pytest.raises(InvalidRequest, match="reserved"):
        run(tenants.create("adfs"))
    assert store.rows == []
    tenant, created = run(tenants.create("adfs-team"))
    assert created and tenant.alias == "adfs-team"
