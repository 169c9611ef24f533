"""``core/workloadenv.py`` on its own: what ``keyless env --dialect vault|aws|gcp`` answers for
every shape of server (keyless's CA or the operator's certificate) and tenant (default or not).
The same answers through the real CLI and server: tests/cli/test_env.py."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from keyless.core import awsnames, gcpnames
from keyless.core.errors import InvalidRequest
from keyless.core.models import Identity
from keyless.core.workloadenv import Server, workload_env

IDENTITY = Identity("oid-1", "cid-1", "eso-reader", "tid-1", 0.0)
OWN_CA = Server("https://keyless.example:8443", "vault.example", 8443, "/data/tls/ca.pem")
OPERATOR_CERT = Server("https://keyless.example", "vault.example", 443, None)


@pytest.mark.parametrize(
    ("server", "tenant_alias", "env"),
    [
        (
            OWN_CA,
            "default",
            {"VAULT_ADDR": "https://keyless.example:8443", "VAULT_CACERT": "/data/tls/ca.pem"},
        ),
        (
            OWN_CA,
            "team-a",
            {
                "VAULT_ADDR": "https://keyless.example:8443",
                "VAULT_CACERT": "/data/tls/ca.pem",
                "VAULT_NAMESPACE": "team-a",
            },
        ),
        (OPERATOR_CERT, "default", {"VAULT_ADDR": "https://keyless.example"}),
        (
            OPERATOR_CERT,
            "team-a",
            {"VAULT_ADDR": "https://keyless.example", "VAULT_NAMESPACE": "team-a"},
        ),
    ],
    ids=["own-ca-default-tenant", "own-ca-other-tenant", "operator-cert", "operator-cert-tenant"],
)
def test_vault_env(server: Server, tenant_alias: str, env: dict[str, str]) -> None:
    found = workload_env("vault", IDENTITY, "/var/run/secrets/tokens/vault", server, tenant_alias)
    assert found.view() == {
        "env": env,
        "endpoints": {
            "jwt_login": "auth/jwt/login",
            "kubernetes_login": "auth/kubernetes/login",
            "role": "eso-reader",
            "token_file": "/var/run/secrets/tokens/vault",
        },
    }


def test_the_tenant_defaults_to_the_default_one() -> None:
    assert "VAULT_NAMESPACE" not in workload_env("vault", IDENTITY, "/t", OWN_CA).env


def test_vault_needs_the_token_file() -> None:
    with pytest.raises(InvalidRequest, match="--token-file"):
        workload_env("vault", IDENTITY, "", OWN_CA)


def test_unknown_dialects_say_which_there_are() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown dialect 'gcq': one of azure, aws, gcp"):
        workload_env("gcq", IDENTITY, "/t", OWN_CA)


WITH_DIR = dataclasses.replace(OWN_CA, gcp_credentials_dir="/data/gcp")


@pytest.mark.parametrize("server", [WITH_DIR, OPERATOR_CERT], ids=["own-ca", "operator-cert"])
@pytest.mark.parametrize("impersonation", [True, False])
def test_gcp_env(server: Server, impersonation: bool) -> None:
    found = workload_env(
        "gcp", IDENTITY, "/t", server, "team-a",
        credential_config="/w/gcp.json", impersonation=impersonation,
    )  # fmt: skip
    ca = {"REQUESTS_CA_BUNDLE": "/data/tls/ca.pem", "SSL_CERT_FILE": "/data/tls/ca.pem"}
    assert found.env == {
        "GOOGLE_APPLICATION_CREDENTIALS": "/w/gcp.json",
        "GOOGLE_CLOUD_PROJECT": "team-a",
        **(ca if server.ca_file else {}),
    }
    email = "eso-reader@team-a.iam.gserviceaccount.com"
    assert found.endpoints["service_account"] == email
    assert found.endpoints["audience"] == gcpnames.provider("tid-1").name
    assert found.endpoints["secretmanager"] == f"{server.public_url}/gcp/secretmanager"
    assert list(found.files) == ["/w/gcp.json"]
    config = json.loads(found.files["/w/gcp.json"])
    assert config["audience"] == found.endpoints["audience"]
    assert config["token_url"] == found.endpoints["sts"] == f"{server.public_url}/gcp/sts/v1/token"
    assert config["credential_source"] == {"file": "/t", "format": {"type": "text"}}
    assert config["universe_domain"] == gcpnames.UNIVERSE_DOMAIN != "googleapis.com"
    if impersonation:
        url = config["service_account_impersonation_url"]
        assert url == found.endpoints["iamcredentials"]
        assert url.endswith(
            f"/serviceAccounts/{email}:generateAccessToken"
        )  # google-auth parses it
    else:
        assert "service_account_impersonation_url" not in config
    assert found.view()["files"] == found.files


def test_gcp_default_file_is_named_by_tenant_identity_and_content() -> None:
    def path(token: str, impersonation: bool = True) -> str:
        env = workload_env("gcp", IDENTITY, token, WITH_DIR, impersonation=impersonation).env
        return env["GOOGLE_APPLICATION_CREDENTIALS"]

    assert re.fullmatch(r"/data/gcp/default/eso-reader-[0-9a-f]{12}\.json", path("/t"))
    assert path("/t") == path("/t")
    assert len({path("/t"), path("/u"), path("/t", impersonation=False)}) == 3


def test_gcp_needs_the_token_file_and_somewhere_to_write() -> None:
    with pytest.raises(InvalidRequest, match="--token-file"):
        workload_env("gcp", IDENTITY, "", WITH_DIR)
    with pytest.raises(InvalidRequest, match="--credential-config FILE"):
        workload_env("gcp", IDENTITY, "/t", OWN_CA)  # no data directory known


AWS_TOKEN = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"


@pytest.mark.parametrize(
    ("server", "ca"),
    [(OWN_CA, {"AWS_CA_BUNDLE": "/data/tls/ca.pem"}), (OPERATOR_CERT, {})],
    ids=["own-ca", "operator-cert"],
)
def test_aws_env(server: Server, ca: dict[str, str]) -> None:
    account = awsnames.account_id("tid-1")
    role = f"arn:aws:iam::{account}:role/eso-reader"
    base = server.public_url
    assert workload_env("aws", IDENTITY, AWS_TOKEN, server).view() == {
        "env": {
            "AWS_ROLE_ARN": role,
            "AWS_WEB_IDENTITY_TOKEN_FILE": AWS_TOKEN,
            "AWS_ROLE_SESSION_NAME": "eso-reader",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",  # the only one botocore reads
            "AWS_ENDPOINT_URL_STS": f"{base}/aws/sts",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"{base}/aws/secretsmanager",
            **ca,
        },
        "endpoints": {
            "sts": f"{base}/aws/sts",
            "secretsmanager": f"{base}/aws/secretsmanager",
            "role_arn": role,
        },
    }


@pytest.mark.parametrize(
    ("name", "session"),
    [
        ("ab", "ab"),
        ("a", "keyless-a"),
        ("x" * 64, "x" * 64),
        ("y" * 65, ("keyless-" + "y" * 65)[:64]),
    ],
    ids=["two", "one", "sixty-four", "longer"],
)
def test_aws_session_name_is_one_sts_accepts(name: str, session: str) -> None:
    identity = Identity("oid-1", "cid-1", name, "tid-1", 0.0)
    found = workload_env("aws", identity, "/t", OWN_CA).env["AWS_ROLE_SESSION_NAME"]
    assert found == session
    assert re.fullmatch(r"[\w+=,.@-]{2,64}", found)


def test_aws_needs_the_token_file() -> None:
    with pytest.raises(InvalidRequest, match="--token-file"):
        workload_env("aws", IDENTITY, "", OWN_CA)


def test_vault_logins_follow_the_servers_auth_mounts() -> None:
    """``--vault-auth-mount kubernetes/cluster-a ci=jwt``: the first mount of each type."""
    from dataclasses import replace

    server = replace(
        OWN_CA,
        vault_auth_mounts=(("kubernetes/cluster-a", "kubernetes"), ("ci", "jwt"), ("b", "jwt")),
    )
    endpoints = workload_env("vault", IDENTITY, "/t", server).endpoints
    assert endpoints["kubernetes_login"] == "auth/kubernetes/cluster-a/login"
    assert endpoints["jwt_login"] == "auth/ci/login"
    only_k8s = replace(OWN_CA, vault_auth_mounts=(("k8s", "kubernetes"),))
    assert "jwt_login" not in workload_env("vault", IDENTITY, "/t", only_k8s).endpoints
