"""Table-driven: every recorded AdmissionReview in fixtures/ through the pure injection logic.

Each fixture holds the review as kube-apiserver sends it, the pod's service account, and the
expected answer: refused with a message, admitted untouched, or admitted with a patch whose
result (applied with the ``jsonpatch`` library) is exactly ``expect.pod`` and is a valid Pod
under the Kubernetes OpenAPI schema (``kubernetes-validate``, strict, offline).

``KEYLESS_TEST_UPDATE_FIXTURES=1`` rewrites ``expect.pod`` from the current code; review the
diff before committing it.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest

from keyless.k8s import agentannotations, agentinject, inject, names
from tests.k8s.cases import TENANT, Case, load_cases, patched_pod, run_pure

K8S_VERSION = "1.33.0"
UPDATE = os.environ.get("KEYLESS_TEST_UPDATE_FIXTURES") == "1"
CASES = load_cases()
BY_NAME = {c.name: c for c in CASES}


def validate_pod(pod: dict[str, Any]) -> None:
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_recorded_review(case: Case) -> None:
    review = run_pure(case)
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
    response = review["response"]
    assert response["uid"] == case.review["request"]["uid"]
    assert response["allowed"] is case.expect["allowed"], response.get("status")
    if not case.expect["allowed"]:
        assert "patch" not in response
        assert response["status"]["code"] == 400
        assert response["status"]["message"].startswith(case.expect["message"])
        return
    if case.expect.get("patch") is False:
        assert "patch" not in response and "patchType" not in response
        return
    assert response["patchType"] == "JSONPatch"
    pod = patched_pod(case, review)
    if UPDATE:
        case.expect["pod"] = pod
        case.save()
    assert pod == case.expect["pod"]
    validate_pod(case.pod)
    validate_pod(pod)
    # Reinvoked on its own output (reinvocationPolicy: IfNeeded), the webhook changes nothing.
    assert inject.mutation_patch(pod, case.service_account, case.settings()) == []


def _injected() -> list[Case]:
    return [c for c in CASES if c.expect["allowed"] and "pod" in c.expect]


@pytest.mark.parametrize("case", _injected(), ids=lambda c: c.name)
def test_never_duplicates(case: Case) -> None:
    pod = case.expect["pod"]
    spec = pod["spec"]
    volumes = Counter(v["name"] for v in spec["volumes"])
    assert max(volumes.values()) == 1
    for container in spec["containers"] + spec.get("initContainers", []):
        env = Counter(e["name"] for e in container.get("env", []))
        assert not env or max(env.values()) == 1
        mounts = container.get("volumeMounts", [])
        assert len({m["name"] for m in mounts}) == len(mounts)
        assert len({m["mountPath"] for m in mounts}) == len(mounts)
    # One token volume, shared by the Azure injection and the agent.
    azure = 1 if inject.azure_applies(case.pod) or agentannotations.requested(case.pod) else 0
    assert sum(v.startswith(names.TOKEN_VOLUME_PREFIX) for v in volumes) == azure


@pytest.mark.parametrize("case", _injected(), ids=lambda c: c.name)
def test_originals_kept(case: Case) -> None:
    """Everything the pod had is still there, in place, with its value."""
    before, after = case.pod["spec"], case.expect["pod"]["spec"]
    assert after["volumes"][: len(before.get("volumes", []))] == before.get("volumes", [])
    for key in ("containers", "initContainers"):
        # The injected agent is the first init container; the pod's own follow, in order.
        news = [c for c in after.get(key, []) if not agentinject.is_agent(key, c)]
        for old, new in zip(before.get(key, []), news, strict=True):
            assert new.get("env", [])[: len(old.get("env", []))] == old.get("env", [])
            kept = old.get("volumeMounts", [])
            assert new.get("volumeMounts", [])[: len(kept)] == kept
    assert after.get("ephemeralContainers") == before.get("ephemeralContainers")
    # Metadata is untouched but for the Google credential configuration's annotation.
    meta = copy.deepcopy(case.expect["pod"]["metadata"])
    annotations = meta.get("annotations") or {}
    annotations.pop(names.GCP_CONFIG_ANNOTATION, None)
    original = case.pod["metadata"]
    if not annotations and not original.get("annotations"):
        meta.pop("annotations", None)
    else:
        assert annotations == {
            k: v
            for k, v in original.get("annotations", {}).items()
            if k != names.GCP_CONFIG_ANNOTATION
        }
        meta["annotations"] = original.get("annotations")
    assert meta == original


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_selected_pod_gets_upstream_layout() -> None:
    case = BY_NAME["selected-basic"]
    pod = case.expect["pod"]
    container = pod["spec"]["containers"][0]
    volume = pod["spec"]["volumes"][-2]
    assert volume["name"] == inject.token_volume_name(case.pod)
    assert volume["name"].startswith("azure-workload-identity-reserved-")
    assert len(volume["name"]) == 63
    assert volume["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "path": "token/azure-identity-token",
                "expirationSeconds": 3600,
                "audience": "api://AzureADTokenExchange",
            }
        }
    ]
    assert _env(container) == {
        "AZURE_CLIENT_ID": "0b4f9a3e-6c1d-4a57-9e8b-2f6d1c7a5e90",
        "AZURE_TENANT_ID": "7d3c2b1a-0f9e-4d8c-b7a6-958473625140",  # the SA's tenant-id
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/wi/token/azure-identity-token",
        "AZURE_AUTHORITY_HOST": "https://keyless.keyless.svc",
        "REQUESTS_CA_BUNDLE": "/var/run/secrets/keyless/ca/ca.crt",
        "SSL_CERT_FILE": "/var/run/secrets/keyless/ca/ca.crt",
        "NODE_EXTRA_CA_CERTS": "/var/run/secrets/keyless/ca/ca.crt",
    }
    assert container["volumeMounts"][-2:] == [
        {"name": volume["name"], "mountPath": "/var/run/secrets/azure/wi", "readOnly": True},
        {
            "name": "keyless-reserved-ca",
            "mountPath": "/var/run/secrets/keyless/ca",
            "readOnly": True,
        },
    ]
    assert pod["spec"]["volumes"][-1] == {
        "name": "keyless-reserved-ca",
        "configMap": {"name": "keyless-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    }


def _expiration(case: Case) -> int:
    volume = next(
        v
        for v in case.expect["pod"]["spec"]["volumes"]
        if v["name"].startswith(names.TOKEN_VOLUME_PREFIX)
    )
    return int(volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"])


def test_expiration_pod_wins_then_service_account_then_default() -> None:
    assert _expiration(BY_NAME["expiration-pod-wins"]) == 7200
    assert _expiration(BY_NAME["expiration-service-account"]) == 86400
    assert _expiration(BY_NAME["selected-basic"]) == 3600


def test_default_tenant_when_service_account_names_none() -> None:
    env = _env(BY_NAME["multiple-containers"].expect["pod"]["spec"]["containers"][0])
    assert env["AZURE_TENANT_ID"] == TENANT


def test_every_container_and_init_container_but_skipped_ones() -> None:
    pod = BY_NAME["skip-containers"].expect["pod"]["spec"]
    injected = {
        c["name"] for c in pod["containers"] + pod["initContainers"] if "AZURE_CLIENT_ID" in _env(c)
    }
    assert injected == {"app", "migrate"}
    original = BY_NAME["skip-containers"].pod["spec"]
    assert pod["containers"][1] == original["containers"][1]  # istio-proxy
    assert pod["initContainers"][0] == original["initContainers"][0]  # istio-init
    inits = BY_NAME["init-containers"].expect["pod"]["spec"]["initContainers"]
    assert all("AZURE_FEDERATED_TOKEN_FILE" in _env(c) for c in inits)


def test_user_env_wins() -> None:
    env = _env(BY_NAME["existing-env"].expect["pod"]["spec"]["containers"][0])
    assert env["AZURE_CLIENT_ID"] == "11111111-2222-4333-8444-555555555555"
    assert env["REQUESTS_CA_BUNDLE"] == {"configMapKeyRef": {"name": "corp-ca", "key": "bundle"}}
    assert env["SSL_CERT_FILE"] == names.CA_FILE


def test_public_ca_adds_no_ca() -> None:
    spec = BY_NAME["public-ca"].expect["pod"]["spec"]
    assert names.CA_VOLUME not in {v["name"] for v in spec["volumes"]}
    assert not set(names.CA_ENV) & set(_env(spec["containers"][0]))


def test_pod_annotation_needs_no_lookup() -> None:
    case = BY_NAME["keyless-client-id-annotation"]
    assert not inject.needs_lookup(case.pod)
    assert inject.needs_lookup(BY_NAME["selected-basic"].pod)
    assert inject.service_account_name(BY_NAME["no-service-account"].pod) == "default"
    assert inject.service_account_name({"spec": {}}) == "default"


def test_missing_client_id_but_pod_sets_it_is_not_overridden() -> None:
    env = _env(BY_NAME["missing-client-id-pod-sets-it"].expect["pod"]["spec"]["containers"][0])
    assert env["AZURE_CLIENT_ID"] == "0b4f9a3e-6c1d-4a57-9e8b-2f6d1c7a5e90"


def test_reinvocation_after_another_webhook_named_the_pod() -> None:
    """Upstream hashes the pod name into the volume name; if another webhook set the name
    between two invocations, keyless keeps the volume it already injected."""
    case = BY_NAME["selected-basic"]
    pod = dict(case.expect["pod"])
    pod["metadata"] = {**pod["metadata"], "name": "app-5d8f7c9b6d-abcde"}
    assert inject.token_volume_name(pod) != inject.token_volume_name(case.pod)
    assert inject.mutation_patch(pod, case.service_account, case.settings()) == []


def test_reinvocation_replaces_a_changed_volume_in_place() -> None:
    case = BY_NAME["selected-basic"]
    pod = case.expect["pod"]
    sa = inject.ServiceAccount(
        "demo",
        "app",
        {
            names.CLIENT_ID_ANNOTATION: "0b4f9a3e-6c1d-4a57-9e8b-2f6d1c7a5e90",
            names.TENANT_ID_ANNOTATION: "7d3c2b1a-0f9e-4d8c-b7a6-958473625140",
            names.EXPIRATION_ANNOTATION: "7200",
        },
    )
    ops = inject.mutation_patch(pod, sa, case.settings())
    index = len(pod["spec"]["volumes"]) - 2
    assert [(op["op"], op["path"]) for op in ops] == [("replace", f"/spec/volumes/{index}")]


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("3600", 3600),
        ("86400", 86400),
        ("+4000", 4000),
        ("3599", None),
        ("86401", None),
        ("", 3600),
        (" 3600", None),
        ("3_600", None),
        ("1e4", None),
        ("-3600", None),
    ],
)
def test_expiration_parsing(raw: str, ok: int | None) -> None:
    pod = {"metadata": {"annotations": {names.EXPIRATION_ANNOTATION: raw}}}
    if ok is None:
        with pytest.raises(inject.InjectionError):
            inject.token_expiration(pod, None)
    else:
        assert inject.token_expiration(pod, None) == ok


def test_skip_list_parsing() -> None:
    pod = {"metadata": {"annotations": {names.SKIP_CONTAINERS_ANNOTATION: " a;b ; ;c"}}}
    assert inject.skip_containers(pod) == {"a", "b", "c"}
    assert inject.skip_containers({}) == frozenset()


def test_unselected_pod_is_never_patched_even_if_called_directly() -> None:
    case = BY_NAME["unselected-no-label"]
    sa = inject.ServiceAccount("demo", "app", {names.CLIENT_ID_ANNOTATION: "x"})
    assert inject.mutation_patch(case.pod, sa, case.settings()) == []
