"""The async engine: SQLite (WAL, foreign keys, full sync) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from keyless.store.urls import DatabaseUrl


def sqlite_pragmas(dbapi_conn: Any, _record: Any = None) -> None:
    # BEGIN is emitted explicitly (see _sqlite_begin, and the audit writer), never by sqlite3.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=FULL",  # an acknowledged write survives a crash or power loss
        "PRAGMA busy_timeout=10000",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Write transactions take the write lock up front (BEGIN IMMEDIATE), so two writers wait
    # for each other through busy_timeout instead of failing on a stale read snapshot.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


WRITE_OPTION = "keyless_write"
BEGIN_TRIES = 4


class Writer:
    """Write transactions. On SQLite they queue on an in-process lock before taking the
    database's write lock: SQLite has one writer anyway, and queueing here is far cheaper
    than pooled connections contending for the lock through busy_timeout back-off."""

    def __init__(self, engine: AsyncEngine, *, serialise: bool) -> None:
        self._engine = engine.execution_options(**{WRITE_OPTION: True})
        self._lock = asyncio.Lock() if serialise else contextlib.nullcontext()
        # Called after a transaction that moved a revision (see ``mark_changed``) commits.
        self.on_change: Callable[[], None] | None = None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        changed = False
        async with self._lock, contextlib.AsyncExitStack() as stack:
            conn = await self._begun(stack)
            try:
                yield conn
            finally:
                changed = bool(conn.info.pop(CHANGED, False))
        if changed and self.on_change is not None:
            self.on_change()

    async def _begun(self, stack: contextlib.AsyncExitStack) -> AsyncConnection:
        """A write transaction begun. SQLite can refuse ``BEGIN IMMEDIATE`` with "database is
        locked" without waiting out busy_timeout (a read snapshot another process's commit
        made stale); nothing has run yet, so it is begun again, a few times, after a pause."""
        for attempt in range(1, BEGIN_TRIES + 1):
            try:
                conn: AsyncConnection = await stack.enter_async_context(self._engine.begin())
                return conn
            except OperationalError as exc:
                if attempt == BEGIN_TRIES or "database is locked" not in str(exc.orig):
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")


def mark_changed(conn: AsyncConnection) -> None:
    """This transaction changes what processes keep in memory (trust, roles, secrets)."""
    conn.info[CHANGED] = True


CHANGED = "keyless_changed"


def writer_of(engine: AsyncEngine, url: DatabaseUrl) -> Writer:
    return Writer(engine, serialise=url.is_sqlite)


def make_engine(url: DatabaseUrl) -> AsyncEngine:
    if url.is_sqlite:
        path = url.sqlite_path
        if path and path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A fixed pool: connections are not opened and closed per request under load.
        engine = create_async_engine(url.async_url, pool_size=8, max_overflow=0)
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        sa.event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url.async_url, pool_size=16, max_overflow=0, pool_recycle=3600)
