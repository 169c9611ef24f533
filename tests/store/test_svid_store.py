"""Issued X.509-SVIDs on SQLite and PostgreSQL (migration 0011): recorded, found by serial
(only the exact record), pruned once expired, gone with their tenant, and the migration goes
down and up."""

from __future__ import annotations

import sqlalchemy as sa

from keyless.core.models import Tenant
from keyless.core.svidauth import SvidDirectory, SvidRecord
from keyless.store import migrate
from keyless.store.migrate import _config
from keyless.store.sql import SqlStore
from keyless.store.urls import DatabaseUrl


def record(serial: str, not_after: float, tenant_id: str = "t-1") -> SvidRecord:
    return SvidRecord(
        serial=serial,
        tenant_id=tenant_id,
        object_id="00000000-0000-0000-0000-00000000000a",
        client_id="00000000-0000-0000-0000-00000000000b",
        spiffe_id="spiffe://default.keyless/ns/demo/sa/app",
        not_before=not_after - 3600,
        not_after=not_after,
        fingerprint="ab" * 32,
        workload={"namespace": "demo", "pod": "app-7d9f"},
    )


async def test_an_svid_is_recorded_found_by_serial_and_pruned_once_expired(
    store: SqlStore,
) -> None:
    await store.create_tenant(Tenant("t-1", "default", 0.0))
    big = "7f" + "ff" * 19  # a 159-bit serial, as x509.random_serial_number makes
    await store.record_svids([record(big, 1000.0)])
    await store.record_svids([record("1a2b", 5000.0)])
    assert await store.find_svid(big) == record(big, 1000.0)
    assert await store.find_svid("1A2B") is None  # serials are stored as lowercase hex
    assert await store.find_svid("ffff") is None
    directory = SvidDirectory(store)
    assert (await directory.find(big)) == record(big, 1000.0)
    assert await directory.prune(1000.0 + 61) == 1
    assert await directory.find(big) is None  # the cached copy goes too
    assert await store.find_svid("1a2b") is not None


async def test_records_go_with_their_tenant(store: SqlStore) -> None:
    await store.create_tenant(Tenant("t-1", "default", 0.0))
    await store.create_tenant(Tenant("t-2", "other", 0.0))
    await store.record_svids([record("01", 5000.0, "t-2")])
    async with store.writer.begin() as conn:
        await conn.execute(sa.text("DELETE FROM tenants WHERE id = 't-2'"))
    assert await store.find_svid("01") is None


def test_migration_0011_goes_down_and_up(database_url: str) -> None:
    from alembic import command

    url = DatabaseUrl(database_url)
    migrate.upgrade(url)
    engine = sa.create_engine(url.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            command.downgrade(_config(conn), "0010")
            conn.commit()
            assert "spiffe_svids" not in sa.inspect(conn).get_table_names()
            command.upgrade(_config(conn), "head")
            conn.commit()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert "spiffe_svids" in tables
