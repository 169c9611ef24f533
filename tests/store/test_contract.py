"""The store contract: every test runs against SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from keyless.core.envelope import RootKeys
from keyless.core.keyring import generate_key
from keyless.core.models import Tenant
from keyless.store.sql import SqlStore
from tests.support.keys import private_markers

ROOT = RootKeys((os.urandom(32),))


async def _tenant(store: SqlStore, alias: str = "default") -> Tenant:
    return await store.create_tenant(
        Tenant(f"00000000-0000-0000-0000-{alias[:12]:0>12}", alias, 1.0)
    )


async def test_tenant_create_get_and_alias_race(store: SqlStore) -> None:
    t = await _tenant(store)
    assert await store.get_tenant("default") == t
    assert await store.get_tenant(t.id) == t
    assert await store.get_tenant("nope") is None
    # A second process making "default" at the same moment gets the first one back.
    again = await store.create_tenant(
        Tenant("11111111-1111-1111-1111-111111111111", "default", 2.0)
    )
    assert again == t
    assert await store.list_tenants() == [t]


async def test_signing_keys_bootstrap_once(store: SqlStore) -> None:
    t = await _tenant(store)
    cur, nxt = (generate_key(t.id, "ES256", ROOT, 10.0, s) for s in ("current", "next"))
    assert await store.bootstrap_signing_keys(cur, nxt)
    cur2, nxt2 = (generate_key(t.id, "ES256", ROOT, 11.0, s) for s in ("current", "next"))
    assert not await store.bootstrap_signing_keys(cur2, nxt2)
    keys = await store.list_signing_keys(t.id)
    assert [(k.kid, k.state) for k in keys] == [(cur.kid, "current"), (nxt.kid, "next")]
    assert keys[0] == cur


async def test_rotation_is_a_compare_and_swap(store: SqlStore) -> None:
    t = await _tenant(store)
    cur, nxt = (generate_key(t.id, "ES256", ROOT, 10.0, s) for s in ("current", "next"))
    await store.bootstrap_signing_keys(cur, nxt)
    new = generate_key(t.id, "ES256", ROOT, 20.0, "next")
    assert await store.rotate_signing_keys(t.id, cur.kid, new, 20.0)
    stale = generate_key(t.id, "ES256", ROOT, 20.0, "next")
    assert not await store.rotate_signing_keys(t.id, cur.kid, stale, 20.0)
    states = {
        k.kid: (k.state, k.activated_at, k.retired_at) for k in await store.list_signing_keys(t.id)
    }
    assert states == {
        cur.kid: ("retired", 10.0, 20.0),
        nxt.kid: ("current", 20.0, None),
        new.kid: ("next", None, None),
    }
    assert await store.prune_signing_keys(t.id, retired_before=19.0) == 0
    assert await store.prune_signing_keys(t.id, retired_before=21.0) == 1
    assert {k.kid for k in await store.list_signing_keys(t.id)} == {nxt.kid, new.kid}


async def test_concurrent_rotations_from_two_processes_rotate_once(database_url: str) -> None:
    """Two stores (two engines, as two server processes have) race to rotate the same key."""
    a, b = await SqlStore.open(database_url), await SqlStore.open(database_url)
    try:
        t = await _tenant(a)
        cur, nxt = (generate_key(t.id, "RS256", ROOT, 10.0, s) for s in ("current", "next"))
        await a.bootstrap_signing_keys(cur, nxt)
        for _ in range(3):
            current = next(k for k in await a.list_signing_keys(t.id) if k.state == "current")
            results = await asyncio.gather(
                *(
                    s.rotate_signing_keys(
                        t.id, current.kid, generate_key(t.id, "ES256", ROOT, 30.0, "next"), 30.0
                    )
                    for s in (a, b, a, b)
                )
            )
            assert sorted(results) == [False, False, False, True]
        keys = await b.list_signing_keys(t.id)
        assert sorted(k.state for k in keys) == ["current", "next", "retired", "retired", "retired"]
    finally:
        await a.close()
        await b.close()


async def test_rewrap_all_moves_every_sealed_value(store: SqlStore) -> None:
    t = await _tenant(store)
    cur, nxt = (generate_key(t.id, "ES256", ROOT, 10.0, s) for s in ("current", "next"))
    await store.bootstrap_signing_keys(cur, nxt)
    both = RootKeys((os.urandom(32), *ROOT.keys))
    assert await store.rewrap_all(lambda ctx, blob: both.rewrap(blob, ctx)) == 2
    only_new = RootKeys(both.keys[:1])
    for k in await store.list_signing_keys(t.id):
        assert only_new.wrapped_by(k.sealed_private) == only_new.active_id
        assert only_new.open(k.sealed_private, f"signing-key:{k.kid}")


async def test_no_private_key_material_in_clear(
    store: SqlStore, database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    t = await _tenant(store)
    keys = [
        generate_key(t.id, alg, ROOT, 10.0, s)
        for alg, s in (("RS256", "current"), ("ES256", "next"))
    ]
    await store.bootstrap_signing_keys(*keys)
    await store.close()
    if database_url.startswith("sqlite"):
        path = database_url.split("sqlite:///", 1)[1]
        raw = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if os.path.exists(p))
    else:
        raw = subprocess.run(
            ["pg_dump", "--no-owner", database_url], capture_output=True, check=True, timeout=60
        ).stdout
        assert b"signing_keys" in raw
    assert keys[0].kid.encode() in raw  # the dump really holds the rows
    for rec in keys:
        for marker in private_markers(rec, ROOT):
            assert marker not in raw


@pytest.mark.parametrize("n", [1])
async def test_ping_and_reopen_keeps_data(database_url: str, n: int) -> None:
    s = await SqlStore.open(database_url)
    await s.ping()
    t = await _tenant(s)
    await s.close()
    s2 = await SqlStore.open(database_url)
    assert await s2.get_tenant("default") == t
    await s2.close()
