"""PostgreSQL proxy benchmark: simple-query round trips per second (and new connections per
second) through the agent's ``--pg-proxy`` against the same PostgreSQL directly, in one run.

The proxy (``keyless.agent.pgproxy.PgProxy``, the code ``keyless agent --pg-proxy`` runs) is
started in its own process (``python -m bench.pgproxy serve``, on asyncio's default loop as in
``keyless agent``), with a static credentials source: a LOGIN role made for the run on the
machine's PostgreSQL (``--database-url``, default ``KEYLESS_TEST_DATABASE_URL`` or the local
``postgres``), dropped at the end. Local clients log in to the proxy with SCRAM-SHA-256 (4096
iterations) and a fixed password; the proxy logs in upstream as the role (sslmode disable, as
the machine's server has no TLS). keyless itself is not in the path: a lease is asked for when
a connection opens, which bench/databases.py measures.

Cells, for each concurrency C (C client connections, each in a loop):

* ``query direct`` / ``query proxy``: ``SELECT 1`` on an open connection (psycopg, autocommit,
  simple protocol), round trips per second summed over the C connections;
* ``connect direct`` / ``connect proxy``: open a connection, ``SELECT 1``, close: per second.

Usage (from the repo root)::

    .venv/bin/python -m bench pgproxy                       # ~1 minute
    .venv/bin/python -m bench pgproxy --seconds 3 --concurrency 1 8

Results: ``bench/results/pgproxy.json``, rendered to ``bench/results/pgproxy.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from . import loadgen
from .report import add_out, args_of, log, revive, run_line, versions_line

NAME = "pgproxy"
LOCAL_USER, LOCAL_PASSWORD = "bench", "bench-local-password"
DEFAULT_URL = os.environ.get(
    "KEYLESS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Cell:
    name: str
    concurrency: int
    operations: int
    seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


async def _query_loop(dsn: str, until: float, counts: list[int], errors: list[int]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < until:
            try:
                await conn.execute("SELECT 1", prepare=False)
                counts[0] += 1
            except psycopg.Error:
                errors[0] += 1


async def _connect_loop(dsn: str, until: float, counts: list[int], errors: list[int]) -> None:
    while time.monotonic() < until:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute("SELECT 1")
            counts[0] += 1
        except psycopg.Error:
            errors[0] += 1


async def cell(name: str, dsn: str, concurrency: int, seconds: float, warmup: float) -> Cell:
    loop = _connect_loop if name.startswith("connect") else _query_loop
    if warmup > 0:
        await asyncio.gather(*(loop(dsn, time.monotonic() + warmup, [0], [0]) for _ in range(2)))
    counts, errors = [0], [0]
    started = time.monotonic()
    await asyncio.gather(
        *(loop(dsn, started + seconds, counts, errors) for _ in range(concurrency))
    )
    elapsed = time.monotonic() - started
    result = Cell(name, concurrency, counts[0], elapsed, errors[0])
    log(f"  {name:15} c={concurrency:<3} {result.rate:10.0f}/s  errors {errors[0]}")
    return result


def _dsn(host: str, port: int, user: str, password: str, dbname: str) -> str:
    return (
        f"host={host} port={port} user={user} password={password} dbname={dbname} "
        "sslmode=disable connect_timeout=10"
    )


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url = urlsplit(args.database_url)
    host, port, dbname = url.hostname or "127.0.0.1", url.port or 5432, url.path.lstrip("/")
    role, password = f"kl_bench_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    proxy_port = _free_port()
    creds = {"username": role, "password": password, "host": host, "port": port,
             "dbname": dbname}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.pgproxy", "serve", str(proxy_port)],
        env={**os.environ, "BENCH_PG_CREDS": json.dumps(creds)},
        stdout=subprocess.PIPE,
        text=True,
    )
    cells: list[Cell] = []
    try:
        assert proc.stdout is not None
        ready = await asyncio.to_thread(proc.stdout.readline)
        if "listening" not in ready:
            raise RuntimeError(f"the proxy did not start: {ready!r}")
        direct = _dsn(host, port, role, password, dbname)
        proxied = _dsn("127.0.0.1", proxy_port, LOCAL_USER, LOCAL_PASSWORD, dbname)
        for c in args.concurrency:
            for kind in ("query", "connect"):
                for where, dsn in (("direct", direct), ("proxy", proxied)):
                    cells.append(await cell(f"{kind} {where}", dsn, c, args.seconds, args.warmup))
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    return {"cells": cells}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def header(args: argparse.Namespace) -> str:
    return versions_line(["psycopg", "uvloop"], extra=f"PostgreSQL at {_server_version(args)}")


def _server_version(args: argparse.Namespace) -> str:
    try:
        with psycopg.connect(args.database_url) as conn:
            return f"{conn.info.server_version // 10000}.{conn.info.server_version % 10000}"
    except psycopg.Error:
        return "n/a"


def render(data: dict[str, Any]) -> str:
    args, meta = args_of(data), data["meta"]
    cells = revive(list[Cell], data["cells"])
    by = {(c.name, c.concurrency): c for c in cells}
    lines = [
        "| concurrency | query direct /s | query proxy /s | proxy/direct "
        "| connect direct /s | connect proxy /s | proxy/direct | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sorted({c.concurrency for c in cells}):
        qd, qp = by[("query direct", c)], by[("query proxy", c)]
        cd, cp = by[("connect direct", c)], by[("connect proxy", c)]
        errors = sum(x.errors for x in (qd, qp, cd, cp))
        lines.append(
            f"| {c} | {qd.rate:,.0f} | {qp.rate:,.0f} | {_ratio(qp, qd)} "
            f"| {cd.rate:,.0f} | {cp.rate:,.0f} | {_ratio(cp, cd)} | {errors} |"
        )
    return (
        "# keyless agent: PostgreSQL proxy throughput beside a direct connection\n\n"
        f"{meta['header']}\n\n"
        f"{run_line(meta)}\n"
        "- Proxy: `keyless.agent.pgproxy.PgProxy` in its own process (asyncio's loop, as in "
        "the agent), static credentials (keyless not in the path); clients log in to it "
        "with SCRAM-SHA-256, it logs in upstream without TLS. Client: psycopg (async) in "
        "one process.\n"
        "- `query`: `SELECT 1` round trips on open connections (summed over the "
        "connections); `connect`: open, `SELECT 1`, close. Each cell "
        f"{args.seconds:g} s after a {args.warmup:g} s warm-up.\n\n" + "\n".join(lines) + "\n"
    )


def _ratio(proxy: Cell, direct: Cell) -> str:
    return f"{proxy.rate / direct.rate:.2f}" if direct.rate else "n/a"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=5.0, help="timed duration per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--database-url", default=DEFAULT_URL, help="a PostgreSQL superuser URL")
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.seconds <= 600 or any(c < 1 for c in args.concurrency):
        p.error("need 0 < --seconds <= 600 and concurrencies >= 1")


async def _serve(port: int) -> None:
    """The proxy process: ``PgProxy`` on 127.0.0.1:PORT with BENCH_PG_CREDS."""
    from keyless.agent.dbrefs import DbCredentials, DbRef
    from keyless.agent.pgproxy import PgProxy, ProxySpec
    from keyless.agent.scram import ScramSecret

    c = json.loads(os.environ["BENCH_PG_CREDS"])
    creds = DbCredentials(
        c["username"], c["password"], c["host"], int(c["port"]), c["dbname"], "disable",
        time.time() + 86400, "bench", 86400,
    )  # fmt: skip

    class Static:
        async def current(self, ref: DbRef) -> DbCredentials:
            return creds

    spec = ProxySpec(
        DbRef("bench", "bench"), "127.0.0.1", port, None, LOCAL_USER,
        ScramSecret.from_password(LOCAL_PASSWORD),
    )  # fmt: skip
    proxy = PgProxy(spec, Static())
    await proxy.start()
    print("listening", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await proxy.serve(stop)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    asyncio.run(_serve(int(sys.argv[2])))  # the agent's own loop (keyless agent: asyncio.run)


# --------------------------------------------------------------------------------------------
# The proxy cells of bench/databases.py: the real `keyless agent --pg-proxy` against the
# bench's server, its upstream credentials issued by the engine being measured.
# --------------------------------------------------------------------------------------------


@dataclass
class AgentProxy:
    proc: subprocess.Popen[bytes]
    port: int
    direct_dsn: str  # a lease of the same role, straight to PostgreSQL
    log: Path

    @property
    def dsn(self) -> str:
        return _dsn("127.0.0.1", self.port, LOCAL_USER, LOCAL_PASSWORD, "postgres")


async def start_agent_proxy(
    server: Any, tmp: Path, token: str, ref: str, env: dict[str, str], direct_dsn: str
) -> AgentProxy:
    """``keyless agent --pg-proxy 127.0.0.1:PORT=REF`` configured as the webhook would (the
    Azure workload variables, ``KEYLESS_IDENTITY``), ready when it listens."""
    from .server import TLS_NAME, keyless_cmd

    port = _free_port()
    token_file, password_file, log = tmp / "agent-token", tmp / "agent-pw", tmp / "agent.log"
    token_file.write_text(token)
    password_file.write_text(LOCAL_PASSWORD + "\n")
    agent_env = {
        **env,
        "AZURE_AUTHORITY_HOST": f"https://{TLS_NAME}:{server.port}",
        "AZURE_TENANT_ID": server.tenant_id,
        "AZURE_CLIENT_ID": server.client_id,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "REQUESTS_CA_BUNDLE": str(server.data_dir / "tls" / "ca.pem"),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*keyless_cmd(tmp / "agent-data")[:-2], "agent",
             "--pg-proxy", f"127.0.0.1:{port}={ref}", "--pg-proxy-user", LOCAL_USER,
             "--pg-proxy-password-file", str(password_file)],
            stdout=out, stderr=subprocess.STDOUT, env=agent_env, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while "listening" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"keyless agent did not start:\n{log.read_text()[-2000:]}")
        await asyncio.sleep(0.05)
    return AgentProxy(proc, port, direct_dsn, log)


def stop_agent_proxy(agent: AgentProxy) -> None:
    agent.proc.send_signal(signal.SIGTERM)  # it revokes its lease on the way out
    try:
        agent.proc.wait(15)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        agent.proc.wait()


async def query_result(
    dsn: str, concurrency: int, seconds: float, warmup: float, pid: int | None
) -> loadgen.RunResult:
    """``SELECT 1`` round trips on ``concurrency`` open connections as a loadgen RunResult
    (latency of each round trip; ``pid``'s CPU as the server's: the proxy's)."""
    conns = [
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(concurrency)
    ]
    latencies: list[float] = []
    errors = [0]
    first_error: list[str] = []

    async def loop(
        conn: psycopg.AsyncConnection[Any], until: float, lat: list[float] | None
    ) -> None:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                await conn.execute("SELECT 1", prepare=False)
            except psycopg.Error as exc:
                errors[0] += 1
                first_error.append(str(exc)[:200])
                continue
            if lat is not None:
                lat.append(time.perf_counter() - t0)

    try:
        if warmup > 0:
            await asyncio.gather(*(loop(c, time.monotonic() + warmup, None) for c in conns))
            errors[0] = 0
        srv0 = loadgen.tree_cpu_seconds(pid) if pid else 0.0
        cli0, t0 = time.process_time(), time.perf_counter()
        until = time.monotonic() + seconds
        await asyncio.gather(*(loop(c, until, latencies) for c in conns))
        elapsed = time.perf_counter() - t0
        srv = (loadgen.tree_cpu_seconds(pid) - srv0) if pid else 0.0
        return loadgen.RunResult(
            len(latencies), errors[0], elapsed, latencies, srv, time.process_time() - cli0,
            first_error[0] if first_error else None,
        )  # fmt: skip
    finally:
        for c in conns:
            await c.close()
