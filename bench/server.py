"""A real ``keyless serve`` process for the studies: start, set up, check, stop.

``start_server`` runs ``python -m keyless.cli.main --data-dir DIR serve --listen
127.0.0.1:PORT --dev --signing-alg ALG`` in its own process group (fresh DIR, TLS with
keyless's own CA, which the client verifies) and waits for "ready"; ``Server.cli`` drives its
admin CLI; ``setup`` registers the bench's Kubernetes issuer (uploaded JWKS), identity and
trust policy; ``sanity_check`` proves the exchange is the real thing. ``mint`` makes the
Kubernetes-format service-account tokens the studies present. Every process started here is
tracked in ``loadgen.LIVE`` and stopped by ``loadgen.stop_all`` (the studies' ``atexit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk

from . import loadgen

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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
# The keyless server process and its admin CLI.
# --------------------------------------------------------------------------------------------


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
        # Nothing balances load in front of a bench server: stopped, it stops at once.
        "KEYLESS_SHUTDOWN_DELAY": "0",
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

    def vault_target(self, vault: str) -> loadgen.Target:
        """The same server, host-routed to ``vault`` (``Host: VAULT.vault.localhost:PORT``)."""
        assert self.target is not None
        return loadgen.Target(
            HOST,
            self.port,
            self.target.tls,
            server_hostname=TLS_NAME,
            host_header=f"{vault}.vault.localhost:{self.port}",
        )

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
    loadgen.track(proc)
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
