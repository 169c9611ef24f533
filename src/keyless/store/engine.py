"""The async engine: SQLite (WAL, foreign keys, full sync) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from keyless.store.urls import DatabaseUrl


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin), not the sqlite3 module.
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


def writer_of(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, marked so that its transactions are write transactions."""
    return engine.execution_options(**{WRITE_OPTION: True})


def make_engine(url: DatabaseUrl) -> AsyncEngine:
    if url.is_sqlite:
        path = url.raw.split("sqlite:///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_async_engine(url.async_url, pool_size=4, max_overflow=4)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url.async_url, pool_size=8, max_overflow=8, pool_pre_ping=True)
