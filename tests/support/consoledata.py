"""The console's data set: a dev keyless with issuers, identities, trust policies, vaults,
secrets, role assignments and audit events of accepted and refused exchanges, made through
the real CLI and token endpoint (what `keyless demo` builds, with more of each)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.support.server import RunningServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# identity -> (namespace, service account) its trust policy names
WORKLOADS = {
    "billing-api": ("billing", "api"),
    "reports-worker": ("reports", "worker"),
    "payments": ("payments", "ledger"),
}
VAULTS = {
    "billing": {"db-password": "billing-db-pass-1", "stripe-key": "sk_test_billing"},
    "reports": {"s3-key": "reports-s3-secret"},
    "payments": {"ledger-key": "ledger-signing-key"},
}
ROLES = [
    ("billing-api", "Key Vault Secrets User", "/vaults/billing"),
    ("reports-worker", "Key Vault Secrets User", "/vaults/reports"),
    ("payments", "Key Vault Secrets Officer", "/vaults/payments"),
]


@dataclass
class ConsoleData:
    server: RunningServer
    tenant_id: str
    dev_issuer: str
    clients: dict[str, str]  # identity -> client id

    def dev_token(self, namespace: str, service_account: str, pod: str = "pod-1") -> str:
        return self.server.cli(
            "dev",
            "token",
            "--namespace",
            namespace,
            "--service-account",
            service_account,
            "--pod",
            pod,
        ).stdout.strip()

    def exchange(self, identity: str, token: str) -> int:
        """The Entra token endpoint's status for ``token`` presented as ``identity``."""
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_id": self.clients[identity],
            "client_assertion": token,
            "scope": f"https://vault.localhost:{self.server.port}/.default",
        }
        with self.server.client() as http:
            return http.post(f"/{self.tenant_id}/oauth2/v2.0/token", data=form).status_code


def seed(server: RunningServer) -> ConsoleData:
    cli = server.cli
    tenant = json.loads(cli("--output", "json", "tenant", "show").stdout)
    dev_issuer = f"{server.url}/dev/clusters/dev"
    cli("dev", "token", "--namespace", "demo", "--service-account", "app")  # makes the cluster
    cli("issuer", "add", dev_issuer)
    clients: dict[str, str] = {}
    for identity, (ns, sa) in WORKLOADS.items():
        made = json.loads(cli("--output", "json", "identity", "create", identity).stdout)
        clients[identity] = made["client_id"]
        cli(
            "federation",
            "add",
            identity,
            "--name",
            f"{ns}-pods",
            "--issuer",
            dev_issuer,
            "--subject",
            f"system:serviceaccount:{ns}:{sa}",
        )
    cli(
        "federation",
        "add",
        "reports-worker",
        "--name",
        "reports-cron",
        "--issuer",
        dev_issuer,
        "--subject-pattern",
        "system:serviceaccount:reports:cron-*",
    )
    cli("identity", "create", "ci-deployer")  # an identity nothing can act as yet
    for vault, secrets in VAULTS.items():
        cli("vault", "create", vault)
        for name, value in secrets.items():
            cli("secret", "set", vault, name, "--value", value)
    for identity, role, scope in ROLES:
        cli("role", "assign", identity, role, "--scope", scope)
    data = ConsoleData(server, tenant["id"], dev_issuer, clients)
    for identity, (ns, sa) in WORKLOADS.items():
        status = data.exchange(identity, data.dev_token(ns, sa, f"{sa}-7d9f"))
        assert status == 200, f"{identity}'s exchange answered {status}"
    refused = data.exchange("billing-api", data.dev_token("billing", "intruder", "intruder-1"))
    assert refused == 401, f"the intruder's exchange answered {refused}"
    return data
