#!/usr/bin/env python3
"""HTTP stack benchmark: uvicorn (uvloop + httptools) vs granian (ASGI), one worker each.

ARCHIVED: kept for the record of docs/adr/0001-http-server.md and bench/results/stack.md; it
does not run any more (it imports ``loadgen`` as a top-level module, now ``bench.loadgen``).

Both servers serve the same tiny raw-Starlette app, defined in this file (``create_app``):

* ``GET /hello`` returns a small JSON document;
* ``POST /exchange`` reads the form field ``assertion`` (an RS256 JWT minted by a fixed RSA-2048
  key), verifies its signature with ``cryptography`` directly, then signs a fresh small JWT with an
  ES256 key (default) or an RS256 key (``?alg=RS256``) and returns ``{"access_token": ...}``.

Every (server, TLS) pair gets its own server process on a free 127.0.0.1 port, all started up
front and stopped at exit (also on Ctrl-C / SIGTERM / errors). Every (route, TLS, concurrency)
cell is measured with a keep-alive HTTP/1.1 load generator running in this process, bounded by
``--seconds`` and ``--max-requests``, split into ``--rounds`` slices run ABBA-interleaved
between the servers so that load drift on a shared machine hits both alike. Server CPU time is
read from ``/proc/<pid>/stat`` (utime + stime, summed over the server's process tree, plus
reaped children's cutime + cstime) before and after each timed slice.

Usage (from the repo root)::

    .venv/bin/python bench/stack.py                 # defaults: 5 s per run, ~2.5 minutes
    .venv/bin/python bench/stack.py --seconds 2 --client raw

The markdown table is printed and written to ``bench/results/stack.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import datetime as dt
import ipaddress
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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import loadgen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from loadgen import HTTPError, RawConn, RawSession, Req, RunResult, Send, Target, raw_bytes

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "stack.md"
KEYDIR_ENV = "KEYLESS_STACK_BENCH_KEYDIR"
HOST = "127.0.0.1"
TLS_NAME = "localhost"
TOKEN_POOL = 500
ISSUER = "https://bench.keyless.invalid"
AUDIENCE = "keyless-bench"

# --------------------------------------------------------------------------------------------
# Minimal JWS (compact, RS256 / ES256) over cryptography; shared by the app and the client.
# --------------------------------------------------------------------------------------------

_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_ECDSA = ec.ECDSA(hashes.SHA256())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_b64(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def jws_sign(alg: str, key: Any, kid: str, claims: dict[str, Any]) -> str:
    signing_input = f"{_json_b64({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{_json_b64(claims)}"
    data = signing_input.encode("ascii")
    if alg == "RS256":
        sig = key.sign(data, _PKCS1, _SHA256)
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(data, _ECDSA))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        raise ValueError(f"unsupported alg {alg}")
    return f"{signing_input}.{b64url(sig)}"


def jws_verify(token: str, alg: str, key: Any) -> dict[str, Any]:
    """Verify a compact JWS; return its claims. Raises ValueError / InvalidSignature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header = json.loads(b64url_decode(parts[0]))
    if header.get("alg") != alg:
        raise ValueError("unexpected alg")
    data = f"{parts[0]}.{parts[1]}".encode("ascii")
    sig = b64url_decode(parts[2])
    if alg == "RS256":
        key.verify(sig, data, _PKCS1, _SHA256)
    elif alg == "ES256":
        if len(sig) != 64:
            raise ValueError("bad ES256 signature length")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, data, _ECDSA)
    else:
        raise ValueError(f"unsupported alg {alg}")
    claims = json.loads(b64url_decode(parts[1]))
    if not isinstance(claims, dict):
        raise ValueError("claims are not an object")
    return claims


# --------------------------------------------------------------------------------------------
# The app under test. Server processes import this module and call create_app() (factory).
# --------------------------------------------------------------------------------------------


def _load_private(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def create_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    keydir = Path(os.environ[KEYDIR_ENV])
    assertion_pub = _load_private(keydir / "assertion-rs256.pem").public_key()
    signers = {
        "ES256": ("bench-es256", _load_private(keydir / "issuer-es256.pem")),
        "RS256": ("bench-rs256", _load_private(keydir / "issuer-rs256.pem")),
    }

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": "world", "service": "keyless"})

    async def exchange(request: Request) -> JSONResponse:
        alg = request.query_params.get("alg", "ES256")
        if alg not in signers:
            return JSONResponse({"error": "unsupported_alg"}, status_code=400)
        form = await request.form()
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        try:
            claims = jws_verify(assertion, "RS256", assertion_pub)
        except (ValueError, InvalidSignature):
            return JSONResponse({"error": "invalid_grant"}, status_code=401)
        now = int(time.time())
        kid, key = signers[alg]
        token = jws_sign(
            alg,
            key,
            kid,
            {
                "iss": ISSUER,
                "sub": claims.get("sub"),
                "aud": AUDIENCE,
                "iat": now,
                "exp": now + 300,
                "jti": os.urandom(8).hex(),
            },
        )
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 300})

    return Starlette(
        routes=[
            Route("/hello", hello, methods=["GET"]),
            Route("/exchange", exchange, methods=["POST"]),
        ]
    )


# --------------------------------------------------------------------------------------------
# Key material, throwaway TLS certificate, token pool.
# --------------------------------------------------------------------------------------------


@dataclass
class Material:
    keydir: Path
    cert: Path
    cert_key: Path
    assertion_key: rsa.RSAPrivateKey
    issuer_pub: dict[str, Any]


def _write_pkcs8(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_material(tmp: Path) -> Material:
    assertion_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer_es = ec.generate_private_key(ec.SECP256R1())
    issuer_rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_pkcs8(tmp / "assertion-rs256.pem", assertion_key)
    _write_pkcs8(tmp / "issuer-es256.pem", issuer_es)
    _write_pkcs8(tmp / "issuer-rs256.pem", issuer_rs)

    # Self-signed TLS certificate (ECDSA P-256; PKCS#8 key, as granian requires).
    tls_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName(TLS_NAME), x509.IPAddress(ipaddress.ip_address(HOST))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(tls_key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_pkcs8(tmp / "cert-key.pem", tls_key)
    return Material(
        keydir=tmp,
        cert=tmp / "cert.pem",
        cert_key=tmp / "cert-key.pem",
        assertion_key=assertion_key,
        issuer_pub={"ES256": issuer_es.public_key(), "RS256": issuer_rs.public_key()},
    )


def mint_assertions(key: rsa.RSAPrivateKey, n: int) -> list[str]:
    now = int(time.time())
    return [
        jws_sign(
            "RS256",
            key,
            "bench-assertion",
            {
                "iss": "https://ci.example.invalid",
                "sub": f"repo:example/app:run:{i}",
                "aud": AUDIENCE,
                "iat": now,
                "exp": now + 3600,
                "jti": f"assertion-{i:04d}",
            },
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------------------------
# Server processes.
# --------------------------------------------------------------------------------------------

_LIVE = loadgen.LIVE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command(server: str, port: int, tls: bool, mat: Material) -> list[str]:
    if server == "uvicorn":
        cmd = [
            sys.executable, "-m", "uvicorn", "stack:create_app", "--factory",
            "--app-dir", str(HERE), "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        if tls:
            cmd += ["--ssl-certfile", str(mat.cert), "--ssl-keyfile", str(mat.cert_key)]
        return cmd
    if server == "granian":
        cmd = [
            sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
            "--working-dir", str(HERE), "--host", HOST, "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--http", "1",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        if tls:
            cmd += ["--ssl-certificate", str(mat.cert), "--ssl-keyfile", str(mat.cert_key)]
        return [*cmd, "stack:create_app"]
    raise ValueError(server)


def start_server(cmd: list[str], mat: Material, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, KEYDIR_ENV: str(mat.keydir), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        # Own session => own process group, so granian's worker child is stopped with it.
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _LIVE[proc.pid] = proc
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    loadgen.stop_proc(proc, grace=5.0)


# --------------------------------------------------------------------------------------------
# Load generators: raw asyncio streams (loadgen.RawSession) and httpx.AsyncClient.
# --------------------------------------------------------------------------------------------


class HttpxSession:
    name = "httpx.AsyncClient (HTTP/1.1)"

    def __init__(self, target: Target, reqs: list[Req], expect: bytes) -> None:
        import httpx

        self.httpx = httpx
        self.target, self.reqs, self.expect = target, reqs, expect
        self.client: Any = None
        self.first_error: str | None = None

    async def open(self, concurrency: int) -> list[Send]:
        httpx = self.httpx
        self.client = httpx.AsyncClient(
            base_url=self.target.base,
            verify=self.target.tls or False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=30.0,
        )
        form = {"content-type": "application/x-www-form-urlencoded"}
        reqs, expect, client = self.reqs, self.expect, self.client

        async def send(i: int) -> bool:
            req = reqs[i % len(reqs)]
            try:
                if req.body is None:
                    resp = await client.request(req.method, req.path)
                else:
                    resp = await client.request(
                        req.method, req.path, content=req.body, headers=form
                    )
            except httpx.HTTPError:
                return False
            return resp.status_code == 200 and expect in resp.content

        return [send] * concurrency

    async def close(self) -> None:
        await self.client.aclose()


CLIENTS = {"raw": RawSession, "httpx": HttpxSession}


async def run_load(
    client: str,
    target: Target,
    reqs: list[Req],
    expect: bytes,
    concurrency: int,
    seconds: float,
    max_requests: int,
    warmup: float,
    server_pid: int,
) -> RunResult:
    session = CLIENTS[client](target, reqs, expect)
    return await loadgen.run_load(session, concurrency, seconds, max_requests, warmup, server_pid)


# --------------------------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------------------------

ROUTES: list[tuple[str, str, bytes]] = [
    # (label, path, expected substring of a good response body)
    ("GET /hello", "/hello", b'"hello"'),
    ("POST /exchange (ES256)", "/exchange", b'"access_token"'),
    ("POST /exchange?alg=RS256", "/exchange?alg=RS256", b'"access_token"'),
]


def route_reqs(path: str, bodies: list[bytes]) -> list[Req]:
    if path == "/hello":
        return [Req("GET", path)]
    return [Req("POST", path, b) for b in bodies]


def client_tls() -> ssl.SSLContext:
    # Throwaway self-signed cert: encryption only, no verification (benchmark, loopback).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def wait_ready(proc: subprocess.Popen[bytes], target: Target, log: Path, timeout: float):
    deadline = time.monotonic() + timeout
    raw = raw_bytes(Req("GET", "/hello"), target)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            conn = await asyncio.wait_for(RawConn.open(target), 1.0)
            try:
                status, _ = await asyncio.wait_for(conn.request(raw), 2.0)
            finally:
                await conn.close()
            if status == 200:
                return
        except (OSError, EOFError, ValueError, TimeoutError, HTTPError):
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


async def sanity_check(target: Target, mat: Material, assertion: str) -> None:
    """Check every route once, including that the minted tokens verify and forgeries fail."""
    conn = await RawConn.open(target)
    try:
        status, body = await conn.request(raw_bytes(Req("GET", "/hello"), target))
        assert status == 200 and json.loads(body)["hello"] == "world", (status, body)
        for alg, path in (("ES256", "/exchange"), ("RS256", "/exchange?alg=RS256")):
            form = f"assertion={assertion}".encode()
            status, body = await conn.request(raw_bytes(Req("POST", path, form), target))
            assert status == 200, (status, body)
            claims = jws_verify(json.loads(body)["access_token"], alg, mat.issuer_pub[alg])
            assert claims["aud"] == AUDIENCE, claims
        forged = assertion[:-6] + ("AAAAAA" if not assertion.endswith("AAAAAA") else "BBBBBB")
        req = Req("POST", "/exchange", f"assertion={forged}".encode())
        status, _ = await conn.request(raw_bytes(req, target))
        assert status == 401, f"forged assertion accepted: {status}"
    finally:
        await conn.close()


@dataclass
class Row:
    server: str
    tls: bool
    route: str
    concurrency: int
    result: RunResult


async def pick_client(args, srv: Live) -> tuple[str, str]:
    if args.client != "auto":
        return args.client, "forced by --client"
    rps = {}
    for name in ("raw", "httpx"):
        res = await run_load(
            name, srv.target, [Req("GET", "/hello")], b'"hello"', 64, 1.5, 10**9, 0.3, srv.proc.pid
        )
        rps[name] = res.rps
    best = max(rps, key=lambda k: rps[k])
    note = ", ".join(f"{k} {v:,.0f} req/s" for k, v in rps.items())
    where = f"{srv.server}{' TLS' if srv.tls else ''}, GET /hello, c=64"
    return best, f"auto-picked by a 1.5 s probe each ({where}): {note}"


@dataclass
class Live:
    server: str
    tls: bool
    proc: subprocess.Popen[bytes]
    target: Target
    log: Path


async def bench(args, mat: Material, tmp: Path) -> tuple[list[Row], str]:
    # SIGTERM/SIGHUP cancel this task like Ctrl-C does (asyncio.Runner handles SIGINT), so
    # the finally block below stops every server.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    tokens = mint_assertions(mat.assertion_key, TOKEN_POOL)
    bodies = [f"assertion={t}".encode() for t in tokens]  # base64url + dots: form-safe
    live: list[Live] = []
    try:
        # All (server, tls) processes stay up for the whole benchmark (idle ones cost ~0 CPU),
        # so uvicorn and granian can be measured back to back for every cell.
        for tls in args.tls_modes:
            for server in args.servers:
                port = free_port()
                log = tmp / f"{server}-{'tls' if tls else 'plain'}.log"
                target = Target(HOST, port, client_tls() if tls else None, server_hostname=TLS_NAME)
                proc = start_server(server_command(server, port, tls, mat), mat, log)
                live.append(Live(server, tls, proc, target, log))
        for srv in live:
            await wait_ready(srv.proc, srv.target, srv.log, timeout=30.0)
            await sanity_check(srv.target, mat, tokens[0])
        print("all servers up; every route answered and forged assertions got 401", flush=True)
        client, client_note = await pick_client(args, live[0])
        print(f"load generator: {CLIENTS[client].name} ({client_note})", flush=True)

        rows: list[Row] = []
        cell = 0
        for tls in args.tls_modes:
            group = [srv for srv in live if srv.tls == tls]
            for label, path, expect in ROUTES:
                for conc in args.concurrency:
                    # Split each cell into --rounds slices in ABBA order so slow drift in the
                    # (shared, noisy) machine's load hits both servers alike.
                    parts: dict[str, list[RunResult]] = {srv.server: [] for srv in group}
                    for rnd in range(args.rounds):
                        order = group if (rnd + cell) % 2 == 0 else group[::-1]
                        for srv in order:
                            res = await run_load(
                                client,
                                srv.target,
                                route_reqs(path, bodies),
                                expect,
                                conc,
                                args.seconds / args.rounds,
                                max(1, args.max_requests // args.rounds),
                                args.warmup,
                                srv.proc.pid,
                            )
                            if srv.proc.poll() is not None:
                                raise RuntimeError(f"{srv.server} died:\n{_tail(srv.log)}")
                            parts[srv.server].append(res)
                    cell += 1
                    for srv in group:
                        row = Row(srv.server, tls, label, conc, RunResult.merge(parts[srv.server]))
                        rows.append(row)
                        print(format_row(row), flush=True)
    finally:
        for srv in live:
            stop_server(srv.proc)
    order = {name: i for i, name in enumerate(args.servers)}
    rows.sort(key=lambda r: (r.tls, order[r.server]))  # stable: route/conc order kept
    return rows, f"{CLIENTS[client].name}; {client_note}"


TABLE_HEAD = (
    "| server | tls | route | conc | req/s | p50 ms | p99 ms | errors | requests "
    "| server CPU s/1k req | client CPU s/1k req |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def format_row(row: Row) -> str:
    r = row.result
    return (
        f"| {row.server} | {'yes' if row.tls else 'no'} | {row.route} | {row.concurrency} "
        f"| {r.rps:,.0f} | {r.pct_ms(0.50):.2f} | {r.pct_ms(0.99):.2f} | {r.errors} "
        f"| {r.requests:,} | {r.per_1k(r.server_cpu):.3f} | {r.per_1k(r.client_cpu):.3f} |"
    )


def ratio_table(rows: list[Row]) -> str:
    by = {(r.server, r.tls, r.route, r.concurrency): r.result for r in rows}
    out = [
        "| tls | route | conc | granian/uvicorn req/s | granian/uvicorn p99 "
        "| granian/uvicorn server CPU per req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.server != "uvicorn":
            continue
        g = by.get(("granian", r.tls, r.route, r.concurrency))
        u = r.result
        if g is None or not u.rps or not g.rps:
            continue
        cpu_u, cpu_g = u.per_1k(u.server_cpu), g.per_1k(g.server_cpu)
        out.append(
            f"| {'yes' if r.tls else 'no'} | {r.route} | {r.concurrency} "
            f"| {g.rps / u.rps:.2f}x | {g.pct_ms(0.99) / u.pct_ms(0.99):.2f}x "
            f"| {(cpu_g / cpu_u) if cpu_u else float('nan'):.2f}x |"
        )
    return "\n".join(out)


def versions_line() -> str:
    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "n/a"

    libs = ["uvicorn", "granian", "starlette", "uvloop", "httptools", "cryptography", "httpx"]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{when} · nproc={os.cpu_count()} · Python {platform.python_version()} · "
        + " · ".join(f"{name} {v(name)}" for name in libs)
        + f" · {ssl.OPENSSL_VERSION} · {platform.system()} {platform.release()}"
    )


def render(args, rows: list[Row], header: str, client_desc: str, wall: float) -> str:
    body = "\n".join(format_row(r) for r in rows)
    return (
        "# keyless HTTP stack: uvicorn vs granian\n\n"
        f"{header}\n\n"
        f"- Command: `{' '.join([os.path.relpath(sys.executable), *sys.argv])}` "
        f"(wall time {wall:.0f} s)\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} requests (whichever first), "
        f"measured as {args.rounds} slices run ABBA-interleaved between the servers, each "
        f"after a {args.warmup:g} s keep-alive warm-up. One server process (1 worker) per "
        "(server, tls), all started up front; client and servers share the machine.\n"
        f"- Load generator: {client_desc}.\n"
        "- uvicorn: `--loop uvloop --http httptools`; granian: `--interface asgi --workers 1 "
        "--loop uvloop --http 1` (default runtime threads / backpressure). TLS: self-signed "
        "ECDSA P-256 cert, TLS 1.3, connections established before timing.\n"
        "- /exchange: form `assertion` = one of 500 pre-minted RS256 JWTs (RSA-2048), verified "
        "with cryptography (PKCS1v15/SHA-256), then a new JWT signed with ES256 or RSA-2048 "
        "RS256, inline on the event loop.\n"
        "- Latency is client-observed per request (includes client-side queueing at c=64). "
        "CPU columns: seconds of CPU per 1000 requests (server: /proc utime+stime of the "
        "server process tree; client: this process).\n\n"
        f"{TABLE_HEAD}\n{body}\n\n"
        "## granian relative to uvicorn\n\n"
        f"{ratio_table(rows)}\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="timed duration per run")
    p.add_argument("--max-requests", type=int, default=200_000, help="request cap per cell")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per slice")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="slices per (route, tls, concurrency) cell, run ABBA-interleaved across servers",
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    p.add_argument("--servers", nargs="+", choices=["uvicorn", "granian"], default=None)
    p.add_argument(
        "--tls", choices=["both", "off", "on"], default="both", help="plain HTTP, TLS or both"
    )
    p.add_argument("--client", choices=["auto", "raw", "httpx"], default="auto")
    p.add_argument("--out", type=Path, default=RESULTS, help="markdown output file")
    args = p.parse_args(argv)
    args.servers = args.servers or ["uvicorn", "granian"]
    args.tls_modes = {"both": [False, True], "off": [False], "on": [True]}[args.tls]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(loadgen.stop_all)
    # Outside the event loop, SIGTERM/SIGHUP behave like Ctrl-C (unwind through the finally
    # blocks that stop servers); inside it, bench() turns them into task cancellation.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    header = versions_line()
    print(header, flush=True)
    started = time.monotonic()
    import uvloop

    try:
        with tempfile.TemporaryDirectory(prefix="keyless-stack-") as tmpdir:
            tmp = Path(tmpdir)
            mat = make_material(tmp)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                rows, client_desc = runner.run(bench(args, mat, tmp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        loadgen.stop_all()
    report = render(args, rows, header, client_desc, time.monotonic() - started)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
