"""A private PostgreSQL for tests that need real password authentication: the machine's
server trusts every local connection (tests/conftest.py), so nothing there would check a
SCRAM proof or a TLS handshake. This one is the same server binaries, started on a free port
with ``host all all 127.0.0.1/32 scram-sha-256`` and TLS on (a throwaway CA from
tests/support/pki.py); the admin logs in over its Unix socket with trust.

Run as root, the server runs as the ``postgres`` account (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.pki import Pki, make_pki
from tests.support.server import free_port


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(versions[0]).parent if versions else None


@dataclass(frozen=True)
class PgCluster:
    data: Path
    port: int
    pki: Pki
    host: str = "127.0.0.1"

    @property
    def admin_dsn(self) -> str:
        """The superuser over the Unix socket (trust)."""
        return f"host={self.data} port={self.port} user=postgres dbname=postgres"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def add_role(self, name: str, password: str, *extra: str) -> None:
        """A LOGIN role with a SCRAM-SHA-256 password (set per session: whatever the
        server's default)."""
        with self.admin() as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} {}").format(
                    psycopg.sql.Identifier(name),
                    psycopg.sql.Literal(password),
                    psycopg.sql.SQL(" ".join(extra)),
                )
            )
            conn.execute(
                psycopg.sql.SQL("GRANT pg_read_all_stats TO {}").format(
                    psycopg.sql.Identifier(name)
                )
            )


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster | None]:
    """A running private cluster, or None when no PostgreSQL binaries are installed."""
    bindir = _bindir()
    if bindir is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="keyless-pg-"))
    data = root / "data"
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        as_user = {"user": account.pw_uid, "group": account.pw_gid}
        os.chown(root, account.pw_uid, account.pw_gid)
    port = free_port()
    (root / "pki").mkdir()
    pki = make_pki(root / "pki", ca_name="keyless test PostgreSQL CA", ips=["127.0.0.1"])
    run = dict(check=True, capture_output=True, **as_user)
    try:
        subprocess.run(
            [
                bindir / "initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ],
            **run,  # type: ignore[call-overload]
        )
        for name in ("cert", "key"):
            target = data / f"server.{'crt' if name == 'cert' else name}"
            shutil.copy(getattr(pki, name), target)
            os.chmod(target, 0o600)
            if as_user:
                os.chown(target, as_user["user"], as_user["group"])  # type: ignore[arg-type]
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{data}'\nssl = on\nfsync = off\n"
                "max_connections = 50\npassword_encryption = 'scram-sha-256'\n"
            )
        subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-w", "-t", "60", "-l", root / "log", "start"],
            **run,  # type: ignore[call-overload]
        )
        yield PgCluster(data, port, pki)
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                [bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                **run,  # type: ignore[call-overload]
            )
        if os.environ.get("KEYLESS_KEEP_PG"):
            print("kept", root)
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """A private cluster per test module (import this fixture into the module)."""
    with pg_cluster() as running:
        if running is None:
            pytest.skip("no PostgreSQL server binaries (pg_ctl) on this machine")
        yield running
