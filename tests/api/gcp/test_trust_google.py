"""Trust policies in Google's terms through the Google dialect, end to end with unmodified
google-auth: one workload (the same namespace and service account) deployed in two registered
clusters is one identity through ONE credential (an issuer set with the identity-namespace
member), ``keyless explain`` and the audit log name the cluster each token came from, and an
attribute condition that is false is Google's "rejected by the attribute condition"."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyless.core import gcpnames
from tests.api.gcp.conftest import (
    REFRESH,
    credential_config,
    gcp_env,
    impersonation_url,
    provider,
    run_python,
)
from tests.api.gcp.test_sts import _audit, _claims
from tests.support.federation import Federated

NS, KSA = "shop", "cart"
# REFRESH, printing the error google-auth raises instead of failing.
REFUSAL = REFRESH.replace(
    "creds.refresh(Request())",
    "try:\n    creds.refresh(Request())\nexcept Exception as exc:\n"
    "    print(json.dumps({'error': type(exc).__name__, 'message': str(exc)}))\n"
    "    raise SystemExit(0)",
)
WEST = "west"


@pytest.fixture(scope="module")
def gke(fed: Federated) -> dict[str, Any]:
    """Identity ``cart`` trusts ``serviceAccount:default.svc.id.goog[shop/cart]`` from the dev
    cluster and a second dev cluster, ``west``, with ONE credential."""
    cli = fed.server.cli
    west = f"{fed.server.url}/dev/clusters/{WEST}"
    cli("issuer", "add", west)
    made = json.loads(cli("--output", "json", "identity", "create", KSA).stdout)
    cred = json.loads(
        cli(
            "--output",
            "json",
            "federation",
            "add",
            KSA,
            "--name",
            "gke",
            "--issuer",
            fed.dev_issuer,
            "--issuer",
            west,
            "--member",
            f"serviceAccount:default{gcpnames.IDENTITY_NAMESPACE_SUFFIX}[{NS}/{KSA}]",
            "--audience",
            provider(fed).name,
        ).stdout
    )
    return {"identity": made, "credential": cred, "issuers": {"dev": fed.dev_issuer, WEST: west}}


def cluster_token(fed: Federated, cluster: str, ns: str = NS, sa: str = KSA) -> str:
    return fed.server.cli(
        "dev", "token", "--cluster", cluster, "--namespace", ns, "--service-account", sa,
        "--audience", provider(fed).name,
    ).stdout.strip()  # fmt: skip


@pytest.mark.parametrize("cluster", ["dev", WEST])
@pytest.mark.parametrize("impersonate", [None, KSA], ids=["sts-only", "impersonation"])
def test_one_workload_in_two_clusters_is_one_identity(
    fed: Federated, gke: dict[str, Any], cluster: str, impersonate: str | None
) -> None:
    token_file = fed.token_file(cluster_token(fed, cluster) + "\n")
    config = credential_config(fed, token_file, impersonate=impersonate)
    if impersonate is not None:
        info = json.loads(config.read_text())
        assert info["service_account_impersonation_url"] == impersonation_url(fed, KSA)
    got = run_python(gcp_env(fed, config), REFRESH)
    claims = _claims(got["token"])
    assert claims["oid"] == gke["identity"]["object_id"]
    assert claims["fed"]["cluster"] == gke["issuers"][cluster]
    action = "token.exchange.gcp-" + ("sts" if impersonate is None else "impersonate")
    last = _audit(fed, action)[-1]
    assert last["result"] == "success" and last["actor"] == gke["identity"]["object_id"]
    assert last["reason"] == "credential gke"
    assert last["workload"]["cluster"] == gke["issuers"][cluster]  # the workload's cluster


def test_explain_names_the_cluster_a_token_matched_from(
    fed: Federated, gke: dict[str, Any]
) -> None:
    for cluster, issuer in gke["issuers"].items():
        path = fed.token_file(cluster_token(fed, cluster))
        report = json.loads(
            fed.server.cli(
                "--output", "json", "explain", "--token", str(path), "--identity", KSA
            ).stdout
        )
        (entry,) = report["identities"]
        assert entry["accepted"] and entry["matched"] == "gke"
        assert entry["matched_issuer"] == issuer
        assert entry["policies"][0]["issuers"] == list(gke["issuers"].values())


def test_another_service_account_of_either_cluster_is_refused(
    fed: Federated, gke: dict[str, Any]
) -> None:
    token = cluster_token(fed, WEST, sa="checkout")
    config = credential_config(fed, fed.token_file(token), impersonate=KSA)
    got = run_python(gcp_env(fed, config), REFUSAL)
    assert "rejected by the attribute condition" in got["message"]


def test_an_attribute_condition_decides_the_google_way(fed: Federated) -> None:
    """A principalSet over a mapped attribute, narrowed by an attribute condition."""
    cli = fed.server.cli
    cli("identity", "create", "billing-ns")
    pool = provider(fed).pool_name.removeprefix("//")
    cli(
        "federation", "add", "billing-ns", "--name", "ns", "--issuer", fed.dev_issuer,
        "--member", f"principalSet://{pool}/attribute.namespace/billing",
        "--attribute-mapping", "attribute.namespace=assertion['kubernetes.io'].namespace",
        "--attribute-condition", "google.subject.endsWith(':reporter')",
        "--audience", provider(fed).name,
    )  # fmt: skip
    good = fed.token_file(cluster_token(fed, "dev", ns="billing", sa="reporter"))
    got = run_python(gcp_env(fed, credential_config(fed, good, impersonate="billing-ns")), REFRESH)
    assert _claims(got["token"])["fed"]["namespace"] == "billing"
    bad = cluster_token(fed, "dev", ns="billing", sa="writer")
    config = credential_config(fed, fed.token_file(bad), impersonate="billing-ns")
    got = run_python(gcp_env(fed, config), REFUSAL)
    assert got["error"] == "OAuthError" and "unauthorized_client" in got["message"]
    assert "rejected by the attribute condition" in got["message"]
