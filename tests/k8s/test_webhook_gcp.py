"""The GKE-style injection through a running keyless's webhook listener (client certificate
required), service accounts read from the fake Kubernetes API: the Google service account's
project is found among keyless's tenants by alias and its identity checked, other accounts are
refused with the reason, pods without the annotation are admitted untouched, and the
configuration travels in the pod's own annotation (nothing is created in the cluster)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate

from keyless.core import gcpnames
from keyless.k8s import manifests, names
from tests.k8s import rbac
from tests.k8s.cases import Case, fresh_case, patched_pod
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import Webhook, review_of
from tests.support.federation import Federated


def gcp_case(service_account: str, labels: dict[str, str] | None = None) -> Case:
    return fresh_case("gcp-basic", service_account, labels)


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def _annotate(kube: FakeKubeApi, account: str, email: str) -> None:
    kube.put("demo", account, {gcpnames.GKE_ANNOTATION: email})


def test_service_account_of_a_keyless_identity_is_injected(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    _annotate(kube, "gcp-app", "app@default.iam.gserviceaccount.com")
    configmaps_before = kube.objects("configmaps")
    case = gcp_case("gcp-app")
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    pod = patched_pod(case, review)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    env = _env(pod)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == names.GCP_CONFIG_FILE
    assert env["GOOGLE_CLOUD_PROJECT"] == "default"
    assert env["REQUESTS_CA_BUNDLE"] == names.CA_FILE
    config = json.loads(pod["metadata"]["annotations"][names.GCP_CONFIG_ANNOTATION])
    provider = gcpnames.provider(fed.tenant_id).name
    assert config["audience"] == provider
    assert config["token_url"] == f"{fed.server.url}/gcp/sts/v1/token"
    assert config["service_account_impersonation_url"] == (
        f"{fed.server.url}/gcp/iamcredentials/v1/projects/-/serviceAccounts/"
        "app@default.iam.gserviceaccount.com:generateAccessToken"
    )
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == names.GCP_VOLUME)
    assert volume["projected"]["sources"][0]["serviceAccountToken"]["audience"] == provider
    assert kube.objects("configmaps") == configmaps_before  # nothing made for the pod
    assert not any(name.startswith(("AZURE_", "AWS_")) for name in env)


def test_service_account_naming_no_identity_is_refused(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    _annotate(kube, "gcp-ghost", "ghost@default.iam.gserviceaccount.com")
    response = review_of(webhook, gcp_case("gcp-ghost"))["response"]
    assert response["allowed"] is False and "patch" not in response
    message = response["status"]["message"]
    assert "no keyless identity is named 'ghost' in tenant 'default'" in message
    assert "service account demo/gcp-ghost" in message


def test_service_account_of_another_project_is_refused(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    _annotate(kube, "gcp-real", "app@my-gcp-project.iam.gserviceaccount.com")
    response = review_of(webhook, gcp_case("gcp-real"))["response"]
    assert response["allowed"] is False
    assert "no keyless tenant has the alias 'my-gcp-project'" in response["status"]["message"]
    # A tenant's id is not its project id.
    _annotate(kube, "gcp-by-id", f"app@{fed.tenant_id}")
    response = review_of(webhook, gcp_case("gcp-by-id"))["response"]
    assert response["allowed"] is False


def test_service_account_of_another_tenant_is_found_by_its_alias(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    cli = fed.server.cli
    team = json.loads(cli("--output", "json", "tenant", "create", "team-g").stdout)
    cli("identity", "create", "reports", "--tenant", "team-g")
    _annotate(kube, "gcp-team", "reports@team-g.iam.gserviceaccount.com")
    case = gcp_case("gcp-team")
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    pod = patched_pod(case, review)
    config = json.loads(pod["metadata"]["annotations"][names.GCP_CONFIG_ANNOTATION])
    assert config["audience"] == gcpnames.provider(team["id"]).name
    assert _env(pod)["GOOGLE_CLOUD_PROJECT"] == "team-g"


def test_pod_without_the_annotation_is_admitted_untouched(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    kube.put("demo", "gcp-plain", {"iam.gke.io/other": "x"})
    for account in ("gcp-plain", "gcp-missing"):
        case = gcp_case(account)
        review = review_of(webhook, case)
        assert review["response"] == {"uid": case.review["request"]["uid"], "allowed": True}


def test_labelled_pod_gets_azure_and_google(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    kube.put(
        "demo",
        "gcp-both",
        {
            names.CLIENT_ID_ANNOTATION: fed.client_id,
            gcpnames.GKE_ANNOTATION: "app@default.iam.gserviceaccount.com",
        },
    )
    case = gcp_case("gcp-both", labels={names.USE_LABEL: "true"})
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    env = _env(patched_pod(case, review))
    assert env["AZURE_CLIENT_ID"] == fed.client_id
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == names.GCP_CONFIG_FILE


def test_admissions_need_only_what_the_default_manifests_grant(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    """The GKE-style injection writes nothing to the cluster: every request keyless makes for
    it (service-account reads) is granted by the default manifests' RBAC, which gives no
    write on ConfigMaps (tls=secret: no CA ConfigMaps either)."""
    rules = rbac.grants(manifests.render(), manifests.Values().namespace, manifests.APP)
    assert rbac.denied(["PATCH /api/v1/namespaces/demo/configmaps/x"], rules) != []
    before = len(kube.requests)
    _annotate(kube, "gcp-rbac", "app@default.iam.gserviceaccount.com")
    for _ in range(2):
        case = gcp_case("gcp-rbac")
        assert review_of(webhook, case)["response"]["allowed"] is True
    made = kube.requests[before:]
    assert all(r.startswith("GET ") for r in made), made
    assert rbac.denied(made, rules) == []
