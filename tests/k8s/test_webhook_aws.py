"""The EKS-style injection through a running keyless's webhook listener (client certificate
required), service accounts read from the fake Kubernetes API through ``kubernetes_asyncio``:
the role's identity is checked in keyless, pods without a role (or whose account cannot be
read) are admitted untouched, and the opt-out label is honoured without a lookup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from keyless.core import awsnames
from keyless.k8s import names
from tests.k8s.cases import Case, fresh_case, patched_pod
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import Webhook, review_of
from tests.support.federation import SUBJECT, Federated


def aws_case(service_account: str, *, labels: dict[str, str] | None = None) -> Case:
    """The recorded aws-basic review with a fresh uid, for ``service_account`` in demo."""
    return fresh_case("aws-basic", service_account, labels)


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_role_of_a_keyless_identity_is_injected(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    arn = awsnames.role_arn(fed.tenant_id, "app")
    kube.put("demo", "aws-app", {names.ROLE_ARN_ANNOTATION: arn})
    case = aws_case("aws-app")
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    pod = patched_pod(case, review)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    env = _env(pod)
    assert env["AWS_ROLE_ARN"] == arn
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == names.AWS_TOKEN_FILE
    assert env["AWS_ENDPOINT_URL_STS"] == f"{fed.server.url}/aws/sts"
    assert env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] == f"{fed.server.url}/aws/secretsmanager"
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "us-east-1"
    assert env["AWS_CA_BUNDLE"] == names.CA_FILE
    assert not any(name.startswith("AZURE_") for name in env)


def test_role_naming_no_identity_is_refused(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    arn = awsnames.role_arn(fed.tenant_id, "ghost")
    kube.put("demo", "aws-ghost", {names.ROLE_ARN_ANNOTATION: arn})
    response = review_of(webhook, aws_case("aws-ghost"))["response"]
    assert response["allowed"] is False and "patch" not in response
    message = response["status"]["message"]
    assert f"no keyless identity is named 'ghost' in tenant '{fed.tenant_id}'" in message
    assert "service account demo/aws-ghost" in message


def test_role_of_another_account_is_refused(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    kube.put("demo", "aws-real", {names.ROLE_ARN_ANNOTATION: "arn:aws:iam::111122223333:role/app"})
    response = review_of(webhook, aws_case("aws-real"))["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "no keyless tenant has the AWS account 111122223333" in message
    assert f"roles are arn:aws:iam::{awsnames.account_id(fed.tenant_id)}:role/NAME" in message


def test_role_of_another_tenant_is_found_by_its_account(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    """As STS does: the role's account names its tenant; no tenant annotation is needed."""
    cli = fed.server.cli
    team = json.loads(cli("--output", "json", "tenant", "create", "team-b").stdout)
    cli("identity", "create", "reports", "--tenant", "team-b")
    arn = awsnames.role_arn(team["id"], "reports")
    kube.put("demo", "aws-team-b", {names.ROLE_ARN_ANNOTATION: arn})
    case = aws_case("aws-team-b")
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    assert _env(patched_pod(case, review))["AWS_ROLE_ARN"] == arn
    kube.put("demo", "aws-team-b-x", {names.ROLE_ARN_ANNOTATION: arn.replace("reports", "app")})
    response = review_of(webhook, aws_case("aws-team-b-x"))["response"]
    assert response["allowed"] is False  # app is the default tenant's, not team-b's
    assert (
        f"no keyless identity is named 'app' in tenant '{team['id']}'"
        in (response["status"]["message"])
    )


@pytest.mark.parametrize("account", ["aws-plain", "aws-missing"])
def test_pod_without_a_role_is_admitted_untouched(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi, account: str
) -> None:
    """No label, and a service account without a role, or none the webhook can find: not
    refused (it is any pod of the cluster), and not patched."""
    kube.put("demo", "aws-plain", {names.AWS_AUDIENCE_ANNOTATION: "sts.amazonaws.com"})
    case = aws_case(account)
    review = review_of(webhook, case)
    assert review["response"] == {"uid": case.review["request"]["uid"], "allowed": True}


def test_opted_out_pod_is_not_looked_up(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi
) -> None:
    case = aws_case("aws-optout", labels={names.AWS_SKIP_LABEL: "true"})
    review = review_of(webhook, case)
    assert review["response"] == {"uid": case.review["request"]["uid"], "allowed": True}
    assert kube.gets_of("demo", "aws-optout") == 0


def test_labelled_pod_gets_both(webhook: Webhook, fed: Federated, kube: FakeKubeApi) -> None:
    kube.put(
        "demo",
        "aws-both",
        {
            names.CLIENT_ID_ANNOTATION: fed.client_id,
            names.ROLE_ARN_ANNOTATION: awsnames.role_arn(fed.tenant_id, "app"),
        },
    )
    case = aws_case("aws-both", labels={names.USE_LABEL: "true"})
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    env = _env(patched_pod(case, review))
    assert env["AZURE_CLIENT_ID"] == fed.client_id
    assert env["AWS_ROLE_ARN"] == awsnames.role_arn(fed.tenant_id, "app")


SECRET_VALUE = "s3cret-via-secrets-manager-41d9"


@pytest.fixture(scope="module")
def aws_trust(fed: Federated) -> str:
    """Identity ``app`` also trusts the dev cluster's demo/app with AWS's audience, and may
    read the vault ``awsvault``."""
    cli = fed.server.cli
    cli(
        "federation", "add", "app", "--name", "dev-aws", "--issuer", fed.dev_issuer,
        "--subject", SUBJECT, "--audience", awsnames.STS_AUDIENCE,
    )  # fmt: skip
    cli("vault", "create", "awsvault")
    cli("secret", "set", "awsvault", "db-password", "--value", SECRET_VALUE)
    cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/awsvault")
    return awsnames.role_arn(fed.tenant_id, "app")


def test_injected_pod_reads_a_secret_with_boto3(
    webhook: Webhook, fed: Federated, kube: FakeKubeApi, aws_trust: str, tmp_path: Path
) -> None:
    """What the kubelet would do with the patched pod (the projected token, with the audience
    the volume asks for, and the CA ConfigMap's ca.crt written at the mounted paths, mapped
    onto a temporary directory), then unmodified boto3 with the pod's environment only."""
    kube.put("demo", "app-aws", {names.ROLE_ARN_ANNOTATION: aws_trust})
    case = aws_case("app-aws")
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    pod = patched_pod(case, review)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == names.AWS_TOKEN_VOLUME)
    audience = volume["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    root = tmp_path / "pod-root"

    def on_disk(path: str) -> Path:
        mapped = root / path.lstrip("/")
        mapped.parent.mkdir(parents=True, exist_ok=True)
        return mapped

    on_disk(names.AWS_TOKEN_FILE).write_text(fed.dev_token("--audience", audience) + "\n")
    on_disk(names.CA_FILE).write_text(fed.server.ca.read_text())
    process_env = {
        name: str(on_disk(value)) if value.startswith("/var/run/secrets/") else value
        for name, value in _env(pod).items()
    }
    process_env.update(
        PATH=os.environ.get("PATH", ""),
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    script = textwrap.dedent(
        """
        import json
        import boto3

        me = boto3.client("sts").get_caller_identity()
        sm = boto3.client("secretsmanager")
        value = sm.get_secret_value(SecretId="awsvault/db-password")["SecretString"]
        print(json.dumps({"me": me, "value": value}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=process_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    account = awsnames.account_id(fed.tenant_id)
    assert found["me"]["Account"] == account
    # No AWS_ROLE_SESSION_NAME is injected (as upstream): botocore names the session itself.
    arn = found["me"]["Arn"]
    assert arn.startswith(f"arn:aws:sts::{account}:assumed-role/app/botocore-session-")
    assert found["value"] == SECRET_VALUE
