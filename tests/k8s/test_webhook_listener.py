"""The webhook's own listener (``--webhook-listen``): only the API server's client certificate
gets through TLS, the public port no longer serves ``/k8s/mutate``, the server refuses to start
without a client-auth choice, and without client auth the answers reveal no service account
and no client id.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyless.api.k8s.mutate import UNIFORM_REFUSAL
from keyless.k8s import names
from tests.k8s.cases import FIXTURES
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import (
    ClientPki,
    Webhook,
    issue_client,
    make_pki,
    start_webhook,
    tls_outcome,
)
from tests.support.server import ServerFactory, free_port, keyless_cmd


def review(service_account: str = "app", annotations: dict[str, str] | None = None) -> Any:
    data = json.loads((FIXTURES / "selected-basic.json").read_text())["review"]
    data = copy.deepcopy(data)
    data["request"]["uid"] = str(uuid.uuid4())
    pod = data["request"]["object"]
    pod["spec"]["serviceAccountName"] = pod["spec"]["serviceAccount"] = service_account
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    return data


# -- client certificates -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def strangers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientPki]:
    tmp = tmp_path_factory.mktemp("strangers")
    return {
        "other-ca": make_pki(tmp / "other", "kube-apiserver"),
        "workload": make_pki(tmp / "workload", "system:serviceaccount:demo:app"),
    }


def test_the_api_server_certificate_is_served(webhook: Webhook) -> None:
    assert tls_outcome(webhook.port, webhook.context(webhook.pki)).startswith("HTTP/1.1 ")
    response = webhook.post(review())
    assert response.status_code == 200
    assert response.json()["kind"] == "AdmissionReview"


@pytest.mark.parametrize("client", ["none", "other-ca", "workload", "expired"])
def test_other_clients_are_refused_at_tls(
    webhook: Webhook, strangers: dict[str, ClientPki], tmp_path: Path, client: str
) -> None:
    assert webhook.pki is not None
    chosen: ClientPki | None = None
    if client == "expired":  # issued by the API server's CA, but no longer valid
        chosen = issue_client(webhook.pki.ca, tmp_path, "kube-apiserver", expired=True)
    elif client != "none":
        chosen = strangers[client]
    assert tls_outcome(webhook.port, webhook.context(chosen)) == "refused"
    # The same client is refused by the HTTP client too: no response at all.
    with pytest.raises(httpx.TransportError), webhook.client(chosen) as http:
        http.post("/k8s/mutate", json=review())


# -- one endpoint per listener -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_public_listener_does_not_serve_the_webhook(webhook: Webhook, method: str) -> None:
    with webhook.server.client() as http:
        response = http.request(method, "/k8s/mutate", json=review())
        unknown = http.request(method, "/no/such/path", json=review())
    assert response.status_code == unknown.status_code == 404
    assert response.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/k8s/mutate", 405),
        ("GET", "/healthz", 404),
        ("GET", "/metrics", 404),
        ("GET", "/default/v2.0/.well-known/openid-configuration", 404),
        ("POST", "/default/oauth2/v2.0/token", 404),
        ("GET", "/vaults/x/secrets/y", 404),
    ],
)
def test_webhook_listener_serves_only_the_webhook(
    webhook: Webhook, method: str, path: str, status: int
) -> None:
    with webhook.client() as http:
        assert http.request(method, path).status_code == status


# -- start-up: a client-auth choice is required ------------------------------------------------

WITH_CA = ["--webhook-listen", "127.0.0.1:{port}", "--webhook-client-ca", "{ca}"]


# Each case starts a process (seconds): the settings rules are all in test_settings_k8s.py.
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-listen", "127.0.0.1:{port}"], "--webhook-listen needs --webhook-client-ca"),
        ([*WITH_CA, "--webhook-insecure-no-client-auth"], "choose one"),
        (
            ["--webhook-listen", "127.0.0.1:{port}", "--webhook-client-ca", "{notpem}"],
            "not a readable PEM CA certificate",
        ),
    ],
    ids=["no-choice", "both-choices", "ca-not-pem"],
)
def test_refuses_to_start_without_a_sound_choice(
    tmp_path: Path, args: list[str], message: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "notpem").write_text("not a certificate\n")
    values = {
        "port": str(free_port()),
        "ca": str(pki.ca),
        "notpem": str(tmp_path / "notpem"),
    }
    argv = [a.format(**values) for a in args]
    result = subprocess.run(
        [
            *keyless_cmd(),
            *("--data-dir", str(tmp_path / "data"), "serve", "--dev"),
            *("--listen", f"127.0.0.1:{free_port()}", *argv),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keyless: error: "), result.stderr
    assert message in lines[0]
    assert "ready" not in result.stdout


# -- without client auth: uniform answers ------------------------------------------------------


@pytest.fixture(scope="module")
def open_hook(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("open")
    factory = ServerFactory(tmp)
    env = {"KUBECONFIG": str(kube.kubeconfig(tmp / "kubeconfig")), "HOME": str(tmp)}
    try:
        yield start_webhook(factory, tmp, client_auth=False, env=env)
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def open_client(
    open_hook: Webhook, kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory
) -> str:
    made = open_hook.server.cli("--output", "json", "identity", "create", "open-app")
    client_id = json.loads(made.stdout)["client_id"]
    kube.put("open", "known", {names.CLIENT_ID_ANNOTATION: client_id})
    kube.put("open", "unknown-id", {names.CLIENT_ID_ANNOTATION: str(uuid.uuid4())})
    kube.put("open", "no-annotation", {})
    kube.put(
        "open",
        "bad-expiry",
        {
            names.CLIENT_ID_ANNOTATION: client_id,
            names.EXPIRATION_ANNOTATION: "soon",
        },
    )
    return client_id


def _answer(hook: Webhook, body: Any, client: ClientPki | None = None) -> dict[str, Any]:
    with hook.client(client) as http:
        response = http.post("/k8s/mutate", json=body)
    assert response.status_code == 200, response.text
    return response.json()["response"]


def _in_namespace(body: Any, namespace: str) -> Any:
    body["request"]["namespace"] = namespace
    body["request"]["object"]["metadata"]["namespace"] = namespace
    return body


def test_open_listener_warns_and_serves_without_a_certificate(
    open_client: str, open_hook: Webhook
) -> None:
    assert "WARNING: --webhook-insecure-no-client-auth" in open_hook.server.log
    assert "no client auth" in open_hook.server.log
    answer = _answer(open_hook, _in_namespace(review("known"), "open"))
    assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"


@pytest.mark.parametrize(
    "service_account",
    ["ghost", "no-annotation", "bad-expiry"],
    ids=["missing", "no-client-id", "sa-bad-expiry"],
)
def test_open_listener_refusals_are_uniform(
    open_client: str, open_hook: Webhook, service_account: str
) -> None:
    body = _in_namespace(review(service_account), "open")
    answer = _answer(open_hook, body)
    assert answer == {
        "uid": body["request"]["uid"],
        "allowed": False,
        "status": {"code": 400, "message": UNIFORM_REFUSAL, "reason": "BadRequest"},
    }
    assert service_account not in json.dumps(answer)


def test_open_listener_does_not_tell_which_client_ids_keyless_knows(
    open_client: str, open_hook: Webhook
) -> None:
    """A known and an unknown client id get the same kind of answer (admitted, injected); the
    unknown one fails later, at the token endpoint."""
    answers = []
    for client_id in (open_client, str(uuid.uuid4())):
        body = review("anything", {names.KEYLESS_CLIENT_ID_ANNOTATION: client_id})
        answers.append(_answer(open_hook, _in_namespace(body, "open")))
    sa_answers = [
        _answer(open_hook, _in_namespace(review(sa), "open")) for sa in ("known", "unknown-id")
    ]
    for answer in answers + sa_answers:
        assert answer["allowed"] is True and set(answer) == {"uid", "allowed", "patchType", "patch"}


def test_pod_only_refusals_keep_their_reason_without_client_auth(
    open_client: str, open_hook: Webhook
) -> None:
    body = review("ghost", {names.EXPIRATION_ANNOTATION: "soon"})
    answer = _answer(open_hook, _in_namespace(body, "open"))
    assert answer["allowed"] is False
    assert "is not a whole number of seconds" in answer["status"]["message"]
    assert "service account" not in answer["status"]["message"]
