#!/usr/bin/env python3
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

    .venv/bin/python bench/exchange.py                   # defaults: ~4-5 minutes
    .venv/bin/python bench/exchange.py --seconds 2 --algs ES256 --policies 10000

The markdown report is printed and written to ``bench/results/exchange.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import loadgen
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk
from keyless.core.models import Identity
from keyless.core.trust import FederatedCredential, new_credential
from keyless.store.sql import SqlStore

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "exchange.md"
HOST = "127.0.0.1"
TLS_NAME = "localhost"
ISSUER = "https://k8s.bench.keyless.test/clusters/bench"
KID = "bench-sa-key-1"
AUDIENCE = "api://AzureADTokenExchange"
APP_NAMESPACE, APP_SA = "bench", "app"
APP_SUBJECT = f"system:serviceaccount:{APP_NAMESPACE}:{APP_SA}"
APP_IDENTITY = "bench-app"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OK = b'"access_token"'
SCENARIOS = ("baseline", "exact", "pattern")


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Kubernetes-format tokens of the bench's issuer.
# --------------------------------------------------------------------------------------------


def split_subject(subject: str) -> tuple[str, str]:
    """(namespace, service account) of a ``system:serviceaccount:NS:SA`` subject."""
    parts = subject.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2], parts[3]
    return "ci", "runner"  # a non-Kubernetes subject (repo:...): still a k8s-shaped token


def mint(key: rsa.RSAPrivateKey, subject: str, now: int, lifetime: int = 3600) -> str:
    namespace, sa = split_subject(subject)
    pod = f"{sa}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
    claims = {
        "aud": [AUDIENCE],
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": str(uuid.uuid4()),
        "sub": subject,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": pod, "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": sa, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, subject))},
        },
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


def mint_pool(key: rsa.RSAPrivateKey, subjects: list[str], size: int) -> list[str]:
    now = int(time.time())
    return [mint(key, subjects[i % len(subjects)], now) for i in range(size)]


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
# The keyless server process and its admin CLI.
# --------------------------------------------------------------------------------------------

_LIVE = loadgen.LIVE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without KEYLESS_* (an unknown one stops the server; others would
    point it at other data)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    # The load generator is one client on one IP: the per-client token rate limit (on by
    # default) would measure the limiter, not the server's capacity.
    return {
        **env,
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        "KEYLESS_TOKEN_RATE_LIMIT": "0",
    }


def keyless_cmd(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "keyless.cli.main", "--data-dir", str(data_dir)]


# Shared with the other benchmarks (read, openbao, soak, peer use these names).
stop_proc = loadgen.stop_proc
stop_all = loadgen.stop_all


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    log_path: Path
    alg: str
    tenant_id: str = ""
    client_id: str = ""
    object_id: str = ""
    target: loadgen.Target | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def scope(self) -> str:
        return f"https://vault.localhost:{self.port}/.default"

    @property
    def token_path(self) -> str:
        return f"/{self.tenant_id}/oauth2/v2.0/token"

    def tail(self, n: int = 25) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(line[:300] for line in lines[-n:])

    def problems(self) -> tuple[int, str | None]:
        """How many warning/error log lines (or tracebacks) the server wrote; the first one."""
        count, first = 0, None
        marks = ('"level": "warning"', '"level": "error"', '"level": "critical"', "Traceback")
        try:
            with self.log_path.open(errors="replace") as f:
                for line in f:
                    if any(m in line for m in marks):
                        count += 1
                        first = first or line.strip()[:500]
        except OSError:
            pass
        return count, first

    def cli(self, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [*keyless_cmd(self.data_dir), *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"keyless {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def cli_json(self, *args: str) -> dict[str, Any]:
        out = json.loads(self.cli("--output", "json", *args))
        assert isinstance(out, dict), out
        return out

    def exchange_req(self, token: str) -> loadgen.Req:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_id": self.client_id,
            "client_assertion": token,
            "scope": self.scope,
        }
        return loadgen.Req("POST", self.token_path, urlencode(form).encode())

    async def exchange_once(self, token: str, timeout: float = 10.0) -> tuple[int, bytes]:
        assert self.target is not None
        return await loadgen.request_once(self.target, self.exchange_req(token), timeout)


async def start_server(
    alg: str,
    tmp: Path,
    label: str,
    extra: list[str],
    timeout: float = 90.0,
    env: dict[str, str] | None = None,
) -> Server:
    """``env``: extra variables for the server process only (the admin CLI runs without them:
    KEYLESS_UNSAFE_NO_AUDIT, say, needs ``--dev``, which only ``serve`` has)."""
    data_dir = tmp / f"data-{label}-{alg}"
    port = free_port()
    log_path = tmp / f"server-{label}-{alg}.log"
    cmd = [
        *keyless_cmd(data_dir),
        "serve",
        "--listen",
        f"{HOST}:{port}",
        "--dev",
        "--signing-alg",
        alg,
        *extra,
    ]
    with log_path.open("wb") as out:
        # Own session => own process group, stopped as a whole.
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean_env(), **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )
    _LIVE[proc.pid] = proc
    server = Server(proc, data_dir, port, log_path, alg)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"keyless exited with {proc.returncode}:\n{server.tail()}")
        with contextlib.suppress(OSError):
            if any("ready" in ln for ln in log_path.read_text(errors="replace").splitlines()):
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"keyless not ready after {timeout:.0f} s:\n{server.tail()}")
        await asyncio.sleep(0.05)
    ctx = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    server.target = loadgen.Target(
        HOST, port, ctx, server_hostname=TLS_NAME, host_header=f"{TLS_NAME}:{port}"
    )
    return server


def jwks_file(tmp: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp / "issuer-jwks.json"
    if not path.exists():
        path.write_text(json.dumps({"keys": [public_jwk(key.public_key(), KID, "RS256")]}))
    return path


def setup(server: Server, tmp: Path, key: rsa.RSAPrivateKey) -> None:
    """Through the admin CLI: the identity, the issuer (uploaded JWKS), the baseline policy."""
    server.tenant_id = server.cli_json("tenant", "show")["id"]
    ident = server.cli_json("identity", "create", APP_IDENTITY)
    server.client_id, server.object_id = ident["client_id"], ident["object_id"]
    server.cli("issuer", "add", ISSUER, "--jwks-file", str(jwks_file(tmp, key)))
    server.cli(
        "federation", "add", APP_IDENTITY, "--name", "app", "--issuer", ISSUER,
        "--subject", APP_SUBJECT,
    )  # fmt: skip


async def sanity_check(server: Server, token: str) -> None:
    """One exchange works, its access token verifies with the tenant's JWKS, and a token with
    a broken signature is refused: the bench measures the real thing."""
    status, body = await server.exchange_once(token)
    if status != 200:
        raise RuntimeError(f"exchange failed: HTTP {status}: {body[:500]!r}")
    access = json.loads(body)["access_token"]
    assert server.target is not None
    status, keys = await loadgen.request_once(
        server.target, loadgen.Req("GET", f"/{server.tenant_id}/discovery/v2.0/keys")
    )
    assert status == 200, (status, keys)
    header = jwt.get_unverified_header(access)
    assert header["alg"] == server.alg, header
    jwk = next(k for k in json.loads(keys)["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        access,
        jwt.PyJWK(jwk).key,
        algorithms=[server.alg],
        audience=server.scope.removesuffix("/.default"),
    )
    assert claims["oid"] == server.object_id, claims
    sig = token.rsplit(".", 1)[1]
    forged = token[: -len(sig)] + ("A" if sig[0] != "A" else "B") + sig[1:]
    status, body = await server.exchange_once(forged)
    if status == 200:
        raise RuntimeError("a token with a broken signature was accepted")


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


_SEEN_ERRORS: set[str] = set()


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
        if result.first_error and result.first_error not in _SEEN_ERRORS:
            _SEEN_ERRORS.add(result.first_error)
            log(f"  first error: {result.first_error}")
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


async def bench(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[Row], list[tuple[str, LoadReport]], list[str]]:
    # SIGTERM/SIGHUP cancel this task like Ctrl-C does, so the finally blocks stop servers.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
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
    return rows, loads, notes


def keyless_rev() -> str:
    """``git describe`` of the keyless source tree this process imports, and its path."""
    import keyless

    src = Path(keyless.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return f"{rev or 'unknown rev'} ({os.path.relpath(src, REPO)})"


def versions_line() -> str:
    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "n/a"

    rev = os.environ.get("BENCH_KEYLESS_REV") or keyless_rev()
    libs = ["cryptography", "PyJWT", "uvicorn", "uvloop", "starlette", "SQLAlchemy", "aiosqlite"]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{when} · nproc={len(os.sched_getaffinity(0))} · keyless {rev} · "
        f"Python {platform.python_version()} · "
        + " · ".join(f"{name} {v(name)}" for name in libs)
        + f" · {ssl.OPENSSL_VERSION} · {platform.system()} {platform.release()}"
    )


def render(
    args: argparse.Namespace,
    rows: list[Row],
    loads: list[tuple[str, LoadReport]],
    notes: list[str],
    header: str,
    wall: float,
) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    command = " ".join([os.path.relpath(sys.executable), *sys.argv])
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={os.environ['PYTHONPATH']} {command}"
    body = "\n".join(format_row(r) for r in rows)
    load_body = "\n".join(format_load(alg, r) for alg, r in loads)
    return (
        "# keyless token exchange\n\n"
        f"{header}\n\n"
        f"- Command: `{command}` (wall time {wall:.0f} s; load average at start "
        f"{args.loadavg_start}, at end {load}: the machine is shared, so other work competes "
        "for its 2 cores)\n"
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="timed duration per cell")
    p.add_argument("--max-requests", type=int, default=500_000, help="exchange cap per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
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
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `keyless serve` (repeatable): --serve-arg=--log-level=warning",
    )
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
    p.add_argument("--out", type=Path, default=RESULTS, help="markdown output file")
    args = p.parse_args(argv)
    if args.signing_alg:
        args.algs = [args.signing_alg]
    if args.policies < 2 or args.pool < 1 or not 0 < args.self_share <= 1:
        p.error("need --policies >= 2, --pool >= 1, 0 < --self-share <= 1")
    if args.seconds <= 0 or args.seconds > 600 or args.max_requests < 1:
        p.error("need 0 < --seconds <= 600 and --max-requests >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(stop_all)
    # Outside the event loop, SIGTERM/SIGHUP behave like Ctrl-C (unwind through the finally
    # blocks that stop servers); inside it, bench() turns them into task cancellation.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    header = versions_line()
    args.loadavg_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    log(header)
    started = time.monotonic()
    import uvloop

    try:
        with (
            tempfile.TemporaryDirectory(prefix="keyless-exchange-") as tmpdir,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            rows, loads, notes = runner.run(bench(args, Path(tmpdir)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        stop_all()
    report = render(args, rows, loads, notes, header, time.monotonic() - started)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
