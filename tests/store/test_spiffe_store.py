"""SPIFFE CA generations and federated bundles on SQLite and PostgreSQL (migration 0010):
the first generations are made once when two managers race, rotation publishes the next CA
before it signs and is a compare-and-swap, keys are re-wrapped with the root key."""

from __future__ import annotations

import asyncio
import datetime
import os

import sqlalchemy as sa

from keyless.core.clock import ManualClock
from keyless.core.envelope import RootKeys
from keyless.core.models import Tenant
from keyless.core.spiffeca import SpiffeCARecord
from keyless.core.spiffefed import FederatedDomain
from keyless.core.spiffemanager import SpiffeCAManager
from keyless.store import migrate
from keyless.store.migrate import _config
from keyless.store.sql import SqlStore
from keyless.store.urls import DatabaseUrl

DAY = 86400
ROOT = RootKeys((os.urandom(32),))
TD = "default.keyless"


def manager(store: SqlStore, clock: ManualClock, root: RootKeys = ROOT) -> SpiffeCAManager:
    return SpiffeCAManager(store, root, clock, period=30 * DAY, svid_ttl=3600)


async def tenant(store: SqlStore) -> Tenant:
    return await store.create_tenant(Tenant("t-1", "default", 0.0))


async def test_racing_first_starts_make_one_current_and_one_next(store: SqlStore) -> None:
    t = await tenant(store)
    clock = ManualClock()
    a, b = await asyncio.gather(
        manager(store, clock).load(t.id, TD), manager(store, clock).load(t.id, TD)
    )
    assert a.current.record.ca_id == b.current.record.ca_id
    states = sorted(r.state for r in await store.list_spiffe_cas(t.id))
    assert states == ["current", "next"]


async def test_rotation_publishes_the_next_ca_before_it_signs(store: SqlStore) -> None:
    t = await tenant(store)
    clock = ManualClock()
    m = manager(store, clock)
    first = await m.load(t.id, TD)
    assert first.upcoming is not None
    upcoming = first.upcoming.ca_id
    published = [r.ca_id for r in first.published]
    assert upcoming in published and first.current.record.ca_id != upcoming
    assert not await m.rotate(t.id, TD)  # not due yet
    clock.advance(30 * DAY)
    assert await m.rotate(t.id, TD)
    second = m.cas(t.id)
    # The CA that was published as next a period ago now signs; the old one stays published
    # for the SVIDs it signed; a new next is published.
    assert second.current.record.ca_id == upcoming
    assert second.upcoming is not None and second.upcoming.ca_id not in published
    assert first.current.record.ca_id in [r.ca_id for r in second.published]
    # Another process holding the old snapshot loses the compare-and-swap.
    other = manager(store, clock)
    assert not await store.rotate_spiffe_cas(
        t.id, first.current.record.ca_id, second.upcoming, clock.now()
    )
    assert (await other.load(t.id, TD)).current.record.ca_id == upcoming
    # After the last SVID of the retired CA has expired, it is dropped from the bundle.
    clock.advance(3600 + 600)
    await m.rotate(t.id, TD, force=True)
    ids = [r.ca_id for r in m.cas(t.id).published]
    assert first.current.record.ca_id not in ids


async def test_root_key_rotation_rewraps_the_ca_keys(store: SqlStore) -> None:
    t = await tenant(store)
    old, new = RootKeys((b"o" * 32,)), RootKeys((b"n" * 32, b"o" * 32))
    await manager(store, ManualClock(), old).load(t.id, TD)
    await store.rewrap_all(lambda ctx, blob: new.rewrap(blob, ctx))
    records = await store.list_spiffe_cas(t.id)
    assert records and all(new.wrapped_by(r.sealed_private) == new.active_id for r in records)
    only_new = RootKeys((b"n" * 32,))
    loaded = await manager(store, ManualClock(), only_new).load(t.id, TD)
    assert isinstance(loaded.current.record, SpiffeCARecord)


async def test_federated_domains_keep_the_last_good_bundle(store: SqlStore) -> None:
    t = await tenant(store)
    domain = FederatedDomain(
        t.id, "partner.example", "https://p.example/b", None, None, 1.0, None, 1.0
    )
    assert await store.add_federated_domain(domain)
    assert not await store.add_federated_domain(domain)
    doc = {"keys": [], "spiffe_sequence": 1}
    await store.record_federated_fetch(
        t.id, "partner.example", bundle=doc, now=5.0, refresh_at=305.0, error=None
    )
    await store.record_federated_fetch(
        t.id, "partner.example", bundle=None, now=400.0, refresh_at=460.0, error="down"
    )
    (found,) = await store.list_federated_domains(t.id)
    assert found.bundle == doc and found.fetched_at == 5.0
    assert found.refresh_at == 460.0 and found.last_error == "down"
    assert await store.remove_federated_domain(t.id, "partner.example")
    assert await store.list_federated_domains() == []


def test_migration_0010_goes_down_and_up(database_url: str) -> None:
    from alembic import command

    url = DatabaseUrl(database_url)
    migrate.upgrade(url)
    engine = sa.create_engine(url.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            command.downgrade(_config(conn), "0009")
            conn.commit()
            assert "spiffe_cas" not in sa.inspect(conn).get_table_names()
            command.upgrade(_config(conn), "head")
            conn.commit()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"spiffe_cas", "spiffe_federation"} <= tables


async def test_an_operator_ca_takes_over_at_the_next_rotation(store: SqlStore) -> None:
    """Configured later, the operator's CA replaces the published-but-idle next generation
    at once (racing processes replace it once), and signs from the rotation on."""
    from keyless.core.spiffeupstream import UpstreamCA
    from tests.support.upstreamca import operator_ca, pem_pair

    t = await tenant(store)
    clock = ManualClock(start=datetime.datetime.now(datetime.UTC).timestamp())
    own = await manager(store, clock).load(t.id, TD)
    up = UpstreamCA.from_pem(*pem_pair(*operator_ca()), clock.now())

    def with_upstream() -> SpiffeCAManager:
        return SpiffeCAManager(store, ROOT, clock, period=30 * DAY, svid_ttl=3600, upstream=up)

    a, b = await asyncio.gather(with_upstream().load(t.id, TD), with_upstream().load(t.id, TD))
    records = await store.list_spiffe_cas(t.id)
    assert sorted(r.state for r in records) == ["current", "next"]
    (upcoming,) = [r for r in records if r.state == "next"]
    assert upcoming.root == up.der  # published under the operator's CA, signing nothing yet
    assert a.current.record.ca_id == b.current.record.ca_id == own.current.record.ca_id
    assert await with_upstream().rotate(t.id, TD, force=True)
    rotated = await with_upstream().load(t.id, TD)
    assert rotated.current.record.root == up.der
    assert rotated.current.intermediate.issuer == up.cert.subject
    assert own.current.record.root in {r.root for r in rotated.published}  # still trusted
