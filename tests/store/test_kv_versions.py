"""Numbered versions, check-and-set, disable/enable, destroy, '/' names and token revocations:
what the Vault dialect stands on, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from keyless.core import rbac
from keyless.core.clock import ManualClock
from keyless.core.errors import Conflict, InvalidRequest
from keyless.core.revocation import Revocations
from keyless.core.secrets import PropertyChanges, validate_vault_name
from keyless.core.vault import SecretNotFound, SecretUnavailable
from keyless.store.sql import SqlStore


async def test_versions_are_numbered_in_write_order(env) -> None:  # type: ignore[no-untyped-def]
    vault, _, clock, call = env
    numbers = []
    for value in ("one", "two", "three"):
        clock.advance(1)
        numbers.append(
            (await vault.set(call, "kv0", "db/creds", value, PropertyChanges())).props.number
        )
    assert numbers == [1, 2, 3]
    assert (await vault.get(call, "kv0", "db/creds", number=1)).value == "one"
    assert (await vault.get(call, "kv0", "db/creds", number=3)).value == "three"
    assert (await vault.get(call, "kv0", "db/creds")).props.number == 3
    with pytest.raises(SecretNotFound):
        await vault.get(call, "kv0", "db/creds", number=4)
    state, versions = await vault.history(call, "kv0", "db/creds")
    assert [v.number for v in versions] == [1, 2, 3]
    assert state.current_version == versions[-1].version


async def test_check_and_set(env) -> None:  # type: ignore[no-untyped-def]
    vault, _, _, call = env
    await vault.set(call, "kv0", "s", "a", PropertyChanges(), expect=0)
    with pytest.raises(Conflict, match="check-and-set"):
        await vault.set(call, "kv0", "s", "b", PropertyChanges(), expect=0)
    await vault.set(call, "kv0", "s", "b", PropertyChanges(), expect=1)
    with pytest.raises(Conflict, match="expected 1, current 2"):
        await vault.set(call, "kv0", "s", "c", PropertyChanges(), expect=1)
    assert (await vault.get(call, "kv0", "s")).value == "b"


async def test_disable_enable_and_destroy_by_number(env, store: SqlStore) -> None:  # type: ignore[no-untyped-def]
    vault, audit, _, call = env
    await vault.set(call, "kv0", "s", "a", PropertyChanges(tags={"owner": "x"}))
    await vault.set(call, "kv0", "s", "b", PropertyChanges(), inherit_tags=True)
    assert (await vault.get(call, "kv0", "s")).props.tags == {"owner": "x"}
    assert await vault.set_enabled(call, "kv0", "s", [2], False) == 1
    with pytest.raises(SecretUnavailable) as unavailable:
        await vault.get(call, "kv0", "s")
    assert unavailable.value.props.number == 2 and not unavailable.value.props.enabled
    assert await vault.set_enabled(call, "kv0", "s", [2], True) == 1
    assert (await vault.get(call, "kv0", "s")).value == "b"
    assert await vault.destroy(call, "kv0", "s", [1]) == 1
    with pytest.raises(SecretUnavailable) as destroyed:
        await vault.get(call, "kv0", "s", number=1)
    assert destroyed.value.props.destroyed
    found = await store.get_secret_version_by_number("kv0", "s", 1)
    assert found is not None and found[1] == b""  # the sealed value is gone from the store
    # A destroyed version stays destroyed: enabling it again changes nothing.
    assert await vault.set_enabled(call, "kv0", "s", [1], True) == 0
    actions = [e.action for e in audit.events if e.result == "success"]
    assert rbac.DELETE in actions and rbac.RECOVER in actions and rbac.PURGE in actions


async def test_backup_and_restore_keep_numbers_and_destroyed(env) -> None:  # type: ignore[no-untyped-def]
    vault, _, _, call = env
    await vault.set(call, "kv0", "s", "a", PropertyChanges())
    await vault.set(call, "kv0", "s", "b", PropertyChanges())
    await vault.destroy(call, "kv0", "s", [1])
    blob = await vault.backup(call, "kv0", "s")
    await vault.delete(call, "kv0", "s")
    await vault.purge(call, "kv0", "s")
    await vault.restore(call, "kv0", blob)
    _, versions = await vault.history(call, "kv0", "s")
    assert [(v.number, v.destroyed) for v in versions] == [(1, True), (2, False)]
    assert (await vault.get(call, "kv0", "s")).value == "b"


def test_names_with_slashes_and_reserved_vault_names() -> None:
    from keyless.core.secrets import validate_keyvault_name, validate_secret_name

    for good in ("db/creds", "a_b.c/d-e", "x"):
        assert validate_secret_name(good) == good
    for bad in ("a//b", "/a", "a/", "a/../b", "..", "a b", "x" * 128):
        with pytest.raises(InvalidRequest):
            validate_secret_name(bad)
    with pytest.raises(InvalidRequest):
        validate_keyvault_name("db/creds")
    for reserved in ("auth", "sys", "identity", "cubbyhole", "database", "pki", "transit"):
        with pytest.raises(InvalidRequest, match="reserved"):
            validate_vault_name(reserved)
    assert rbac.parse_scope("/vaults/kv0/secrets/db/creds") == ("kv0", "db/creds")
    with pytest.raises(InvalidRequest):
        rbac.parse_scope("/vaults/kv0/secrets/db//creds")


async def test_revocations_reach_every_process(store: SqlStore) -> None:
    clock = ManualClock(1000.0)
    here, there = Revocations(store, clock), Revocations(store, clock)
    await here.reload()
    await there.reload()
    await here.revoke("jti-1", "t1", 1500.0)
    assert here.revoked("jti-1")
    assert not there.revoked("jti-1")  # until it follows the store's revision
    assert await there.reload_if_changed()
    assert there.revoked("jti-1") and not there.revoked("jti-2") and not there.revoked("")
    # Once the token would have expired anyway, its entry goes.
    clock.advance(600)
    await here.revoke("jti-2", "t1", 2000.0)
    await there.reload_if_changed()
    assert not there.revoked("jti-1") and there.revoked("jti-2")


def test_migration_numbers_existing_versions_in_write_order(database_url: str) -> None:
    """A database made before 0007 gets its versions numbered by the order they were written."""
    import sqlalchemy as sa
    from alembic import command

    from keyless.store import migrate
    from keyless.store.urls import DatabaseUrl

    url = DatabaseUrl(database_url)
    engine = sa.create_engine(url.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            command.upgrade(migrate._config(conn), "0006")
            conn.commit()
            conn.execute(
                sa.text("INSERT INTO tenants (id, alias, created_at) VALUES ('t', 'a', 0)")
            )
            conn.execute(
                sa.text("INSERT INTO vaults (name, tenant_id, created_at) VALUES ('v', 't', 0)")
            )
            conn.execute(
                sa.text("INSERT INTO secrets (vault, name, current_version) VALUES ('v', 's', 'c')")
            )
            for version, created in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
                conn.execute(
                    sa.text(
                        "INSERT INTO secret_versions (vault, name, version, sealed_value, tags, "
                        "enabled, created, updated) VALUES ('v', 's', :v, :sv, '{}', true, :c, :c)"
                    ),
                    {"v": version, "sv": b"x", "c": created},
                )
            conn.commit()
    finally:
        engine.dispose()
    assert int(migrate.upgrade(url)) >= 7  # 0007 and whatever came after it
    engine = sa.create_engine(url.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT version, number, destroyed FROM secret_versions ORDER BY version")
            ).all()
    finally:
        engine.dispose()
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [
        ("a", 1, False),
        ("b", 2, False),
        ("c", 3, False),
    ]
