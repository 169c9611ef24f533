"""What the dialect benchmarks (``bench/aws.py``, ``bench/gcp.py``, ``bench/spiffe.py``,
``bench/databases.py``) share: the bench workload's projected token for a dialect's audience,
the Key Vault read they are compared with, sessions over pre-built request bytes, and their
report's server line, table and log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from . import loadgen
from . import server as ex

VAULT = "bench"
SECRET = "db-password"
API_VERSION = "7.5"


def mint_for(key: rsa.RSAPrivateKey, now: int, audience: str) -> str:
    """A projected token of the bench issuer for the bench workload, for ``audience``."""
    claims = {
        "aud": [audience],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": ex.ISSUER,
        "jti": str(uuid.uuid4()),
        "sub": ex.APP_SUBJECT,
        "kubernetes.io": {
            "namespace": ex.APP_NAMESPACE,
            "pod": {"name": f"app-{uuid.uuid4().hex[:10]}", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": ex.APP_SA, "uid": str(uuid.uuid4())},
        },
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": ex.KID})


def read_bytes(target: loadgen.Target, token: str) -> bytes:
    return (
        f"GET /secrets/{SECRET}?api-version={API_VERSION} HTTP/1.1\r\n"
        f"Host: {target.authority}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


class RawPayloads(loadgen.RawSession):
    """``RawSession`` over pre-built request bytes (bearer reads, signed requests)."""

    name = "raw asyncio streams, HTTP/1.1 keep-alive"

    def __init__(self, target: loadgen.Target, payloads: list[bytes], ok: bytes) -> None:
        super().__init__(target, [loadgen.Req("GET", "/")], ok)
        self.payloads = payloads


@dataclass
class Row:
    cell: str
    concurrency: int
    result: loadgen.RunResult
    rss: float


async def once(target: loadgen.Target, raw: bytes) -> tuple[int, bytes]:
    conn = await loadgen.RawConn.open(target)
    try:
        return await conn.request(raw)
    finally:
        await conn.close()


TABLE_HEAD = (
    "| cell | conc | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | requests "
    "| server CPU s/1k | client CPU s/1k | server RSS MiB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def format_row(row: Row) -> str:
    r = row.result
    return (
        f"| {row.cell} | {row.concurrency} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} "
        f"| {r.p99_ms:.2f} | {r.max_ms:.1f} | {r.errors} | {r.requests:,} "
        f"| {r.per_1k(r.server_cpu):.3f} | {r.per_1k(r.client_cpu):.3f} | {row.rss:.0f} |"
    )


def server_line(args: Any, detail: str, *, flags: str = "") -> str:
    """The report's "- Server:" line: the command keyless ran (``--serve-arg`` included, then
    ``flags``) and, in parentheses, what it was."""
    serve = " ".join(["", *args.serve_arg]) if args.serve_arg else ""
    return (
        "- Server: `python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT "
        f"--dev --signing-alg RS256{serve}{flags}` ({detail})"
    )


def table_and_log(rows: list[Row], notes: list[str]) -> str:
    """The results table, then the server log's notes."""
    return (
        f"{TABLE_HEAD}\n" + "\n".join(format_row(r) for r in rows) + "\n\n"
        "## Server log\n\n" + "".join(f"- {n}\n" for n in notes)
    )
