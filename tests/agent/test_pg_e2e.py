"""End to end: the real server's database engine manages a private PostgreSQL that checks
SCRAM passwords over TLS (tests/support/pgcluster.py); a real ``keyless agent`` process logs in
through the Vault dialect as the identity ``app``, keeps ``--database-creds`` current and serves
``--pg-proxy``; psycopg talks to the proxy with a fixed local password.

The role's TTL is 4 s and its maximum 8 s, so the agent renews once or twice and replaces its
credentials about every 6 s: the test drives three rotations."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.agent.conftest import AgentProcess, Vaults, prepare, start_agent
from tests.support.federation import TEST_ISSUER
from tests.support.oidc import SUBJECT
from tests.support.pgcluster import PgCluster, cluster
from tests.support.server import ServerFactory, free_port, keyless_cmd
from tests.support.waiting import eventually

__all__ = ["cluster"]  # the fixture

DATABASE, ROLE = "shop", "rw"
LOCAL_USER, LOCAL_PASSWORD = "backstage", "local-only-password"
OWNER_SQL = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; "
    "ALTER ROLE \"{{name}}\" SET role = 'shop_owner'"
)


@dataclass
class DbKeyless:
    kv: Vaults
    cluster: PgCluster
    tmp: Path

    def agent_env(self) -> dict[str, str]:
        return {**self.kv.agent_env(), "KEYLESS_IDENTITY": "app"}


@pytest.fixture(scope="module")
def dbkl(tmp_path_factory: pytest.TempPathFactory, cluster: PgCluster) -> Iterator[DbKeyless]:
    """keyless (reaper every second) managing the private cluster as ``shop``, whose role
    ``rw`` (TTL 4 s, max 8 s) the identity ``app`` may get credentials for."""
    tmp = tmp_path_factory.mktemp("pge2e")
    admin, admin_password = f"kl_admin_{secrets.token_hex(3)}", secrets.token_urlsafe(24)
    cluster.add_role(admin, admin_password, "SUPERUSER")
    with cluster.admin() as conn:
        conn.execute("CREATE ROLE shop_rw NOLOGIN")
        conn.execute("GRANT pg_read_all_stats TO shop_rw")
        conn.execute("CREATE ROLE shop_owner NOLOGIN")
        conn.execute("CREATE SCHEMA shop AUTHORIZATION shop_owner")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True, env={"KEYLESS_DATABASE_REAP_INTERVAL": "1"})
        kv = prepare(server, tmp)
        password_file = tmp / "admin-password"
        password_file.write_text(admin_password + "\n")
        url = f"postgresql://{admin}@{cluster.host}:{cluster.port}/postgres?sslmode=require"
        server.cli("database", "add", DATABASE, "--url", url, "--password-file", str(password_file))
        server.cli("database", "role", "add", DATABASE, ROLE, "--grant", "shop_rw",
                   "--ttl", "4s", "--max-ttl", "8s")  # fmt: skip
        server.cli("role", "assign", "app", "database-user", "--scope",
                   f"/databases/{DATABASE}/roles/{ROLE}")  # fmt: skip
        # docs/databases.md's recipe: every user acts as the owner group (ALTER ROLE SET role)
        server.cli("database", "role", "add", DATABASE, "own", "--grant", "shop_owner",
                   "--ttl", "2s", "--max-ttl", "4s", "--creation-sql", OWNER_SQL)  # fmt: skip
        server.cli("role", "assign", "app", "database-user", "--scope",
                   f"/databases/{DATABASE}/roles/own")  # fmt: skip
        yield DbKeyless(kv, cluster, tmp)
    finally:
        factory.stop_all()


@pytest.fixture
def agent(dbkl: DbKeyless) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        running = start_agent(args, dbkl.agent_env())
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def proxy_args(dbkl: DbKeyless, port: int, role: str = ROLE) -> tuple[str, ...]:
    password = dbkl.tmp / "local-password"
    password.write_text(LOCAL_PASSWORD + "\n")
    return (
        "--pg-proxy", f"127.0.0.1:{port}={DATABASE}/{role}",
        "--pg-proxy-user", LOCAL_USER,
        "--pg-proxy-password-file", str(password),
    )  # fmt: skip


def connect(port: int) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=LOCAL_USER,
        password=LOCAL_PASSWORD,
        dbname="postgres",
        connect_timeout=10,
        autocommit=True,
    )


def current_user(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_proxy_across_three_rotations(dbkl: DbKeyless, agent: Callable[..., AgentProcess]) -> None:
    port = free_port()
    running = agent(*proxy_args(dbkl, port))
    assert running.wait_for(f"postgres proxy for {DATABASE}/{ROLE} listening"), running.log
    users: list[str] = []  # the role of each new connection, in order
    errors: list[BaseException] = []
    old_sessions: list[tuple[psycopg.Connection[tuple[object, ...]], str]] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and len(set(users)) < 4:
            try:
                conn = connect(port)
                user = current_user(conn)
                if not users or user != users[-1]:
                    # a rotation: the session opened just before it must still work now
                    for old, old_user in old_sessions[-1:]:
                        assert current_user(old) == old_user
                    old_sessions.append((conn, user))
                else:
                    conn.close()
                users.append(user)
            except psycopg.Error as exc:
                errors.append(exc)
            time.sleep(0.25)
        assert not errors, errors
        distinct = list(dict.fromkeys(users))
        assert len(distinct) >= 4, distinct  # the first role and three rotations
        assert all(u.startswith("v-") for u in distinct)
        # new connections use the new role while the previous role's session is still there
        with connect(port) as probe:
            seen = {
                str(r[0])
                for r in probe.execute(
                    "SELECT usename FROM pg_stat_activity WHERE usename = ANY(%s)",
                    [distinct[-2:]],
                ).fetchall()
            }
            assert seen == set(distinct[-2:])
    finally:
        for conn, _ in old_sessions:
            conn.close()
    assert LOCAL_PASSWORD not in running.log
    assert running.stop() == 0

    # every lease the agent held is revoked at SIGTERM: no role of it can log in any more
    def gone() -> bool:
        with dbkl.cluster.admin() as admin:
            return not admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [distinct]
            ).fetchall()

    assert eventually(gone, timeout=10)


def test_cancel_through_the_proxy(dbkl: DbKeyless, agent: Callable[..., AgentProcess]) -> None:
    port = free_port()
    running = agent(*proxy_args(dbkl, port))
    assert running.wait_for("listening"), running.log
    with connect(port) as conn:
        threading.Timer(0.5, conn.cancel_safe).start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 10


def test_database_creds_file_is_replaced_before_expiry(
    dbkl: DbKeyless, agent: Callable[..., AgentProcess]
) -> None:
    out = dbkl.tmp / "creds" / "db.json"
    running = agent("--database-creds", f"{DATABASE}/{ROLE}=" + str(out))
    assert running.wait_for("1 file current", stream="out"), running.log
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len({s["username"] for s in seen}) < 2:
        body = json.loads(out.read_text())
        if not seen or body != seen[-1]:
            assert body["expires_at"] > time.time()  # never an expired one in the file
            with psycopg.connect(
                host=body["host"],
                port=body["port"],
                dbname=body["dbname"],
                user=body["username"],
                password=body["password"],
                sslmode=body["sslmode"],
                connect_timeout=5,
            ) as conn:
                assert current_user(conn) == body["username"]  # type: ignore[arg-type]
            seen.append(body)
        time.sleep(0.2)
    assert len({s["username"] for s in seen}) >= 2, seen
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert all(str(s["password"]) not in running.log for s in seen)


def test_an_unknown_role_is_a_clear_error(
    dbkl: DbKeyless, agent: Callable[..., AgentProcess]
) -> None:
    out = dbkl.tmp / "nope.json"
    running = agent("--database-creds", f"{DATABASE}/nope=" + str(out))
    assert running.wait_for("database credentials shop/nope"), running.log
    assert not out.exists()
    assert running.proc.poll() is None  # it keeps trying; the error is in the log
    assert eventually(lambda: "not written" in running.log, timeout=10), running.log
    with dbkl.cluster.admin() as conn:
        assert conn.execute(
            sql.SQL("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-app-nope%'")
        ).fetchone() == (0,)


def test_once_renders_a_database_template_that_logs_in(
    dbkl: DbKeyless, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = dbkl.tmp / "pg_service.conf.j2"
    template.write_text(
        '{% set db = database("shop/rw") %}[app]\nhost={{ db.host }}\nport={{ db.port }}\n'
        "dbname={{ db.dbname }}\nuser={{ db.username }}\npassword={{ db.password }}\n"
        "sslmode={{ db.sslmode }}\n"
    )
    out = dbkl.tmp / "once" / "pg_service.conf"
    done = subprocess.run(
        [*keyless_cmd(), "agent", "--once", "--template", f"{template}={out}"],
        env=dbkl.agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("PGSERVICEFILE", str(out))
    with psycopg.connect("service=app") as conn:
        user = current_user(conn)
    assert user.startswith("v-app-rw-")
    (password,) = [ln[9:] for ln in out.read_text().splitlines() if ln.startswith("password=")]
    assert password not in done.stderr + done.stdout  # the user is logged, never the password


def test_a_port_in_use_is_one_line(dbkl: DbKeyless, agent: Callable[..., AgentProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        running = agent(*proxy_args(dbkl, taken.getsockname()[1]))
        code = running.proc.wait(30)
    assert code == 2 and "cannot listen" in running.log, running.log


def test_the_docs_owner_group_recipe_across_a_rotation(
    dbkl: DbKeyless, agent: Callable[..., AgentProcess]
) -> None:
    """Tables made by one dynamic user are the group's, the next user uses them, and a session
    whose own user was dropped at its lease's end goes on as the group."""
    port = free_port()
    running = agent(*proxy_args(dbkl, port, role="own"))
    assert running.wait_for("listening"), running.log
    first = connect(port)
    try:
        who = first.execute("SELECT session_user, current_user").fetchone()
        assert who is not None and who[1] == "shop_owner"
        first.execute("CREATE TABLE shop.items (n int)")
        first.execute("INSERT INTO shop.items VALUES (1)")

        def rotated() -> bool:
            with connect(port) as conn:
                row = conn.execute("SELECT session_user").fetchone()
                return row is not None and row[0] != who[0]

        assert eventually(rotated, timeout=20, step=0.5)
        with connect(port) as second:
            second.execute("INSERT INTO shop.items VALUES (2)")
        with dbkl.cluster.admin() as admin:
            assert eventually(
                lambda: (
                    admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [who[0]]).fetchone()
                    is None
                ),
                timeout=15,
            )  # the first lease ended: its user is gone
            owner = admin.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"
            ).fetchone()
            assert owner == ("shop_owner",)
        rows = first.execute("SELECT count(*) FROM shop.items").fetchone()
        assert rows == (2,)  # the old session still works, as the group
    finally:
        first.close()


def test_a_tenant_other_than_default_is_named_by_its_namespace(dbkl: DbKeyless) -> None:
    """KEYLESS_TENANT_ALIAS becomes X-Vault-Namespace: the login and the lease are the
    tenant's own (its identity, its database registration)."""
    cli, fed = dbkl.kv.server.cli, dbkl.kv.fed
    tenant = json.loads(cli("--output", "json", "tenant", "create", "team2").stdout)["id"]
    ident = json.loads(
        cli("--output", "json", "identity", "create", "app2", "--tenant", "team2").stdout
    )
    cli("issuer", "add", TEST_ISSUER, "--jwks-file", str(dbkl.tmp / "jwks.json"),
        "--tenant", "team2")  # fmt: skip
    cli("federation", "add", "app2", "--name", "t", "--issuer", TEST_ISSUER,
        "--subject", SUBJECT, "--tenant", "team2")  # fmt: skip
    admin, password = f"kl_t2_{secrets.token_hex(3)}", secrets.token_urlsafe(24)
    dbkl.cluster.add_role(admin, password, "SUPERUSER")
    password_file = dbkl.tmp / "t2-admin"
    password_file.write_text(password)
    url = f"postgresql://{admin}@{dbkl.cluster.host}:{dbkl.cluster.port}/postgres?sslmode=require"
    cli("database", "add", "t2db", "--url", url, "--password-file", str(password_file),
        "--tenant", "team2")  # fmt: skip
    cli("database", "role", "add", "t2db", "rw", "--ttl", "1m", "--tenant", "team2")
    cli("role", "assign", "app2", "database-user", "--scope", "/databases/t2db/roles/rw",
        "--tenant", "team2")  # fmt: skip
    env = {
        **dbkl.agent_env(),
        "AZURE_TENANT_ID": tenant,
        "AZURE_CLIENT_ID": ident["client_id"],
        "AZURE_FEDERATED_TOKEN_FILE": str(fed.token_file(fed.test_token())),
        "KEYLESS_IDENTITY": "app2",
        "KEYLESS_TENANT_ALIAS": "team2",
    }
    out = dbkl.tmp / "t2.json"
    done = subprocess.run(
        [*keyless_cmd(), "agent", "--once", "--database-creds", f"t2db/rw={out}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(out.read_text())
    with psycopg.connect(
        host=body["host"], port=body["port"], dbname=body["dbname"], user=body["username"],
        password=body["password"], sslmode=body["sslmode"],
    ) as conn:  # fmt: skip
        assert current_user(conn) == body["username"]
    # the default tenant has no t2db: without the namespace the same request is refused
    wrong = {**env, "KEYLESS_TENANT_ALIAS": "default"}
    done = subprocess.run(
        [*keyless_cmd(), "agent", "--once", "--database-creds", f"t2db/rw={out}.x"],
        env=wrong, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and not Path(f"{out}.x").exists()
