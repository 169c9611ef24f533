"""The Vault-API rows of the OpenBao comparison: the same login and KV v2 read, byte for byte.

keyless's Vault dialect and OpenBao are sent requests built here, by the same functions, from
the same inputs, by the same client (``bench/loadgen.py``):

* ``vault-login``: ``PUT /v1/auth/jwt/login`` with the body ``{"role":"bench","jwt":"<k8s
  token>"}`` (compact JSON; the tokens come from the bench's one pre-minted pool, in the same
  order for every system), ``Content-Type: application/json``;
* ``vault-read``: ``GET /v1/secret/data/app/db`` with ``X-Vault-Token`` (the token one such
  login returned on that system).

Both requests also carry ``Host: localhost:PORT`` (SNI ``localhost``, connection to 127.0.0.1)
and ``X-Vault-Request: true``, as Vault's Go client sends. What differs between the systems is
the Host header's port and, in the read, the value of ``X-Vault-Token``: each system's own token,
issued by the identical login request (OpenBao's a random ``s.``/``b.`` string, keyless's a
signed JWT, so the header's length differs too). ``same_but_port_and_token`` says exactly that
and the bench's tests hold it.

The role is the same name on both: on keyless an identity ``bench`` with a federated credential
for the bench's issuer, subject and audience and ``secrets-user`` on the vault ``secret`` that
holds ``app/db``; on OpenBao a JWT role ``bench`` bound to the same issuer key, subject and
audience, with the policy that reads ``secret/data/app/*`` (KV v2 mount ``secret``). The value
is the same 100-byte string on both, which both answer as ``data.data = {"value": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from pathlib import Path
from typing import Any

from . import loadgen
from . import server as ex

ROLE = "bench"  # OpenBao's JWT role and keyless's identity
MOUNT = "secret"  # OpenBao's KV v2 mount and keyless's vault
SECRET_PATH = "app/db"
LOGIN_METHOD = "PUT"
LOGIN_PATH = "/v1/auth/jwt/login"
READ_PATH = f"/v1/{MOUNT}/data/{SECRET_PATH}"
LOGIN_OK = b'"client_token"'
WORKLOADS = ("vault-read", "vault-login")
CONCURRENCY = (16, 64)  # the issue's targets are at these two


def target(port: int, tls: ssl.SSLContext) -> loadgen.Target:
    """Where both systems' Vault-API requests go: 127.0.0.1:PORT, SNI and Host ``localhost``."""
    return loadgen.Target(
        ex.HOST, port, tls, server_hostname=ex.TLS_NAME, host_header=f"{ex.TLS_NAME}:{port}"
    )


def login_body(k8s_token: str) -> bytes:
    return json.dumps({"role": ROLE, "jwt": k8s_token}, separators=(",", ":")).encode()


def login_bytes(to: loadgen.Target, k8s_token: str) -> bytes:
    """One Vault JWT login, on the wire."""
    body = login_body(k8s_token)
    head = (
        f"{LOGIN_METHOD} {LOGIN_PATH} HTTP/1.1\r\nHost: {to.authority}\r\n"
        "X-Vault-Request: true\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_bytes(to: loadgen.Target, client_token: str) -> bytes:
    """One KV v2 read of ``secret/app/db`` with a login's client token, on the wire."""
    return (
        f"GET {READ_PATH} HTTP/1.1\r\nHost: {to.authority}\r\n"
        f"X-Vault-Request: true\r\nX-Vault-Token: {client_token}\r\n\r\n"
    ).encode()


_HOST_PORT = re.compile(rb"(\r\nHost: [^:\r\n]+:)\d+\r\n")
_TOKEN = re.compile(rb"(\r\nX-Vault-Token: )[^\r\n]*\r\n")


def same_but_port_and_token(a: bytes, b: bytes) -> bool:
    """Whether two requests are the same bytes once the Host header's port and the value of
    X-Vault-Token are masked (each at most once, as built here)."""

    def mask(raw: bytes) -> bytes:
        raw, n = _HOST_PORT.subn(rb"\1PORT\r\n", raw)
        raw = _TOKEN.sub(rb"\1TOKEN\r\n", raw)
        return raw if n == 1 else b"(no Host with a port)"

    return mask(a) == mask(b)


def read_ok(value: str) -> bytes:
    """What a successful read's body contains: the value, as a JSON string."""
    return json.dumps(value).encode()


def client_token(status: int, body: bytes) -> str:
    """The ``auth.client_token`` of a successful login, or RuntimeError with what came back."""
    if status != 200:
        raise RuntimeError(f"Vault-API login: HTTP {status}: {body[:500]!r}")
    token = json.loads(body)["auth"]["client_token"]
    if not isinstance(token, str) or not token:
        raise RuntimeError(f"Vault-API login: no client_token in {body[:500]!r}")
    return token


# --------------------------------------------------------------------------------------------
# Set-up of each system and the checks both must pass before they are measured.
# --------------------------------------------------------------------------------------------


def setup_keyless(server: ex.Server, value_file: Path) -> None:
    """Through keyless's admin CLI (the bench's issuer is already registered): the identity
    named like OpenBao's role, its trust policy, the vault ``secret`` and ``app/db`` in it."""
    server.cli("identity", "create", ROLE)
    server.cli(
        "federation", "add", ROLE, "--name", "bench-vault", "--issuer", ex.ISSUER,
        "--subject", ex.APP_SUBJECT, "--audience", ex.AUDIENCE,
    )  # fmt: skip
    server.cli("vault", "create", MOUNT)
    server.cli("role", "assign", ROLE, "secrets-user", "--scope", f"/vaults/{MOUNT}")
    server.cli("secret", "set", MOUNT, SECRET_PATH, "--file", str(value_file))


def openbao_role(token_type: str, policy: str) -> dict[str, Any]:
    """OpenBao's JWT role: the bench's subject and audience, one policy, 1 h tokens."""
    return {
        "role_type": "jwt",
        "bound_audiences": [ex.AUDIENCE],
        "bound_subject": ex.APP_SUBJECT,
        "bound_claims_type": "string",
        "user_claim": "sub",
        "token_policies": [policy],
        "token_ttl": "1h",
        "token_type": token_type,
    }


async def fetch(to: loadgen.Target, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = await loadgen.RawConn.open(to)
    try:
        return await asyncio.wait_for(conn.request(raw), timeout)
    finally:
        await conn.close()


async def sanity_check(
    name: str, to: loadgen.Target, k8s_token: str, wrong_audience: str, value: str
) -> str:
    """The same checks on either system: the login answers a client token that reads the
    value as ``data.data.value``; a token for another audience cannot log in; a made-up
    client token cannot read. Returns the client token the ``vault-read`` cells reuse."""
    token = client_token(*await fetch(to, login_bytes(to, k8s_token)))
    status, body = await fetch(to, read_bytes(to, token))
    data = json.loads(body) if status == 200 else {}
    if data.get("data", {}).get("data") != {"value": value}:
        raise RuntimeError(f"{name} Vault-API read: HTTP {status}: {body[:500]!r}")
    status, body = await fetch(to, login_bytes(to, wrong_audience))
    if status == 200:
        raise RuntimeError(f"{name} Vault-API login accepted a token for another audience")
    status, body = await fetch(to, read_bytes(to, "s.not-a-token-of-this-system"))
    if status not in (400, 401, 403):
        raise RuntimeError(f"{name} Vault-API read with a made-up token: HTTP {status}")
    return token
