"""The EKS-style injection (``k8s/awsinject.py``) on top of the recorded ``aws-*`` fixtures
(which ``test_inject.py`` runs with the others: exact pods, valid under the Kubernetes schema,
reinvocation empty): the layout the EKS webhook gives, keyless's additions, and its rules."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyless.core import awsnames
from keyless.k8s import awsinject, inject, names
from tests.k8s.cases import AUTHORITY, TENANT, load_cases

BY_NAME = {c.name: c for c in load_cases()}
ACCOUNT = awsnames.account_id(TENANT)
ARN = f"arn:aws:iam::{ACCOUNT}:role/billing"
SA = inject.ServiceAccount("demo", "app", {names.ROLE_ARN_ANNOTATION: ARN})
SETTINGS = inject.WebhookSettings(authority_host=AUTHORITY, tenant_id=TENANT)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def _pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "x"}], **spec},
    }


def test_basic_layout_is_the_eks_webhooks_plus_keyless() -> None:
    pod = BY_NAME["aws-basic"].expect["pod"]
    container = pod["spec"]["containers"][0]
    assert _env(container) == {
        "AWS_ROLE_ARN": ARN,
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_STS": f"{AUTHORITY}/aws/sts",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"{AUTHORITY}/aws/secretsmanager",
        "AWS_CA_BUNDLE": "/var/run/secrets/keyless/ca/ca.crt",
    }
    assert "AWS_ROLE_SESSION_NAME" not in _env(container)  # as upstream: the SDK's default
    assert "AWS_STS_REGIONAL_ENDPOINTS" not in _env(container)
    assert container["volumeMounts"][-2:] == [
        {
            "name": "aws-iam-token",
            "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
            "readOnly": True,
        },
        {
            "name": "keyless-reserved-ca",
            "mountPath": "/var/run/secrets/keyless/ca",
            "readOnly": True,
        },
    ]
    assert _volume(pod, "aws-iam-token")["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": "sts.amazonaws.com",
                "expirationSeconds": 86400,
                "path": "token",
            }
        }
    ]
    assert _volume(pod, "keyless-reserved-ca")["configMap"]["name"] == "keyless-ca"
    # No Azure injection: the pod has no azure.workload.identity/use label.
    assert not any(v["name"].startswith(names.TOKEN_VOLUME_PREFIX) for v in pod["spec"]["volumes"])


def test_every_eks_annotation() -> None:
    pod = BY_NAME["aws-annotations"].expect["pod"]
    spec = pod["spec"]
    injected = {
        c["name"] for c in spec["containers"] + spec["initContainers"] if "AWS_ROLE_ARN" in _env(c)
    }
    assert injected == {"app", "migrate"}  # "wait-db, sidecar": trimmed, both skipped
    original = BY_NAME["aws-annotations"].pod["spec"]
    assert spec["containers"][1] == original["containers"][1]
    assert spec["initContainers"][1] == original["initContainers"][1]
    env = _env(spec["containers"][0])
    assert env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
    assert env["AWS_ROLE_ARN"] == f"arn:aws:iam::{ACCOUNT}:role/team-a/billing"
    token = _volume(pod, "aws-iam-token")["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "keyless.example/aws"
    assert token["expirationSeconds"] == 600  # the pod's 300 wins over the SA's 3600, raised


def test_azure_and_aws_together_share_one_ca_mount() -> None:
    pod = BY_NAME["aws-and-azure"].expect["pod"]
    container = pod["spec"]["containers"][0]
    env = _env(container)
    assert env["AZURE_CLIENT_ID"] == "0b4f9a3e-6c1d-4a57-9e8b-2f6d1c7a5e90"
    assert env["AWS_ROLE_ARN"] == ARN
    assert env["AZURE_TENANT_ID"] == TENANT
    assert env["AWS_CA_BUNDLE"] == env["REQUESTS_CA_BUNDLE"] == names.CA_FILE
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert mounts.count(names.CA_MOUNT_PATH) == 1
    assert {names.TOKEN_MOUNT_PATH, names.AWS_TOKEN_MOUNT_PATH} <= set(mounts)


def test_container_env_wins_by_pair() -> None:
    env = _env(BY_NAME["aws-existing-env"].expect["pod"]["spec"]["containers"][0])
    assert env["AWS_REGION"] == "eu-west-1"
    assert "AWS_DEFAULT_REGION" not in env  # else botocore would use us-east-1
    assert env["AWS_ROLE_ARN"] == f"arn:aws:iam::{ACCOUNT}:role/other"
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" not in env
    assert env["AWS_CA_BUNDLE"] == {"configMapKeyRef": {"name": "corp-ca", "key": "bundle"}}
    assert env["AWS_ENDPOINT_URL_STS"] == f"{AUTHORITY}/aws/sts"


def test_public_ca_adds_no_ca() -> None:
    pod = BY_NAME["aws-public-ca"].expect["pod"]
    assert names.CA_VOLUME not in {v["name"] for v in pod["spec"]["volumes"]}
    assert "AWS_CA_BUNDLE" not in _env(pod["spec"]["containers"][0])


def test_after_the_eks_webhook_keyless_adds_its_own_and_fixes_the_token() -> None:
    """A cluster running the EKS webhook too: whichever runs first, the pod ends with one
    volume and one mount, the EKS variables once, and keyless's endpoints and CA."""
    first = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "x",
                    "env": [
                        {"name": "AWS_ROLE_ARN", "value": ARN},
                        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": names.AWS_TOKEN_FILE},
                        {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
                        {"name": "AWS_REGION", "value": "eu-west-1"},
                    ],
                    "volumeMounts": [
                        {
                            "name": "aws-iam-token",
                            "mountPath": names.AWS_TOKEN_MOUNT_PATH,
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "volumes": [
                awsinject.token_volume(
                    awsinject.AwsRole(ARN, "billing", TENANT, "sts.amazonaws.com", 81234, False, "")
                )
            ],
        },
    }
    ops = inject.mutation_patch(first, SA, SETTINGS)
    assert (ops[-2]["op"], ops[-2]["path"]) == ("replace", "/spec/volumes/0")
    assert ops[-2]["value"]["projected"]["sources"][0]["serviceAccountToken"] == {
        "audience": "sts.amazonaws.com",
        "expirationSeconds": 86400,
        "path": "token",
    }
    added = [op["value"]["name"] for op in ops if op["path"] == "/spec/containers/0/env/-"]
    assert added == ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_CA_BUNDLE"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("86400", 86400),
        ("3600", 3600),
        ("+4000", 4000),
        ("600", 600),
        ("599", 600),  # raised to kube-apiserver's minimum, as upstream
        ("0", 600),
        ("-5", 600),
        ("86401", 86400),  # the EKS maximum
        ("", 86400),  # empty: the default
        (" 3600", None),
        ("1h", None),
        ("3_600", None),
        ("1e4", None),
    ],
)
def test_expiration(raw: str, expected: int | None) -> None:
    pod = _pod({names.AWS_EXPIRATION_ANNOTATION: raw})
    if expected is None:
        with pytest.raises(awsinject.AwsInjectionError, match="not a whole number"):
            awsinject.token_expiration(pod, {}, "service account demo/app")
    else:
        assert awsinject.token_expiration(pod, {}, "service account demo/app") == expected


def test_expiration_pod_then_service_account_then_default() -> None:
    sa = {names.AWS_EXPIRATION_ANNOTATION: "7200"}
    both = _pod({names.AWS_EXPIRATION_ANNOTATION: "3600"})
    assert awsinject.token_expiration(both, sa, "sa") == 3600
    assert awsinject.token_expiration(_pod(), sa, "sa") == 7200
    assert awsinject.token_expiration(_pod(), {}, "sa") == 86400
    with pytest.raises(awsinject.AwsInjectionError, match="on the service account demo/x"):
        awsinject.token_expiration(
            _pod(), {names.AWS_EXPIRATION_ANNOTATION: "soon"}, "service account demo/x"
        )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a,b", {"a", "b"}),
        (" a , b ,, c", {"a", "b", "c"}),
        ('"a","b"', {"a", "b"}),
        ("a;b", {"a;b"}),  # the Azure separator is not the EKS one
        ("", set()),
    ],
)
def test_skip_list(raw: str, expected: set[str]) -> None:
    assert awsinject.skip_containers(_pod({names.AWS_SKIP_CONTAINERS_ANNOTATION: raw})) == expected


@pytest.mark.parametrize(
    ("raw", "regional"),
    [("true", True), ("True", True), ("1", True), ("t", True), ("false", False), ("yes", False)],
)
def test_regional_sts_parses_like_go(raw: str, regional: bool) -> None:
    sa = {names.ROLE_ARN_ANNOTATION: ARN, names.REGIONAL_STS_ANNOTATION: raw}
    role = awsinject.role(_pod(), sa, "sa", TENANT)
    assert role is not None and role.regional_sts is regional


@pytest.mark.parametrize(
    "arn",
    [
        "billing",
        f"arn:aws:iam::{ACCOUNT}:user/billing",
        f"arn:aws:iam::{ACCOUNT}:role/",
        f"arn:aws-cn:iam::{ACCOUNT}:role/billing",
        f"arn:aws:iam::{ACCOUNT}:role/billing\n",
        "arn:aws:iam::111122223333:role/billing",
    ],
)
def test_only_the_tenants_roles_are_injected(arn: str) -> None:
    sa = inject.ServiceAccount("demo", "app", {names.ROLE_ARN_ANNOTATION: arn})
    with pytest.raises(inject.InjectionError, match="service account demo/app"):
        inject.mutation_patch(_pod(), sa, SETTINGS)


def test_the_role_account_follows_the_pods_tenant() -> None:
    other = "7d3c2b1a-0f9e-4d8c-b7a6-958473625140"
    arn = awsnames.role_arn(other, "billing")
    sa = inject.ServiceAccount(
        "demo", "app", {names.ROLE_ARN_ANNOTATION: arn, names.TENANT_ID_ANNOTATION: other}
    )
    assert inject.mutation_patch(_pod(), sa, SETTINGS)
    sa = inject.ServiceAccount("demo", "app", {names.ROLE_ARN_ANNOTATION: arn})
    with pytest.raises(inject.InjectionError, match="not a keyless role"):
        inject.mutation_patch(_pod(), sa, SETTINGS)
    pod = _pod({names.KEYLESS_TENANT_ID_ANNOTATION: other})
    assert inject.mutation_patch(pod, sa, SETTINGS)
    # Or the adapter found the account's tenant (as STS finds it) and says so in the settings.
    found = inject.WebhookSettings(
        AUTHORITY, TENANT, aws_accounts=((awsnames.account_id(other), other),)
    )
    role = inject.aws_role(_pod(), sa, found)
    assert role is not None and role.tenant_id == other


def test_opted_out_or_no_role_is_never_patched_even_if_called_directly() -> None:
    pod = _pod()
    pod["metadata"]["labels"] = {names.AWS_SKIP_LABEL: "false"}  # any value opts out
    assert inject.mutation_patch(pod, SA, SETTINGS) == []
    assert not inject.considered(pod)
    assert inject.mutation_patch(_pod(), None, SETTINGS) == []
    assert inject.mutation_patch(_pod(), inject.ServiceAccount("demo", "app"), SETTINGS) == []
    assert inject.considered(_pod())


def test_region_is_a_setting() -> None:
    settings = inject.WebhookSettings(AUTHORITY, TENANT, aws_region="eu-central-1")
    ops = inject.mutation_patch(_pod(), SA, settings)
    env = {e["name"]: e["value"] for e in ops[0]["value"]}
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-central-1"


def test_reinvocation_after_the_role_changed_replaces_the_volume_in_place() -> None:
    case = BY_NAME["aws-basic"]
    pod = copy.deepcopy(case.expect["pod"])
    sa = inject.ServiceAccount(
        "demo",
        "app",
        {names.ROLE_ARN_ANNOTATION: ARN, names.AWS_AUDIENCE_ANNOTATION: "other-audience"},
    )
    ops = inject.mutation_patch(pod, sa, SETTINGS)
    index = [v["name"] for v in pod["spec"]["volumes"]].index("aws-iam-token")
    assert [(op["op"], op["path"]) for op in ops] == [("replace", f"/spec/volumes/{index}")]


ANNOTATION_TEXT = st.text(max_size=40) | st.sampled_from(["600", "-1", "86401", "a,b,app", ARN])
ROLE = st.sampled_from([ARN, f"arn:aws:iam::{ACCOUNT}:role/p/x"]) | ANNOTATION_TEXT


@settings(max_examples=200, deadline=None)
@given(
    pod_annotations=st.dictionaries(
        st.sampled_from(
            [names.AWS_EXPIRATION_ANNOTATION, names.AWS_SKIP_CONTAINERS_ANNOTATION, "other"]
        ),
        ANNOTATION_TEXT,
    ),
    role=ROLE,
    sa_annotations=st.dictionaries(
        st.sampled_from(
            [
                names.AWS_AUDIENCE_ANNOTATION,
                names.REGIONAL_STS_ANNOTATION,
                names.AWS_EXPIRATION_ANNOTATION,
            ]
        ),
        ANNOTATION_TEXT,
    ),
)
def test_any_annotations_give_a_valid_patch_or_a_refusal(
    pod_annotations: dict[str, str], role: str, sa_annotations: dict[str, str]
) -> None:
    """Whatever the annotations hold: a refusal (InjectionError), or a patch whose pod has the
    token volume with an expiration in 600..86400, and which a reinvocation leaves alone."""
    pod = _pod(pod_annotations)
    sa = inject.ServiceAccount("demo", "app", {**sa_annotations, names.ROLE_ARN_ANNOTATION: role})
    try:
        ops = inject.mutation_patch(pod, sa, SETTINGS)
    except inject.InjectionError:
        return
    if not ops:  # no role named, or the only container skipped
        assert not role or "app" in awsinject.skip_containers(pod)
        return
    patched = jsonpatch.JsonPatch(ops).apply(pod)
    token = _volume(patched, "aws-iam-token")["projected"]["sources"][0]["serviceAccountToken"]
    assert 600 <= token["expirationSeconds"] <= 86400
    assert _env(patched["spec"]["containers"][0])["AWS_ROLE_ARN"] == role
    assert inject.mutation_patch(patched, sa, SETTINGS) == []
