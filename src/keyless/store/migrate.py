"""Apply Alembic migrations; safe to run from several processes at once."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from keyless.store.urls import DatabaseUrl

_LOCK_ID = 0x6B65796C  # "keyl": serialises migrations of processes sharing PostgreSQL


def _config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: DatabaseUrl) -> str:
    """Bring the schema to the newest revision; returns the revision now in force."""
    engine = sa.create_engine(url.sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if url.is_sqlite:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            else:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_ID})
                conn.commit()
            try:
                command.upgrade(_config(conn), "head")
                conn.commit()
                row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            finally:
                if not url.is_sqlite:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
                    conn.commit()
    finally:
        engine.dispose()
    return row[0] if row else "base"
