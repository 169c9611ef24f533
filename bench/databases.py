"""Database engine benchmark: dynamic PostgreSQL credentials issued per second (and, once the
agent's proxy is in, its throughput: cells are added to ``CELLS``).

One server (``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev``,
fresh temporary DIR, SQLite, TLS with keyless's own CA) set up through the admin CLI as
``bench/aws.py`` sets it up (identity ``bench-app``, uploaded issuer JWKS); a fresh database
``keyless_bench_TAG`` on ``--pg-url``'s PostgreSQL registered as ``bench`` (admin: that URL's
user), role ``bench`` (the default templates: ``CREATE ROLE ... LOGIN PASSWORD ... VALID
UNTIL``, TTL 1h), ``database-user`` on ``/databases/bench/roles/bench``. Cells, per
concurrency:

* ``creds issued``: ``GET /v1/database/creds/bench.bench`` with ``X-Vault-Token`` (an access
  token of the vault resource, as after ``auth/jwt/login``), each one a lease: a row in the
  store, a ``CREATE ROLE`` on a new connection to PostgreSQL as its admin, an audit event;
  success = 200 with ``"password"``.

A cell is ``async def cell(ctx, concurrency) -> Row``, listed in ``CELLS`` with its name; the
agent's proxy cells (round trips through ``keyless agent --pg-proxy`` vs direct) go there.
Every role made is dropped at the end (roles are cluster-wide), and the database with them.

Usage (from the repo root)::

    .venv/bin/python -m bench databases                 # defaults: ~30 s
    .venv/bin/python -m bench databases --seconds 3 --concurrency 1 8

Results: ``bench/results/databases.json``, rendered to ``bench/results/databases.md``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core import dbnames

from . import loadgen, pgproxy
from . import server as ex
from .dialect import RawPayloads, Row, format_row, once, server_line, table_and_log
from .report import (
    add_cell_options,
    add_out,
    add_serve_arg,
    args_of,
    check_cell_options,
    log,
    log_first_error,
    revive,
    run_line,
    versions_line,
)

NAME = "databases"
DATABASE = "bench"
ROLE = "bench"
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Context:
    """What a cell needs: the running server, the bench database, a Vault client token."""

    server: ex.Server
    args: argparse.Namespace
    pg_admin_url: str  # the bench database, as the --pg-url user
    dbname: str
    vault_token: str
    proxy: pgproxy.AgentProxy | None = None  # keyless agent --pg-proxy, for the query cells


Cell = Callable[[Context, int], Awaitable[Row]]


def creds_bytes(target: loadgen.Target, token: str) -> bytes:
    path = f"/v1/database/creds/{dbnames.vault_role(DATABASE, ROLE)}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {target.authority}\r\nX-Vault-Token: {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


async def creds_cell(ctx: Context, concurrency: int) -> Row:
    server = ctx.server
    assert server.target is not None
    session = RawPayloads(
        server.target, [creds_bytes(server.target, ctx.vault_token)], b'"password"'
    )
    result = await loadgen.run_load(
        session, concurrency, ctx.args.seconds, ctx.args.max_requests, ctx.args.warmup,
        server.pid,
    )  # fmt: skip
    return Row("creds issued", concurrency, result, loadgen.rss_mib(server.pid))


async def query_direct_cell(ctx: Context, concurrency: int) -> Row:
    """``SELECT 1`` round trips straight to PostgreSQL, as an engine-issued user."""
    assert ctx.proxy is not None
    args = ctx.args
    result = await pgproxy.query_result(
        ctx.proxy.direct_dsn, concurrency, args.seconds, args.warmup, None
    )
    return Row("query direct", concurrency, result, float("nan"))


async def query_proxy_cell(ctx: Context, concurrency: int) -> Row:
    """The same through ``keyless agent --pg-proxy`` (the agent's CPU in the server column)."""
    assert ctx.proxy is not None
    args, pid = ctx.args, ctx.proxy.proc.pid
    result = await pgproxy.query_result(ctx.proxy.dsn, concurrency, args.seconds, args.warmup, pid)
    return Row("query proxy", concurrency, result, loadgen.rss_mib(pid))


CELLS: list[tuple[str, Cell]] = [
    ("creds issued", creds_cell),
    ("query direct", query_direct_cell),
    ("query proxy", query_proxy_cell),
]


def _make_database(pg_url: str) -> tuple[str, str]:
    import psycopg
    from psycopg import sql

    dbname = f"keyless_bench_{secrets.token_hex(4)}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return dbname, f"{pg_url.rsplit('/', 1)[0]}/{dbname}"


def _drop_database(pg_url: str, dbname: str) -> int:
    """Drop the database and every role the bench made (``v-bench-app-bench-...``)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(dbname)))  # fmt: skip
        made = conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)",
            (dbnames.username(ex.APP_IDENTITY, ROLE, "")[:-1],),
        ).fetchall()
        for (name,) in made:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(str(name))))
    return len(made)


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dbname, db_url = _make_database(args.pg_url)
    server = await ex.start_server("RS256", tmp, NAME, list(args.serve_arg))
    dropped = 0
    proxy: pgproxy.AgentProxy | None = None
    try:
        ex.setup(server, tmp, key)
        register = db_url + "?sslmode=disable"
        server.cli("database", "add", DATABASE, "--url", register)
        server.cli("database", "role", "add", DATABASE, ROLE, "--ttl", "1h", "--max-ttl", "2h")
        server.cli(
            "role", "assign", ex.APP_IDENTITY, "database-user", "--scope",
            dbnames.scope(DATABASE, ROLE),
        )  # fmt: skip
        assert server.target is not None
        status, body = await server.exchange_once(ex.mint(key, ex.APP_SUBJECT, int(time.time())))
        if status != 200:
            raise RuntimeError(f"exchange failed: HTTP {status}: {body[:300]!r}")
        token = json.loads(body)["access_token"]
        status, body = await once(server.target, creds_bytes(server.target, token))
        if status != 200 or b'"password"' not in body:
            raise RuntimeError(f"database creds failed: HTTP {status}: {body[:300]!r}")
        lease = json.loads(body)
        direct = (
            f"host=127.0.0.1 port={lease['keyless']['port']} dbname={lease['keyless']['dbname']} "
            f"user={lease['data']['username']} password={lease['data']['password']} "
            "sslmode=disable"
        )
        agent_env = {**ex.clean_env(), "KEYLESS_IDENTITY": ex.APP_IDENTITY}
        agent_token = ex.mint(key, ex.APP_SUBJECT, int(time.time()))
        proxy = await pgproxy.start_agent_proxy(
            server, tmp, agent_token, f"{DATABASE}/{ROLE}", agent_env, direct
        )
        ctx = Context(server, args, db_url, dbname, token, proxy)
        rows: list[Row] = []
        for conc in args.concurrency:
            for _, cell in CELLS:
                row = await cell(ctx, conc)
                if server.proc.poll() is not None:
                    raise RuntimeError(f"keyless died:\n{server.tail()}")
                rows.append(row)
                log(format_row(row))
                log_first_error(row.result.first_error)
        problems, first = server.problems()
        note = f"{problems} warning/error line(s)" + (f"; first: {first}" if first else "")
    finally:
        if proxy is not None:
            pgproxy.stop_agent_proxy(proxy)
        ex.stop_proc(server.proc)
        dropped = _drop_database(args.pg_url, dbname)
    return {"rows": rows, "notes": [note, f"{dropped} issued role(s) dropped at the end"]}


def header(args: argparse.Namespace) -> str:
    return versions_line(["uvicorn", "uvloop", "starlette", "psycopg", "SQLAlchemy"])


def render(data: dict[str, Any]) -> str:
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    return (
        "# keyless database engine: dynamic PostgreSQL credentials\n\n"
        f"{meta['header']}\n\n"
        f"{run_line(meta)}\n"
        + server_line(args, "one process, SQLite store, TLS with its own CA")
        + "; PostgreSQL on the same machine. Client: `bench/loadgen.py` in one process.\n"
        "- Cells (bench/databases.py says what each request is): `creds issued` is one lease "
        "per request: a store row, a new admin connection to PostgreSQL, `CREATE ROLE ... "
        "LOGIN PASSWORD ... VALID UNTIL`, one audit event. `query direct` / `query proxy`: "
        "`SELECT 1` round trips on open connections (psycopg, in this process) as an "
        "engine-issued user, straight to PostgreSQL or through `keyless agent --pg-proxy` "
        "(a real agent process logged in to this server; its CPU and RSS in the server "
        "columns of its row).\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} requests after a "
        f"{args.warmup:g} s warm-up.\n\n" + table_and_log(rows, data["notes"])
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 5.0, "request", [1, 8])
    p.add_argument("--pg-url", default=PG_URL, help="a PostgreSQL superuser's URL")
    add_serve_arg(p)
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_cell_options(p, args)
