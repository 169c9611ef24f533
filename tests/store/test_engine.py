"""The SQLite writer begins a write transaction again when SQLite refuses ``BEGIN IMMEDIATE``
at once ("database is locked" without waiting out busy_timeout, as a stale read snapshot
makes it): nothing has run yet, so beginning again is safe."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from keyless.core.models import Tenant
from keyless.store import engine
from keyless.store.sql import SqlStore


async def _impatient(path: Path) -> SqlStore:
    """A store whose connections give up on a held lock at once (busy_timeout 0)."""
    store = await SqlStore.open(f"sqlite:///{path}")
    sa.event.listen(
        store.engine.sync_engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=0")
    )
    await store.engine.dispose()  # every connection from now on is a new one
    return store


async def test_a_refused_begin_is_begun_again(tmp_path: Path) -> None:
    path = tmp_path / "keyless.db"
    store = await _impatient(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing
        asyncio.get_running_loop().call_later(0.08, other.execute, "COMMIT")
        await store.create_tenant(Tenant("t-9", "nine", 0.0))
        assert (await store.get_tenant("nine")) is not None
    finally:
        other.close()
        await store.close()


async def test_a_lock_held_past_every_try_still_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "BEGIN_TRIES", 2)
    path = tmp_path / "keyless.db"
    store = await _impatient(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked"):
            await store.create_tenant(Tenant("t-9", "nine", 0.0))
        other.execute("ROLLBACK")
    finally:
        other.close()
        await store.close()
