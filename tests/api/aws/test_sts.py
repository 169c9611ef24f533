"""STS at /aws/sts against a real keyless over HTTPS, with the real, unmodified boto3 and AWS CLI.

The workload flow runs in child processes configured by environment only (conftest ``aws_env``);
the refusals use botocore clients made here with explicit endpoint, CA and credentials, so each
asserts AWS's exact code and status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from keyless.core import awsnames
from tests.api.aws.conftest import OTHER_SUBJECT, aws_env, role_arn, run_python
from tests.support.federation import SUBJECT, TEST_ISSUER, Federated

STS = awsnames.STS_AUDIENCE

CALLER = """
import boto3, json
sts = boto3.client("sts")
print(json.dumps(sts.get_caller_identity()))
"""


def _sts(fed: Federated, **creds: Any) -> Any:
    session = boto3.session.Session(region_name="us-east-1", **creds)
    config = (
        Config(retries={"max_attempts": 1})
        if creds
        else Config(signature_version=UNSIGNED, retries={"max_attempts": 1})
    )
    return session.client(
        "sts",
        endpoint_url=fed.server.url + awsnames.STS_PATH,
        verify=str(fed.server.ca),
        config=config,
    )


def _assume(fed: Federated, token: str, role: str | None = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = _sts(fed).assume_role_with_web_identity(
        RoleArn=role or role_arn(fed),
        RoleSessionName=extra.pop("RoleSessionName", "sess-1"),
        WebIdentityToken=token,
        **extra,
    )
    return result


def _creds(assumed: dict[str, Any]) -> dict[str, str]:
    c = assumed["Credentials"]
    return {
        "aws_access_key_id": c["AccessKeyId"],
        "aws_secret_access_key": c["SecretAccessKey"],
        "aws_session_token": c["SessionToken"],
    }


def _refused(call: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as refused:
        call()
    err = refused.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


def _audit(fed: Federated) -> list[dict[str, Any]]:
    out = fed.server.cli("--output", "json", "audit", "list", "--limit", "1000").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def token(fed: Federated) -> str:
    return fed.test_token(aud=[STS])


def test_boto3_env_only_assumes_the_role_and_calls_get_caller_identity(fed: Federated) -> None:
    # The dev cluster's projected token, with the newline a token file ends with.
    path = fed.token_file(fed.dev_token("--audience", STS) + "\n")
    caller = run_python(aws_env(fed, path, role_arn(fed), "botocore-session-1"), CALLER)
    account = awsnames.account_id(fed.tenant_id)
    assert caller["Account"] == account
    assert caller["Arn"] == f"arn:aws:sts::{account}:assumed-role/app/botocore-session-1"
    assert caller["UserId"].startswith("AROA") and caller["UserId"].endswith(":botocore-session-1")
    events = [e for e in _audit(fed) if e["action"] == "token.exchange.aws-sts"]
    last = events[-1]
    assert last["result"] == "success"
    assert last["workload"]["session"] == "botocore-session-1"
    assert last["workload"]["namespace"] == "demo"
    assert last["workload"]["service_account"] == "app"
    assert last["workload"]["pod"] == "app-7d9f"


def test_aws_cli_get_caller_identity(fed: Federated, token: str) -> None:
    env = aws_env(fed, fed.token_file(token), role_arn(fed), "cli-session")
    proc = subprocess.run(
        [sys.executable, "-m", "awscli", "sts", "get-caller-identity", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    caller = json.loads(proc.stdout)
    assert caller["Arn"].endswith(":assumed-role/app/cli-session")


def test_assume_role_answer(fed: Federated, token: str) -> None:
    before = time.time()
    assumed = _assume(fed, token)
    c = assumed["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and len(c["AccessKeyId"]) == 20
    assert len(c["SecretAccessKey"]) == 40
    lifetime = c["Expiration"].timestamp() - before
    assert 3590 <= lifetime <= 3610
    account = awsnames.account_id(fed.tenant_id)
    assert assumed["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{account}:assumed-role/app/sess-1"
    assert assumed["AssumedRoleUser"]["AssumedRoleId"].endswith(":sess-1")
    assert assumed["SubjectFromWebIdentityToken"] == SUBJECT
    assert assumed["Audience"] == STS
    assert assumed["Provider"] == TEST_ISSUER
    short = _assume(fed, token, DurationSeconds=900)["Credentials"]["Expiration"]
    assert 890 <= short.timestamp() - before <= 910


def test_get_form_and_raw_xml(fed: Federated, token: str) -> None:
    params = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": role_arn(fed),
        "RoleSessionName": "curl",
        "WebIdentityToken": token + "\n",
    }
    with fed.server.client() as http:
        response = http.get(awsnames.STS_PATH, params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/xml")
        assert response.text.startswith(
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        )
        assert "<AssumeRoleWithWebIdentityResult>" in response.text
        bad = http.post(awsnames.STS_PATH + "/", data={**params, "Action": "AssumeRole"})
        assert bad.status_code == 400
        assert "<Code>InvalidAction</Code>" in bad.text


@pytest.mark.parametrize(
    ("claims", "code", "status"),
    [
        ({"aud": ["https://wrong.example"]}, "InvalidIdentityToken", 400),
        ({"sub": "system:serviceaccount:demo:intruder"}, "AccessDenied", 403),
        (
            {
                "exp": int(time.time()) - 3600,
                "iat": int(time.time()) - 4000,
                "nbf": int(time.time()) - 4000,
            },
            "ExpiredTokenException",
            400,
        ),
        ({"iss": "https://unknown.example"}, "InvalidIdentityToken", 400),
    ],
    ids=["wrong-audience", "wrong-subject", "expired", "unknown-issuer"],
)
def test_web_identity_refusals(
    fed: Federated, claims: dict[str, Any], code: str, status: int
) -> None:
    bad = fed.test_token(**{"aud": [STS], **claims})
    session = f"refused-{code}"
    assert _refused(lambda: _assume(fed, bad, RoleSessionName=session))[:2] == (code, status)
    event = [e for e in _audit(fed) if e["action"] == "token.exchange.aws-sts"][-1]
    assert event["result"] == "failure" and event["workload"]["session"] == session


def test_tampered_web_identity_token(fed: Federated, token: str) -> None:
    head, body, sig = token.split(".")
    tampered = f"{head}.{body}.{sig[:-4]}AAAA"
    assert _refused(lambda: _assume(fed, tampered))[:2] == ("InvalidIdentityToken", 400)


def test_role_refusals(fed: Federated, token: str) -> None:
    account = awsnames.account_id(fed.tenant_id)
    unknown = f"arn:aws:iam::{account}:role/no-such-role"
    code, status, message = _refused(lambda: _assume(fed, token, unknown))
    assert (code, status) == ("AccessDenied", 403)
    assert "Not authorized to perform sts:AssumeRoleWithWebIdentity" in message
    foreign = "arn:aws:iam::999999999999:role/app"
    assert _refused(lambda: _assume(fed, token, foreign))[:2] == ("AccessDenied", 403)
    # Another identity's role: the token's subject is not in its trust policy.
    assert _refused(lambda: _assume(fed, token, role_arn(fed, "other")))[:2] == (
        "AccessDenied",
        403,
    )
    not_arn = "arn:aws:iam::12345:role/app-role-x"
    assert _refused(lambda: _assume(fed, token, not_arn))[:2] == ("ValidationError", 400)


@pytest.mark.parametrize(
    "extra",
    [{"RoleSessionName": "has space"}, {"DurationSeconds": 7200}],
    ids=["session-name", "duration-over-lifetime"],
)
def test_validation_errors(fed: Federated, token: str, extra: dict[str, Any]) -> None:
    assert _refused(lambda: _assume(fed, token, **extra))[:2] == ("ValidationError", 400)


def test_signed_call_refusals(fed: Federated, token: str) -> None:
    creds = _creds(_assume(fed, token))
    assert _sts(fed, **creds).get_caller_identity()["Arn"].endswith("/app/sess-1")
    wrong_secret = {**creds, "aws_secret_access_key": creds["aws_secret_access_key"][:-1] + "x"}
    assert _refused(lambda: _sts(fed, **wrong_secret).get_caller_identity())[:2] == (
        "SignatureDoesNotMatch",
        403,
    )
    # A's session token with B's key id and secret.
    other = _creds(
        _assume(fed, fed.test_token(aud=[STS], sub=OTHER_SUBJECT), role_arn(fed, "other"))
    )
    mixed = {**other, "aws_session_token": creds["aws_session_token"]}
    assert _refused(lambda: _sts(fed, **mixed).get_caller_identity())[:2] == (
        "InvalidClientTokenId",
        403,
    )
    no_token = {k: v for k, v in creds.items() if k != "aws_session_token"}
    assert _refused(lambda: _sts(fed, **no_token).get_caller_identity())[:2] == (
        "InvalidClientTokenId",
        403,
    )


@pytest.fixture
def skewed_clock() -> Iterator[None]:
    """botocore signs 6 minutes in the past (its clock: ``botocore.auth.get_current_datetime``)."""
    real = botocore.auth.get_current_datetime
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda: real() - __import__("datetime").timedelta(minutes=6),
        )
        yield


def test_skewed_clock(fed: Federated, token: str, skewed_clock: None) -> None:
    creds = _creds(_assume(fed, token))
    code, status, message = _refused(lambda: _sts(fed, **creds).get_caller_identity())
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert message.startswith("Signature expired:")


def test_session_ends_with_its_identity(fed: Federated) -> None:
    fed.server.cli("identity", "create", "short-lived")
    fed.server.cli(
        "federation",
        "add",
        "short-lived",
        "--name",
        "aws",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        "system:serviceaccount:demo:short",
        "--audience",
        STS,
    )
    token = fed.test_token(aud=[STS], sub="system:serviceaccount:demo:short")
    creds = _creds(_assume(fed, token, role_arn(fed, "short-lived")))
    assert _sts(fed, **creds).get_caller_identity()["Arn"].endswith("/short-lived/sess-1")
    fed.server.cli("identity", "delete", "short-lived")
    assert _refused(lambda: _sts(fed, **creds).get_caller_identity())[:2] == (
        "InvalidClientTokenId",
        403,
    )


def test_unsigned_get_caller_identity(fed: Federated) -> None:
    with fed.server.client() as http:
        response = http.post(
            awsnames.STS_PATH, data={"Action": "GetCallerIdentity", "Version": "2011-06-15"}
        )
    assert response.status_code == 403
    assert "<Code>MissingAuthenticationToken</Code>" in response.text


def test_rate_limit_is_shared_with_the_token_endpoint(tmp_path: Any) -> None:
    from tests.support.server import ServerFactory

    factory = ServerFactory(tmp_path)
    try:
        server = factory.start("--token-rate-limit", "1", "--token-rate-burst", "2", dev=True)
        form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15"}
        with server.client() as http:
            codes = [http.post(awsnames.STS_PATH, data=form) for _ in range(4)]
        assert codes[-1].status_code == 400 and "<Code>Throttling</Code>" in codes[-1].text
        assert "Retry-After" in codes[-1].headers
    finally:
        factory.stop_all()


def test_missing_parameters_are_validation_errors_in_xml(fed: Federated) -> None:
    with fed.server.client() as http:
        response = http.post(
            awsnames.STS_PATH,
            data={"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Code>ValidationError</Code>" in response.text


def test_identity_show_names_the_role_arn(fed: Federated) -> None:
    shown = json.loads(fed.server.cli("--output", "json", "identity", "show", "app").stdout)
    assert (
        shown["aws_role_arn"]
        == role_arn(fed)
        == (f"arn:aws:iam::{awsnames.account_id(fed.tenant_id)}:role/app")
    )
    assert awsnames.parse_role_arn(shown["aws_role_arn"]) == (
        awsnames.account_id(fed.tenant_id),
        "app",
    )


def test_another_tenants_account_names_its_own_identity(fed: Federated) -> None:
    cli = fed.server.cli
    team = json.loads(cli("--output", "json", "tenant", "create", "team-aws").stdout)
    cli(
        "issuer",
        "add",
        TEST_ISSUER,
        "--jwks-file",
        str(fed.tmp / "jwks.json"),
        "--tenant",
        "team-aws",
    )
    cli("identity", "create", "app", "--tenant", "team-aws")
    cli(
        "federation",
        "add",
        "app",
        "--tenant",
        "team-aws",
        "--name",
        "aws",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        SUBJECT,
        "--audience",
        STS,
    )
    token = fed.test_token(aud=[STS])
    theirs = awsnames.role_arn(team["id"], "app")
    assert theirs != role_arn(fed)
    creds = _creds(_assume(fed, token, theirs))
    caller = _sts(fed, **creds).get_caller_identity()
    assert caller["Account"] == awsnames.account_id(team["id"])
    assert caller["Arn"] == f"arn:aws:sts::{caller['Account']}:assumed-role/app/sess-1"
    # The default tenant's app is another identity: its session says so.
    mine = _sts(fed, **_creds(_assume(fed, token))).get_caller_identity()
    assert mine["Account"] == awsnames.account_id(fed.tenant_id) != caller["Account"]
    assert mine["UserId"] != caller["UserId"]


def test_aws_cli_shows_the_refusal_code(fed: Federated) -> None:
    wrong = fed.token_file(fed.test_token(aud=[STS], sub="system:serviceaccount:demo:intruder"))
    proc = subprocess.run(
        [sys.executable, "-m", "awscli", "sts", "get-caller-identity"],
        env=aws_env(fed, wrong, role_arn(fed)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "(AccessDenied)" in proc.stderr and "AssumeRoleWithWebIdentity" in proc.stderr


def test_a_session_token_is_no_bearer_token_elsewhere(fed: Federated, token: str) -> None:
    """The SessionToken carries a keyless access token, but for an audience only the AWS
    dialect accepts: like AWS's own, it is useless without its secret key."""
    fed.server.cli("vault", "create", "bearer-check")
    fed.server.cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/bearer-check")
    session_token = _assume(fed, token)["Credentials"]["SessionToken"]
    with fed.server.client() as http:
        keyvault = http.get(
            "/vaults/bearer-check/secrets?api-version=7.4",
            headers={"authorization": f"Bearer {session_token}"},
        )
        vault_api = http.get(
            "/v1/bearer-check/metadata/?list=true", headers={"x-vault-token": session_token}
        )
    assert keyvault.status_code == 401, keyvault.text
    assert vault_api.status_code == 403, vault_api.text  # Vault's answer to a bad token
    # The same identity's own Key Vault token (the Entra exchange) is accepted there.
    entra = fed.exchange(fed.test_token()).json()["access_token"]
    with fed.server.client() as http:
        ok = http.get(
            "/vaults/bearer-check/secrets?api-version=7.4",
            headers={"authorization": f"Bearer {entra}"},
        )
    assert ok.status_code == 200, ok.text
