"""The PostgreSQL proxy against a real PostgreSQL that checks passwords (SCRAM-SHA-256 over
TLS, tests/support/pgcluster.py), with an injected credentials source: psycopg (libpq) logs in
to the proxy with SCRAM, the proxy logs in upstream as the source's current role."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest

from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.pgproxy import PgProxy, ProxySpec
from keyless.agent.scram import ScramSecret
from keyless.core.errors import Unavailable
from tests.support.pgcluster import PgCluster, cluster

__all__ = ["cluster"]  # the fixture

REF = DbRef("app", "rw")
LOCAL_USER = "backstage"
LOCAL_PASSWORD = "local-pässword"  # non-ASCII: SASLprep on both sides


@dataclass
class Source:
    """The credentials source the proxy asks: whatever the test made current."""

    creds: DbCredentials | None = None
    asked: int = 0

    async def current(self, ref: DbRef) -> DbCredentials:
        assert ref == REF
        self.asked += 1
        if self.creds is None:
            raise Unavailable("keyless is unreachable")
        return self.creds


def make_role(cluster: PgCluster, sslmode: str = "require") -> DbCredentials:
    name = f"v-test-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(32)
    cluster.add_role(name, password)
    return DbCredentials(
        username=name,
        password=password,
        host=cluster.host,
        port=cluster.port,
        dbname="postgres",
        sslmode=sslmode,
        expires_at=time.time() + 3600,
        lease_id=f"database/creds/app.rw/{secrets.token_hex(12)}",
        lease_duration=3600,
    )


@dataclass
class Running:
    proxy: PgProxy
    source: Source
    host: str
    port: int

    def dsn(self, password: str = LOCAL_PASSWORD, user: str = LOCAL_USER, **kw: str) -> str:
        extra = " ".join(f"{k}={v}" for k, v in kw.items())
        return (
            f"host={self.host} port={self.port} user={user} password='{password}' "
            f"dbname=postgres connect_timeout=10 {extra}"
        )


@pytest.fixture
async def proxy(cluster: PgCluster) -> AsyncIterator[Running]:
    source = Source(make_role(cluster))
    spec = ProxySpec(
        REF,
        host="127.0.0.1",
        port=0,
        user=LOCAL_USER,
        secret=ScramSecret.from_password(LOCAL_PASSWORD),
    )
    stop = asyncio.Event()
    px = PgProxy(spec, source)
    server = await px.start()
    task = asyncio.create_task(px.serve(stop))
    host, port = server.sockets[0].getsockname()[:2]
    yield Running(px, source, host, port)
    stop.set()
    await task


async def whoami(conn: psycopg.AsyncConnection) -> tuple[str, bool]:
    cur = await conn.execute(
        "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def test_login_through_the_proxy_as_the_current_role_over_tls(proxy: Running) -> None:
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
        user, encrypted = await whoami(conn)
        assert user == proxy.source.creds.username  # type: ignore[union-attr]
        assert encrypted is True  # sslmode require: TLS to the server
        cur = await conn.execute("SELECT %s::text || 'x'", ["a"])  # extended protocol
        assert await cur.fetchone() == ("ax",)
        # the client sees the proxy's own key, not the server's
        assert (
            conn.info.backend_pid
            != (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        )  # type: ignore[index]


async def test_sslmode_disable_goes_upstream_in_clear(proxy: Running, cluster: PgCluster) -> None:
    proxy.source.creds = make_role(cluster, sslmode="disable")
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
        user, encrypted = await whoami(conn)
        assert (user, encrypted) == (proxy.source.creds.username, False)


async def test_a_client_asking_for_local_tls_is_told_no(proxy: Running) -> None:
    # loopback: the proxy answers SSLRequest with 'N'; sslmode=require then gives up
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        await psycopg.AsyncConnection.connect(proxy.dsn(sslmode="require"))


@pytest.mark.parametrize(
    ("user", "password"),
    [(LOCAL_USER, "wrong"), ("someone-else", LOCAL_PASSWORD)],
    ids=["wrong-password", "wrong-user"],
)
async def test_a_wrong_local_login_is_refused(proxy: Running, user: str, password: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await psycopg.AsyncConnection.connect(proxy.dsn(password=password, user=user))
    assert proxy.source.asked == 0  # no upstream connection for a refused client


async def test_rotation_new_connections_use_new_role_old_ones_continue(
    proxy: Running, cluster: PgCluster
) -> None:
    first = proxy.source.creds
    assert first is not None
    old = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
    try:
        assert (await whoami(old))[0] == first.username
        second = make_role(cluster)
        proxy.source.creds = second
        async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as new:
            assert (await whoami(new))[0] == second.username
            cur = await new.execute(
                "SELECT usename FROM pg_stat_activity WHERE usename IN (%s, %s)",
                [first.username, second.username],
            )
            assert sorted(r[0] for r in await cur.fetchall()) == sorted(
                [first.username, second.username]
            )
        assert (await whoami(old))[0] == first.username  # the old session goes on
    finally:
        await old.close()


async def test_cancel_reaches_the_upstream_backend(proxy: Running) -> None:
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
        started = time.monotonic()

        async def cancel_soon() -> None:
            await asyncio.sleep(0.5)
            await conn.cancel_safe()

        canceller = asyncio.create_task(cancel_soon())
        with pytest.raises(psycopg.errors.QueryCanceled):
            await conn.execute("SELECT pg_sleep(30)")
        await canceller
        assert time.monotonic() - started < 10
        await conn.rollback()
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


async def test_an_upstream_refusal_reaches_the_client(proxy: Running) -> None:
    assert proxy.source.creds is not None
    proxy.source.creds = replace(proxy.source.creds, password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed for user"):
        await psycopg.AsyncConnection.connect(proxy.dsn())


async def test_no_credentials_is_a_clear_error(proxy: Running) -> None:
    proxy.source.creds = None
    with pytest.raises(psycopg.OperationalError, match="keyless: no credentials for app/rw"):
        await psycopg.AsyncConnection.connect(proxy.dsn())


async def test_unix_socket_with_trust(cluster: PgCluster, tmp_path: Path) -> None:
    source = Source(make_role(cluster))
    sock = tmp_path / ".s.PGSQL.5432"
    px = PgProxy(ProxySpec(REF, path=sock), source)
    stop = asyncio.Event()
    await px.start()
    task = asyncio.create_task(px.serve(stop))
    try:
        dsn = f"host={tmp_path} port=5432 user=anyone dbname=postgres"
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            assert (await whoami(conn))[0] == source.creds.username  # type: ignore[union-attr]
    finally:
        stop.set()
        await task
    assert not sock.exists()


async def test_upstream_password_goes_through_saslprep_as_postgresql_does(
    proxy: Running, cluster: PgCluster
) -> None:
    # PostgreSQL stores SASLprep(password): NFKC, non-ASCII spaces mapped to a space, soft
    # hyphens dropped; the proxy's SCRAM client must prepare it the same way to log in.
    name = f"v-prep-{secrets.token_hex(4)}"
    password = "p\u00e4ss\u00a0w\u00adord\u2163-" + secrets.token_hex(4)
    cluster.add_role(name, password)
    assert proxy.source.creds is not None
    proxy.source.creds = replace(proxy.source.creds, username=name, password=password)
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
        assert (await whoami(conn))[0] == name


@pytest.mark.parametrize(
    "sent",
    [
        b"\x00\x00\x00\x08\x00\x02\x00\x00",  # protocol 2.0
        b"\x7f\xff\xff\xff\x00\x03\x00\x00",  # a startup packet of 2 GiB
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not PostgreSQL at all
        b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00xy\x00",  # parameters not terminated
        b"",  # a TCP probe: connect and close
    ],
    ids=["old-protocol", "huge-length", "http", "unterminated", "probe"],
)
async def test_hostile_clients_leave_the_proxy_serving(
    proxy: Running, sent: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(sent)
    await writer.drain()
    if sent:
        answer = await asyncio.wait_for(reader.read(1000), 5)  # an error or a close, no hang
        assert answer == b"" or answer[:1] == b"E"
    writer.close()
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    assert "Traceback" not in caplog.text and "session failed" not in caplog.text
    assert proxy.source.asked == 1  # only the real client got upstream
