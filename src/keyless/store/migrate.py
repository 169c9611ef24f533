"""Apply Alembic migrations; safe to run from several processes at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from keyless.store.urls import DatabaseUrl

if TYPE_CHECKING:  # imported when migrating only: worker processes never load Alembic
    from alembic.config import Config


class MigrationFailed(Exception):
    """``upgrade_in_child`` failed; the message is the child's ``Type: first line``."""


_LOCK_ID = 0x6B65796C  # "keyl": serialises migrations of processes sharing PostgreSQL


def _config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _sqlite_file_lock(url: DatabaseUrl) -> Iterator[None]:
    """Processes starting together on one SQLite file migrate one after the other."""
    path = url.sqlite_path
    if not path or path == ":memory:":
        yield
        return
    fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(url: DatabaseUrl) -> str:
    """Bring the schema to the newest revision; returns the revision now in force."""
    if url.is_sqlite:
        with _sqlite_file_lock(url):
            return _upgrade(url)
    return _upgrade(url)


def _upgrade(url: DatabaseUrl) -> str:
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
                from alembic import command

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


def upgrade_in_child(url: DatabaseUrl, timeout: float = 600.0) -> str:
    """``upgrade`` in a short-lived child process (``python -m keyless.store.migrate``), so
    that Alembic (~9 MB resident once imported) never enters a serving process. The URL goes
    on stdin (it may hold a password; argv is visible to every local user), the revision comes
    back on stdout, a failure as ``Type: message`` on the last line of stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "keyless.store.migrate"],
        input=url.raw,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise MigrationFailed(lines[-1] if lines else f"exit status {proc.returncode}")
    return proc.stdout.strip()


def main() -> int:
    url = DatabaseUrl(sys.stdin.read())
    try:
        revision = upgrade(url)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    print(revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
