"""Configure tenants of a running keyless through its admin socket, and call its public edge.

The CLI is the supported way to do this and is tested on its own; tests that set up dozens of
issuers and identities go through the admin API directly (one request instead of one Python
process per step). Every call fails the test with the server's answer when it is not 2xx.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.oidc import SUBJECT
from tests.support.server import RunningServer

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Admin:
    def __init__(self, server: RunningServer) -> None:
        self.server = server

    def call(self, method: str, path: str, *, tenant: str | None = None, body: Any = None) -> Any:
        params = {"tenant": tenant} if tenant else None
        with self.server.admin() as admin:
            response = admin.request(method, path, params=params, json=body)
        if response.status_code >= 300:
            raise AssertionError(
                f"{method} {path} ({tenant}): {response.status_code} {response.text}"
            )
        return response.json()

    def create_tenant(self, alias: str) -> str:
        """``keyless tenant create`` (the CLI, as an operator would); returns the tenant id."""
        out = self.server.cli("--output", "json", "tenant", "create", alias).stdout
        return str(json.loads(out)["id"])

    def add_issuer(self, tenant: str, url: str, jwks: dict[str, Any] | None = None) -> Any:
        """Trust ``url`` in ``tenant``: by discovery, or (again: replace) with an uploaded JWKS."""
        body: dict[str, Any] = {"url": url}
        if jwks is not None:
            body["jwks"] = jwks
        return self.call("POST", "/v1/issuers", tenant=tenant, body=body)

    def issuers(self, tenant: str) -> dict[str, Any]:
        """The tenant's issuers by URL, each with the kids keyless holds for it."""
        return {i["url"]: i for i in self.call("GET", "/v1/issuers", tenant=tenant)}

    def remove_issuer(self, tenant: str, url: str) -> None:
        self.call("POST", "/v1/issuers/remove", tenant=tenant, body={"url": url})

    def create_identity(self, tenant: str, name: str) -> dict[str, str]:
        return dict(self.call("POST", "/v1/identities", tenant=tenant, body={"name": name}))

    def trust(
        self, tenant: str, identity: str, credential: str, issuer: str, subject: str = SUBJECT
    ) -> None:
        body = {"name": credential, "issuer": issuer, "subject": subject}
        self.call(
            "POST", f"/v1/identities/{identity}/federated-credentials", tenant=tenant, body=body
        )

    def untrust(self, tenant: str, identity: str, credential: str) -> None:
        path = f"/v1/identities/{identity}/federated-credentials/{credential}"
        self.call("DELETE", path, tenant=tenant)

    def create_vault(self, tenant: str, name: str) -> None:
        self.call("POST", "/v1/vaults", tenant=tenant, body={"name": name})

    def set_secret(self, tenant: str, vault: str, name: str, value: str) -> None:
        path = f"/v1/vaults/{vault}/secrets/{name}"
        self.call("PUT", path, tenant=tenant, body={"value": value})

    def assign(self, tenant: str, identity: str, role: str, scope: str) -> None:
        body = {"identity": identity, "role": role, "scope": scope}
        self.call("POST", "/v1/roles", tenant=tenant, body=body)

    def rotate_keys(self, tenant: str) -> None:
        self.call("POST", f"/v1/tenants/{tenant}/keys/rotate")


def token_form(client_id: str, assertion: str, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_id": client_id,
        "client_assertion": assertion,
        "scope": scope,
    }


def exchange(
    http: httpx.Client, tenant: str, client_id: str, assertion: str, scope: str
) -> httpx.Response:
    """POST the Entra token endpoint of ``tenant`` (client credentials, JWT bearer)."""
    return http.post(f"/{tenant}/oauth2/v2.0/token", data=token_form(client_id, assertion, scope))


def vault_scope(server: RunningServer) -> str:
    """The Key Vault scope of a server whose public URL is its own listener."""
    return f"https://vault.localhost:{server.port}/.default"
