"""The database engine's tables (migration 0009) on SQLite and PostgreSQL: the lease claim is
won by exactly one of two stores racing on one database, and 0009 goes down and up again."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from keyless.core.databases import ACTIVE, REVOKED, REVOKING, Database, Lease
from keyless.store import migrate
from keyless.store.migrate import _config
from keyless.store.sql import SqlStore
from keyless.store.urls import DatabaseUrl

T = "tenant-1"
NOW = 1_800_000_000.0


def lease(suffix: str, expires_at: float) -> Lease:
    return Lease(
        suffix, T, "orders", "app", f"v-x-app-{suffix[:8].lower()}", "oid", {"pod": "p"},
        NOW, expires_at, NOW + 100,
    )  # fmt: skip


async def test_two_stores_claim_each_due_lease_once(store: SqlStore, database_url: str) -> None:
    other = await SqlStore.open(database_url)
    try:
        for i in range(20):
            await store.insert_lease(lease(f"{i:02d}" + "a" * 22, NOW + (10 if i % 2 else -1)))
        due = await store.due_leases(NOW, 100)
        assert len(due) == 10 and all(d.state == ACTIVE for d in due)
        results = await asyncio.gather(
            *(
                s.claim_lease(d.suffix, name, NOW, NOW + 60, due_only=True)
                for d in due
                for s, name in ((store, "one"), (other, "two"))
            )
        )
        assert sum(results) == 10
        assert await store.due_leases(NOW, 100) == []  # claimed: not due until NOW + 60
        claimed = [await store.get_lease(d.suffix) for d in due]
        assert all(c is not None and c.state == REVOKING for c in claimed)
        assert all(
            await asyncio.gather(
                *(
                    (store if c.claimed_by == "one" else other).finish_lease(
                        c.suffix, c.claimed_by, NOW
                    )
                    for c in claimed
                    if c is not None and c.claimed_by is not None
                )
            )
        )
        # A claim that ran out (its claimer died) is due again; a finished one never is.
        left = lease("zz" + "b" * 22, NOW - 1)
        await store.insert_lease(left)
        assert await store.claim_lease(left.suffix, "one", NOW, NOW + 60, due_only=True)
        assert not await other.claim_lease(left.suffix, "two", NOW + 1, NOW + 61, due_only=True)
        assert await other.claim_lease(left.suffix, "two", NOW + 61, NOW + 121, due_only=True)
        assert not await store.finish_lease(left.suffix, "one", NOW + 62)  # not its claim now
        assert await other.finish_lease(left.suffix, "two", NOW + 62)
        states = {x.state for x in await store.list_leases(T, include_revoked=True)}
        assert states == {ACTIVE, REVOKED}
    finally:
        await other.close()


async def test_database_rows_keep_the_password_sealed_apart(store: SqlStore) -> None:
    db = Database(T, "orders", "db.internal", 5432, "orders", "admin", "require", NOW)
    await store.put_database(db, b"sealed-1")
    assert await store.get_database(T, "orders") == (db, b"sealed-1")
    await store.set_database_password(T, "orders", b"sealed-2")
    assert await store.get_database(T, "orders") == (db, b"sealed-2")
    assert await store.list_databases(T) == [db]
    assert await store.list_databases("other-tenant") == []


def test_migration_0009_goes_down_and_up(database_url: str) -> None:
    from alembic import command

    url = DatabaseUrl(database_url)
    migrate.upgrade(url)
    engine = sa.create_engine(url.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            command.downgrade(_config(conn), "0008")
            conn.commit()
            assert "database_leases" not in sa.inspect(conn).get_table_names()
            command.upgrade(_config(conn), "head")
            conn.commit()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"databases", "database_roles", "database_leases"} <= tables
