"""The keyless.dev controller end to end: a real ``keyless serve --k8s-controller`` whose
kubeconfig points at the fake Kubernetes API (tests/k8s/fakeapi.py), custom resources created,
changed and deleted there, keyless's state read back through its admin API.

The tests run in order on one server (each builds on the state the one before left).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.jose import public_jwk
from keyless.k8s.crds import API_VERSION, FINALIZER
from keyless.k8s.leader import LEASE_NAME
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import start_in_cluster
from tests.support.adminapi import admin_call
from tests.support.server import RunningServer, ServerFactory

ISS = "https://issuer.ctl.test"
JWKS = {"keys": [public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), "k1", "ES256")]}
NAMESPACE = "keyless"
PLURALS = {
    "Issuer": "issuers",
    "Identity": "identities",
    "Vault": "vaults",
    "RoleAssignment": "roleassignments",
}


def start(factory: ServerFactory, kube: FakeKubeApi, tmp: Path, name: str) -> RunningServer:
    return start_in_cluster(
        factory, kube, tmp / name, "--k8s-controller", "--k8s-namespace", NAMESPACE
    )


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FakeKubeApi, ServerFactory, Path]]:
    tmp = tmp_path_factory.mktemp("ctl")
    kube = FakeKubeApi().start()
    factory = ServerFactory(tmp)
    try:
        yield kube, factory, tmp
    finally:
        factory.stop_all()
        kube.stop()


@pytest.fixture(scope="module")
def kube(cluster: tuple[FakeKubeApi, ServerFactory, Path]) -> FakeKubeApi:
    return cluster[0]


@pytest.fixture(scope="module")
def server(cluster: tuple[FakeKubeApi, ServerFactory, Path]) -> RunningServer:
    kube, factory, tmp = cluster
    return start(factory, kube, tmp, "a")


def cr(kind: str, name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        obj["spec"] = spec
    return obj


def create(kube: FakeKubeApi, obj: dict[str, Any]) -> None:
    kube.create_obj(obj, PLURALS[obj["kind"]])


def get(kube: FakeKubeApi, kind: str, name: str) -> dict[str, Any] | None:
    return kube.get_obj(PLURALS[kind], name)


def ready(obj: dict[str, Any] | None) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == "Ready":
            return dict(cond)
    return {}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_reason(kube: FakeKubeApi, kind: str, name: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kube, kind, name)
        if not obj:
            return None
        cond = ready(obj)
        fresh = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if cond.get("reason") == reason and fresh else None

    result: dict[str, Any] = wait_for(f"{kind}/{name} {reason}", check)
    return result


def admin(server: RunningServer, path: str) -> Any:
    with server.admin() as client:
        return admin_call(client, "GET", path)


def identities(server: RunningServer) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in admin(server, "/v1/identities")}


def credentials(server: RunningServer, identity: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in admin(server, f"/v1/identities/{identity}/federated-credentials")}


def vaults(server: RunningServer) -> set[str]:
    return {v["name"] for v in admin(server, "/v1/vaults")}


def roles(server: RunningServer) -> set[tuple[str, str, str]]:
    return {(r["identity"], r["role"], r["scope"]) for r in admin(server, "/v1/roles")}


BILLING = cr(
    "Identity",
    "billing",
    {
        "federatedCredentials": [
            {"name": "api", "issuer": ISS, "subject": "system:serviceaccount:billing:api"},
            {
                "name": "reports",
                "issuer": ISS,
                "subjectPattern": "system:serviceaccount:*:reports",
                "audiences": ["api://AzureADTokenExchange"],
            },
        ]
    },
)


def test_resources_become_keyless_objects(server: RunningServer, kube: FakeKubeApi) -> None:
    server.cli("identity", "create", "cli-made")
    create(kube, cr("Issuer", "test-issuer", {"url": ISS, "jwks": JWKS}))
    create(kube, BILLING)
    create(kube, cr("Vault", "billing"))
    create(
        kube,
        cr(
            "RoleAssignment",
            "billing-reads",
            {"identity": "billing", "role": "secrets-user", "scope": "/vaults/billing"},
        ),
    )
    create(
        kube,
        cr("RoleAssignment", "cli-lists", {"identity": "cli-made", "role": "reader", "scope": "/"}),
    )
    for kind, name in [
        ("Issuer", "test-issuer"),
        ("Identity", "billing"),
        ("Vault", "billing"),
        ("RoleAssignment", "billing-reads"),
        ("RoleAssignment", "cli-lists"),
    ]:
        obj = wait_reason(kube, kind, name, "Reconciled")
        assert ready(obj)["status"] == "True"
        assert obj["metadata"]["finalizers"] == [FINALIZER]
        assert ready(obj)["observedGeneration"] == obj["metadata"]["generation"]
    assert {i["url"] for i in admin(server, "/v1/issuers")} == {ISS}
    ident = identities(server)["billing"]
    creds = credentials(server, "billing")
    assert creds["api"]["subject"] == "system:serviceaccount:billing:api"
    assert creds["reports"]["subject_pattern"] == "system:serviceaccount:*:reports"
    assert vaults(server) == {"billing"}
    assert roles(server) == {
        ("billing", "Key Vault Secrets User", "/vaults/billing"),
        ("cli-made", "Key Vault Reader", "/"),
    }
    status = get(kube, "Identity", "billing")["status"]  # type: ignore[index]
    assert status["clientId"] == ident["client_id"] and status["objectId"] == ident["object_id"]
    assert status["created"] is True and status["credentials"] == ["api", "reports"]
    assert status["credentialCount"] == 2


def test_a_changed_subject_is_updated_in_keyless(server: RunningServer, kube: FakeKubeApi) -> None:
    obj = get(kube, "Identity", "billing")
    assert obj is not None
    obj["spec"]["federatedCredentials"][0]["subject"] = "system:serviceaccount:billing:api-v2"
    updated = kube.update_obj(obj, "identities")
    assert updated is not None and updated["metadata"]["generation"] == 2
    wait_for(
        "the new subject",
        lambda: (
            credentials(server, "billing")["api"]["subject"]
            == "system:serviceaccount:billing:api-v2"
        ),
    )
    assert (
        wait_reason(kube, "Identity", "billing", "Reconciled")["status"]["observedGeneration"] == 2
    )


def test_an_invalid_resource_says_why_and_the_others_proceed(
    server: RunningServer, kube: FakeKubeApi
) -> None:
    create(
        kube,
        cr("RoleAssignment", "to-nobody", {"identity": "nobody", "role": "reader", "scope": "/"}),
    )
    create(kube, cr("Vault", "sys"))  # a name keyless reserves (the schema refuses it too)
    create(kube, cr("Vault", "payments"))
    nobody = ready(wait_reason(kube, "RoleAssignment", "to-nobody", "Invalid"))
    assert nobody["status"] == "False"
    assert nobody["message"] == (
        "spec.identity: identity 'nobody' does not exist in keyless and no Identity declares it"
    )
    assert "is reserved" in ready(wait_reason(kube, "Vault", "sys", "Invalid"))["message"]
    wait_reason(kube, "Vault", "payments", "Reconciled")
    assert vaults(server) == {"billing", "payments"}
    # The invalid one is fixed: it is made (the identity now exists, from the CLI).
    server.cli("identity", "create", "nobody")
    wait_reason(kube, "RoleAssignment", "to-nobody", "Reconciled")
    assert ("nobody", "Key Vault Reader", "/") in roles(server)


def test_a_vault_holding_secrets_is_kept_until_it_is_emptied(
    server: RunningServer, kube: FakeKubeApi
) -> None:
    server.cli("secret", "set", "payments", "card-key", "--value", "not-in-any-cr")
    kube.delete_obj("vaults", "payments")
    why = ready(wait_reason(kube, "Vault", "payments", "Deleting"))
    assert why["status"] == "False"
    assert "still holds 1 secret(s)" in why["message"]
    assert "keyless vault delete payments --force" in why["message"]
    assert "payments" in vaults(server)
    server.cli("vault", "delete", "payments", "--force")
    wait_for("the Vault resource to go", lambda: get(kube, "Vault", "payments") is None)


def test_deleting_an_identity_deletes_it_and_what_the_cli_made_stays(
    server: RunningServer, kube: FakeKubeApi
) -> None:
    # An Identity for an identity the CLI made adopts it: its credential is made, not the identity.
    create(
        kube,
        cr(
            "Identity",
            "cli-made",
            {"federatedCredentials": [{"name": "ci", "issuer": ISS, "subject": "repo:x"}]},
        ),
    )
    adopted = wait_reason(kube, "Identity", "cli-made", "Reconciled")
    assert adopted["status"]["created"] is False and "existed before" in ready(adopted)["message"]
    assert set(credentials(server, "cli-made")) == {"ci"}

    kube.delete_obj("identities", "billing")
    kube.delete_obj("identities", "cli-made")
    wait_for("the Identity resources to go", lambda: not kube.objects("identities"))
    names = set(identities(server))
    assert "billing" not in names
    assert {"cli-made", "nobody"} <= names  # made with the CLI: never deleted
    assert credentials(server, "cli-made") == {}  # ... but the credential the resource made is
    assert ("billing", "Key Vault Secrets User", "/vaults/billing") not in roles(server)
    # What referred to billing is now refused, and says so.
    msg = ready(wait_reason(kube, "RoleAssignment", "billing-reads", "Invalid"))["message"]
    assert "identity 'billing' does not exist" in msg


def test_every_change_is_audited_naming_its_resource(server: RunningServer) -> None:
    events = admin(server, "/v1/audit?limit=1000")["events"]
    mine = [e for e in events if e["actor"] == "k8s-controller"]
    seen = {(e["action"], e["target"], e["workload"]["resource"], e["result"]) for e in mine}
    assert ("issuer add", ISS, "Issuer/test-issuer", "success") in seen
    assert ("identity create", "billing", "Identity/billing", "success") in seen
    assert ("federation add", "billing api", "Identity/billing", "success") in seen
    assert ("federation update", "billing api", "Identity/billing", "success") in seen
    assert ("vault create", "billing", "Vault/billing", "success") in seen
    assert (
        "role assign",
        "nobody: Key Vault Reader on /",
        "RoleAssignment/to-nobody",
        "success",
    ) in seen
    assert ("identity delete", "billing", "Identity/billing", "success") in seen
    assert ("federation remove", "cli-made ci", "Identity/cli-made", "success") in seen
    assert all(e["workload"]["controller"] for e in mine)
    assert not any(e["action"] == "identity delete" and e["target"] == "cli-made" for e in events)


def test_only_the_lease_holder_acts(
    cluster: tuple[FakeKubeApi, ServerFactory, Path], server: RunningServer, kube: FakeKubeApi
) -> None:
    _, factory, tmp = cluster
    lease = kube.get_obj("leases", LEASE_NAME, NAMESPACE)
    assert lease is not None and lease["spec"]["leaseDurationSeconds"] == 15
    holder = lease["spec"]["holderIdentity"]
    other = start(factory, kube, tmp, "b")
    create(kube, cr("Vault", "second"))
    wait_reason(kube, "Vault", "second", "Reconciled")
    time.sleep(1.5)  # B's watch has seen it too, and B has had rounds of its own
    assert "second" in vaults(server)
    assert vaults(other) == set()  # B holds no lease: it makes nothing
    assert kube.get_obj("leases", LEASE_NAME, NAMESPACE)["spec"]["holderIdentity"] == holder  # type: ignore[index]

    server.stop()  # A releases the lease on its way out: B takes over at once
    wait_for("B to make what is declared", lambda: "second" in vaults(other), timeout=20)
    taken = kube.get_obj("leases", LEASE_NAME, NAMESPACE)
    assert taken is not None and taken["spec"]["holderIdentity"] not in (holder, None)
