"""The agent injection (``k8s/agentinject.py``) on top of the recorded ``agent-*`` fixtures
(which ``test_inject.py`` runs with the others: exact pods, valid under the Kubernetes schema,
reinvocation empty): the layout, what the API server's defaulting and other webhooks may do
between invocations, and stability for any pod and annotations (Hypothesis)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from keyless.agent.endpoints import aws, gcp, podsecret, server
from keyless.core import gcpnames
from keyless.k8s import agentannotations, agentinject, inject, names
from tests.k8s.cases import AGENT_IMAGE, TENANT, load_cases

BY_NAME = {c.name: c for c in load_cases()}
CLIENT = "0b4f9a3e-6c1d-4a57-9e8b-2f6d1c7a5e90"
SA = inject.ServiceAccount("demo", "app", {names.CLIENT_ID_ANNOTATION: CLIENT})


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _agent(pod: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = pod["spec"]["initContainers"][0]
    assert first["name"] == agentannotations.CONTAINER
    return first


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def _mounts(container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {
        m["mountPath"]: (m["name"], m.get("readOnly", False))
        for m in container.get("volumeMounts", [])
    }


def test_native_sidecar_layout() -> None:
    case = BY_NAME["agent-basic"]
    pod = case.expect["pod"]
    agent = _agent(pod)
    assert agent["image"] == AGENT_IMAGE
    assert agent["command"] == ["keyless", "agent"]
    assert agent["args"] == [
        "--secret=billing/db-password=/keyless/secrets/db-password",
        "--mode=0440",
    ]
    assert agent["restartPolicy"] == "Always"  # a native sidecar: Jobs complete
    assert agent["startupProbe"]["exec"]["command"] == [
        "sh",
        "-c",
        "test -e /keyless/secrets/db-password",
    ]
    assert agent["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert agent["resources"] == {
        "requests": {"cpu": "10m", "memory": "48Mi"},
        "limits": {"memory": "128Mi"},
    }
    # The Azure injection's variables for the service account's identity, in the agent only.
    token_volume = inject.token_volume_name(case.pod)
    assert _env(agent) == {
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_TENANT_ID": TENANT,
        "AZURE_FEDERATED_TOKEN_FILE": names.TOKEN_FILE,
        "AZURE_AUTHORITY_HOST": "https://keyless.keyless.svc",
        "REQUESTS_CA_BUNDLE": names.CA_FILE,
        "SSL_CERT_FILE": names.CA_FILE,
        "NODE_EXTRA_CA_CERTS": names.CA_FILE,
        "KEYLESS_TENANT_ALIAS": "default",
    }
    assert _mounts(agent) == {
        "/keyless/secrets": ("keyless-agent-secrets", False),
        names.TOKEN_MOUNT_PATH: (token_volume, True),
        names.CA_MOUNT_PATH: (names.CA_VOLUME, True),
    }
    app = pod["spec"]["containers"][0]
    assert "env" not in app  # the pod is not labelled for the Azure injection
    assert _mounts(app)["/keyless/secrets"] == ("keyless-agent-secrets", True)
    assert _volume(pod, "keyless-agent-secrets") == {
        "name": "keyless-agent-secrets",
        "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"},
    }
    token = _volume(pod, token_volume)["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == names.DEFAULT_AUDIENCE


def test_template_comes_from_its_own_annotation() -> None:
    case = BY_NAME["agent-template"]
    pod = case.expect["pod"]
    agent = _agent(pod)
    assert agent["args"] == [
        "--secret=billing/api-key=/keyless/secrets/api-key",
        "--template=/keyless/templates/db.env=/keyless/secrets/db.env",
        "--mode=0400",
    ]
    assert _volume(pod, "keyless-agent-templates") == {
        "name": "keyless-agent-templates",
        "downwardAPI": {
            "items": [
                {
                    "path": "db.env",
                    "fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": "metadata.annotations['keyless.dev/agent-template-db.env']",
                    },
                }
            ]
        },
    }
    assert _mounts(agent)["/keyless/templates"] == ("keyless-agent-templates", True)
    assert "/keyless/templates" not in _mounts(pod["spec"]["containers"][0])
    assert agent["resources"] == {
        "requests": {"cpu": "50m", "memory": "48Mi"},
        "limits": {"memory": "256Mi"},
    }
    probe = agent["startupProbe"]["exec"]["command"][2]
    assert probe == "test -e /keyless/secrets/api-key && test -e /keyless/secrets/db.env"


def test_init_mode_is_a_plain_init_container_first() -> None:
    pod = BY_NAME["agent-init-mode"].expect["pod"]
    agent = _agent(pod)
    assert agent["args"][0] == "--once"
    assert "restartPolicy" not in agent and "startupProbe" not in agent
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["keyless-agent", "migrate"]
    pinned = "billing/db-password/0123456789abcdef0123456789abcdef"
    assert f"--secret={pinned}=/keyless/secrets/db-password" in agent["args"]
    for container in pod["spec"]["initContainers"][1:] + pod["spec"]["containers"]:
        assert _mounts(container)["/keyless/secrets"] == ("keyless-agent-secrets", True)


def test_job_pod_gets_a_native_sidecar() -> None:
    pod = BY_NAME["agent-job"].expect["pod"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    agent = _agent(pod)
    assert agent["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["keyless-agent", "wait-for-db"]


def test_credentials_env_file_and_google_token() -> None:
    case = BY_NAME["agent-credentials"]
    pod = case.expect["pod"]
    agent = _agent(pod)
    assert agent["args"][-4:] == [
        "--credentials=azure,aws,gcp",
        "--credentials-env-file=/keyless/credentials/credentials.env",
        "--credentials-port=8955",
        "--gcp-token-file=/var/run/secrets/keyless/agent-gcp/token",
    ]
    env = _env(agent)
    assert (env["KEYLESS_IDENTITY"], env["KEYLESS_TENANT_ALIAS"]) == ("billing", "default")
    token = _volume(pod, "keyless-agent-gcp-token")["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == gcpnames.provider(TENANT).name
    assert _mounts(agent)["/keyless/credentials"] == ("keyless-agent-credentials", False)
    app = pod["spec"]["containers"][0]
    assert _mounts(app)["/keyless/credentials"] == ("keyless-agent-credentials", True)
    assert "/var/run/secrets/keyless/agent-gcp" not in _mounts(app)  # the agent's token only
    assert _mounts(app)[names.CA_MOUNT_PATH] == (names.CA_VOLUME, True)
    # What names the fixed port and the shared files only; IDENTITY_HEADER (the agent's random
    # per-pod secret) is in the environment file alone.
    assert _env(app) == {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:8955/aws/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/keyless/credentials/credentials-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": "https://keyless.keyless.svc/aws/secretsmanager",
        "AWS_CA_BUNDLE": names.CA_FILE,
        "GCE_METADATA_HOST": "127.0.0.1:8955",
        "GCE_METADATA_IP": "127.0.0.1:8955",
        "GOOGLE_CLOUD_PROJECT": "default",
        "REQUESTS_CA_BUNDLE": names.CA_FILE,
        "SSL_CERT_FILE": names.CA_FILE,
        "NODE_EXTRA_CA_CERTS": names.CA_FILE,
    }
    assert agent["startupProbe"]["exec"]["command"][2].endswith(
        "test -e /keyless/credentials/credentials.env"
    )


def test_app_variables_are_what_the_agent_writes_in_its_env_file(tmp_path: Path) -> None:
    """The variables set in the application's containers are the agent's own, for the port
    and shared volume the agent is given (keyless.agent.endpoints, which k8s does not import)."""
    secret_file = tmp_path / "credentials-secret"
    base = "http://127.0.0.1:8955"
    written = aws.variables(base, secret_file) | gcp.variables("127.0.0.1:8955")
    written["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = agentinject.CREDENTIALS_SECRET_FILE
    app = _env(BY_NAME["agent-credentials"].expect["pod"]["spec"]["containers"][0])
    assert {k: app[k] for k in written} == written
    assert f"/keyless/credentials/{server.SECRET_FILE}" == agentinject.CREDENTIALS_SECRET_FILE
    assert podsecret.FILE_MODE == 0o640  # readable through the pod's fsGroup (docs)


def test_beside_the_aws_injection_the_agent_keeps_its_own_variables() -> None:
    pod = BY_NAME["agent-and-aws"].expect["pod"]
    agent = _agent(pod)
    assert not any(name.startswith("AWS_") for name in _env(agent))
    assert _env(agent)["KEYLESS_IDENTITY"] == "billing"  # from the role's ARN
    assert _env(pod["spec"]["containers"][0])["AWS_ROLE_ARN"].endswith(":role/billing")


def test_beside_the_azure_injection_one_token_volume() -> None:
    case = BY_NAME["agent-and-azure"]
    pod = case.expect["pod"]
    agent, app = _agent(pod), pod["spec"]["containers"][0]
    assert _env(app)["AZURE_CLIENT_ID"] == _env(agent)["AZURE_CLIENT_ID"] == CLIENT
    shared = inject.token_volume_name(case.pod)
    assert _mounts(app)[names.TOKEN_MOUNT_PATH] == _mounts(agent)[names.TOKEN_MOUNT_PATH]
    assert [v["name"] for v in pod["spec"]["volumes"]].count(shared) == 1


def _defaulted(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` as the API server stores it: defaults added to what the webhook wrote."""
    out = copy.deepcopy(pod)
    agent = _agent(out)
    agent |= {"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}
    agent["startupProbe"] |= {"timeoutSeconds": 1, "successThreshold": 1}
    for volume in out["spec"]["volumes"]:
        for kind in ("downwardAPI", "projected"):
            if kind in volume:
                volume[kind]["defaultMode"] = 420
    return out


@pytest.mark.parametrize("name", ["agent-basic", "agent-template", "agent-credentials"])
def test_reinvocation_after_defaulting_changes_nothing(name: str) -> None:
    case = BY_NAME[name]
    pod = _defaulted(case.expect["pod"])
    assert inject.mutation_patch(pod, case.service_account, case.settings()) == []


def test_an_older_agent_is_replaced_in_place() -> None:
    """A pod injected by an earlier keyless (another image) reinvoked, after another webhook
    put an init container first: one replace, at the agent's index."""
    case = BY_NAME["agent-basic"]
    pod = copy.deepcopy(case.expect["pod"])
    _agent(pod)["image"] = "registry.example/keyless:0.0.9"
    pod["spec"]["initContainers"].insert(0, {"name": "istio-init", "image": "istio"})
    ops = inject.mutation_patch(pod, case.service_account, case.settings())
    assert [(op["op"], op["path"]) for op in ops] == [
        ("add", "/spec/initContainers/0/volumeMounts"),  # istio-init sees the files too
        ("replace", "/spec/initContainers/1"),
    ]
    assert ops[1]["value"]["image"] == AGENT_IMAGE


def test_another_webhook_s_init_container_gets_the_files_on_reinvocation() -> None:
    case = BY_NAME["agent-basic"]
    pod = copy.deepcopy(case.expect["pod"])
    pod["spec"]["initContainers"].append({"name": "late", "image": "x"})
    ops = inject.mutation_patch(pod, case.service_account, case.settings())
    assert ops == [
        {
            "op": "add",
            "path": "/spec/initContainers/1/volumeMounts",
            "value": [
                {"name": "keyless-agent-secrets", "mountPath": "/keyless/secrets", "readOnly": True}
            ],
        }
    ]


def test_own_init_container_named_keyless_agent_is_injected_without_annotations() -> None:
    """An Azure-labelled pod running the agent by hand (docs/agent.md's pod specs) in an init
    container of that name gets the Azure variables as before: without the agent's annotations
    the name is the pod's own."""
    pod = {
        "metadata": {"name": "p", "labels": {names.USE_LABEL: "true"}},
        "spec": {
            "initContainers": [{"name": "keyless-agent", "image": "keyless"}],
            "containers": [{"name": "app", "image": "x"}],
        },
    }
    ops = inject.mutation_patch(pod, SA, BY_NAME["agent-basic"].settings())
    assert any(op["path"] == "/spec/initContainers/0/env" for op in ops)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"keyless.dev/inject-secret-a/b": "vlt/s"}, "'a/b' is not a file name"),
        ({"keyless.dev/inject-secret-x-": "vlt/s"}, "'x-' is not a file name"),
        ({"keyless.dev/inject-secret-" + "a" * 64: "vlt/s"}, "is not a file name"),
        ({"keyless.dev/inject-secret-x": "vlt/bad_name"}, "is not a secret reference"),
        ({"keyless.dev/inject-secret-x": "sys/db"}, "is not a secret reference"),
        ({"keyless.dev/inject-secret-x": "vlt/db/latest"}, "is not a secret reference"),
        ({"keyless.dev/inject-secret-x": "vlt/db/"}, "is not a secret reference"),
        (
            {"keyless.dev/inject-secret-x": "vlt/a", "keyless.dev/agent-template-x": "t"},
            "file 'x' is asked for twice",
        ),
        ({"keyless.dev/agent-credentials": ""}, "is not a comma-separated list"),
        (
            {"keyless.dev/inject-secret-x": "vlt/a", "keyless.dev/agent-file-mode": "644x"},
            "is not an octal file mode",
        ),
        (
            {"keyless.dev/inject-secret-x": "vlt/a", "keyless.dev/agent-cpu-limit": "1e3"},
            "is not a Kubernetes quantity",
        ),
        (
            {"keyless.dev/agent-credentials": "aws", "keyless.dev/agent-credentials-port": "80"},
            "is not a port in 1024..65535",
        ),
        (
            {f"keyless.dev/inject-secret-f{i}": "vlt/a" for i in range(65)},
            "the agent writes at most 64 files",
        ),
    ],
)
def test_bad_annotations_are_refused_in_one_line(annotations: dict[str, str], message: str) -> None:
    pod = {"metadata": {"name": "p", "annotations": annotations}, "spec": {"containers": []}}
    with pytest.raises(inject.InjectionError, match=None) as caught:
        inject.check_pod(pod, BY_NAME["agent-basic"].settings())
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_credentials_gcp_needs_a_known_tenant() -> None:
    """An unauthenticated webhook knows the default tenant's alias only."""
    other = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"
    pod = {
        "metadata": {
            "name": "p",
            "annotations": {
                "keyless.dev/agent-credentials": "gcp",
                names.KEYLESS_CLIENT_ID_ANNOTATION: CLIENT,
                names.KEYLESS_TENANT_ID_ANNOTATION: other,
            },
        },
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }
    settings_ = inject.WebhookSettings(
        "https://k", TENANT, known_tenants=((TENANT, TENANT, "default"),)
    )
    named = inject.WebhookSettings(
        "https://k",
        TENANT,
        known_tenants=((TENANT, TENANT, "default"),),
        agent_names=((CLIENT, "billing"),),
    )
    with pytest.raises(inject.InjectionError, match="needs the alias of tenant"):
        inject.mutation_patch(pod, None, named)
    with pytest.raises(inject.InjectionError, match="needs the agent's identity name"):
        inject.mutation_patch(pod, None, settings_)
    known = inject.WebhookSettings(
        "https://k",
        TENANT,
        known_tenants=((other, other, "team-b"),),
        agent_names=((CLIENT, "billing"),),
    )
    patched = jsonpatch.apply_patch(pod, inject.mutation_patch(pod, None, known))
    assert _env(_agent(patched))["KEYLESS_TENANT_ALIAS"] == "team-b"
    token = _volume(patched, "keyless-agent-gcp-token")["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == gcpnames.provider(other).name


# -- any pod, any annotations ------------------------------------------------------------------

FILES = st.sampled_from(["db.env", "api-key", "config.json", "x", "a.b_c-d"])
REFS = st.sampled_from(["billing/db-password", "billing/api-key", "ops/token"])
AGENT_ANNOTATIONS = st.fixed_dictionaries(
    {"secrets": st.dictionaries(FILES, REFS, min_size=1, max_size=3) | st.just({})},
    optional={
        "templates": st.dictionaries(FILES, st.text(max_size=40), max_size=2),
        agentannotations.CREDENTIALS_ANNOTATION: st.sampled_from(["azure", "aws", "azure,gcp"]),
        agentannotations.MODE_ANNOTATION: st.sampled_from(["sidecar", "init"]),
        "keyless.dev/agent-memory-limit": st.sampled_from(["64Mi", "1Gi"]),
        "other": st.text(max_size=10),
    },
)
CONTAINER = st.builds(
    lambda name, env, mount: {
        "name": name,
        "image": "x",
        **({"env": [{"name": n, "value": "v"} for n in sorted(env)]} if env else {}),
        **({"volumeMounts": [{"name": "own", "mountPath": mount}]} if mount else {}),
    },
    st.sampled_from(["app", "sidecar", "migrate", "wait", "keyless-agent"]),
    st.sets(st.sampled_from([names.AZURE_CLIENT_ID, "REQUESTS_CA_BUNDLE", "OTHER"]), max_size=2),
    st.sampled_from([None, None, None, "/data", "/keyless/secrets"]),
)


def _annotations(drawn: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for file, ref in drawn.pop("secrets", {}).items():
        out[agentannotations.SECRET_PREFIX + file] = ref
    for file, text in drawn.pop("templates", {}).items():
        out[agentannotations.TEMPLATE_PREFIX + file] = text
    return out | drawn


@settings(max_examples=300, deadline=None)
@given(
    containers=st.lists(CONTAINER, min_size=1, max_size=3, unique_by=lambda c: c["name"]),
    init=st.lists(CONTAINER, max_size=2, unique_by=lambda c: c["name"]),
    drawn=AGENT_ANNOTATIONS,
    labelled=st.booleans(),
    role=st.booleans(),
    public_ca=st.booleans(),
    named=st.booleans(),
)
def test_any_pod_gives_a_stable_valid_patch_or_a_refusal(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]],
    drawn: dict[str, Any],
    labelled: bool,
    role: bool,
    public_ca: bool,
    named: bool,
) -> None:
    """Whatever the pod and its annotations: a refusal, or a patch after which the agent is
    the first init container (exactly one of them), every other container mounts the files
    read-only, the pod is valid under the Kubernetes schema, and a reinvocation changes
    nothing."""
    annotations = _annotations(drawn)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "annotations": annotations,
            **({"labels": {names.USE_LABEL: "true"}} if labelled else {}),
        },
        "spec": {"containers": containers, **({"initContainers": init} if init else {})},
    }
    sa_annotations = {names.CLIENT_ID_ANNOTATION: CLIENT}
    if role:
        sa_annotations[names.ROLE_ARN_ANNOTATION] = "arn:aws:iam::797834557115:role/billing"
    sa = inject.ServiceAccount("demo", "app", sa_annotations)
    settings_ = inject.WebhookSettings(
        "https://keyless.keyless.svc",
        TENANT,
        ca_configmap=None if public_ca else names.DEFAULT_CA_CONFIGMAP,
        known_tenants=((TENANT, TENANT, "default"),),
        agent_names=((CLIENT, "billing"),) if named else (),
    )
    try:
        inject.check_pod(pod, settings_)
        ops = inject.mutation_patch(pod, sa, settings_)
    except inject.InjectionError as exc:
        assert "\n" not in exc.message
        event("refused")
        return
    event("agent injected" if agentannotations.requested(pod) else "no agent")
    patched = jsonpatch.JsonPatch(ops).apply(pod)
    if agentannotations.requested(pod):
        agents = [c for c in patched["spec"]["initContainers"] if c["name"] == "keyless-agent"]
        assert len(agents) == 1
        agent = agents[0]
        request = agentannotations.parse(pod)
        assert request is not None
        for key in ("containers", "initContainers"):
            for container in patched["spec"].get(key, []):
                if not agentinject.is_agent(key, container):
                    mounts = _mounts(container)
                    assert mounts["/keyless/secrets"] == ("keyless-agent-secrets", True)
        assert sum(a.startswith("--secret=") for a in agent["args"]) == len(request.secrets)
        kubernetes_validate.validate(patched, "1.33.0", strict=True)
    assert inject.mutation_patch(patched, sa, settings_) == []


def test_the_docs_deployment_is_injected_into_a_valid_pod() -> None:
    """docs/agent.md's "Injection by annotation" Deployment: its pod template, admitted, is a
    valid pod whose agent delivers what the annotations ask."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    deployments = [
        obj
        for obj in map(yaml.safe_load, blocks)
        if obj["kind"] == "Deployment"
        and any(
            k.startswith("keyless.dev/")
            for k in obj["spec"]["template"]["metadata"].get("annotations", {})
        )
    ]
    assert deployments
    for deployment in deployments:
        template = deployment["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(template)}
        pod["metadata"]["generateName"] = "billing-api-"
        named = BY_NAME["agent-credentials"].settings()
        patched = jsonpatch.apply_patch(pod, inject.mutation_patch(pod, SA, named))
        kubernetes_validate.validate(patched, "1.33.0", strict=True)
        agent = _agent(patched)
        assert "--template=/keyless/templates/db.env=/keyless/secrets/db.env" in agent["args"]
        assert "--credentials=azure,aws" in agent["args"]
