"""``POST /k8s/mutate`` on a running keyless's webhook listener (``--webhook-listen``, client
certificate required, the test's API server certificate presented), its service accounts read
from a (fake) Kubernetes API through ``kubernetes_asyncio``, and the injected pod's environment
driving the real azure-identity and azure-keyvault-secrets clients to a secret.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from keyless.k8s import admission, names
from tests.k8s.cases import FIXTURES, Case, patched_pod
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import Webhook
from tests.support.federation import Federated

SECRET_VALUE = "s3cret-from-keyless-7f2c"


def load(name: str) -> Case:
    path = FIXTURES / f"{name}.json"
    return Case(name, path, json.loads(path.read_text()))


def with_pod(case: Case, **changes: Any) -> Case:
    """``case`` with a fresh uid and the pod's service account / annotations changed."""
    data = copy.deepcopy(case.data)
    request = data["review"]["request"]
    request["uid"] = str(uuid.uuid4())
    pod = request["object"]
    if "service_account" in changes:
        pod["spec"]["serviceAccountName"] = pod["spec"]["serviceAccount"] = changes[
            "service_account"
        ]
    if "annotations" in changes:
        pod["metadata"]["annotations"] = changes["annotations"]
    return Case(case.name, case.path, data)


def reviewed(webhook: Webhook, case: Case) -> dict[str, Any]:
    response = webhook.post(case.review)
    assert response.status_code == 200, response.text
    review = response.json()
    assert review["response"]["uid"] == case.review["request"]["uid"]
    return review


@pytest.fixture(scope="module")
def vault(fed: Federated, kube: FakeKubeApi) -> str:
    kube.put("demo", "app", {names.CLIENT_ID_ANNOTATION: fed.client_id})
    cli = fed.server.cli
    cli("vault", "create", "k8svault")
    cli("secret", "set", "k8svault", "greeting", "--value", SECRET_VALUE)
    cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/k8svault")
    return f"https://k8svault.vault.localhost:{fed.server.port}"


def test_injected_pod_reads_a_secret_with_the_azure_sdk(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi, vault: str, tmp_path: Path
) -> None:
    case = load("selected-basic")
    review = reviewed(webhook, case)
    assert review["response"]["allowed"] is True
    pod = patched_pod(case, review)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AZURE_CLIENT_ID"] == fed.client_id
    assert env["AZURE_TENANT_ID"] == fed.tenant_id  # no tenant-id annotation: keyless's default
    assert env["AZURE_AUTHORITY_HOST"] == fed.server.url
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == names.TOKEN_FILE
    volume = next(
        v for v in pod["spec"]["volumes"] if v["name"] == container["volumeMounts"][-2]["name"]
    )
    projection = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert projection == {
        "path": "token/azure-identity-token",
        "expirationSeconds": 3600,
        "audience": "api://AzureADTokenExchange",
    }

    # What the kubelet would do: write the projected token (here a dev-cluster token for
    # demo/app, audience api://AzureADTokenExchange) and the keyless-ca ConfigMap's ca.crt
    # into the mounted paths. /var/run/secrets/... is not writable in a test, so every
    # injected path is mapped onto a temporary directory when building the process env.
    root = tmp_path / "pod-root"

    def on_disk(path: str) -> Path:
        mapped = root / path.lstrip("/")
        mapped.parent.mkdir(parents=True, exist_ok=True)
        return mapped

    on_disk(names.TOKEN_FILE).write_text(fed.dev_token())
    on_disk(names.CA_FILE).write_text(fed.server.ca.read_text())
    process_env = {
        name: str(on_disk(value)) if value.startswith("/var/run/secrets/") else value
        for name, value in env.items()
    }
    process_env.update(PATH=os.environ.get("PATH", ""), HOME=str(tmp_path))
    script = textwrap.dedent(
        f"""
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient
        from keyless.localresolve import resolving

        with resolving("vault.localhost"):
            client = SecretClient({vault!r}, DefaultAzureCredential())
            print(client.get_secret("greeting").value)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == SECRET_VALUE


def test_running_server_watches_service_accounts(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    """The server lists and watches (tests/k8s/test_lookup.py shows the cache answering
    without a GET); an account created later reaches it by a watch event, or by the next
    list if it was created between two watches."""
    kube.put("demo", "watched", {names.CLIENT_ID_ANNOTATION: fed.client_id})
    deadline = time.monotonic() + 30
    while ("ADDED", "demo/watched") not in kube.delivered and "demo/watched" not in kube.listed:
        assert time.monotonic() < deadline, "neither a watch nor a list carried the account"
        time.sleep(0.05)
    review = reviewed(webhook, with_pod(load("selected-basic"), service_account="watched"))
    assert review["response"]["allowed"] is True
    listed = [r for r in kube.requests if r.startswith("GET /api/v1/serviceaccounts")]
    assert any("watch=" not in r for r in listed) and any("watch=" in r for r in listed)


def test_account_not_yet_cached_is_read_live(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    # Put directly into the store without a watch event: only a GET can find it.
    kube.put("demo", "fresh", {names.CLIENT_ID_ANNOTATION: fed.client_id})
    kube.events.pop()
    review = reviewed(webhook, with_pod(load("selected-basic"), service_account="fresh"))
    assert review["response"]["allowed"] is True
    assert kube.gets_of("demo", "fresh") == 1


def test_unknown_service_account_refused(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    review = reviewed(webhook, with_pod(load("selected-basic"), service_account="ghost"))
    response = review["response"]
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 400
    assert response["status"]["message"] == "service account demo/ghost not found"


def test_unknown_identity_refused(webhook: Webhook, fed: Federated, kube: FakeKubeApi) -> None:
    stranger = str(uuid.uuid4())
    kube.put("demo", "stranger", {names.CLIENT_ID_ANNOTATION: stranger})
    review = reviewed(webhook, with_pod(load("selected-basic"), service_account="stranger"))
    response = review["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert f"no keyless identity has client id '{stranger}'" in message
    assert "service account demo/stranger" in message


def test_unknown_tenant_refused(webhook: Webhook, fed: Federated, kube: FakeKubeApi) -> None:
    kube.put(
        "demo",
        "other-tenant",
        {names.CLIENT_ID_ANNOTATION: fed.client_id, names.TENANT_ID_ANNOTATION: "contoso"},
    )
    review = reviewed(webhook, with_pod(load("selected-basic"), service_account="other-tenant"))
    assert review["response"]["allowed"] is False
    assert review["response"]["status"]["message"] == "tenant 'contoso' is not a keyless tenant"


def test_pod_annotation_needs_no_lookup(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    case = with_pod(
        load("selected-basic"),
        service_account="nowhere",
        annotations={names.KEYLESS_CLIENT_ID_ANNOTATION: fed.client_id},
    )
    review = reviewed(webhook, case)
    assert review["response"]["allowed"] is True
    env = {e["name"]: e["value"] for e in patched_pod(case, review)["spec"]["containers"][0]["env"]}
    assert env["AZURE_CLIENT_ID"] == fed.client_id
    assert kube.gets_of("demo", "nowhere") == 0


@pytest.mark.parametrize("name", ["unselected-no-label", "not-create", "reinvocation"])
def test_admitted_untouched(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi, vault: str, name: str
) -> None:
    review = reviewed(webhook, load(name))
    assert review["response"] == {"uid": load(name).review["request"]["uid"], "allowed": True}


def test_bad_annotation_refused(webhook: Webhook, fed: Federated) -> None:
    review = reviewed(webhook, load("expiration-not-a-number"))
    assert review["response"]["allowed"] is False
    assert "is not a whole number of seconds" in review["response"]["status"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"kind": "Pod"}', "not an AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}', "v1beta1"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "no request"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}',
            "request.uid",
        ),
    ],
)
def test_malformed_review(webhook: Webhook, body: bytes, message: str) -> None:
    response = webhook.post(content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_decode_patch_roundtrip() -> None:
    review = admission.allow("u", [{"op": "add", "path": "/x", "value": 1}])
    assert admission.decode_patch(review) == [{"op": "add", "path": "/x", "value": 1}]
    assert admission.decode_patch(admission.allow("u")) == []


def test_trust_registers_the_cluster_issuer_with_its_jwks(
    fed: Federated, kube: FakeKubeApi, tmp_path: Path
) -> None:
    from keyless.core.jose import public_jwk

    kube.jwks = {"keys": [public_jwk(fed.key.public_key(), "cluster-key-1", "RS256")]}
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig", context="prod")
    out = fed.server.cli(
        "k8s", "trust", "--kubeconfig", str(kubeconfig), "--context", "prod", "--output", "json"
    )
    assert json.loads(out.stdout)["url"] == kube.issuer
    issuers = json.loads(fed.server.cli("issuer", "list", "--output", "json").stdout)
    mine = next(i for i in issuers if i["url"] == kube.issuer)
    assert "cluster-key-1" in json.dumps(mine)
    assert "GET /openid/v1/jwks" in kube.requests


def test_trust_with_unknown_context_fails_clearly(
    fed: Federated, kube: FakeKubeApi, tmp_path: Path
) -> None:
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    out = fed.server.cli(
        "k8s", "trust", "--kubeconfig", str(kubeconfig), "--context", "nope", check=False
    )
    assert out.returncode != 0
    assert "cannot load the kubeconfig" in out.stderr and "nope" in out.stderr
