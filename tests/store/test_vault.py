"""Vault store and service on SQLite and PostgreSQL: versions, soft delete, no value in clear."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from keyless.core import rbac
from keyless.core.access import Principal
from keyless.core.audit import MemoryAuditSink
from keyless.core.errors import Conflict, Forbidden
from keyless.core.models import Identity
from keyless.core.secrets import PropertyChanges
from keyless.core.vault import Call, SecretNotFound, VaultService
from keyless.store.sql import SqlStore
from tests.store.conftest import ROOT

ENABLED = frozenset({"enabled"})

KNOWN = ["correct horse battery staple 0001", "pä$$wörd-ünïcode-0002", "x" * 25 * 1024]


async def test_versions_and_current(env) -> None:  # type: ignore[no-untyped-def]
    vault, _, clock, call = env
    a = await vault.set(call, "kv0", "s", "one", PropertyChanges())
    clock.advance(1)
    b = await vault.set(call, "kv0", "s", "two", PropertyChanges(tags={"k": "v"}))
    assert (await vault.get(call, "kv0", "s")).value == "two"
    assert (await vault.get(call, "kv0", "s", a.props.version)).value == "one"
    page = await vault.versions(call, "kv0", "s", after=None, limit=1)
    assert len(page.items) == 1 and page.next_after is not None
    rest = await vault.versions(call, "kv0", "s", after=page.next_after, limit=5)
    assert {x.props.version for x in page.items + rest.items} == {a.props.version, b.props.version}


async def test_soft_delete_window_and_purge(env, store: SqlStore) -> None:  # type: ignore[no-untyped-def]
    vault, _, clock, call = env
    await vault.set(call, "kv0", "s", "v", PropertyChanges())
    gone = await vault.delete(call, "kv0", "s")
    assert gone.state is not None and gone.state.purge_at == gone.state.deleted_at + 7 * 86400
    with pytest.raises(SecretNotFound):
        await vault.get(call, "kv0", "s")
    with pytest.raises(Conflict):
        await vault.set(call, "kv0", "s", "again", PropertyChanges())
    clock.advance(8 * 86400)
    assert await store.purge_expired_secrets(clock.now()) == 1
    await vault.set(call, "kv0", "s", "fresh", PropertyChanges())


async def test_rbac_denies_by_default_and_audits(env, store: SqlStore) -> None:  # type: ignore[no-untyped-def]
    vault, audit, _, call = env
    await vault.set(call, "kv0", "s", "v", PropertyChanges())
    await store.create_identity(Identity("oid-1", "cid-1", "app", "t1", 0.0))
    reader = Call(Principal("t1", "oid-1", "cid-1", {"pod": "p-1"}), "req-2")
    with pytest.raises(Forbidden):
        await vault.get(reader, "kv0", "s")
    await vault.roles.assign("t1", "oid-1", "Key Vault Reader", "/vaults/kv0")
    with pytest.raises(Forbidden):
        await vault.get(reader, "kv0", "s")  # metadata only, never values
    assert len((await vault.list(reader, "kv0", after=None, limit=10)).items) == 1
    await vault.roles.assign("t1", "oid-1", "secrets-user", "/vaults/kv0/secrets/s")
    assert (await vault.get(reader, "kv0", "s")).value == "v"
    denied = [e for e in audit.events if e.result == "failure"]
    assert denied[0].actor == "oid-1" and denied[0].workload == {"pod": "p-1"}
    assert denied[0].action == "secrets/getSecret" and "denied" in denied[0].reason
    assert all(e.reason != "v" for e in audit.events)


async def test_no_value_in_clear_in_the_database(env, store: SqlStore, database_url: str) -> None:  # type: ignore[no-untyped-def]
    vault, audit, _, call = env
    for i, value in enumerate(KNOWN):
        await vault.set(call, "kv0", f"s{i}", value, PropertyChanges())
        await vault.backup(call, "kv0", f"s{i}")
    await store.close()
    if database_url.startswith("sqlite"):
        path = database_url.split("sqlite:///", 1)[1]
        raw = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if os.path.exists(p))
    else:
        raw = subprocess.run(
            ["pg_dump", "--no-owner", database_url], capture_output=True, check=True, timeout=60
        ).stdout
    assert b"secret_versions" in raw or b"s0" in raw
    for value in KNOWN:
        for encoding in ("utf-8", "utf-16-le"):
            assert value[:24].encode(encoding) not in raw
    for event in audit.events:
        assert not any(value[:24] in str(event.as_dict()) for value in KNOWN)


async def test_reads_are_served_from_the_cache_and_writes_are_seen(env, store: SqlStore) -> None:  # type: ignore[no-untyped-def]
    vault, _, clock, call = env
    first = await vault.set(call, "kv0", "s", "one", PropertyChanges())
    assert (await vault.get(call, "kv0", "s")).value == "one"
    calls = 0
    real = store.get_current_secret

    async def counted(*args: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args)  # type: ignore[arg-type]

    store.get_current_secret = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert (await vault.get(call, "kv0", "s")).value == "one"
    assert calls == 0  # served from memory
    await vault.set(call, "kv0", "s", "two", PropertyChanges())
    assert (await vault.get(call, "kv0", "s")).value == "two"
    assert (await vault.get(call, "kv0", "s", first.props.version)).value == "one"
    await vault.update(call, "kv0", "s", None, PropertyChanges(enabled=False, set_fields=ENABLED))
    with pytest.raises(Forbidden):
        await vault.get(call, "kv0", "s")
    await vault.update(call, "kv0", "s", None, PropertyChanges(enabled=True, set_fields=ENABLED))
    clock.advance(1)
    await vault.delete(call, "kv0", "s")
    with pytest.raises(SecretNotFound):
        await vault.get(call, "kv0", "s")
    with pytest.raises(SecretNotFound):
        await vault.get(call, "kv0", "s", first.props.version)
    await vault.recover(call, "kv0", "s")
    assert (await vault.get(call, "kv0", "s")).value == "two"


async def test_another_process_write_is_seen_after_the_revision_check(env, store: SqlStore) -> None:  # type: ignore[no-untyped-def]
    mine, _, clock, call = env
    other_store = await SqlStore.open(store.url.raw)
    try:
        roles = rbac.RoleAssignments(other_store, clock)
        await roles.reload()
        other = VaultService(
            other_store, lambda: roles.index, MemoryAuditSink(), clock, lambda: ROOT
        )
        await mine.reload_if_changed()
        await mine.set(call, "kv0", "s", "one", PropertyChanges())
        assert (await mine.get(call, "kv0", "s")).value == "one"
        assert await mine.reload_if_changed()  # its own write moved the revision too
        assert (await mine.get(call, "kv0", "s")).value == "one"
        assert not await mine.reload_if_changed()
        await other.set(call, "kv0", "s", "two", PropertyChanges())
        assert (await mine.get(call, "kv0", "s")).value == "one"  # cached until it looks
        assert await mine.reload_if_changed()
        assert (await mine.get(call, "kv0", "s")).value == "two"
        await other.delete(call, "kv0", "s")
        assert await mine.reload_if_changed()
        with pytest.raises(SecretNotFound):
            await mine.get(call, "kv0", "s")
    finally:
        await other_store.close()
