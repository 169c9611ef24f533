"""Google dialect benchmark: the STS exchange + generateAccessToken and Secret Manager's
``:access`` next to the Entra exchange and the Key Vault read, on one real ``keyless serve``, in
the same run.

One server (``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev``,
fresh temporary DIR, SQLite, TLS with keyless's own CA, which the client verifies), set up
through the admin CLI as ``bench/read.py`` sets it up: an issuer with an uploaded JWKS, identity
``bench-app`` trusting ``system:serviceaccount:bench:app`` with the Entra audience and (a second
federated credential) with the tenant's default provider name (``gcpnames.provider``), vault
``bench`` holding one 64-byte secret, ``secrets-user`` on ``/vaults/bench``. For each
concurrency, four cells, one after the other:

* ``entra exchange``: ``POST /{tenant}/oauth2/v2.0/token`` (client assertion = a Kubernetes
  projected token of the bench issuer, a pool of ``--pool`` distinct ones); success = 200 with
  ``"access_token"``;
* ``keyvault read``: ``GET /secrets/NAME`` with one access token, host-routed to the vault;
  success = 200 with ``"value"``;
* ``sts + impersonate``: one operation = the two requests google-auth makes with a credential
  configuration that impersonates: ``POST /gcp/sts/v1/token`` (form as google-auth sends it,
  scope ``.../auth/iam``, a pool of ``--pool`` distinct tokens with the provider's audience),
  then ``POST /gcp/iamcredentials/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`` with
  the federated token; success = both 200, the second with ``"accessToken"``; req/s counts
  operations (pairs);
* ``secretmanager access``: ``GET /gcp/secretmanager/v1/projects/bench/secrets/NAME/versions/
  latest:access`` as the REST client sends it, with one access token from generateAccessToken;
  success = 200 with ``"payload"``.

Every cell: ``--seconds`` or ``--max-requests`` after a bounded warm-up, driven by
``bench/loadgen.py`` (keep-alive HTTP/1.1 over TLS, in this process). Server CPU from /proc.

Usage (from the repo root)::

    .venv/bin/python -m bench gcp                      # defaults: ~1 minute
    .venv/bin/python -m bench gcp --seconds 3 --concurrency 16

Results: ``bench/results/gcp.json``, rendered to ``bench/results/gcp.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core import gcpnames

from . import loadgen
from . import server as ex
from .dialect import (
    SECRET,
    VAULT,
    RawPayloads,
    Row,
    format_row,
    mint_for,
    once,
    read_bytes,
    server_line,
    table_and_log,
)
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

NAME = "gcp"
CELLS = ("entra exchange", "keyvault read", "sts + impersonate", "secretmanager access")
STS_TOKEN = gcpnames.STS_PATH + "/v1/token"


def sts_bytes(target: loadgen.Target, audience: str, token: str) -> bytes:
    """The STS request google-auth sends before it impersonates (with the token file's
    trailing newline, as it reads it)."""
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": audience,
        "scope": gcpnames.IAM_SCOPE,
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": token + "\n",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }
    ctype = "application/x-www-form-urlencoded"
    req = loadgen.Req("POST", STS_TOKEN, urlencode(form).encode(), ctype)
    return loadgen.raw_bytes(req, target)


def impersonate_bytes(target: loadgen.Target, email: str, bearer: str) -> bytes:
    body = json.dumps(
        {"delegates": None, "scope": [gcpnames.CLOUD_PLATFORM_SCOPE], "lifetime": "3600s"}
    ).encode()
    path = (
        f"{gcpnames.IAM_CREDENTIALS_PATH}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
    )
    return (
        f"POST {path} HTTP/1.1\r\nHost: {target.authority}\r\n"
        f"Authorization: Bearer {bearer}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def access_bytes(target: loadgen.Target, token: str) -> bytes:
    name = f"projects/{VAULT}/secrets/{SECRET}/versions/latest"
    return (
        f"GET {gcpnames.SECRET_MANAGER_PATH}/v1/{name}:access?%24alt=json%3Benum-encoding%3Dint "
        f"HTTP/1.1\r\nHost: {target.authority}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nx-goog-request-params: name={name}\r\n\r\n"
    ).encode()


class ExchangeAndImpersonate(loadgen.RawSession):
    """One operation = STS then generateAccessToken with STS's token, on one connection."""

    name = "raw asyncio streams, HTTP/1.1 keep-alive, two requests per operation"

    def __init__(self, target: loadgen.Target, sts: list[bytes], email: str) -> None:
        super().__init__(target, [loadgen.Req("GET", "/")], b'"accessToken"')
        self.sts, self.email = sts, email

    def _sender(self, k: int) -> loadgen.Send:
        n = len(self.sts)

        async def send(i: int) -> bool:
            conn = self.conns[k]
            try:
                if conn is None:
                    conn = self.conns[k] = await loadgen.RawConn.open(self.target)
                status, body = await conn.request(self.sts[i % n])
                if status != 200:
                    self._note(f"STS HTTP {status}: {body[:500].decode('utf-8', 'replace')}")
                    return False
                federated = json.loads(body)["access_token"]
                raw = impersonate_bytes(self.target, self.email, federated)
                status, body = await conn.request(raw)
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
                if conn is not None:
                    await conn.close()
                self.conns[k] = None
                self._note(f"{type(exc).__name__}: {exc}")
                return False
            if status == 200 and b'"accessToken"' in body:
                return True
            text = body[:500].decode("utf-8", "replace")
            self._note(f"generateAccessToken HTTP {status}: {text}")
            return False

        return send


async def _service_account_token(target: loadgen.Target, sts: bytes, email: str) -> str:
    status, body = await once(target, sts)
    if status != 200:
        raise RuntimeError(f"STS failed: HTTP {status}: {body[:300]!r}")
    federated = json.loads(body)["access_token"]
    status, body = await once(target, impersonate_bytes(target, email, federated))
    if status != 200:
        raise RuntimeError(f"generateAccessToken failed: HTTP {status}: {body[:300]!r}")
    return str(json.loads(body)["accessToken"])


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = await ex.start_server("RS256", tmp, "gcp", list(args.serve_arg))
    try:
        ex.setup(server, tmp, key)
        audience = gcpnames.provider(server.tenant_id).name
        server.cli(
            "federation", "add", ex.APP_IDENTITY, "--name", "gcp", "--issuer", ex.ISSUER,
            "--subject", ex.APP_SUBJECT, "--audience", audience,
        )  # fmt: skip
        server.cli("vault", "create", VAULT)
        server.cli("secret", "set", VAULT, SECRET, "--value", "v" * 64)
        server.cli(
            "role", "assign", ex.APP_IDENTITY, "secrets-user", "--scope", f"/vaults/{VAULT}"
        )  # fmt: skip
        assert server.target is not None
        target, vault_target = server.target, server.vault_target(VAULT)
        email = gcpnames.service_account(ex.APP_IDENTITY, "default")
        now = int(time.time())
        entra = [
            loadgen.raw_bytes(server.exchange_req(t), target)
            for t in ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
        ]
        sts = [sts_bytes(target, audience, mint_for(key, now, audience)) for _ in range(args.pool)]
        status, body = await server.exchange_once(ex.mint(key, ex.APP_SUBJECT, now))
        if status != 200:
            raise RuntimeError(f"exchange failed: HTTP {status}: {body[:300]!r}")
        bearer = json.loads(body)["access_token"]
        google = await _service_account_token(target, sts[0], email)
        status, body = await once(target, access_bytes(target, google))
        if status != 200 or b'"payload"' not in body:
            raise RuntimeError(f":access failed: HTTP {status}: {body[:300]!r}")
        rows: list[Row] = []
        for conc in args.concurrency:
            for cell in CELLS:
                session: loadgen.RawSession
                if cell == "entra exchange":
                    session = RawPayloads(target, entra, ex.OK)
                elif cell == "keyvault read":
                    session = RawPayloads(
                        vault_target, [read_bytes(vault_target, bearer)], b'"value"'
                    )
                elif cell == "sts + impersonate":
                    session = ExchangeAndImpersonate(target, sts, email)
                else:
                    session = RawPayloads(target, [access_bytes(target, google)], b'"payload"')
                result = await loadgen.run_load(
                    session, conc, args.seconds, args.max_requests, args.warmup, server.pid
                )
                if server.proc.poll() is not None:
                    raise RuntimeError(f"keyless died:\n{server.tail()}")
                row = Row(cell, conc, result, loadgen.rss_mib(server.pid))
                rows.append(row)
                log(format_row(row))
                log_first_error(result.first_error)
        problems, first = server.problems()
        note = f"{problems} warning/error line(s)" + (f"; first: {first}" if first else "")
    finally:
        ex.stop_proc(server.proc)
    return {"rows": rows, "notes": [note]}


def header(args: argparse.Namespace) -> str:
    return versions_line(["cryptography", "uvicorn", "uvloop", "starlette"])


def render(data: dict[str, Any]) -> str:
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    return (
        "# keyless Google dialect: STS, impersonation and Secret Manager beside Entra and "
        "Key Vault\n\n"
        f"{meta['header']}\n\n"
        f"{run_line(meta)}\n"
        + server_line(args, "one process, SQLite, TLS with its own CA")
        + ". Client: `bench/loadgen.py` in one process on the same machine.\n"
        "- Cells (bench/gcp.py says what each request is): the Entra exchange takes the trust "
        "decision and mints one access token with one audit event; `sts + impersonate` is two "
        "requests per operation (STS: the decision over every identity trusting the issuer, "
        "a token, an audit event; generateAccessToken: the token verified, the decision again "
        "for the target, a token, an audit event), so its req/s counts pairs. The Key Vault "
        "read and `:access` are both one RBAC-checked, audited read of the same secret.\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} operations after a "
        f"{args.warmup:g} s warm-up; token pools of {args.pool:,}.\n\n"
        + table_and_log(rows, data["notes"])
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 5.0, "request", [16, 64])
    p.add_argument("--pool", type=int, default=500, help="distinct platform tokens")
    add_serve_arg(p)
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pool < 1:
        p.error("need --pool >= 1")
    check_cell_options(p, args)
