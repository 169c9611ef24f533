"""Secrets Manager end to end: unmodified boto3 and the AWS CLI, configured by environment only,
assume the role from a dev cluster token and work with keyless secrets over HTTPS."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from keyless.core import awsnames
from keyless.core import awssecrets as aws
from tests.api.aws.conftest import aws_env, role_arn, run_python
from tests.support.federation import Federated

FLOW = r"""
import base64, json
import boto3
from botocore.exceptions import ClientError

sm = boto3.client("secretsmanager")
out = {}

def code(call, **kw):
    try:
        call(**kw)
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return None

made = sm.create_secret(Name="billing/db/password", SecretString="one", Description="the db",
                        Tags=[{"Key": "team", "Value": "billing"}])
out["arn"] = made["ARN"]
out["first"] = made["VersionId"]
got = sm.get_secret_value(SecretId="billing/db/password")
out["get"] = [got["SecretString"], got["VersionStages"], got["ARN"], str(got["CreatedDate"])]
token = "5d8a4c1e-3b7f-4e2a-9c6d-1f0e2b3a4c5d"
second = sm.put_secret_value(SecretId=made["ARN"], SecretString="two", ClientRequestToken=token)
out["put"] = [second["VersionStages"], second["VersionId"] == token]
out["current"] = sm.get_secret_value(SecretId=made["ARN"])["SecretString"]
prev = sm.get_secret_value(SecretId="billing/db/password", VersionStage="AWSPREVIOUS")
out["previous"] = [prev["SecretString"], prev["VersionId"]]
out["by_version"] = sm.get_secret_value(SecretId="billing/db/password",
                                        VersionId=out["first"])["SecretString"]
partial = made["ARN"].rsplit("-", 1)[0]
out["partial_arn"] = sm.get_secret_value(SecretId=partial)["SecretString"]

blob = bytes(range(256))
sm.create_secret(Name="billing/cert", SecretBinary=blob)
out["binary"] = sm.get_secret_value(SecretId="billing/cert")["SecretBinary"] == blob

for i in range(3):
    sm.create_secret(Name=f"billing/many/{i}", SecretString=str(i))
pages = sm.get_paginator("list_secrets").paginate(
    Filters=[{"Key": "name", "Values": ["billing/many/"]}], PaginationConfig={"PageSize": 2})
out["listed"] = [s["Name"] for page in pages for s in page["SecretList"]]
out["all_names"] = [s["Name"] for s in sm.list_secrets()["SecretList"]]

d = sm.describe_secret(SecretId="billing/db/password")
stages = sorted(v[0] for v in d["VersionIdsToStages"].values())
out["describe"] = [d["Description"], d["Tags"], stages]
sm.tag_resource(SecretId="billing/db/password", Tags=[{"Key": "env", "Value": "prod"}])
sm.untag_resource(SecretId="billing/db/password", TagKeys=["team"])
out["tags"] = sm.describe_secret(SecretId="billing/db/password")["Tags"]
sm.update_secret(SecretId="billing/db/password", Description="renamed")
out["description"] = sm.describe_secret(SecretId="billing/db/password")["Description"]

batch = sm.batch_get_secret_value(SecretIdList=["billing/many/0", "billing/many/1", "private/key"])
out["batch"] = [sorted(v["SecretString"] for v in batch["SecretValues"]),
                [(e["SecretId"], e["ErrorCode"]) for e in batch["Errors"]]]

deleted = sm.delete_secret(SecretId="billing/many/2", RecoveryWindowInDays=7)
out["deletion_date"] = str(deleted["DeletionDate"])
out["get_deleted"] = code(sm.get_secret_value, SecretId="billing/many/2")
sm.restore_secret(SecretId="billing/many/2")
out["restored"] = sm.get_secret_value(SecretId="billing/many/2")["SecretString"]
sm.delete_secret(SecretId="billing/many/1", ForceDeleteWithoutRecovery=True)
out["purged"] = code(sm.describe_secret, SecretId="billing/many/1")

out["refusals"] = {
    "other_identity": code(sm.get_secret_value, SecretId="private/key"),
    "unknown": code(sm.get_secret_value, SecretId="billing/none"),
    "exists": code(sm.create_secret, Name="billing/cert", SecretString="x"),
    "window": code(sm.delete_secret, SecretId="billing/cert", RecoveryWindowInDays=3),
}
try:
    sm.get_secret_value(SecretId="private/key")
except ClientError as exc:
    out["denied_message"] = exc.response["Error"]["Message"]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def env(fed: Federated) -> dict[str, str]:
    cli = fed.server.cli
    for vault in ("billing", "private"):
        cli("vault", "create", vault)
    cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/billing")
    cli("role", "assign", "other", "secrets-officer", "--scope", "/vaults/private")
    cli("secret", "set", "private", "key", "--value", "not-for-app")
    token = fed.dev_token("--audience", awsnames.STS_AUDIENCE)
    out = aws_env(fed, fed.token_file(token + "\n"), role_arn(fed), session="billing-job")
    out["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = fed.server.url + awsnames.SECRETS_MANAGER_PATH
    return out


@pytest.fixture(scope="module")
def flow(env: dict[str, str]) -> dict[str, Any]:
    return run_python(env, FLOW)


def test_boto3_reads_and_writes_secrets(fed: Federated, flow: dict[str, Any]) -> None:
    arn = aws.secret_arn(fed.tenant_id, awsnames.DEFAULT_REGION, "billing", "db/password")
    assert flow["arn"] == arn
    value, stages, got_arn, created = flow["get"]
    assert (value, stages, got_arn) == ("one", ["AWSCURRENT"], arn)
    assert created.startswith("20")  # botocore parsed the epoch number as a datetime
    assert flow["put"] == [["AWSCURRENT"], True] and flow["current"] == "two"
    assert flow["previous"] == ["one", flow["first"]]
    assert flow["by_version"] == "one" and flow["partial_arn"] == "two"
    assert flow["binary"] is True
    assert flow["listed"] == ["billing/many/0", "billing/many/1", "billing/many/2"]
    assert "private/key" not in flow["all_names"]
    assert flow["describe"] == [
        "the db",
        [{"Key": "team", "Value": "billing"}],
        ["AWSCURRENT", "AWSPREVIOUS"],
    ]
    assert flow["tags"] == [{"Key": "env", "Value": "prod"}]
    assert flow["description"] == "renamed"
    assert flow["batch"] == [["0", "1"], [["private/key", "AccessDeniedException"]]]


def test_boto3_deletes_restores_and_purges(flow: dict[str, Any]) -> None:
    assert flow["get_deleted"] == ["InvalidRequestException", 400]
    assert flow["restored"] == "2"
    assert flow["purged"] == ["ResourceNotFoundException", 400]
    assert flow["deletion_date"].startswith("20")


def test_refusals_have_aws_codes(flow: dict[str, Any]) -> None:
    assert flow["refusals"] == {
        "other_identity": ["AccessDeniedException", 400],
        "unknown": ["ResourceNotFoundException", 400],
        "exists": ["ResourceExistsException", 400],
        "window": ["InvalidParameterException", 400],
    }
    message = flow["denied_message"]
    assert ":assumed-role/app/billing-job is not authorized to perform: " in message
    assert "secretsmanager:GetSecretValue on resource: private/key" in message


def test_audit_names_the_workload(fed: Federated, flow: dict[str, Any]) -> None:
    listing = fed.server.cli("audit", "list", "--output", "json").stdout
    rows = [json.loads(line) for line in listing.splitlines() if line.strip()]  # JSON lines
    reads = [
        e
        for e in rows
        if e["action"] == "secrets/getSecret" and e["target"] == "/vaults/private/secrets/key"
    ]
    assert reads and all(e["result"] == "failure" for e in reads)
    workload = reads[-1]["workload"]
    assert workload["sub"] == "system:serviceaccount:demo:app"
    assert workload["pod"] == "app-7d9f" and workload["session"] == "billing-job"


def test_aws_cli(fed: Federated, env: dict[str, str], flow: dict[str, Any]) -> None:
    def aws_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "awscli", "secretsmanager", *args, "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    got = aws_cli("get-secret-value", "--secret-id", "billing/db/password")
    assert got.returncode == 0, got.stderr[-2000:]
    assert json.loads(got.stdout)["SecretString"] == "two"
    listed = aws_cli("list-secrets")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "billing/cert" in [s["Name"] for s in json.loads(listed.stdout)["SecretList"]]
    refused = aws_cli("get-secret-value", "--secret-id", "private/key")
    assert refused.returncode != 0 and "AccessDeniedException" in refused.stderr


def test_unsigned_and_unknown_requests(fed: Federated, env: dict[str, str]) -> None:
    headers = {
        "X-Amz-Target": "secretsmanager.GetSecretValue",
        "Content-Type": "application/x-amz-json-1.1",
    }
    with fed.server.client() as http:
        response = http.post(
            awsnames.SECRETS_MANAGER_PATH + "/",
            content=b'{"SecretId": "billing/cert"}',
            headers=headers,
        )
        wrong_method = http.get(awsnames.SECRETS_MANAGER_PATH + "/")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["__type"] == "UnknownOperationException"
    assert response.status_code == 400  # as AWS JSON services answer authentication failures
    assert response.headers["content-type"].startswith("application/x-amz-json-1.1")
    assert response.json()["__type"] == "MissingAuthenticationTokenException"
    unknown = run_python(
        env,
        r"""
import json, boto3
from botocore.exceptions import ClientError
sm = boto3.client("secretsmanager")
try:
    sm.rotate_secret(SecretId="billing/cert")
except ClientError as exc:
    print(json.dumps({"code": exc.response["Error"]["Code"]}))
""",
    )
    assert unknown == {"code": "UnknownOperationException"}
