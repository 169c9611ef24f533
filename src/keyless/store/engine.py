"""The async engine: SQLite (WAL, foreign keys, full sync) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from keyless.store.urls import DatabaseUrl


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA synchronous=FULL",  # an acknowledged write survives a crash or power loss
        "PRAGMA busy_timeout=10000",
    ):
        cursor.execute(pragma)
    cursor.close()


def make_engine(url: DatabaseUrl) -> AsyncEngine:
    if url.is_sqlite:
        path = url.raw.split("sqlite:///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_async_engine(url.async_url, pool_size=4, max_overflow=4)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url.async_url, pool_size=8, max_overflow=8, pool_pre_ping=True)
