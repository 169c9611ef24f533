"""AWS dialect benchmark: AssumeRoleWithWebIdentity and GetSecretValue next to the Entra
exchange and the Key Vault read, on one real ``keyless serve``, in the same run.

One server (``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev``,
fresh temporary DIR, SQLite, TLS with keyless's own CA, which the client verifies), set up
through the admin CLI as ``bench/read.py`` sets it up: an issuer with an uploaded JWKS, identity
``bench-app`` trusting ``system:serviceaccount:bench:app`` with the Entra audience and (a second
federated credential) with ``sts.amazonaws.com``, vault ``bench`` holding one 64-byte secret,
``secrets-user`` on ``/vaults/bench``. For each concurrency, four cells, one after the other:

* ``entra exchange``: ``POST /{tenant}/oauth2/v2.0/token`` (client assertion = a Kubernetes
  projected token of the bench issuer, a pool of ``--pool`` distinct ones); success = 200 with
  ``"access_token"``;
* ``keyvault read``: ``GET /secrets/NAME`` with one access token, host-routed to the vault;
  success = 200 with ``"value"``;
* ``sts assume-role``: ``POST /aws/sts/`` ``Action=AssumeRoleWithWebIdentity`` as botocore
  sends it (form, unsigned, ``RoleArn`` of the identity, a pool of ``--pool`` distinct tokens
  with audience ``sts.amazonaws.com``); success = 200 with ``<AccessKeyId>``;
* ``secretsmanager get``: ``POST /aws/secretsmanager/`` ``X-Amz-Target:
  secretsmanager.GetSecretValue``, SigV4-signed by botocore's own signer with one session's
  credentials (as an SDK client reuses them), ``--pool`` requests signed just before the cell
  (a signature is good for 5 minutes; keyless verifies each one in full); success = 200 with
  ``"SecretString"``.

Every cell: ``--seconds`` or ``--max-requests`` after a bounded warm-up, driven by
``bench/loadgen.py`` (keep-alive HTTP/1.1 over TLS, in this process). Server CPU from /proc.

Usage (from the repo root)::

    .venv/bin/python -m bench aws                      # defaults: ~1 minute
    .venv/bin/python -m bench aws --seconds 3 --concurrency 16

Results: ``bench/results/aws.json``, rendered to ``bench/results/aws.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core import awsnames

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

NAME = "aws"
CELLS = ("entra exchange", "keyvault read", "sts assume-role", "secretsmanager get")
_ACCESS_KEY = re.compile(rb"<AccessKeyId>([^<]+)</AccessKeyId>")
_SECRET_KEY = re.compile(rb"<SecretAccessKey>([^<]+)</SecretAccessKey>")
_SESSION = re.compile(rb"<SessionToken>([^<]+)</SessionToken>")


def assume_req(role_arn: str, token: str) -> loadgen.Req:
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleSessionName": "bench",
        "RoleArn": role_arn,
        "WebIdentityToken": token,
    }
    return loadgen.Req(
        "POST", awsnames.STS_PATH + "/", urlencode(form).encode(),
        "application/x-www-form-urlencoded; charset=utf-8",
    )  # fmt: skip


def signed_get(target: loadgen.Target, creds: tuple[str, str, str]) -> bytes:
    """GetSecretValue as botocore signs it (its own SigV4Auth, its signed headers)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json.dumps({"SecretId": f"{VAULT}/{SECRET}"}).encode()
    url = f"https://{target.authority}{awsnames.SECRETS_MANAGER_PATH}/"
    req = AWSRequest(
        "POST",
        url,
        data=body,
        headers={
            "X-Amz-Target": "secretsmanager.GetSecretValue",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    SigV4Auth(Credentials(*creds), "secretsmanager", awsnames.DEFAULT_REGION).add_auth(req)
    # botocore signs the URL's host but leaves the header to its HTTP client.
    head = f"POST {awsnames.SECRETS_MANAGER_PATH}/ HTTP/1.1\r\nHost: {target.authority}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = await ex.start_server("RS256", tmp, "aws", list(args.serve_arg))
    try:
        ex.setup(server, tmp, key)
        server.cli(
            "federation", "add", ex.APP_IDENTITY, "--name", "aws", "--issuer", ex.ISSUER,
            "--subject", ex.APP_SUBJECT, "--audience", awsnames.STS_AUDIENCE,
        )  # fmt: skip
        server.cli("vault", "create", VAULT)
        server.cli("secret", "set", VAULT, SECRET, "--value", "v" * 64)
        server.cli(
            "role", "assign", ex.APP_IDENTITY, "secrets-user", "--scope", f"/vaults/{VAULT}"
        )  # fmt: skip
        assert server.target is not None
        target, vault_target = server.target, server.vault_target(VAULT)
        role = awsnames.role_arn(server.tenant_id, ex.APP_IDENTITY)
        now = int(time.time())
        entra = [
            loadgen.raw_bytes(server.exchange_req(t), target)
            for t in ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
        ]
        sts = [
            loadgen.raw_bytes(assume_req(role, mint_for(key, now, awsnames.STS_AUDIENCE)), target)
            for _ in range(args.pool)
        ]
        status, body = await server.exchange_once(ex.mint(key, ex.APP_SUBJECT, now))
        if status != 200:
            raise RuntimeError(f"exchange failed: HTTP {status}: {body[:300]!r}")
        bearer = json.loads(body)["access_token"]
        status, body = await once(target, sts[0])
        if status != 200:
            raise RuntimeError(f"AssumeRoleWithWebIdentity failed: HTTP {status}: {body[:300]!r}")
        found = [p.search(body) for p in (_ACCESS_KEY, _SECRET_KEY, _SESSION)]
        if not all(found):
            raise RuntimeError(f"no credentials in the STS answer: {body[:300]!r}")
        akid, secret, token = (m.group(1).decode() for m in found if m is not None)
        creds = (akid, secret, token)
        status, body = await once(target, signed_get(target, creds))
        if status != 200 or b'"SecretString"' not in body:
            raise RuntimeError(f"GetSecretValue failed: HTTP {status}: {body[:300]!r}")
        rows: list[Row] = []
        for conc in args.concurrency:
            for cell in CELLS:
                if cell == "entra exchange":
                    session = RawPayloads(target, entra, ex.OK)
                elif cell == "keyvault read":
                    session = RawPayloads(
                        vault_target, [read_bytes(vault_target, bearer)], b'"value"'
                    )
                elif cell == "sts assume-role":
                    session = RawPayloads(target, sts, b"<AccessKeyId>")
                else:
                    signed = [signed_get(target, creds) for _ in range(args.pool)]
                    session = RawPayloads(target, signed, b'"SecretString"')
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
    return versions_line(["cryptography", "uvicorn", "uvloop", "starlette", "botocore"])


def render(data: dict[str, Any]) -> str:
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    return (
        "# keyless AWS dialect: STS and Secrets Manager beside Entra and Key Vault\n\n"
        f"{meta['header']}\n\n"
        f"{run_line(meta)}\n"
        + server_line(args, "one process, SQLite, TLS with its own CA")
        + ". Client: `bench/loadgen.py` in one process on the same machine.\n"
        "- Cells (bench/aws.py says what each request is): the Entra exchange and the "
        "AssumeRoleWithWebIdentity both take the same trust decision and mint one access token "
        "with one audit event; the Key Vault read and GetSecretValue are both one RBAC-checked, "
        "audited read of the same secret, the latter SigV4-verified (session token verified as "
        "an access token, key id and secret recomputed, signature checked).\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} requests after a "
        f"{args.warmup:g} s warm-up; token pools of {args.pool:,}.\n\n"
        + table_and_log(rows, data["notes"])
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 5.0, "request", [16, 64])
    p.add_argument("--pool", type=int, default=500, help="distinct tokens / signed requests")
    add_serve_arg(p)
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pool < 1:
        p.error("need --pool >= 1")
    check_cell_options(p, args)
