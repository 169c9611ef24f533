"""Restart on change end to end: a real ``keyless serve --k8s-restart-on-change`` whose
kubeconfig points at the fake Kubernetes API (tests/k8s/fakeapi.py), Deployments and a
StatefulSet annotated there, secrets changed with ``keyless secret set`` and the real
azure-keyvault-secrets client, the workloads' patches read back from the fake.

The tests run in order on one server (each builds on the state the one before left); the
server is restarted once, on the same data directory.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

from keyless.k8s import manifests
from keyless.k8s.restarts import LEASE
from keyless.localresolve import resolving
from tests.k8s import rbac
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import audit, start_in_cluster, until
from tests.k8s.workloads import (
    a_round_later,
    make,
    patches,
    recorded,
    restarted_at,
    restarts,
    version,
    workload,
)
from tests.support.federation import federate
from tests.support.server import RunningServer, ServerFactory

NAMESPACE = "keyless"
BEFORE_EXPIRY = 8  # --k8s-restart-before-expiry, seconds
PROBE = "app/probe"  # what a_round_later's workloads consume: never changed
VALUES: list[str] = []  # every secret value written here: none may reach a log or an event


def value() -> str:
    VALUES.append(f"never-logged-{secrets.token_hex(8)}")
    return VALUES[-1]


@dataclass
class Cluster:
    kube: FakeKubeApi
    factory: ServerFactory
    home: Path
    server: RunningServer

    def restart(self) -> None:
        self.server.stop()
        self.server = start_server(self.factory, self.kube, self.home)


def start_server(factory: ServerFactory, kube: FakeKubeApi, home: Path) -> RunningServer:
    return start_in_cluster(
        factory,
        kube,
        home,
        "--k8s-restart-on-change",
        "--k8s-namespace",
        NAMESPACE,
        "--k8s-restart-before-expiry",
        f"{BEFORE_EXPIRY}s",
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("restart")
    kube = FakeKubeApi().start()
    factory = ServerFactory(tmp)
    try:
        server = start_server(factory, kube, tmp / "a")
        server.cli("vault", "create", "app")
        for name in ("db-password", "other", "probe"):
            server.cli("secret", "set", "app", name, "--value", value())
        yield Cluster(kube, factory, tmp / "a", server)
    finally:
        factory.stop_all()
        kube.stop()


CONSUMERS = ("api", "db", "worker")  # each consumes app/db-password, each its own way


def test_annotated_workloads_are_recorded_without_a_restart(cluster: Cluster) -> None:
    kube = cluster.kube
    make(kube, workload("api", "app/db-password"))
    make(
        kube,
        workload(
            "db",
            "true",
            {"keyless.dev/inject-secret-db.env": "app/db-password"},
            kind="StatefulSet",
        ),
    )
    make(
        kube,
        workload(
            "worker",
            "",
            {"keyless.dev/agent-template-app.env": 'PASSWORD={{ secret("app/db-password") }}\n'},
        ),
    )
    make(kube, workload("plain", None, {"keyless.dev/inject-secret-db.env": "app/db-password"}))
    make(kube, workload("other", "app/other"))
    make(kube, workload("mixed", "app/other, not-a-reference"))  # the bad one is named, ignored
    current = version(cluster.server, "app", "db-password")
    for name in CONSUMERS:
        assert until(f"{name}'s record", lambda n=name: recorded(kube, n)) == (  # type: ignore[misc]
            f"app/db-password={current}"
        )
    until("other's record", lambda: recorded(kube, "other"))
    other = version(cluster.server, "app", "other")
    assert until("mixed's record", lambda: recorded(kube, "mixed")) == f"app/other={other}"
    assert cluster.server.wait_for_log("workload names secrets wrongly")
    assert "not-a-reference" in cluster.server.log
    a_round_later(kube, PROBE)
    for name in (*CONSUMERS, "other", "mixed"):
        assert restarted_at(kube, name) is None
        assert len(patches(kube, name)) == 1 and restarts(kube, name) == []
    assert patches(kube, "plain") == [] and recorded(kube, "plain") is None


def test_a_new_version_restarts_each_consumer_exactly_once(cluster: Cluster) -> None:
    kube, server = cluster.kube, cluster.server
    server.cli("secret", "set", "app", "db-password", "--value", value())
    new = version(server, "app", "db-password")
    for name in CONSUMERS:
        until(f"{name} restarted", lambda n=name: restarted_at(kube, n))  # type: ignore[misc]
    a_round_later(kube, PROBE)
    for name in CONSUMERS:
        assert len(restarts(kube, name)) == 1, name
        assert recorded(kube, name) == f"app/db-password={new}"
        stamp = restarted_at(kube, name)
        assert stamp is not None and abs(_seconds(stamp) - time.time()) < 60
    # Not annotated, or consuming another secret: untouched.
    for untouched in ("other", "mixed"):
        assert restarts(kube, untouched) == [] and restarted_at(kube, untouched) is None
    assert patches(kube, "plain") == [] and restarted_at(kube, "plain") is None


def test_a_restarted_server_restarts_nothing_twice(cluster: Cluster) -> None:
    kube = cluster.kube
    before = {name: len(restarts(kube, name)) for name in (*CONSUMERS, "other", "mixed")}
    lease = kube.get_obj("leases", LEASE, NAMESPACE)
    assert lease is not None
    cluster.restart()
    server = cluster.server
    until(
        "the new server to hold the lease",
        lambda: (
            kube.get_obj("leases", LEASE, NAMESPACE)["spec"]["holderIdentity"]  # type: ignore[index]
            not in (None, lease["spec"]["holderIdentity"])
        ),
    )
    # It acts (other's secret changes: other rolls) and finds the others' records current.
    server.cli("secret", "set", "app", "other", "--value", value())
    until("other restarted", lambda: restarted_at(kube, "other"))
    until("mixed restarted", lambda: restarted_at(kube, "mixed"))
    a_round_later(kube, PROBE)
    after = {name: len(restarts(kube, name)) for name in (*CONSUMERS, "other", "mixed")}
    assert after == {**before, "other": 1, "mixed": 1}


def test_a_version_nearing_expiry_restarts_once(cluster: Cluster, tmp_path: Path) -> None:
    """The expiry is set as an application would: the Azure SDK's ``set_secret(expires_on=)``."""
    kube, server = cluster.kube, cluster.server
    fed = federate(server, tmp_path, dev_cluster=False)
    server.cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/app")
    credential = WorkloadIdentityCredential(
        tenant_id=fed.tenant_id,
        client_id=fed.client_id,
        token_file_path=str(fed.token_file(fed.test_token())),
        authority=server.url,
        connection_verify=str(server.ca),
    )
    # Its margin begins in 15 s: time enough, on a loaded machine, for the SDK's write and the
    # workload's first record to come before it.
    expires = datetime.fromtimestamp(int(time.time()) + BEFORE_EXPIRY + 15, UTC)
    with resolving("vault.localhost"):
        client = SecretClient(
            f"https://app.vault.localhost:{server.port}",
            credential,
            connection_verify=str(server.ca),
        )
        cert = client.set_secret("cert", value(), expires_on=expires)
    make(kube, workload("tls", "app/cert"))
    assert (
        until("tls's record", lambda: recorded(kube, "tls"))
        == f"app/cert={cert.properties.version}"
    )
    assert restarted_at(kube, "tls") is None
    # The margin begins 8 s before the expiry: one restart then, none when it passes.
    until("tls restarted", lambda: restarted_at(kube, "tls"), timeout=30)
    assert time.time() >= expires.timestamp() - BEFORE_EXPIRY - 1
    assert recorded(kube, "tls") == f"app/cert={cert.properties.version};expiring"
    until("the expiry to pass", lambda: time.time() > expires.timestamp() + 2, timeout=30)
    a_round_later(kube, PROBE)
    assert len(restarts(kube, "tls")) == 1


def test_the_rendered_rbac_grants_every_request_and_only_with_the_option(
    cluster: Cluster,
) -> None:
    made = list(cluster.kube.requests)
    kinds = {(r.split(" ")[0], r.split("?")[0].rsplit("/", 1)[-1]) for r in made}
    assert {("GET", "deployments"), ("GET", "statefulsets")} <= kinds  # listed, watched
    assert any(r.startswith("PATCH /apis/apps/v1/namespaces/demo/statefulsets/db") for r in made)
    assert any("watch=" in r and "/apis/apps/v1/deployments" in r for r in made)
    rules = rbac.grants(
        manifests.render(manifests.Values(restart_on_change=True)), NAMESPACE, "keyless"
    )
    assert rbac.denied(made, rules) == []
    without = rbac.grants(manifests.render(manifests.Values()), NAMESPACE, "keyless")
    refused = rbac.denied(made, without)
    assert "patch deployments.apps api in demo" in refused
    assert f"get leases.coordination.k8s.io {LEASE} in {NAMESPACE}" in refused


def test_each_restart_is_audited_naming_workload_and_secret(cluster: Cluster) -> None:
    server = cluster.server
    events = [e for e in audit(server) if e["action"] == "workload restart"]
    by_target = {}
    for event in events:
        assert event["actor"] == "k8s-restarts" and event["result"] == "success"
        by_target.setdefault(event["target"], []).append(event)
    assert sorted(by_target) == sorted(
        [
            "deployments/demo/api",
            "statefulsets/demo/db",
            "deployments/demo/worker",
            "deployments/demo/other",
            "deployments/demo/mixed",
            "deployments/demo/tls",
        ]
    )
    assert all(len(found) == 1 for found in by_target.values())
    (db,) = by_target["statefulsets/demo/db"]
    assert db["workload"]["kind"] == "StatefulSet" and db["workload"]["namespace"] == "demo"
    assert db["workload"]["name"] == "db" and db["workload"]["secrets"] == "app/db-password"
    assert db["reason"].startswith("secret app/db-password: new version ")
    (tls,) = by_target["deployments/demo/tls"]
    assert tls["reason"].startswith("secret app/cert: version ") and " expires at " in tls["reason"]
    # Never a value: not in an event, not in any server's output.
    logs = "".join(s.log for s in cluster.factory.running)
    assert not [v for v in VALUES if v in json.dumps(events) + logs]
    assert "restarts round failed" not in logs and "workload not patched" not in logs


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
