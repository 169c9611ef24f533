"""Token exchange benchmark: a real ``keyless serve`` process, Kubernetes tokens, 100k policies.

For each signing algorithm (``--algs``, default RS256 and ES256) this starts real keyless
servers (``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev
--signing-alg ALG``, fresh temporary DIR, TLS with keyless's own CA, which the client verifies)
and measures the Entra v2 client-credentials exchange ``POST /{tenant}/oauth2/v2.0/token``
(``client_assertion`` = a Kubernetes projected service-account token) in three scenarios:

* ``baseline``: the benchmarked identity has one exact trust policy;
* ``exact``: 100,000 exact policies on the same issuer: a share on the benchmarked identity
  itself (``--self-share``), the rest spread over ``--identities`` other identities; the pool's
  tokens carry subjects that different ones of the benchmarked identity's policies accept;
* ``pattern``: 100,000 subject-pattern policies (globs such as
  ``system:serviceaccount:team-N-*:reader``, four shapes, many literal prefixes), spread the
  same way; the pool's subjects are accepted only by patterns.

``baseline`` and ``exact`` share one server (the policies are loaded after the baseline runs);
``pattern`` gets a fresh one. The bench holds the issuer's RSA key (its JWKS is uploaded with
``keyless issuer add --jwks-file``) and pre-mints a pool of ``--pool`` distinct tokens per
scenario before any timing. Bulk policies are written straight into the server's SQLite
database with keyless's own ``SqlStore`` while the server runs; the server is expected to
notice the revision bump (it polls every ~2 s) and rebuild its in-memory index. The bench
polls (bounded) with a token that only the new policies accept; if that is not accepted within
``--reload-wait`` seconds it forces a rebuild with an admin write (``keyless identity create``),
and says so in the results. A heartbeat exchange (every ~20 ms, one connection) runs meanwhile
and reports the longest stall the reload caused.

Every (scenario, concurrency) cell is one bounded run (``--seconds``, ``--max-requests``) after
a bounded warm-up, driven by ``bench/loadgen.py`` (keep-alive HTTP/1.1 over TLS, in this
process). Server CPU from /proc (utime + stime), RSS from /proc VmRSS.

Usage (from the repo root)::

    .venv/bin/python -m bench exchange                   # defaults: ~4-5 minutes
    .venv/bin/python -m bench exchange --seconds 2 --algs ES256 --policies 10000

Results: ``bench/results/exchange.json``, rendered to ``bench/results/exchange.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.models import Identity
from keyless.core.trust import FederatedCredential, new_credential
from keyless.store.sql import SqlStore

from . import loadgen
from .report import (
    LIBS,
    add_cell_options,
    add_out,
    add_serve_arg,
    args_of,
    check_cell_options,
    log,
    log_first_error,
    revive,
    versions_line,
)
from .server import (
    APP_SUBJECT,
    ISSUER,
    OK,
    Server,
    mint,
    mint_pool,
    sanity_check,
    setup,
    start_server,
    stop_proc,
)

NAME = "exchange"
SCENARIOS = ("baseline", "exact", "pattern")


# --------------------------------------------------------------------------------------------
# Bulk policies: deterministic, so token pools can be minted before the servers start.
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What one bulk load writes, and which subjects the benchmark then presents."""

    scenario: str
    total: int  # policies written by the load (the baseline policy not included)
    on_self: int  # of which on the benchmarked identity
    identities: int  # other identities created
    # (identity index or None for the benchmarked one, policy name, subject, pattern)
    policies: list[tuple[int | None, str, str | None, str | None]] = field(repr=False)
    pool_subjects: list[str] = field(repr=False)
    probe_subject: str = ""


def _pattern(k: int) -> tuple[str, str]:
    """(glob, one subject it accepts) for pattern number ``k``; four shapes, prefixes vary."""
    shape = k % 4
    if shape == 0:
        return (
            f"system:serviceaccount:team-{k}-*:reader",
            f"system:serviceaccount:team-{k}-prod-eu:reader",
        )
    if shape == 1:
        return (
            f"system:serviceaccount:svc-{k}:worker-*",
            f"system:serviceaccount:svc-{k}:worker-batch-7",
        )
    if shape == 2:
        return (
            f"system:serviceaccount:ci-{k}-??:deployer",
            f"system:serviceaccount:ci-{k}-eu:deployer",
        )
    return f"repo:org-{k}/*:ref:refs/heads/main", f"repo:org-{k}/payments:ref:refs/heads/main"


def make_plan(scenario: str, total: int, identities: int, self_share: float, pool: int) -> Plan:
    on_self = max(1, min(total, round(total * self_share)))
    others = total - on_self
    identities = min(identities, others)
    policies: list[tuple[int | None, str, str | None, str | None]] = []
    self_subjects: list[str] = []
    for k in range(on_self):
        if scenario == "exact":
            subject = f"system:serviceaccount:ns-{k % 997}:sa-{k}"
            policies.append((None, f"x-{k}", subject, None))
        else:
            glob, subject = _pattern(k)
            policies.append((None, f"p-{k}", None, glob))
        self_subjects.append(subject)
    for j in range(others):
        owner = j % identities
        k = on_self + j
        if scenario == "exact":
            policies.append((owner, f"x-{k}", f"system:serviceaccount:team-{owner}:sa-{k}", None))
        else:
            policies.append((owner, f"p-{k}", None, _pattern(k)[0]))
    step = max(1, on_self // min(pool, on_self))
    pool_subjects = self_subjects[::step][:pool]
    return Plan(
        scenario,
        total,
        on_self,
        identities,
        policies,
        pool_subjects,
        probe_subject=self_subjects[-1],
    )


# --------------------------------------------------------------------------------------------
# Bulk load while the server runs, and waiting for its index to follow.
# --------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    scenario: str
    policies: int
    on_self: int
    identities: int
    write_s: float  # identities + policies written and committed
    reload_s: float  # commit -> first exchange only the new policies accept
    how: str  # how the server picked it up
    heartbeat_max_ms: float  # longest heartbeat exchange between commit and acceptance
    heartbeat_errors: int
    rss_before: float
    rss_after: float


class Heartbeat:
    """One baseline exchange at a time, every ~20 ms, on one keep-alive connection."""

    def __init__(self, server: Server, token: str) -> None:
        assert server.target is not None
        self.target = server.target
        self.raw = loadgen.raw_bytes(server.exchange_req(token), server.target)
        self.samples: list[tuple[float, float, bool]] = []  # (start, latency, ok)
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn: loadgen.RawConn | None = None
        try:
            while True:
                t0 = time.perf_counter()
                ok = False
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(loadgen.RawConn.open(self.target), 30)
                    status, body = await asyncio.wait_for(conn.request(self.raw), 60)
                    ok = status == 200 and OK in body
                except (OSError, EOFError, ValueError, TimeoutError, loadgen.HTTPError):
                    if conn is not None:
                        await conn.close()
                    conn = None
                self.samples.append((t0, time.perf_counter() - t0, ok))
                await asyncio.sleep(0.02)
        finally:
            if conn is not None:
                await conn.close()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def since(self, t: float) -> tuple[float, int]:
        window = [(lat, ok) for start, lat, ok in self.samples if start >= t]
        worst = max((lat for lat, _ in window), default=float("nan")) * 1000.0
        return worst, sum(1 for _, ok in window if not ok)


async def write_bulk(server: Server, plan: Plan) -> None:
    """Identities and policies straight into the running server's database (SqlStore)."""
    db = (server.data_dir / "keyless.db").resolve()
    store = await SqlStore.open(f"sqlite:///{db}", migrate_schema=False)
    try:
        now = time.time()
        owners: list[str] = []
        for j in range(plan.identities):
            ident = Identity(
                str(uuid.uuid4()), str(uuid.uuid4()), f"bench-other-{j}", server.tenant_id, now
            )
            owners.append((await store.create_identity(ident)).object_id)
        creds: list[FederatedCredential] = [
            new_credential(
                id=str(uuid.uuid4()),
                identity_id=server.object_id if owner is None else owners[owner],
                name=name,
                issuer=ISSUER,
                subject=subject,
                subject_pattern=pattern,
            )
            for owner, name, subject, pattern in plan.policies
        ]
        await store.add_credentials_bulk(creds, now)
    finally:
        await store.close()


async def load_and_wait(
    server: Server,
    plan: Plan,
    probe: str,
    heartbeat_token: str,
    reload_wait: float,
) -> LoadReport:
    status, _ = await server.exchange_once(probe)
    if status == 200:
        raise RuntimeError("the probe token is accepted before the load: bad plan")
    rss_before = loadgen.rss_mib(server.pid)
    heartbeat = Heartbeat(server, heartbeat_token)
    heartbeat.start()
    try:
        t0 = time.perf_counter()
        await write_bulk(server, plan)
        committed = time.perf_counter()
        write_s = committed - t0
        log(f"  wrote {plan.identities:,} identities + {plan.total:,} policies in {write_s:.1f} s")
        how = "revision poll"
        accepted = await poll_accepted(server, probe, reload_wait)
        if accepted is None:
            log(f"  not picked up within {reload_wait:g} s; forcing a reload with an admin write")
            how = f"NOT picked up in {reload_wait:g} s; forced by an admin write"
            nudge = time.perf_counter()
            await asyncio.to_thread(server.cli, "identity", "create", "bench-reload-nudge")
            how += f" (CLI call {time.perf_counter() - nudge:.1f} s)"
            accepted = await poll_accepted(server, probe, 120.0)
            if accepted is None:
                raise RuntimeError(f"new policies never accepted:\n{server.tail()}")
        reload_s = accepted - committed
        await asyncio.sleep(0.1)  # one more heartbeat after acceptance
        worst, hb_errors = heartbeat.since(committed)
    finally:
        await heartbeat.stop()
    rss_after = loadgen.rss_mib(server.pid)
    log(
        f"  accepted {reload_s:.1f} s after commit ({how}); heartbeat max {worst:.0f} ms; "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )
    return LoadReport(
        plan.scenario,
        plan.total,
        plan.on_self,
        plan.identities,
        write_s,
        reload_s,
        how,
        worst,
        hb_errors,
        rss_before,
        rss_after,
    )


async def poll_accepted(server: Server, probe: str, timeout: float) -> float | None:
    """perf_counter() of the first 200 for ``probe`` within ``timeout`` s, else None."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"keyless died:\n{server.tail()}")
        with contextlib.suppress(OSError, EOFError, ValueError, TimeoutError, loadgen.HTTPError):
            status, _ = await server.exchange_once(probe, timeout=max(1.0, timeout))
            if status == 200:
                return time.perf_counter()
        await asyncio.sleep(0.1)
    return None


# --------------------------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    alg: str
    scenario: str
    policies: int
    concurrency: int
    result: loadgen.RunResult
    rss: float


async def measure(
    args: argparse.Namespace,
    server: Server,
    scenario: str,
    policies: int,
    tokens: list[str],
    concurrency: list[int],
) -> list[Row]:
    assert server.target is not None
    reqs = [server.exchange_req(t) for t in tokens]
    rows = []
    for conc in concurrency:
        session = loadgen.RawSession(server.target, reqs, OK)
        result = await loadgen.run_load(
            session, conc, args.seconds, args.max_requests, args.warmup, server.pid
        )
        if server.proc.poll() is not None:
            raise RuntimeError(f"keyless died:\n{server.tail()}")
        row = Row(server.alg, scenario, policies, conc, result, loadgen.rss_mib(server.pid))
        rows.append(row)
        log(format_row(row))
        log_first_error(result.first_error)
    return rows


TABLE_HEAD = (
    "| alg | scenario | policies | conc | exchanges/s | p50 ms | p95 ms | p99 ms | errors "
    "| exchanges | server CPU s/1k | client CPU s/1k | server RSS MiB |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def format_row(row: Row) -> str:
    r = row.result
    return (
        f"| {row.alg} | {row.scenario} | {row.policies:,} | {row.concurrency} | {r.rps:,.0f} "
        f"| {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {r.requests:,} "
        f"| {r.per_1k(r.server_cpu):.3f} | {r.per_1k(r.client_cpu):.3f} | {row.rss:.0f} |"
    )


LOAD_HEAD = (
    "| alg | scenario | policies written | on benchmarked identity | other identities "
    "| write s | commit -> accepted s | picked up by | heartbeat max ms | heartbeat errors "
    "| RSS before MiB | RSS after MiB |\n"
    "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
)


def format_load(alg: str, r: LoadReport) -> str:
    return (
        f"| {alg} | {r.scenario} | {r.policies:,} | {r.on_self:,} | {r.identities:,} "
        f"| {r.write_s:.1f} | {r.reload_s:.1f} | {r.how} | {r.heartbeat_max_ms:.0f} "
        f"| {r.heartbeat_errors} | {r.rss_before:.0f} | {r.rss_after:.0f} |"
    )


# --------------------------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------------------------


@dataclass
class Pools:
    baseline: list[str]
    plans: dict[str, Plan]
    tokens: dict[str, list[str]]
    probes: dict[str, str]


def prepare(args: argparse.Namespace, key: rsa.RSAPrivateKey) -> Pools:
    t0 = time.perf_counter()
    baseline = mint_pool(key, [APP_SUBJECT], args.pool)
    plans, tokens, probes = {}, {}, {}
    for scenario in ("exact", "pattern"):
        if scenario not in args.scenarios:
            continue
        total = args.policies - 1 if scenario == "exact" else args.policies
        plan = make_plan(scenario, total, args.identities, args.self_share, args.pool)
        plans[scenario] = plan
        tokens[scenario] = mint_pool(key, plan.pool_subjects, args.pool)
        probes[scenario] = mint(key, plan.probe_subject, int(time.time()))
    n = sum(len(t) for t in tokens.values()) + len(baseline)
    log(f"minted {n:,} tokens in {time.perf_counter() - t0:.1f} s (not measured)")
    return Pools(baseline, plans, tokens, probes)


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pools = prepare(args, key)
    rows: list[Row] = []
    loads: list[tuple[str, LoadReport]] = []
    notes: list[str] = []
    groups = [
        [s for s in ("baseline", "exact") if s in args.scenarios],
        [s for s in ("pattern",) if s in args.scenarios],
    ]
    for alg in args.algs:
        for group in (g for g in groups if g):
            server = await start_server(alg, tmp, group[-1], args.serve_arg)
            try:
                await asyncio.to_thread(setup, server, tmp, key)
                await sanity_check(server, pools.baseline[0])
                log(f"{alg}: keyless pid {server.pid} on :{server.port}, checks passed")
                for scenario in group:
                    if scenario == "baseline":
                        rows += await measure(
                            args, server, scenario, 1, pools.baseline, args.concurrency
                        )
                        continue
                    plan = pools.plans[scenario]
                    report = await load_and_wait(
                        server, plan, pools.probes[scenario], pools.baseline[0], args.reload_wait
                    )
                    loads.append((alg, report))
                    total = plan.total + 1  # with the baseline policy
                    rows += await measure(
                        args, server, scenario, total, pools.tokens[scenario], args.concurrency
                    )
                    # Control: the baseline tokens (one subject, the one exact policy) with the
                    # bulk policies loaded: a bigger heap's cost, apart from matching's.
                    rows += await measure(
                        args,
                        server,
                        f"{scenario}: baseline tokens",
                        total,
                        pools.baseline,
                        args.control_concurrency,
                    )
            finally:
                stop_proc(server.proc)
                count, first = server.problems()
                note = f"{alg} server ({', '.join(group)}): {count} warning/error log lines"
                notes.append(note + (f"; first: `{first}`" if first else ""))
                log(notes[-1])
    return {
        "rows": rows,
        "loads": [{"alg": alg, "report": report} for alg, report in loads],
        "notes": notes,
    }


def header(args: argparse.Namespace) -> str:
    return versions_line(["cryptography", "PyJWT", *LIBS[1:]])


def render(data: dict[str, Any]) -> str:
    """The markdown report, from the study's JSON."""
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    loads = [(x["alg"], revive(LoadReport, x["report"])) for x in data["loads"]]
    notes = data["notes"]
    body = "\n".join(format_row(r) for r in rows)
    load_body = "\n".join(format_load(alg, r) for alg, r in loads)
    return (
        "# keyless token exchange\n\n"
        f"{meta['header']}\n\n"
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s; load average at "
        f"start {meta['load_start']}, at end {meta['load_end']}: the machine is shared, so "
        "other work competes for its 2 cores)\n"
        f"- Signing alg of keyless's access tokens: {', '.join(args.algs)} (`serve "
        "--signing-alg`); presented tokens: RS256 (RSA-2048) Kubernetes service-account "
        f"tokens of one issuer with an uploaded JWKS, {args.pool:,} distinct pre-minted tokens "
        "per scenario (minting not measured).\n"
        "- Server: `python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT "
        f"--dev --signing-alg ALG{''.join(' ' + a for a in args.serve_arg)}` (one process, "
        "SQLite, default settings, TLS with its own CA; its stdout and stderr go to a file). "
        "Client: `bench/loadgen.py` (raw asyncio, "
        "keep-alive HTTP/1.1 over TLS 1.3, connections opened before timing) in one process "
        "on the same 2-core machine.\n"
        "- Request: `POST /{tenant}/oauth2/v2.0/token`, grant_type=client_credentials, "
        "client_assertion_type=jwt-bearer, client_id, client_assertion, "
        "scope=https://vault.localhost:PORT/.default; success = 200 with an access_token.\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} exchanges (whichever first) "
        f"after a {args.warmup:g} s warm-up. Latency: per exchange as the client sees it "
        "(at c=64 it includes queueing). CPU: seconds per 1000 exchanges (server: /proc "
        "utime+stime; client: this process). RSS: VmRSS after the cell.\n"
        f"- Scenarios: baseline = 1 exact policy; exact = {args.policies:,} exact policies "
        f"({args.self_share:.0%} on the benchmarked identity, the rest over "
        f"{args.identities:,} other identities; the pool's subjects hit {args.pool:,} "
        f"different policies of the benchmarked identity); pattern = {args.policies:,} "
        "subject-pattern policies (plus the baseline policy) spread the same way, shapes "
        "`system:serviceaccount:team-N-*:reader`, `system:serviceaccount:svc-N:worker-*`, "
        "`system:serviceaccount:ci-N-??:deployer`, `repo:org-N/*:ref:refs/heads/main`; "
        "the pool's subjects are accepted only by patterns. *SCENARIO: baseline tokens* "
        "(control): the baseline pool (one subject, accepted by the one exact policy) "
        "re-measured on the same server with the bulk policies loaded, so that what a bigger "
        "heap costs shows apart from what matching costs.\n\n"
        f"{TABLE_HEAD}\n{body}\n\n"
        "## Loading the policies into a running server\n\n"
        "Identities (`SqlStore.create_identity`, one transaction each) and policies "
        "(`SqlStore.add_credentials_bulk`, one transaction) written into the live server's "
        "SQLite database from the bench process. *commit -> accepted*: from the commit until "
        "an exchange that only the new policies accept succeeds (polled every 0.1 s). "
        "*heartbeat*: one exchange at a time, every 20 ms, with an already-trusted token; "
        "its worst latency in that window shows how long the reload stalled the server.\n\n"
        f"{LOAD_HEAD}\n{load_body}\n\n"
        "## Server logs\n\n" + "".join(f"- {n}\n" for n in notes)
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 10.0, "exchange", [1, 64])
    p.add_argument(
        "--control-concurrency",
        type=int,
        nargs="*",
        default=[64],
        help="after each bulk load, re-measure the baseline tokens at these concurrencies "
        "(none: no control runs)",
    )
    p.add_argument("--algs", nargs="+", choices=["RS256", "ES256"], default=["RS256", "ES256"])
    p.add_argument(
        "--signing-alg",
        choices=["RS256", "ES256"],
        help="only this alg (passed to `serve --signing-alg`); same as --algs ALG",
    )
    add_serve_arg(p)
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--policies", type=int, default=100_000, help="policies per bulk scenario")
    p.add_argument("--identities", type=int, default=1000, help="other identities in bulk")
    p.add_argument(
        "--self-share",
        type=float,
        default=0.3,
        help="share of the bulk policies on the benchmarked identity itself",
    )
    p.add_argument("--pool", type=int, default=2000, help="distinct tokens per scenario")
    p.add_argument(
        "--reload-wait",
        type=float,
        default=10.0,
        help="seconds to wait for the server to pick up bulk-loaded policies by itself",
    )
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.signing_alg:
        args.algs = [args.signing_alg]
    if args.policies < 2 or args.pool < 1 or not 0 < args.self_share <= 1:
        p.error("need --policies >= 2, --pool >= 1, 0 < --self-share <= 1")
    check_cell_options(p, args)
