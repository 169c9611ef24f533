"""Restart on change with two replicas on one PostgreSQL, as the postgresql overlay runs them:
a change written through either replica rolls an annotated Deployment exactly once (one
replica holds Lease keyless-restarts and acts; the other's commit reaches it through the
store's revisions), and when the acting replica stops the other takes over, still once."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keyless.k8s.restarts import LEASE
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import start_in_cluster, until
from tests.k8s.workloads import a_round_later, make, recorded, restarts, version, workload
from tests.support.server import RunningServer, ServerFactory

NAMESPACE = "keyless"


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi().start()
    yield api
    api.stop()


def holder(kube: FakeKubeApi) -> str | None:
    lease = kube.get_obj("leases", LEASE, NAMESPACE)
    return None if lease is None else lease["spec"]["holderIdentity"]


def test_two_replicas_restart_once_per_change(
    servers: ServerFactory,
    make_pg_database: Callable[[], str],
    kube: FakeKubeApi,
    tmp_path: Path,
) -> None:
    root_key = tmp_path / "root.key"
    root_key.write_text(secrets.token_hex(32) + "\n")
    root_key.chmod(0o600)
    args = ("--k8s-restart-on-change", "--k8s-namespace", NAMESPACE)
    args += ("--database", make_pg_database())
    env = {"KEYLESS_ROOT_KEY_FILE": str(root_key)}
    replicas = {
        name: start_in_cluster(servers, kube, tmp_path / name, *args, env=env) for name in "ab"
    }
    a, b = replicas["a"], replicas["b"]
    a.cli("vault", "create", "app")
    for name in ("db-password", "probe"):
        a.cli("secret", "set", "app", name, "--value", secrets.token_hex(8))
    make(kube, workload("api", "app/db-password"))
    until("api's record", lambda: recorded(kube, "api"))
    count = 0

    def changed_through(server: RunningServer) -> None:
        nonlocal count
        server.cli("secret", "set", "app", "db-password", "--value", secrets.token_hex(8))
        count += 1
        until(f"restart {count}", lambda: len(restarts(kube, "api")) >= count)
        a_round_later(kube, "app/probe")
        assert len(restarts(kube, "api")) == count
        assert recorded(kube, "api") == f"app/db-password={version(server, 'app', 'db-password')}"

    changed_through(a)
    changed_through(b)
    acting = until("a lease holder", lambda: holder(kube))
    (leader,) = [s for s in (a, b) if acting in s.log]
    (other,) = [s for s in (a, b) if s is not leader]
    leader.stop()  # it releases the lease on its way out
    until("the other replica to take the lease", lambda: holder(kube) not in (None, acting))
    changed_through(other)
