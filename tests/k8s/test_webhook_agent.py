"""The agent injection through a running keyless's webhook listener (``--k8s-agent-image`` set
by its environment), service accounts read from the fake Kubernetes API: with the API server's
client certificate, the agent's identity is checked and its name found (``KEYLESS_IDENTITY``);
without client authentication nothing in the answer depends on keyless's identities."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from keyless.api.k8s.mutate import UNIFORM_REFUSAL
from keyless.core import gcpnames
from keyless.k8s import names
from tests.k8s.cases import Case, fresh_case, patched_pod
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import Webhook, review_of, start_webhook
from tests.support.federation import Federated
from tests.support.server import ServerFactory

IMAGE = "registry.example/keyless:0.1.0"


def _start(
    kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory, *, client_auth: bool
) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("agent-k8s")
    env = {
        "KUBECONFIG": str(kube.kubeconfig(tmp / "kubeconfig")),
        "HOME": str(tmp),
        "KEYLESS_K8S_AGENT_IMAGE": IMAGE,
    }
    factory = ServerFactory(tmp)
    try:
        yield start_webhook(factory, tmp, client_auth=client_auth, env=env)
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def webhook(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """tests/k8s/conftest.py's webhook (the API server's certificate required), with the
    agent's image set; ``fed`` federates this one."""
    yield from _start(kube, tmp_path_factory, client_auth=True)


@pytest.fixture(scope="module")
def open_hook(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """The same, with --webhook-insecure-no-client-auth (a NetworkPolicy guards the port)."""
    yield from _start(kube, tmp_path_factory, client_auth=False)


def agent_case(service_account: str, annotations: dict[str, str]) -> Case:
    case = fresh_case("agent-basic", service_account)
    case.review["request"]["object"]["metadata"]["annotations"] = annotations
    return case


def _agent(pod: dict[str, Any]) -> dict[str, Any]:
    agent: dict[str, Any] = pod["spec"]["initContainers"][0]
    assert agent["name"] == "keyless-agent"
    return agent


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


SECRET = {"keyless.dev/inject-secret-db-password": "billing/db-password"}
CREDENTIALS = {"keyless.dev/agent-credentials": "azure,aws,gcp"}


def test_agent_of_a_keyless_identity_is_injected(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    kube.put("demo", "agent-app", {names.CLIENT_ID_ANNOTATION: fed.client_id})
    case = agent_case("agent-app", SECRET | CREDENTIALS)
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    pod = patched_pod(case, review)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    agent = _agent(pod)
    assert agent["image"] == IMAGE
    env = _env(agent)
    assert env["AZURE_CLIENT_ID"] == fed.client_id
    assert env["AZURE_TENANT_ID"] == fed.tenant_id
    assert env["AZURE_AUTHORITY_HOST"] == fed.server.url
    assert (env["KEYLESS_IDENTITY"], env["KEYLESS_TENANT_ALIAS"]) == ("app", "default")
    token = next(v for v in pod["spec"]["volumes"] if v["name"] == "keyless-agent-gcp-token")
    audience = token["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    assert audience == gcpnames.provider(fed.tenant_id).name
    assert "--credentials=azure,aws,gcp" in agent["args"]
    # Reinvoked on its own output, the running webhook changes nothing.
    again = case.review | {"request": case.review["request"] | {"object": pod}}
    assert "patch" not in webhook.review(again)["response"]


def test_unknown_client_id_is_refused_with_the_reason(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    kube.put(
        "demo", "agent-ghost", {names.CLIENT_ID_ANNOTATION: "11111111-2222-4333-8444-555555555555"}
    )
    response = review_of(webhook, agent_case("agent-ghost", SECRET))["response"]
    assert response["allowed"] is False and "patch" not in response
    assert (
        "no keyless identity has client id '11111111-2222-4333-8444-555555555555'"
        in (response["status"]["message"])
    )


def test_missing_service_account_is_refused(webhook: Webhook, fed: Federated) -> None:
    response = review_of(webhook, agent_case("agent-missing", SECRET))["response"]
    assert response["allowed"] is False
    assert response["status"]["message"] == "service account demo/agent-missing not found"


def test_bad_annotation_is_refused_before_any_lookup(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    before = len(kube.requests)
    bad = {"keyless.dev/inject-secret-db": "billing"}
    response = review_of(webhook, agent_case("agent-app", bad))["response"]
    assert response["allowed"] is False
    assert response["status"]["message"].startswith(
        "annotation 'keyless.dev/inject-secret-db': 'billing' is not a secret reference"
    )
    assert kube.requests[before:] == []


def test_pod_naming_its_client_id_needs_no_service_account(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    """``keyless.dev/client-id`` on the pod: its service account (missing here) is only looked
    up for the AWS and Google injections, and its absence refuses nothing."""
    case = agent_case("agent-nowhere", SECRET | {names.KEYLESS_CLIENT_ID_ANNOTATION: fed.client_id})
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    assert _env(_agent(patched_pod(case, review)))["KEYLESS_IDENTITY"] == "app"


def test_unauthenticated_webhook_names_no_identity(open_hook: Webhook, kube: FakeKubeApi) -> None:
    """Without client authentication the patch does not depend on keyless's identities: no
    KEYLESS_IDENTITY (the client id is not even checked), and credentials that need the
    identity's name are refused with the uniform message."""
    kube.put(
        "demo", "agent-open", {names.CLIENT_ID_ANNOTATION: "11111111-2222-4333-8444-555555555555"}
    )
    case = agent_case("agent-open", SECRET | {"keyless.dev/agent-credentials": "azure"})
    review = review_of(open_hook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    env = _env(_agent(patched_pod(case, review)))
    assert "KEYLESS_IDENTITY" not in env
    assert env["KEYLESS_TENANT_ALIAS"] == "default"  # the default tenant: operator's setting
    response = review_of(open_hook, agent_case("agent-open", SECRET | CREDENTIALS))["response"]
    assert response["allowed"] is False
    assert response["status"]["message"] == UNIFORM_REFUSAL
