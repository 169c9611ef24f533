"""``--k8s-issue-tls`` end to end: real ``keyless serve`` processes against the fake Kubernetes
API, their listeners checked with the ssl module against the CA read from the Secret.

One keyless (two processes: ``--workers 2``; a 15-second certificate lifetime and a 1-second
re-check, through the ``KEYLESS_TEST_*`` knobs) serves the module; a second one shares its CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from keyless.k8s.selfca import Ca
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import served
from tests.k8s.webhook import ClientPki, Webhook, make_pki
from tests.support.procs import children
from tests.support.server import RunningServer, ServerFactory, free_port, keyless_cmd

NS = "keyless"
MWC = "mutatingwebhookconfigurations"
VAULT_DOMAIN = "vaults.keyless.test"
LIFETIME = 15  # seconds: re-issued every 10


@dataclass
class InCluster:
    kube: FakeKubeApi
    server: RunningServer
    webhook: Webhook
    pki: ClientPki
    tmp: Path
    factory: ServerFactory
    env: dict[str, str]

    def ca_secret(self) -> dict[str, Any]:
        secret = self.kube.get_obj("secrets", "keyless-ca", NS)
        assert secret is not None
        return secret

    def ca_pem(self) -> bytes:
        return base64.b64decode(self.ca_secret()["data"]["ca.crt"])

    def ca_file(self) -> Path:
        path = self.tmp / f"ca-{uuid.uuid4().hex}.pem"
        path.write_bytes(self.ca_pem())
        return path


def _mwc() -> dict[str, Any]:
    def hook(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "keyless", "namespace": NS, "port": 8444}},
            "sideEffects": "NoneOnDryRun",
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "keyless"},
        "webhooks": [hook("pods.keyless.dev"), hook("other.keyless.dev")],
    }


@pytest.fixture(scope="module")
def cluster(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InCluster]:
    tmp = tmp_path_factory.mktemp("selftls")
    kube.create_obj(_mwc())
    env = {"KUBECONFIG": str(kube.kubeconfig(tmp / "kubeconfig")), "HOME": str(tmp)}
    pki = make_pki(tmp / "api-server-pki")
    factory = ServerFactory(tmp)
    port, hook_port = free_port(), free_port()
    try:
        server = factory.start(
            "--k8s-issue-tls",
            "--k8s-namespace",
            NS,
            "--public-url",
            f"https://keyless.public.test:{port}",
            "--vault-domain",
            VAULT_DOMAIN,
            "--webhook-listen",
            f"127.0.0.1:{hook_port}",
            "--webhook-client-ca",
            str(pki.ca),
            "--workers",
            "2",
            port=port,
            env={
                **env,
                "KEYLESS_TEST_TLS_LIFETIME": str(LIFETIME),
                "KEYLESS_TEST_TLS_RECHECK": "1",
            },
        )
        yield InCluster(kube, server, Webhook(server, hook_port, pki), pki, tmp, factory, env)
    finally:
        factory.stop_all()


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in ext.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def eventually(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def review(namespace: str, client_id: str, *, dry_run: bool = False) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "app-",
            "namespace": namespace,
            "labels": {"azure.workload.identity/use": "true"},
            "annotations": {"keyless.dev/client-id": client_id},
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": pod,
            "dryRun": dry_run,
        },
    }


@pytest.fixture(scope="module")
def client_id(cluster: InCluster) -> str:
    out = cluster.server.cli("identity", "create", "billing-app", "--output", "json").stdout
    return str(json.loads(out)["client_id"])


def posts_of(kube: FakeKubeApi, namespace: str) -> int:
    return kube.requests.count(f"POST /api/v1/namespaces/{namespace}/configmaps")


# -- start: the CA, the certificate, the webhook configuration, the CA ConfigMap -----------------


def test_the_ca_is_made_in_the_cluster_and_never_written_to_disk(cluster: InCluster) -> None:
    secret = cluster.ca_secret()
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "keyless"}
    ca = Ca.from_secret(secret)  # a CA certificate with its own key
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # keyless ca / the issuer fetcher read DATA_DIR/tls/ca.pem: the in-cluster CA
    assert cluster.server.ca.read_bytes() == ca.pem
    key_pem = base64.b64decode(secret["data"]["ca.key"])
    files = [p for p in cluster.server.data_dir.rglob("*") if p.is_file()]
    assert files and not any(key_pem in p.read_bytes() for p in files)
    assert not (cluster.server.data_dir / "tls" / "ca-key.pem").exists()


def test_both_listeners_serve_a_certificate_of_that_ca(cluster: InCluster) -> None:
    ca = cluster.ca_file()
    expected = {
        "keyless",
        "keyless.keyless",
        "keyless.keyless.svc",
        "keyless.keyless.svc.cluster.local",
        "keyless.public.test",
        VAULT_DOMAIN,
        f"*.{VAULT_DOMAIN}",
        "localhost",
        "127.0.0.1",
        "::1",
    }
    public = served(cluster.server.port, "keyless.public.test", ca)
    assert sans(public) == expected
    # the API server calls the webhook at SERVICE.NAMESPACE.svc, with its client certificate
    hook = served(cluster.webhook.port, "keyless.keyless.svc", ca, cluster.pki)
    assert sans(hook) == expected
    # and the vault names verify too (a real HTTPS client, the CA from the Secret)
    vault = served(cluster.server.port, f"billing.{VAULT_DOMAIN}", ca)
    assert vault.issuer == Ca.from_secret(cluster.ca_secret()).cert.subject


def test_every_webhook_gets_the_ca_bundle_and_keeps_it(cluster: InCluster) -> None:
    bundle = base64.b64encode(cluster.ca_pem()).decode()

    def bundles() -> list[str | None]:
        mwc = cluster.kube.get_obj(MWC, "keyless")
        assert mwc is not None
        return [w["clientConfig"].get("caBundle") for w in mwc["webhooks"]]

    assert bundles() == [bundle, bundle]
    # someone re-applies the manifests, without the caBundle: it is put back
    blanked = _mwc()
    current = cluster.kube.get_obj(MWC, "keyless")
    assert current is not None
    blanked["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    cluster.kube.update_obj(blanked, MWC)
    assert bundles() == [None, None]
    assert eventually(lambda: bundles() == [bundle, bundle])


def test_the_ca_configmap_is_published_in_keyless_namespace(cluster: InCluster) -> None:
    cm = cluster.kube.get_obj("configmaps", "keyless-ca", NS)
    assert cm is not None
    assert cm["data"]["ca.crt"] == cluster.ca_pem().decode()
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "keyless"}


# -- admission: the CA ConfigMap in the pod's namespace -------------------------------------------


def test_a_namespace_first_pod_gets_the_ca_configmap_made(
    cluster: InCluster, client_id: str
) -> None:
    answer = cluster.webhook.post(review("billing", client_id)).json()["response"]
    assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    cm = cluster.kube.get_obj("configmaps", "keyless-ca", "billing")
    assert cm is not None
    assert cm["data"]["ca.crt"] == cluster.ca_pem().decode()
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "keyless"}
    # the next pods of the namespace cost no API call
    for _ in range(3):
        assert cluster.webhook.post(review("billing", client_id)).json()["response"]["allowed"]
    assert posts_of(cluster.kube, "billing") == 1


def test_a_dry_run_makes_nothing(cluster: InCluster, client_id: str) -> None:
    answer = cluster.webhook.post(review("dry", client_id, dry_run=True)).json()["response"]
    assert answer["allowed"] is True
    assert cluster.kube.get_obj("configmaps", "keyless-ca", "dry") is None
    assert posts_of(cluster.kube, "dry") == 0


def test_without_create_rights_only_a_pod_whose_configmap_exists_is_admitted(
    cluster: InCluster, client_id: str
) -> None:
    cluster.kube.create_obj(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "keyless-ca", "namespace": "legacy"},
            "data": {"ca.crt": "an operator's copy"},
        }
    )
    cluster.kube.deny.add(("POST", "configmaps"))
    try:
        legacy = cluster.webhook.post(review("legacy", client_id)).json()["response"]
        locked = cluster.webhook.post(review("locked", client_id)).json()["response"]
    finally:
        cluster.kube.deny.discard(("POST", "configmaps"))
    assert legacy["allowed"] is True  # it can mount the ConfigMap that is there
    assert locked["allowed"] is False  # it could never start: refused, saying why
    assert locked["status"]["message"] == (
        "the pod mounts ConfigMap locked/keyless-ca (keyless's CA), which keyless cannot "
        "create: the Kubernetes API answered 403 Forbidden (grant create on configmaps)"
    )
    # once allowed again, the next pod of the namespace gets it made
    assert cluster.webhook.post(review("locked", client_id)).json()["response"]["allowed"]
    assert cluster.kube.get_obj("configmaps", "keyless-ca", "locked") is not None


# -- replicas, rotation, a new CA -----------------------------------------------------------------


def test_a_second_server_uses_the_same_ca(cluster: InCluster) -> None:
    second = cluster.factory.start("--k8s-issue-tls", "--k8s-namespace", NS, env=cluster.env)
    try:
        assert len(cluster.kube.objects("secrets", NS)) == 1
        assert second.ca.read_bytes() == cluster.ca_pem()
        cert = served(second.port, "keyless.keyless.svc", cluster.ca_file())
        assert "keyless.keyless.svc" in sans(cert)
    finally:
        second.stop()


def test_the_served_certificate_is_rotated_without_a_restart(cluster: InCluster) -> None:
    ca, port = cluster.ca_file(), cluster.server.port
    serving = cluster.server.data_dir / "tls" / "k8s-serving.pem"

    def on_disk() -> int:
        return x509.load_pem_x509_certificate(serving.read_bytes()).serial_number

    workers = children(cluster.server.proc.pid)
    assert len(workers) == 1  # the parent and one worker serve the port
    first = on_disk()
    lifetime = x509.load_pem_x509_certificate(serving.read_bytes())
    assert lifetime.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=LIFETIME)
    assert eventually(lambda: on_disk() != first, timeout=LIFETIME)
    second = on_disk()

    def every_process_serves_it() -> bool:  # 12 connections reach both processes
        return {served(port, "localhost", ca).serial_number for _ in range(12)} == {second}

    assert eventually(every_process_serves_it, timeout=8)
    assert cluster.server.proc.poll() is None  # the same processes
    assert children(cluster.server.proc.pid) == workers


def test_a_new_ca_in_the_secret_is_adopted_everywhere(cluster: InCluster) -> None:
    """Last: it changes the module's CA. An operator puts another CA in the Secret."""
    new = Ca.generate(dt.datetime.now(dt.UTC))
    secret = new.secret(NS)
    secret["metadata"]["resourceVersion"] = cluster.ca_secret()["metadata"]["resourceVersion"]
    cluster.kube.update_obj(secret, "secrets")

    def managed() -> list[str]:
        return [
            cm["data"]["ca.crt"]
            for cm in cluster.kube.objects("configmaps")
            if cm["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "keyless"
        ]

    pem = new.pem.decode()
    assert eventually(lambda: set(managed()) == {pem})
    assert len(managed()) == 3  # keyless, billing, locked ("legacy" is not keyless's)
    mwc = cluster.kube.get_obj(MWC, "keyless")
    assert mwc is not None
    assert {w["clientConfig"]["caBundle"] for w in mwc["webhooks"]} == {new.bundle}
    assert cluster.server.ca.read_bytes() == new.pem
    ca = cluster.ca_file()  # the new one

    def verifies() -> bool:  # every process, once it has reloaded
        try:
            return all(served(cluster.server.port, "localhost", ca) for _ in range(12))
        except ssl.SSLCertVerificationError:
            return False

    assert eventually(verifies)


# -- failures at start: one line ------------------------------------------------------------------


def test_a_forbidden_secret_stops_keyless_with_one_line(tmp_path: Path) -> None:
    kube = FakeKubeApi().start()
    kube.deny.add(("POST", "secrets"))
    try:
        done = subprocess.run(
            [
                *keyless_cmd(),
                "--data-dir",
                str(tmp_path / "data"),
                "serve",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--k8s-issue-tls",
                "--k8s-namespace",
                NS,
            ],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")},
                "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
                "HOME": str(tmp_path),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        kube.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "keyless: error: --k8s-issue-tls: cannot create Secret keyless/keyless-ca: the "
        "Kubernetes API answered 403 Forbidden (grant create on secrets)"
    ]
    assert "ready" not in done.stdout
