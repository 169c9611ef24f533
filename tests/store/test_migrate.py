"""``migrate.upgrade_in_child``: the server's migration, in a child process (no Alembic
resident in the server), gives the same schema and the same one-line errors as in process."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from keyless.core.errors import Unavailable
from keyless.store import migrate
from keyless.store.sql import SqlStore
from keyless.store.urls import DatabaseUrl


def _tables(path: Path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_child_and_in_process_reach_the_same_revision(tmp_path: Path) -> None:
    child, here = tmp_path / "child.db", tmp_path / "here.db"
    revision = migrate.upgrade_in_child(DatabaseUrl(f"sqlite:///{child}"))
    assert revision == migrate.upgrade(DatabaseUrl(f"sqlite:///{here}"))
    assert revision != "base"
    assert _tables(child) == _tables(here)
    # Again: nothing to do, same revision.
    assert migrate.upgrade_in_child(DatabaseUrl(f"sqlite:///{child}")) == revision


def test_child_failure_is_one_line_naming_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-database.db"
    bad.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(migrate.MigrationFailed) as info:
        migrate.upgrade_in_child(DatabaseUrl(f"sqlite:///{bad}"))
    message = str(info.value)
    assert message.startswith("DatabaseError: "), message
    assert "\n" not in message


async def test_store_open_says_what_failed(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-database.db"
    bad.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(Unavailable, match=r"cannot be migrated: DatabaseError: "):
        await SqlStore.open(f"sqlite:///{bad}", migrate_in_child=True)


def test_live_state_index_declared_for_alembic_matches_the_database(tmp_path: Path) -> None:
    """schema.py declares the partial unique index on signing_keys for Alembic only
    (migrations/env.py); Alembic finds the migrated database and schema.py equal, that
    declaration included."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from keyless.store.schema import metadata

    url = f"sqlite:///{tmp_path / 'k.db'}"
    migrate.upgrade(DatabaseUrl(url))  # runs env.py, which attaches the index
    assert "ux_signing_keys_live_state" in {i.name for i in metadata.tables["signing_keys"].indexes}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            found = sa.inspect(conn).get_indexes("signing_keys")
    finally:
        engine.dispose()
    assert diff == []  # every table, column and index of schema.py is what migrations made
    live = next(i for i in found if i["name"] == "ux_signing_keys_live_state")
    assert live["unique"] and live["column_names"] == ["tenant_id", "state"]


async def test_0008_keeps_every_credential_and_gives_it_no_set_and_no_google_source(
    database_url: str,
) -> None:
    """A credential written before migration 0008 reads back unchanged (one issuer, no
    Google source), on SQLite and PostgreSQL."""
    from alembic import command

    from keyless.core.trust import FederatedCredential

    engine = sa.create_engine(DatabaseUrl(database_url).sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            command.upgrade(migrate._config(conn), "0007")
            conn.execute(sa.text("INSERT INTO tenants VALUES ('t1', 'default', 1.0)"))
            conn.execute(
                sa.text(
                    "INSERT INTO identities (object_id, tenant_id, client_id, name, created_at) "
                    "VALUES ('o1', 't1', 'c1', 'app', 1.0)"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO federated_credentials (id, identity_id, name, issuer, subject, "
                    "subject_pattern, audiences, condition, created_at) VALUES ('f1', 'o1', "
                    "'api', 'https://i.test', 's', NULL, '[\"aud\"]', 'claims.x == 1', 1.0)"
                )
            )
            conn.commit()
    finally:
        engine.dispose()
    store = await SqlStore.open(database_url)
    try:
        assert await store.list_credentials() == [
            FederatedCredential(
                "f1", "o1", "api", "https://i.test", "s", None, ("aud",), "claims.x == 1"
            )
        ]
    finally:
        await store.close()
