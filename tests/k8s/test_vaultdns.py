"""Vaults reachable in-cluster without wildcard DNS, end to end: a real ``keyless serve`` shaped
as the manifests run it (public URL ``https://keyless.keyless.svc``, ``--k8s-namespace
keyless``, ``--k8s-vault-namespace keyless-vaults``, ``--k8s-trust-cluster``) against the fake
Kubernetes API; vaults made with the CLI get their Services; the real Azure SDK reads a secret
from ``https://billing.keyless-vaults.svc`` with a token of the (fake) cluster that keyless
trusted by itself at start.

The client process resolves ``*.svc`` to loopback and, as the keyless Service does (443 ->
8443), sends port 443 to the server's port: nothing else of the cluster is imitated, and TLS is
verified against keyless's CA by the names in the URLs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.k8s import vaultservices as vs
from keyless.k8s.trust import TRUST_CLUSTER_ACTOR
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import audit, cli_json, sdk_read, trusted, until
from tests.support.oidc import jwks_of, new_key, sign
from tests.support.server import RunningServer, ServerFactory, free_port

NS = "keyless-vaults"
TARGET = "keyless.keyless.svc.cluster.local"
SUBJECT = "system:serviceaccount:billing:api"
SECRET_VALUE = "in-cluster-s3cret-91b2"
KID = "cluster-key-1"


@dataclass
class Cluster:
    kube: FakeKubeApi
    key: rsa.RSAPrivateKey
    env: dict[str, str]
    factory: ServerFactory
    tmp: Path

    def start(self, public_url: str, port: int, data_dir: Path) -> RunningServer:
        return self.factory.start(
            "--public-url",
            public_url,
            "--k8s-namespace",
            "keyless",
            "--k8s-vault-namespace",
            NS,
            "--k8s-trust-cluster",
            port=port,
            data_dir=data_dir,
            env=self.env,
        )

    def token(self) -> str:
        return sign(self.key, iss=self.kube.issuer, kid=KID, sub=SUBJECT)


@pytest.fixture(scope="module")
def cluster(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("vaultdns")
    key = new_key()
    kube.jwks = jwks_of((key, KID))
    env = {"KUBECONFIG": str(kube.kubeconfig(tmp / "kubeconfig")), "HOME": str(tmp)}
    factory = ServerFactory(tmp)
    try:
        yield Cluster(kube, key, env, factory, tmp)
    finally:
        factory.stop_all()


def services(kube: FakeKubeApi) -> dict[str, Any]:
    return {o["metadata"]["name"]: o for o in kube.objects("services", NS)}


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> RunningServer:
    """keyless as the manifests configure it: the public URL on port 443 of its Service."""
    port = free_port()
    return cluster.start("https://keyless.keyless.svc", port, cluster.tmp / "data")


def read_secret(cluster: Cluster, server: RunningServer, vault_url: str, authority: str) -> str:
    """The secret, read by the real azure-identity + azure-keyvault-secrets in a process of
    its own, as a pod would: workload identity environment, keyless's CA, cluster DNS names."""
    token_file = cluster.tmp / "token"
    token_file.write_text(cluster.token())
    identity = cli_json(server, "identity", "show", "billing-api")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cluster.tmp),
        "AZURE_AUTHORITY_HOST": authority,
        "AZURE_TENANT_ID": identity["tenant_id"],
        "AZURE_CLIENT_ID": identity["client_id"],
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "REQUESTS_CA_BUNDLE": str(server.ca),
        "SSL_CERT_FILE": str(server.ca),
    }
    return sdk_read(env, server.port, vault_url, "db-password")


def test_the_cluster_is_trusted_at_start(cluster: Cluster, server: RunningServer) -> None:
    found = until("the cluster's issuer registered", lambda: trusted(server, cluster.kube.issuer))
    assert len(found) == 1
    assert found[0]["source"] == "kubernetes"
    # The event follows the registration (a moment later, from the same task).
    events = until(
        "the registration's audit event",
        lambda: [e for e in audit(server) if e["action"] == "issuer add"],
    )
    assert [(e["target"], e["actor"], e["result"]) for e in events] == [
        (cluster.kube.issuer, TRUST_CLUSTER_ACTOR, "success")
    ]


def test_vaults_get_services(cluster: Cluster, server: RunningServer) -> None:
    kube = cluster.kube
    kube.create_obj(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "not-keyless", "namespace": NS},
            "spec": {"type": "ClusterIP", "ports": [{"port": 80}]},
        }
    )
    for name in ("billing", "payroll", "1digit"):
        created = cli_json(server, "vault", "create", name)
    assert created["url"] == "https://1digit.keyless-vaults.svc"  # port 443: none in the URL
    made = until(
        "Services for billing and payroll", lambda: {"billing", "payroll"} <= set(services(kube))
    )
    for name in ("billing", "payroll"):
        svc = services(kube)[name]
        assert svc["spec"] == {"type": "ExternalName", "externalName": TARGET}
        assert svc["metadata"]["labels"] == vs.labels(name)
    assert made
    assert server.wait_for_log("not a DNS-1035 label")
    assert '"vault": "1digit"' in server.log

    # A vault deleted: its Service goes; an unlabelled Service stays.
    server.cli("vault", "delete", "payroll")
    until("payroll's Service deleted", lambda: "payroll" not in services(kube))
    assert "not-keyless" in services(kube)
    assert "1digit" not in services(kube)
    assert server.log.count("not a DNS-1035 label") == 1


def test_drift_is_repaired(cluster: Cluster, server: RunningServer) -> None:
    kube = cluster.kube
    until("billing's Service", lambda: "billing" in services(kube))
    drifted = services(kube)["billing"]
    drifted["spec"]["externalName"] = "attacker.example.com"
    kube.update_obj(drifted)
    # The next pass repairs it: the 30 s resync, or at once when the vaults change.
    cli_json(server, "vault", "create", "ops")
    until(
        "billing's Service repaired",
        lambda: services(kube)["billing"]["spec"]["externalName"] == TARGET,
    )
    assert "ops" in services(kube)
    assert "not reconciled" not in server.log  # every pass so far went through


def test_the_azure_sdk_reads_a_secret_by_its_cluster_name(
    cluster: Cluster, server: RunningServer
) -> None:
    until("the cluster trusted", lambda: trusted(server, cluster.kube.issuer))
    cli = server.cli
    cli("identity", "create", "billing-api")
    issuer = cluster.kube.issuer
    cli(
        "federation",
        "add",
        "billing-api",
        "--name",
        "k8s",
        "--issuer",
        issuer,
        "--subject",
        SUBJECT,
    )
    cli("vault", "create", "billing")  # exists already: idempotent
    cli("secret", "set", "billing", "db-password", "--value", SECRET_VALUE)
    cli("role", "assign", "billing-api", "secrets-user", "--scope", "/vaults/billing")
    value = read_secret(
        cluster, server, "https://billing.keyless-vaults.svc", "https://keyless.keyless.svc"
    )
    assert value == SECRET_VALUE
    # The SDK did the challenge dance: its token was minted for the resource the challenge
    # named, by the workload of the cluster, and the read is audited as that workload's.
    events = audit(server)
    reads = [e for e in events if e["target"].startswith("/vaults/billing/secrets/db-password")]
    assert reads and reads[-1]["result"] == "success", reads
    identity = cli_json(server, "identity", "show", "billing-api")
    assert reads[-1]["actor"] == identity["object_id"]
    assert reads[-1]["workload"]["iss"] == cluster.kube.issuer
    assert reads[-1]["workload"]["sub"] == SUBJECT


def test_a_second_start_with_a_port_in_its_public_url(
    cluster: Cluster, server: RunningServer
) -> None:
    """Started again (last: the module's server stops here), now not behind a Service's port
    443: the cluster is not trusted twice, and the port is in every URL and in the challenge's
    resource (``https://keyless-vaults.svc:PORT``), which the SDK's check still accepts."""
    until("the cluster trusted", lambda: trusted(server, cluster.kube.issuer))
    port = server.port
    assert server.stop() == 0
    public = f"https://keyless.keyless.svc:{port}"
    again = cluster.start(public, port, server.data_dir)
    try:
        assert again.wait_for_log("already registered")
        assert len(trusted(again, cluster.kube.issuer)) == 1
        assert len([e for e in audit(again) if e["action"] == "issuer add"]) == 1

        vault = f"https://billing.keyless-vaults.svc:{port}"
        assert cli_json(again, "vault", "create", "billing")["url"] == vault
        with again.client() as http:
            http.headers["host"] = f"billing.keyless-vaults.svc:{port}"
            challenge = http.get("/secrets/db-password?api-version=7.5")
        assert challenge.status_code == 401
        header = challenge.headers["www-authenticate"]
        assert f'resource="https://keyless-vaults.svc:{port}"' in header
        assert read_secret(cluster, again, vault, public) == SECRET_VALUE
    finally:
        again.stop()
