"""Secret read benchmark: ``GET /secrets/{name}`` on a real ``keyless serve``, 1 and 100k secrets.

For each backend (``--backends``, default SQLite and PostgreSQL) this starts a real keyless
server (``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev``, fresh
temporary DIR, TLS with keyless's own CA, which the client verifies; PostgreSQL: ``--database
postgresql://postgres@127.0.0.1:5432/DB`` on a throwaway database this bench creates and drops)
and sets it up through the admin CLI as a workload would be: an issuer with an uploaded JWKS, an
identity with one federated credential (as ``bench/exchange.py`` does), ``keyless vault create
bench`` and ``keyless role assign IDENTITY secrets-user --scope /vaults/bench``. One token
exchange (scope ``https://vault.localhost:PORT/.default``) gives the access token every read
reuses, as SDK clients do; the exchange is not measured.

Datasets, on the same server: ``1`` secret, then ``--secrets`` (default 100,000) after the rest
are written straight into the running server's database with keyless's own ``VaultService``
(``SqlStore`` + the server's root key, so the server can open them; bench-side audit sink):
the first ``--txn-sample`` one transaction each (``--load-batch`` concurrent ``set`` calls),
timed, the rest ``--per-txn`` per transaction (``BatchingStore``: same rows, one commit; one
transaction per secret runs at a few hundred a second, minutes for 100k). Reads: ``GET
/secrets/{name}?api-version=2026-04-01`` with ``Authorization: Bearer`` and ``Host:
bench.vault.localhost:PORT`` (host-based vault routing; the client connects to 127.0.0.1, SNI
``localhost``), names cycled through ``--pool`` random stored names; success = 200 with
``"value"`` in the body. Every read also appends one durable audit event (group-committed by the
server); the bench checks that from the audit chain's head before and after each cell.

Every (backend, dataset, concurrency) cell is one bounded run (``--seconds``,
``--max-requests``) after a bounded warm-up on its own connections, driven by
``bench/loadgen.py`` (keep-alive HTTP/1.1 over TLS, in this process). Server CPU from /proc
(utime + stime), RSS from /proc VmRSS.

Usage (from the repo root)::

    .venv/bin/python -m bench read                     # defaults: ~5 minutes
    .venv/bin/python -m bench read --seconds 3 --secrets 10000 --backends sqlite

Results: ``bench/results/read.json``, rendered to ``bench/results/read.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.access import admin_principal
from keyless.core.audit import MemoryAuditSink
from keyless.core.clock import SystemClock
from keyless.core.ports import VaultStore
from keyless.core.rbac import RbacIndex
from keyless.core.secrets import PropertyChanges, SecretVersion
from keyless.core.vault import Call, VaultService
from keyless.rootkey import load_root_keys
from keyless.store.schema import audit_head, secret_versions
from keyless.store.schema import secrets_table as secrets
from keyless.store.sql import SqlStore
from keyless.store.vault import _version_values

from . import loadgen
from . import server as ex
from .report import (
    add_cell_options,
    add_out,
    add_serve_arg,
    args_of,
    check_cell_options,
    log_first_error,
    revive,
    versions_line,
)

NAME = "read"
VAULT = "bench"
API_VERSION = "2026-04-01"
OK = b'"value"'
BACKENDS = ("sqlite", "postgresql")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

log = ex.log


# --------------------------------------------------------------------------------------------
# Names, values, requests.
# --------------------------------------------------------------------------------------------


def secret_name(i: int) -> str:
    return f"secret-{i:06d}"


def secret_value(i: int, size: int) -> str:
    head = f"value-{i:06d}-"
    return (head + "x" * max(0, size - len(head)))[: max(size, len(head))]


def read_bytes(target: loadgen.Target, name: str, token: str) -> bytes:
    """A Key Vault ``get_secret`` request as the SDK sends it (minus its extra headers)."""
    return (
        f"GET /secrets/{name}?api-version={API_VERSION} HTTP/1.1\r\n"
        f"Host: {target.authority}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


class ReadSession(loadgen.RawSession):
    """``RawSession`` whose request ``i`` is a bearer-authenticated read of ``names[i % n]``."""

    name = "raw asyncio streams, HTTP/1.1 keep-alive, bearer reads"

    def __init__(self, target: loadgen.Target, names: list[str], token: str) -> None:
        super().__init__(target, [loadgen.Req("GET", "/")], OK)
        self.payloads = [read_bytes(target, n, token) for n in names]


async def fetch_once(
    target: loadgen.Target, raw: bytes, timeout: float = 10.0
) -> tuple[int, bytes]:
    conn = await asyncio.wait_for(loadgen.RawConn.open(target), timeout)
    try:
        return await asyncio.wait_for(conn.request(raw), timeout)
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# Throwaway PostgreSQL database.
# --------------------------------------------------------------------------------------------

_PG_DBS: list[tuple[str, str]] = []  # (admin url, database name) to drop at exit


def pg_create(admin_url: str) -> str | None:
    """A fresh database's URL, or None if PostgreSQL is not reachable."""
    import psycopg

    name = f"keyless_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        log(f"PostgreSQL at {admin_url} not reachable ({str(exc).strip()[:200]}); skipped")
        return None
    _PG_DBS.append((admin_url, name))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def pg_drop_all() -> None:
    import psycopg

    while _PG_DBS:
        admin_url, name = _PG_DBS.pop()
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"could not drop database {name}: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Server set-up.
# --------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One running server, set up for reads, and the bench's own handle on its database."""

    backend: str
    server: ex.Server
    db_url: str
    store: SqlStore
    token: str = ""
    target: loadgen.Target | None = None


def setup_vault(server: ex.Server, tmp: Path, key: rsa.RSAPrivateKey) -> None:
    ex.setup(server, tmp, key)  # tenant, identity, issuer (uploaded JWKS), federated credential
    server.cli("vault", "create", VAULT)
    server.cli(
        "role", "assign", ex.APP_IDENTITY, "secrets-user", "--scope", f"/vaults/{VAULT}"
    )  # fmt: skip


async def access_token(server: ex.Server, key: rsa.RSAPrivateKey) -> str:
    status, body = await server.exchange_once(ex.mint(key, ex.APP_SUBJECT, int(time.time())))
    if status != 200:
        raise RuntimeError(f"token exchange failed: HTTP {status}: {body[:500]!r}")
    token = json.loads(body)["access_token"]
    assert isinstance(token, str)
    return token


class BatchingStore:
    """The bench's ``SqlStore`` for ``VaultService.set``, except that ``put_secret_version``
    queues the (new) version and ``flush`` writes the queue in one transaction with keyless's
    own schema and row encoding: the same rows ``put_secret_version`` writes for a new name."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.rows: list[tuple[SecretVersion, bytes]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def put_secret_version(
        self, props: SecretVersion, sealed: bytes, *, expect: int | None = None
    ) -> SecretVersion:
        """Queued as the first version of a new name (the bench loads fresh names only)."""
        if expect not in (None, 0):
            raise ValueError("the bench's batched load writes new names only")
        first = dataclasses.replace(props, number=1)
        self.rows.append((first, sealed))
        return first

    async def flush(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        async with self._store.writer.begin() as conn:
            await conn.execute(
                sa.insert(secrets),
                [{"vault": p.vault, "name": p.name, "current_version": p.version} for p, _ in rows],
            )
            await conn.execute(
                sa.insert(secret_versions), [_version_values(p, sealed) for p, sealed in rows]
            )


async def load_secrets(
    b: Bench, first: int, count: int, value_bytes: int, batch: int, per_txn: int = 1
) -> tuple[float, int]:
    """Secrets ``first .. first+count-1`` written through ``VaultService.set`` into the live
    server's database, ``batch`` concurrent calls at a time; with ``per_txn`` > 1 the versions
    are committed ``per_txn`` at a time (``BatchingStore``), else one transaction each (the
    store's own ``put_secret_version``). Returns (seconds, written)."""
    root = load_root_keys(b.server.data_dir / "root.key", create=False)
    sink = MemoryAuditSink()
    batching = BatchingStore(b.store) if per_txn > 1 else None
    svc = VaultService(
        cast(VaultStore, batching or b.store),
        rbac_index=lambda: RbacIndex(),
        audit=sink,
        clock=SystemClock(),
        root=lambda: root,
    )
    call = Call(admin_principal(b.server.tenant_id))
    t0 = last = time.perf_counter()
    done = 0
    for start in range(first, first + count, batch):
        stop = min(first + count, start + batch)
        await asyncio.gather(
            *(
                svc.set(
                    call, VAULT, secret_name(i), secret_value(i, value_bytes), PropertyChanges()
                )
                for i in range(start, stop)
            )
        )
        done += stop - start
        sink.events.clear()
        if batching is not None and (len(batching.rows) >= per_txn or stop == first + count):
            await batching.flush()
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            log(f"    {done:,}/{count:,} written ({done / (last - t0):,.0f}/s)")
    return time.perf_counter() - t0, done


async def audit_seq(store: SqlStore) -> int:
    async with store.engine.connect() as conn:
        seq = (await conn.execute(sa.select(audit_head.c.seq).where(audit_head.c.id == 1))).scalar()
    return int(seq or 0)


async def pg_sessions(b: Bench) -> int | None:
    """Sessions ever established to the benchmark's PostgreSQL database (None on SQLite)."""
    if b.backend != "postgresql":
        return None
    query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    async with b.store.engine.connect() as conn:
        return int((await conn.execute(sa.text(query))).scalar() or 0)


async def db_counts(store: SqlStore) -> tuple[int, int]:
    async with store.engine.connect() as conn:
        names = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(secrets).where(secrets.c.vault == VAULT)
            )
        ).scalar()
        versions = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(secret_versions)
                .where(secret_versions.c.vault == VAULT)
            )
        ).scalar()
    return int(names or 0), int(versions or 0)


async def db_size_mib(b: Bench) -> float:
    if b.backend == "sqlite":
        base = b.server.data_dir / "keyless.db"
        total = sum(
            p.stat().st_size for p in (base, base.with_name(base.name + "-wal")) if p.exists()
        )
        return total / 2**20
    async with b.store.engine.connect() as conn:
        size = (await conn.execute(sa.text("SELECT pg_database_size(current_database())"))).scalar()
    return float(size or 0) / 2**20


async def sanity_check(b: Bench, value_bytes: int) -> None:
    """A read returns the stored value; no token gets the 401 challenge; an unknown name is
    404; a read appends exactly one audit event."""
    assert b.target is not None
    seq0 = await audit_seq(b.store)
    status, body = await fetch_once(b.target, read_bytes(b.target, secret_name(0), b.token))
    if status != 200:
        raise RuntimeError(f"read failed: HTTP {status}: {body[:500]!r}")
    got = json.loads(body)
    if got.get("value") != secret_value(0, value_bytes):
        raise RuntimeError(f"read returned the wrong value: {got!r:.300}")
    seq1 = await audit_seq(b.store)
    if seq1 - seq0 != 1:
        raise RuntimeError(f"one read appended {seq1 - seq0} audit events, not 1")
    anonymous = (
        f"GET /secrets/{secret_name(0)}?api-version={API_VERSION} HTTP/1.1\r\n"
        f"Host: {b.target.authority}\r\n\r\n"
    ).encode()
    status, body = await fetch_once(b.target, anonymous)
    if status != 401:
        raise RuntimeError(f"a read without a token got HTTP {status}, not 401")
    status, body = await fetch_once(b.target, read_bytes(b.target, "no-such-secret", b.token))
    if status != 404:
        raise RuntimeError(f"a read of an unknown name got HTTP {status}, not 404")


# --------------------------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    secrets: int
    concurrency: int
    result: loadgen.RunResult
    rss: float
    audit_events: int  # appended to the audit chain during the timed run
    sessions: int | None  # new PostgreSQL sessions (connections) during the timed run


@dataclass
class LoadReport:
    backend: str
    service_n: int  # secrets written one transaction each (the store's put_secret_version)
    service_s: float
    bulk_n: int  # secrets written BatchingStore-style, many per transaction
    bulk_s: float
    total: int  # secret names in the vault afterwards
    versions: int
    db_mib: float
    rss_before: float
    rss_after: float


async def measure(
    args: argparse.Namespace, b: Bench, n_secrets: int, names: list[str]
) -> list[Row]:
    assert b.target is not None
    rows = []
    for conc in args.concurrency:
        # Warm-up on its own connections, so the audit chain's head brackets the timed run.
        warm = await loadgen.run_load(
            ReadSession(b.target, names, b.token),
            conc,
            args.warmup,
            max(conc * 50, 500),
            0.0,
            None,
        )
        log_first_error(warm.first_error, "warm-up error")
        seq0, ses0 = await audit_seq(b.store), await pg_sessions(b)
        result = await loadgen.run_load(
            ReadSession(b.target, names, b.token),
            conc,
            args.seconds,
            args.max_requests,
            0.0,
            b.server.pid,
        )
        seq1, ses1 = await audit_seq(b.store), await pg_sessions(b)
        sessions = None if ses0 is None or ses1 is None else ses1 - ses0
        if b.server.proc.poll() is not None:
            raise RuntimeError(f"keyless died:\n{b.server.tail()}")
        rss = loadgen.rss_mib(b.server.pid)
        row = Row(b.backend, n_secrets, conc, result, rss, seq1 - seq0, sessions)
        rows.append(row)
        log(format_row(row))
        log_first_error(result.first_error)
    return rows


TABLE_HEAD = (
    "| backend | secrets | conc | reads/s | p50 ms | p95 ms | p99 ms | max ms | errors | reads "
    "| audit events / read | new DB sessions | server CPU s/1k | client CPU s/1k "
    "| server RSS MiB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def format_row(row: Row) -> str:
    r = row.result
    done = r.requests + r.errors
    per_read = row.audit_events / done if done else float("nan")
    return (
        f"| {row.backend} | {row.secrets:,} | {row.concurrency} | {r.rps:,.0f} "
        f"| {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} | {r.errors} "
        f"| {r.requests:,} | {per_read:.2f} "
        f"| {'n/a' if row.sessions is None else f'{row.sessions:,}'} "
        f"| {r.per_1k(r.server_cpu):.3f} "
        f"| {r.per_1k(r.client_cpu):.3f} | {row.rss:.0f} |"
    )


LOAD_HEAD = (
    "| backend | one txn each: secrets | s | secrets/s | batched txns: secrets | s "
    "| secrets/s | names in vault | versions | database MiB | server RSS before MiB "
    "| after MiB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _rate(n: int, s: float) -> str:
    return f"{n / s:,.0f}" if s > 0 else "n/a"


def format_load(r: LoadReport) -> str:
    return (
        f"| {r.backend} | {r.service_n:,} | {r.service_s:.1f} | {_rate(r.service_n, r.service_s)} "
        f"| {r.bulk_n:,} | {r.bulk_s:.1f} | {_rate(r.bulk_n, r.bulk_s)} | {r.total:,} "
        f"| {r.versions:,} | {r.db_mib:.0f} | {r.rss_before:.0f} | {r.rss_after:.0f} |"
    )


# --------------------------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------------------------


async def run_backend(
    args: argparse.Namespace, tmp: Path, key: rsa.RSAPrivateKey, backend: str
) -> tuple[list[Row], LoadReport | None, str]:
    extra = list(args.serve_arg)
    if backend == "postgresql":
        db_url = pg_create(args.pg_admin_url)
        if db_url is None:
            return [], None, "postgresql: skipped, no server reachable"
        extra += ["--database", db_url]
    server = await ex.start_server(args.signing_alg, tmp, backend, extra)
    rows: list[Row] = []
    report: LoadReport | None = None
    try:
        if backend == "sqlite":
            db_url = f"sqlite:///{(server.data_dir / 'keyless.db').resolve()}"
        store = await SqlStore.open(db_url, migrate_schema=False)
        b = Bench(backend, server, db_url, store)
        try:
            await asyncio.to_thread(setup_vault, server, tmp, key)
            b.token = await access_token(server, key)
            assert server.target is not None
            b.target = server.vault_target(VAULT)
            await load_secrets(b, 0, 1, args.value_bytes, 1)
            await sanity_check(b, args.value_bytes)
            log(f"{backend}: keyless pid {server.pid} on :{server.port}, checks passed")
            rows += await measure(args, b, 1, [secret_name(0)])
            rss_before = loadgen.rss_mib(server.pid)
            one = min(args.secrets - 1, args.txn_sample)
            log(f"  loading {one:,} secrets, one transaction each ...")
            one_s, one_n = await load_secrets(b, 1, one, args.value_bytes, args.load_batch)
            log(f"  wrote {one_n:,} secrets in {one_s:.1f} s ({_rate(one_n, one_s)}/s)")
            rest = args.secrets - 1 - one
            log(f"  loading {rest:,} secrets, {args.per_txn:,} per transaction ...")
            bulk_s, bulk_n = await load_secrets(
                b, 1 + one, rest, args.value_bytes, args.per_txn, args.per_txn
            )
            log(f"  wrote {bulk_n:,} secrets in {bulk_s:.1f} s ({_rate(bulk_n, bulk_s)}/s)")
            total, versions = await db_counts(store)
            if total != args.secrets or versions != args.secrets:
                raise RuntimeError(
                    f"{total:,} secrets / {versions:,} versions in the vault, "
                    f"expected {args.secrets:,}"
                )
            report = LoadReport(
                backend,
                one_n,
                one_s,
                bulk_n,
                bulk_s,
                total,
                versions,
                await db_size_mib(b),
                rss_before,
                loadgen.rss_mib(server.pid),
            )
            # The last-written secret (batched) reads back with its value.
            b_last = secret_name(args.secrets - 1)
            status, body = await fetch_once(b.target, read_bytes(b.target, b_last, b.token))
            if status != 200 or json.loads(body).get("value") != secret_value(
                args.secrets - 1, args.value_bytes
            ):
                raise RuntimeError(f"reading {b_last} failed: HTTP {status}: {body[:300]!r}")
            pick = random.Random(args.seed).sample(range(args.secrets), min(args.pool, total))
            rows += await measure(args, b, args.secrets, [secret_name(i) for i in pick])
        finally:
            await store.close()
    finally:
        ex.stop_proc(server.proc)
        count, first = server.problems()
        note = f"{backend} server: {count} warning/error log lines"
        note += f"; first: `{first}`" if first else ""
        log(note)
        pg_drop_all()
    return rows, report, note


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rows: list[Row] = []
    loads: list[LoadReport] = []
    notes: list[str] = []
    for backend in args.backends:
        r, report, note = await run_backend(args, tmp, key, backend)
        rows += r
        if report is not None:
            loads.append(report)
        notes.append(note)
    return {"rows": rows, "loads": loads, "notes": notes}


def header(args: argparse.Namespace) -> str:
    args.pg_info = pg_version(args.pg_admin_url) if "postgresql" in args.backends else "n/a"
    libs = ["cryptography", "uvicorn", "uvloop", "starlette", "SQLAlchemy", "aiosqlite", "psycopg"]
    return versions_line(libs)


cleanup = pg_drop_all


def pg_version(admin_url: str) -> str:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, connect_timeout=5) as c:
        version = c.execute("SHOW server_version").fetchone()
        sync = c.execute("SHOW synchronous_commit").fetchone()
        fsync = c.execute("SHOW fsync").fetchone()
        return (
            f"PostgreSQL {version[0] if version else '?'}, "
            f"synchronous_commit={sync[0] if sync else '?'}, fsync={fsync[0] if fsync else '?'}"
        )
    return "PostgreSQL not reachable"


def render(data: dict[str, Any]) -> str:
    """The markdown report, from the study's JSON."""
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    loads = revive(list[LoadReport], data["loads"])
    notes = data["notes"]
    body = "\n".join(format_row(r) for r in rows)
    load_body = "\n".join(format_load(r) for r in loads)
    serve = " ".join(["", *args.serve_arg]) if args.serve_arg else ""
    return (
        "# keyless secret reads\n\n"
        f"{meta['header']}\n\n"
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s; load average at "
        f"start {meta['load_start']}, at end {meta['load_end']}: the machine is shared, so "
        "other work competes for its 2 cores)\n"
        "- Server: `python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT "
        f"--dev --signing-alg {args.signing_alg}{serve}` (one process, default settings, TLS "
        "with its own CA; its stdout and stderr go to a file); *sqlite*: the default "
        "`DIR/keyless.db` (WAL, synchronous=FULL); *postgresql*: `--database "
        "postgresql://postgres@127.0.0.1:5432/keyless_bench_…`, a throwaway database on the "
        f"same machine ({args.pg_info}). Client: `bench/loadgen.py` (raw asyncio, keep-alive "
        "HTTP/1.1 over TLS 1.3, connections opened before timing) in one process on the same "
        "2-core machine.\n"
        f"- Request: `GET /secrets/NAME?api-version={API_VERSION}`, `Host: "
        "bench.vault.localhost:PORT` (host-routed vault; connection to 127.0.0.1, SNI "
        "localhost), `Authorization: Bearer` one access token from one token exchange (scope "
        "`https://vault.localhost:PORT/.default`, identity holding `secrets-user` on "
        "`/vaults/bench`) reused by every read, as SDK clients do; success = 200 with "
        f'`"value"` in the body. Values are {args.value_bytes} bytes. Names cycle through '
        f"{args.pool:,} names drawn at random (seed {args.seed}) from the stored ones (the "
        "1-secret rows: that one name).\n"
        "- Each read is: bearer token verified offline (signature, iss/tid/aud/exp), RBAC, one "
        "SELECT (state join current version), AES-256-GCM unwrap + open, and **one durable "
        "audit event** appended to the hash-chained log before the response (group commit: "
        "concurrent requests share one transaction and one fsync). *audit events / read* = "
        "events the audit chain's head advanced by during the timed run / reads sent; it "
        "should be 1.00.\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} reads (whichever first) "
        f"after a {args.warmup:g} s warm-up on separate connections. Latency: per read as the "
        "client sees it (at c=64 it includes queueing). CPU: seconds per 1000 reads (server: "
        "/proc utime+stime of its process tree; client: this process). RSS: VmRSS after the "
        "cell.\n"
        f"- Datasets, on the same server per backend: 1 secret, then {args.secrets:,} after "
        f"{args.secrets - 1:,} more were written into the running server's database through "
        "keyless's own `VaultService.set` (validation, version ids, AES-256-GCM sealing under "
        "the server's root key; `SqlStore` on the same database; a bench-side in-memory audit "
        f"sink): the first {args.txn_sample:,} one transaction each (the store's "
        f"`put_secret_version`, {args.load_batch} concurrent `set` calls at a time), timed, "
        f"then the rest {args.per_txn:,} per transaction (the same rows, inserted in bulk: "
        "one transaction per secret would have taken minutes; see the load table).\n"
        "- *new DB sessions* (PostgreSQL): `pg_stat_database.sessions` delta over the timed "
        "run, i.e. connections the server (and, for a handful, the bench) opened; a pool "
        "that kept its connections would open none.\n\n"
        f"{TABLE_HEAD}\n{body}\n\n"
        "## Loading the secrets\n\n"
        f"{LOAD_HEAD}\n{load_body}\n\n"
        "## Server logs\n\n" + "".join(f"- {n}\n" for n in notes)
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 10.0, "read", [1, 64])
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--secrets", type=int, default=100_000, help="secrets in the big dataset")
    p.add_argument("--pool", type=int, default=2000, help="distinct names read per cell")
    p.add_argument("--value-bytes", type=int, default=64, help="size of each secret value")
    p.add_argument(
        "--load-batch",
        type=int,
        default=50,
        help="concurrent set() calls while loading one transaction per secret",
    )
    p.add_argument(
        "--txn-sample",
        type=int,
        default=1000,
        help="secrets loaded one transaction each (the store's put_secret_version), timed",
    )
    p.add_argument("--per-txn", type=int, default=1000, help="secrets per transaction for the rest")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--signing-alg", choices=["RS256", "ES256"], default="RS256")
    add_serve_arg(p)
    p.add_argument("--pg-admin-url", default=PG_ADMIN, help="where to create the throwaway DB")
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.secrets < 2 or args.pool < 1 or args.value_bytes < 16:
        p.error("need --secrets >= 2, --pool >= 1, --value-bytes >= 16")
    if args.load_batch < 1 or args.txn_sample < 0 or args.per_txn < 2:
        p.error("need --load-batch >= 1, --txn-sample >= 0, --per-txn >= 2")
    check_cell_options(p, args)
