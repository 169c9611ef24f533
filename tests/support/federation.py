"""A running keyless with a dev cluster, a test issuer whose key the tests hold, and identities."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk
from tests.support.oidc import AUDIENCE as AUDIENCE  # re-exported for the tests
from tests.support.oidc import SUBJECT, sign
from tests.support.server import RunningServer

TEST_ISSUER = "https://issuer.test/clusters/a"
TEST_KID = "test-key-1"


@dataclass
class Federated:
    server: RunningServer
    tenant_id: str
    client_id: str
    object_id: str
    dev_issuer: str
    key: rsa.RSAPrivateKey
    tmp: Path
    clients: dict[str, str] = field(default_factory=dict)

    @property
    def token_url(self) -> str:
        return f"{self.server.url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def vault_scope(self) -> str:
        return f"https://vault.localhost:{self.server.port}/.default"

    def dev_token(self, *args: str) -> str:
        return self.server.cli(
            "dev",
            "token",
            "--namespace",
            "demo",
            "--service-account",
            "app",
            "--pod",
            "app-7d9f",
            *args,
        ).stdout.strip()

    def token_file(self, token: str) -> Path:
        path = self.tmp / f"token-{uuid.uuid4().hex[:8]}"
        path.write_text(token)
        return path

    def test_token(
        self,
        *,
        header: dict[str, Any] | None = None,
        key: Any = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        """A token of TEST_ISSUER; ``claims`` override (None removes a claim)."""
        return sign(
            key or self.key,
            iss=claims.pop("iss", TEST_ISSUER),
            kid=TEST_KID,
            alg=alg,
            header=header,
            **claims,
        )

    def exchange(
        self,
        assertion: str,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        **extra: str,
    ) -> httpx.Response:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": client_id or self.client_id,
            "client_assertion": assertion,
            "scope": scope or self.vault_scope,
            **extra,
        }
        with self.server.client() as http:
            return http.post(f"/{self.tenant_id}/oauth2/v2.0/token", data=form)

    def jwks(self) -> dict[str, Any]:
        with self.server.client() as http:
            return http.get(f"/{self.tenant_id}/discovery/v2.0/keys").json()


def federate(server: RunningServer, tmp: Path, *, dev_cluster: bool = True) -> Federated:
    """Register the dev cluster and the test issuer; identity ``app`` trusts both (only the
    test issuer without ``dev_cluster``: a server whose public URL is not its own address,
    behind a load balancer, could not fetch its dev cluster's keys from its own URL)."""
    cli = server.cli
    tenant = json.loads(cli("--output", "json", "tenant", "show").stdout)
    ident = json.loads(cli("--output", "json", "identity", "create", "app").stdout)
    dev_issuer = f"{server.url}/dev/clusters/dev"
    if dev_cluster:
        cli("dev", "token", "--namespace", "demo", "--service-account", "app")  # makes cluster
        cli("issuer", "add", dev_issuer)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key.public_key(), TEST_KID, "RS256")]}))
    cli("issuer", "add", TEST_ISSUER, "--jwks-file", str(jwks))
    if dev_cluster:
        cli(
            "federation",
            "add",
            "app",
            "--name",
            "dev-demo",
            "--issuer",
            dev_issuer,
            "--subject",
            SUBJECT,
        )
    cli(
        "federation",
        "add",
        "app",
        "--name",
        "test-demo",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        SUBJECT,
    )
    return Federated(
        server, tenant["id"], ident["client_id"], ident["object_id"], dev_issuer, key, tmp
    )
