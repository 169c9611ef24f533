"""The GKE-style injection (``k8s/gcpinject.py``) on top of the recorded ``gcp-*`` fixtures
(which ``test_inject.py`` runs with the others: exact pods, valid under the Kubernetes schema,
reinvocation empty): the layout, the credential configuration google-auth reads, the rules,
and reinvocation stability for any pod and annotations (Hypothesis)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from google.auth import identity_pool
from hypothesis import given, settings
from hypothesis import strategies as st

from keyless.core import gcpnames
from keyless.k8s import gcpinject, inject, names
from tests.k8s.cases import AUTHORITY, TENANT, load_cases

BY_NAME = {c.name: c for c in load_cases()}
EMAIL = "billing@default.iam.gserviceaccount.com"
SA = inject.ServiceAccount("demo", "app", {gcpnames.GKE_ANNOTATION: EMAIL})
SETTINGS = inject.WebhookSettings(
    authority_host=AUTHORITY, tenant_id=TENANT, gcp_projects=(("default", TENANT),)
)
PROVIDER = gcpnames.provider(TENANT).name


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def _config(pod: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(pod["metadata"]["annotations"][names.GCP_CONFIG_ANNOTATION])
    return config


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "x"}], **spec},
    }


def test_basic_layout() -> None:
    pod = BY_NAME["gcp-basic"].expect["pod"]
    container = pod["spec"]["containers"][0]
    assert _env(container) == {
        "GOOGLE_APPLICATION_CREDENTIALS": f"{names.GCP_MOUNT_PATH}/credential-configuration.json",
        "GOOGLE_CLOUD_PROJECT": "default",  # the tenant's alias: no Resource Manager call
        "REQUESTS_CA_BUNDLE": names.CA_FILE,
        "SSL_CERT_FILE": names.CA_FILE,
        "NODE_EXTRA_CA_CERTS": names.CA_FILE,
    }
    assert container["volumeMounts"][-2:] == [
        {"name": "keyless-gcp-credentials", "mountPath": names.GCP_MOUNT_PATH, "readOnly": True},
        {"name": names.CA_VOLUME, "mountPath": names.CA_MOUNT_PATH, "readOnly": True},
    ]
    token, config = _volume(pod, names.GCP_VOLUME)["projected"]["sources"]
    assert token == {
        "serviceAccountToken": {"audience": PROVIDER, "expirationSeconds": 3600, "path": "token"}
    }
    field = config["downwardAPI"]["items"][0]
    assert field["path"] == "credential-configuration.json"
    assert field["fieldRef"]["fieldPath"] == (
        "metadata.annotations['keyless.dev/gcp-credential-configuration']"
    )


def test_the_configuration_is_keyless_env_s_and_google_auth_reads_it() -> None:
    """The projected file is the ``external_account`` configuration of ``keyless env``; the
    real google-auth builds its identity-pool credentials from it (no request is made)."""
    config = _config(BY_NAME["gcp-basic"].expect["pod"])
    assert config == {
        "type": "external_account",
        "audience": PROVIDER,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{AUTHORITY}/gcp/sts/v1/token",
        "service_account_impersonation_url": (
            f"{AUTHORITY}/gcp/iamcredentials/v1/projects/-/serviceAccounts/"
            f"{EMAIL}:generateAccessToken"
        ),
        "credential_source": {"file": names.GCP_TOKEN_FILE, "format": {"type": "text"}},
        "universe_domain": gcpnames.UNIVERSE_DOMAIN,
    }
    credentials = identity_pool.Credentials.from_info(config)
    assert credentials.service_account_email == EMAIL
    assert credentials.universe_domain == gcpnames.UNIVERSE_DOMAIN
    assert credentials.info["credential_source"]["file"] == names.GCP_TOKEN_FILE


def test_another_tenants_project_uses_its_provider() -> None:
    pod = BY_NAME["gcp-team-project"].expect["pod"]
    other = BY_NAME["gcp-team-project"].settings().gcp_projects[0][1]
    token = _volume(pod, names.GCP_VOLUME)["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == _config(pod)["audience"] == gcpnames.provider(other).name
    assert _env(pod["spec"]["containers"][0])["GOOGLE_CLOUD_PROJECT"] == "team-b"


def test_a_container_with_its_own_credentials_is_left_alone() -> None:
    case = BY_NAME["gcp-existing-env"]
    app, sidecar = case.expect["pod"]["spec"]["containers"]
    assert sidecar == case.pod["spec"]["containers"][1]
    env = _env(app)
    assert env["GOOGLE_CLOUD_PROJECT"] == "my-own"
    assert env["SSL_CERT_FILE"] == "/etc/ssl/corp.pem"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == names.GCP_CONFIG_FILE
    assert env["REQUESTS_CA_BUNDLE"] == names.CA_FILE


def test_three_injections_share_one_ca_mount_and_each_variable_once() -> None:
    pod = BY_NAME["gcp-aws-and-azure"].expect["pod"]
    container = pod["spec"]["containers"][0]
    env = _env(container)
    assert env["AZURE_CLIENT_ID"] and env["AWS_ROLE_ARN"]
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == names.GCP_CONFIG_FILE
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert mounts.count(names.CA_MOUNT_PATH) == 1
    assert {names.TOKEN_MOUNT_PATH, names.AWS_TOKEN_MOUNT_PATH, names.GCP_MOUNT_PATH} <= set(mounts)


def test_public_ca_adds_no_ca() -> None:
    pod = BY_NAME["gcp-public-ca"].expect["pod"]
    assert names.CA_VOLUME not in {v["name"] for v in pod["spec"]["volumes"]}
    assert set(_env(pod["spec"]["containers"][0])) == {
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
    }


def test_a_stale_configuration_annotation_is_replaced_and_others_kept() -> None:
    case = BY_NAME["gcp-stale-annotation"]
    annotations = case.expect["pod"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert _config(case.expect["pod"])["token_url"] == f"{AUTHORITY}/gcp/sts/v1/token"


@pytest.mark.parametrize(
    "email",
    [
        "billing",
        "billing@other.iam.gserviceaccount.com",
        "billing@default.example.com",
        "@default.iam.gserviceaccount.com",
        f"{TENANT}@{TENANT}",  # a tenant id is no project id
    ],
)
def test_only_the_tenants_service_accounts_are_injected(email: str) -> None:
    sa = inject.ServiceAccount("demo", "app", {gcpnames.GKE_ANNOTATION: email})
    with pytest.raises(inject.InjectionError, match="service account demo/app"):
        inject.mutation_patch(_pod(), sa, SETTINGS)


def test_a_bare_name_at_project_is_accepted_and_written_in_full() -> None:
    sa = inject.ServiceAccount("demo", "app", {gcpnames.GKE_ANNOTATION: "billing@default"})
    gcp = inject.gcp_account(_pod(), sa, SETTINGS)
    assert gcp is not None and gcp.email == EMAIL and gcp.identity_name == "billing"


def test_no_annotation_or_no_service_account_is_never_patched() -> None:
    assert inject.mutation_patch(_pod(), None, SETTINGS) == []
    assert inject.mutation_patch(_pod(), inject.ServiceAccount("demo", "app"), SETTINGS) == []
    # Without the adapter's tenant lookup (no projects known), an annotation is refused.
    bare = inject.WebhookSettings(AUTHORITY, TENANT)
    with pytest.raises(inject.InjectionError, match="no keyless tenant has the alias 'default'"):
        inject.mutation_patch(_pod(), SA, bare)


def test_reinvocation_after_the_account_changed_replaces_in_place() -> None:
    pod = copy.deepcopy(BY_NAME["gcp-basic"].expect["pod"])
    sa = inject.ServiceAccount("demo", "app", {gcpnames.GKE_ANNOTATION: "reports@default"})
    ops = inject.mutation_patch(pod, sa, SETTINGS)
    assert [(op["op"], op["path"]) for op in ops] == [
        ("add", "/metadata/annotations/keyless.dev~1gcp-credential-configuration")
    ]
    assert "reports@default.iam.gserviceaccount.com" in ops[0]["value"]


ENV_NAMES = st.sampled_from(
    [
        names.GOOGLE_APPLICATION_CREDENTIALS,
        names.GOOGLE_CLOUD_PROJECT,
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "OTHER",
    ]
)
CONTAINER = st.builds(
    lambda name, env: {
        "name": name,
        "image": "x",
        **({"env": [{"name": n, "value": "v"} for n in sorted(env)]} if env else {}),
    },
    st.sampled_from(["app", "sidecar", "migrate", "wait"]),
    st.sets(ENV_NAMES, max_size=3),
)
ANNOTATIONS = st.none() | st.dictionaries(
    st.sampled_from(["other", names.GCP_CONFIG_ANNOTATION]), st.text(max_size=20)
)
EMAILS = st.sampled_from([EMAIL, "reports@default", "x@team-b.iam.gserviceaccount.com"]) | st.text(
    max_size=30
)


@settings(max_examples=200, deadline=None)
@given(
    containers=st.lists(CONTAINER, min_size=1, max_size=3, unique_by=lambda c: c["name"]),
    init=st.lists(CONTAINER, max_size=2, unique_by=lambda c: c["name"]),
    annotations=ANNOTATIONS,
    email=EMAILS,
    public_ca=st.booleans(),
)
def test_any_pod_gives_a_stable_patch_or_a_refusal(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]],
    annotations: dict[str, str] | None,
    email: str,
    public_ca: bool,
) -> None:
    """Whatever the pod and the annotation hold: a refusal, or a patch after which every
    container without its own GOOGLE_APPLICATION_CREDENTIALS reads keyless's configuration
    (for the annotated account, with the token volume's audience), every other container is
    as it was, and a reinvocation changes nothing."""
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": containers, **({"initContainers": init} if init else {})},
    }
    settings_ = inject.WebhookSettings(
        AUTHORITY,
        TENANT,
        ca_configmap=None if public_ca else names.DEFAULT_CA_CONFIGMAP,
        gcp_projects=(("default", TENANT), ("team-b", "0e6f3a2b-8c4d-4e1f-a5b6-7c8d9e0f1a2b")),
    )
    sa = inject.ServiceAccount("demo", "app", {gcpnames.GKE_ANNOTATION: email})
    try:
        ops = inject.mutation_patch(pod, sa, settings_)
    except inject.InjectionError:
        return
    if not ops:  # no account named, or every container brings its own credentials
        assert not email or not gcpinject.targets(pod)
        return
    patched = jsonpatch.JsonPatch(ops).apply(pod)
    config = _config(patched)
    name, project = gcpnames.parse_service_account(email)
    assert config["service_account_impersonation_url"].endswith(
        f"/{gcpnames.service_account(name, project)}:generateAccessToken"
    )
    token = _volume(patched, names.GCP_VOLUME)["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == config["audience"]
    before = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    after = patched["spec"]["containers"] + patched["spec"].get("initContainers", [])
    for old, new in zip(before, after, strict=True):
        if names.GOOGLE_APPLICATION_CREDENTIALS in _env(old):  # "v", never keyless's file
            assert new == old
        else:
            assert _env(new)[names.GOOGLE_APPLICATION_CREDENTIALS] == names.GCP_CONFIG_FILE
            assert _env(new)[names.GOOGLE_CLOUD_PROJECT] == _env(old).get(
                names.GOOGLE_CLOUD_PROJECT, project
            )
            assert len(new["env"]) == len({e["name"] for e in new["env"]})
    assert inject.mutation_patch(patched, sa, settings_) == []
