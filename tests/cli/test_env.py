"""``keyless env IDENTITY --dialect azure|vault --token-file PATH`` against a real server: bash
evals the printed lines and the unmodified Azure SDK (``DefaultAzureCredential`` +
``SecretClient``) reads a secret with nothing else set; JSON output; one-line refusals; and a
workload whose identity has no role gets a 403 that names the identity and the role that would
allow it. For vault, the real ``bao`` CLI logs in and reads with only the printed variables, and
a tenant other than the default one is the ``VAULT_NAMESPACE``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyless.core import awsnames, gcpnames
from tests.support.server import RunningServer, ServerFactory

VAULT = "envtest"
VALUE = "s3cr3t value with 'quotes' and $dollars"

SDK_READ = textwrap.dedent(
    """
    import sys
    from azure.core.exceptions import HttpResponseError
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient
    from keyless.localresolve import resolving

    with resolving("vault.localhost"):
        client = SecretClient(sys.argv[1], DefaultAzureCredential())
        try:
            print(client.get_secret("greeting").value)
        except HttpResponseError as exc:
            print(f"status={exc.status_code} {exc.message}")
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("env")
    factory = ServerFactory(tmp)
    running = factory.start(dev=True)
    doc = tmp / "keyless.yaml"
    dev_issuer = f"{running.url}/dev/clusters/dev"
    doc.write_text(
        f"""
issuers:
  - url: {dev_issuer}
identities:
  - name: billing
    federated_credentials:
      - {{name: api, issuer: "{dev_issuer}", subject: "system:serviceaccount:billing:api"}}
      - name: aws
        issuer: "{dev_issuer}"
        subject: "system:serviceaccount:billing:api"
        audiences: [sts.amazonaws.com]
  - name: norole
    federated_credentials:
      - {{name: api, issuer: "{dev_issuer}", subject: "system:serviceaccount:other:api"}}
vaults:
  - name: {VAULT}
role_assignments:
  - {{identity: billing, role: secrets-user, scope: /vaults/{VAULT}}}
"""
    )
    running.cli("apply", "-f", str(doc))
    running.cli("secret", "set", VAULT, "greeting", "--value", VALUE)
    yield running
    factory.stop_all()


def token_file(server: RunningServer, tmp: Path, namespace: str, *audience: str) -> Path:
    token = server.cli(
        "dev", "token", "--namespace", namespace, "--service-account", "api", *audience
    ).stdout.strip()
    path = tmp / f"{namespace}-token"
    path.write_text(token)
    return path


def run_workload(server: RunningServer, tmp: Path, exports: str) -> str:
    """bash: ``eval`` the exports, then the SDK, with nothing else in the environment."""
    env_file = tmp / "workload.env"
    env_file.write_text(exports)
    vault_url = f"https://{VAULT}.vault.localhost:{server.port}"
    script = f'eval "$(cat {env_file})"; exec "$PYTHON" -c "$SDK_READ" "$VAULT_URL"'
    result = subprocess.run(
        ["bash", "-c", script],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "PYTHON": sys.executable,
            "SDK_READ": SDK_READ,
            "VAULT_URL": vault_url,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_eval_of_env_lets_the_azure_sdk_read_the_secret(
    server: RunningServer, tmp_path: Path
) -> None:
    token = token_file(server, tmp_path, "billing")
    out = server.cli("env", "billing", "--dialect", "azure", "--token-file", str(token))
    lines = out.stdout.splitlines()
    assert all(line.startswith("export ") for line in lines), out.stdout
    names = [line.removeprefix("export ").split("=", 1)[0] for line in lines]
    for needed in (
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
    ):
        assert needed in names
    assert run_workload(server, tmp_path, out.stdout) == VALUE


def test_json_output_has_env_and_endpoints(server: RunningServer, tmp_path: Path) -> None:
    found = json.loads(
        server.cli(
            "--output", "json", "env", "billing", "--dialect", "azure", "--token-file", "/t"
        ).stdout
    )
    identity = json.loads(server.cli("--output", "json", "identity", "show", "billing").stdout)
    env = found["env"]
    assert env["AZURE_AUTHORITY_HOST"] == server.url
    assert env["AZURE_TENANT_ID"] == identity["tenant_id"]  # the id: the SDK's challenge check
    assert env["AZURE_CLIENT_ID"] == identity["client_id"]
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == "/t"
    assert env["REQUESTS_CA_BUNDLE"] == str(server.ca.resolve())
    assert env["SSL_CERT_FILE"] == env["NODE_EXTRA_CA_CERTS"] == env["REQUESTS_CA_BUNDLE"]
    assert found["endpoints"]["vault_domain"] == "vault.localhost"


def test_a_workload_without_a_role_is_told_which_role_would_allow_it(
    server: RunningServer, tmp_path: Path
) -> None:
    token = token_file(server, tmp_path, "other")
    out = server.cli("env", "norole", "--dialect", "azure", "--token-file", str(token))
    answer = run_workload(server, tmp_path, out.stdout)
    assert answer.startswith("status=403 "), answer
    assert "identity 'norole'" in answer
    assert "'Key Vault Secrets User' (secrets-user)" in answer
    assert f"keyless role assign norole secrets-user --scope /vaults/{VAULT}" in answer


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["billing", "--dialect", "gcp", "--token-file", "/t", "--credential-config", "/"],
            "cannot write /",
        ),
        (
            ["billing", "--dialect", "aws", "--token-file", "/t", "--no-impersonation"],
            "--no-impersonation is for --dialect gcp only",
        ),
        (["billing", "--dialect", "cobol", "--token-file", "/t"], "unknown dialect 'cobol'"),
        (["nobody", "--dialect", "azure", "--token-file", "/t"], "identity 'nobody' not found"),
        (["billing", "--dialect", "azure"], "--token-file"),
        (["billing", "--dialect", "vault"], "--token-file"),
        (["billing", "--dialect", "aws"], "--token-file"),
        (["billing", "--dialect", "gcp"], "--token-file"),
    ],
    ids=[
        "gcp-unwritable",
        "gcp-flag-elsewhere",
        "unknown-dialect",
        "unknown-identity",
        "no-token-file",
        "vault-no-token-file",
        "aws-no-token-file",
        "gcp-no-token-file",
    ],
)
def test_refusals_are_one_line(server: RunningServer, args: list[str], expected: str) -> None:
    result = server.cli("env", *args, check=False)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keyless: error: "), result.stderr
    assert expected in lines[0]
    assert result.stdout == ""


def test_vault_json_output_has_env_and_endpoints(server: RunningServer) -> None:
    found = json.loads(
        server.cli(
            "--output", "json", "env", "billing", "--dialect", "vault", "--token-file", "/t"
        ).stdout
    )
    assert found == {
        "env": {"VAULT_ADDR": server.url, "VAULT_CACERT": str(server.ca.resolve())},
        "endpoints": {
            "jwt_login": "auth/jwt/login",
            "kubernetes_login": "auth/kubernetes/login",
            "role": "billing",
            "token_file": "/t",
        },
    }  # the default tenant needs no namespace


def test_vault_export_lines(server: RunningServer) -> None:
    out = server.cli("env", "billing", "--dialect", "vault", "--token-file", "/t").stdout
    assert out.splitlines() == [
        f"export VAULT_ADDR={server.url}",
        f"export VAULT_CACERT={shlex.quote(str(server.ca.resolve()))}",
    ]


def run_bao(tmp: Path, exports: str, token: Path, role: str, read: str) -> str:
    """bash: ``eval`` the exports, log in with the real ``bao`` CLI, then ``bao kv get``,
    with nothing else in the environment (no VAULT_ADDR, no CA, no namespace)."""
    env_file = tmp / "vault.env"
    env_file.write_text(exports)
    script = (
        f'eval "$(cat {shlex.quote(str(env_file))})"'
        f' && VAULT_TOKEN="$(bao write -field=token auth/jwt/login role={shlex.quote(role)}'
        f' jwt=@{shlex.quote(str(token))})"'
        f" && export VAULT_TOKEN && exec bao kv get {read}"
    )
    result = subprocess.run(
        ["bash", "-c", script],
        env={
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_eval_of_vault_env_lets_bao_log_in_and_read(server: RunningServer, tmp_path: Path) -> None:
    token = token_file(server, tmp_path, "billing")
    out = server.cli("env", "billing", "--dialect", "vault", "--token-file", str(token)).stdout
    # a plain string secret is {"value": ...} in KV v2
    read = run_bao(tmp_path, out, token, "billing", f"-field=value {VAULT}/greeting")
    assert read == VALUE


def test_vault_namespace_names_a_tenant_other_than_the_default(
    server: RunningServer, tmp_path: Path
) -> None:
    """The worked example of docs/vault-api.md in tenant team-a: one subject pattern for every
    namespace's eso-reader, audience vault, a JSON secret under a name with '/'."""
    dev_issuer = f"{server.url}/dev/clusters/dev"
    doc = tmp_path / "team-a.yaml"
    doc.write_text(
        f"""
issuers:
  - url: {dev_issuer}
identities:
  - name: eso-reader
    federated_credentials:
      - name: every-namespace
        issuer: "{dev_issuer}"
        subject_pattern: "system:serviceaccount:*:eso-reader"
        audiences: [vault]
vaults:
  - name: team-a-kv
role_assignments:
  - {{identity: eso-reader, role: secrets-user, scope: /vaults/team-a-kv}}
"""
    )
    server.cli("tenant", "create", "team-a")
    server.cli("apply", "-f", str(doc), "--tenant", "team-a")
    creds = tmp_path / "creds.json"
    creds.write_text('{"username": "app", "password": "s3cr3t"}')
    server.cli(
        "secret", "set", "team-a-kv", "db/creds", "--file", str(creds),
        "--content-type", "application/json", "--tenant", "team-a",
    )  # fmt: skip
    found = json.loads(
        server.cli(
            "--output", "json", "env", "eso-reader", "--dialect", "vault",
            "--token-file", "/t", "--tenant", "team-a",
        ).stdout
    )  # fmt: skip
    assert found["env"]["VAULT_NAMESPACE"] == "team-a"
    assert found["endpoints"]["role"] == "eso-reader"

    out = server.cli(
        "env", "eso-reader", "--dialect", "vault", "--token-file", "/t", "--tenant", "team-a"
    ).stdout
    assert "export VAULT_NAMESPACE=team-a" in out.splitlines()
    for namespace in ("team-b", "team-c"):  # one policy, every namespace's service account
        token = tmp_path / f"{namespace}-token"
        token.write_text(
            server.cli(
                "dev", "token", "--namespace", namespace, "--service-account", "eso-reader",
                "--audience", "vault",
            ).stdout.strip()
        )  # fmt: skip
        read = run_bao(tmp_path, out, token, "eso-reader", "-field=password team-a-kv/db/creds")
        assert read == "s3cr3t"


def test_aws_json_output_has_env_and_endpoints(server: RunningServer) -> None:
    found = json.loads(
        server.cli(
            "--output", "json", "env", "billing", "--dialect", "aws", "--token-file", "/t"
        ).stdout
    )
    tenant = json.loads(server.cli("--output", "json", "tenant", "show").stdout)
    role = awsnames.role_arn(tenant["id"], "billing")
    assert found == {
        "env": {
            "AWS_ROLE_ARN": role,
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
            "AWS_ROLE_SESSION_NAME": "billing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_STS": f"{server.url}/aws/sts",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"{server.url}/aws/secretsmanager",
            "AWS_CA_BUNDLE": str(server.ca.resolve()),
        },
        "endpoints": {
            "sts": f"{server.url}/aws/sts",
            "secretsmanager": f"{server.url}/aws/secretsmanager",
            "role_arn": role,
        },
    }


def test_aws_export_lines(server: RunningServer) -> None:
    out = server.cli("env", "billing", "--dialect", "aws", "--token-file", "/t w").stdout
    lines = out.splitlines()
    assert "export AWS_WEB_IDENTITY_TOKEN_FILE='/t w'" in lines
    assert f"export AWS_ENDPOINT_URL_STS={server.url}/aws/sts" in lines
    assert "export AWS_DEFAULT_REGION=us-east-1" in lines
    assert len(lines) == 8 and all(line.startswith("export AWS_") for line in lines)


BOTO3_WHOAMI = textwrap.dedent(
    """
    import json
    import boto3

    me = boto3.client("sts").get_caller_identity()
    secret = boto3.client("secretsmanager").get_secret_value(SecretId="envtest/greeting")
    print(json.dumps({"me": me, "value": secret["SecretString"]}))
    """
)


def run_aws(tmp: Path, exports: str, *command: str) -> str:
    """bash: ``eval`` the exports, then ``command``, with nothing else in the environment (no
    keys, an empty HOME, no AWS config or credentials file)."""
    env_file = tmp / "aws.env"
    env_file.write_text(exports)
    script = f'eval "$(cat {shlex.quote(str(env_file))})"; exec "$@"'
    result = subprocess.run(
        ["bash", "-c", script, "bash", *command],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_eval_of_aws_env_lets_boto3_and_the_aws_cli_read_the_secret(
    server: RunningServer, tmp_path: Path
) -> None:
    token = token_file(server, tmp_path, "billing", "--audience", "sts.amazonaws.com")
    out = server.cli("env", "billing", "--dialect", "aws", "--token-file", str(token)).stdout
    tenant = json.loads(server.cli("--output", "json", "tenant", "show").stdout)
    account = awsnames.account_id(tenant["id"])
    session = f"arn:aws:sts::{account}:assumed-role/billing/billing"
    found = json.loads(run_aws(tmp_path, out, sys.executable, "-c", BOTO3_WHOAMI))
    assert (found["me"]["Account"], found["me"]["Arn"]) == (account, session)
    assert found["value"] == VALUE
    cli = run_aws(tmp_path, out, sys.executable, "-m", "awscli", "sts", "get-caller-identity")
    assert json.loads(cli)["Arn"] == session
    read = run_aws(
        tmp_path, out, sys.executable, "-m", "awscli", "secretsmanager", "get-secret-value",
        "--secret-id", f"{VAULT}/greeting", "--query", "SecretString", "--output", "text",
    )  # fmt: skip
    assert read == VALUE


def test_gcp_json_output_writes_the_credential_configuration(
    server: RunningServer, tmp_path: Path
) -> None:
    config = tmp_path / "sub" / "gcp.json"  # its folder is made
    found = json.loads(
        server.cli(
            "--output", "json", "env", "billing", "--dialect", "gcp", "--token-file", "/t",
            "--credential-config", str(config),
        ).stdout
    )  # fmt: skip
    tenant = json.loads(server.cli("--output", "json", "tenant", "show").stdout)
    provider = gcpnames.provider(tenant["id"]).name
    email = "billing@default.iam.gserviceaccount.com"
    generate = f"{server.url}/gcp/iamcredentials/v1/projects/-/serviceAccounts/{email}"
    generate += ":generateAccessToken"
    ca = str(server.ca.resolve())
    assert found == {
        "env": {
            "GOOGLE_APPLICATION_CREDENTIALS": str(config),
            "GOOGLE_CLOUD_PROJECT": "default",
            "REQUESTS_CA_BUNDLE": ca,
            "SSL_CERT_FILE": ca,
        },
        "endpoints": {
            "sts": f"{server.url}/gcp/sts/v1/token",
            "iamcredentials": generate,
            "secretmanager": f"{server.url}/gcp/secretmanager",
            "audience": provider,
            "service_account": email,
            "impersonation": "true",
            "credential_config": str(config),
        },
    }
    assert json.loads(config.read_text()) == {
        "type": "external_account",
        "audience": provider,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{server.url}/gcp/sts/v1/token",
        "service_account_impersonation_url": generate,
        "credential_source": {"file": "/t", "format": {"type": "text"}},
        "universe_domain": gcpnames.UNIVERSE_DOMAIN,
    }
    assert config.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in config.parent.iterdir()] == ["gcp.json"]  # no temporary left


def test_gcp_without_impersonation_and_a_relative_path(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lines = server.cli(
        "env", "billing", "--dialect", "gcp", "--token-file", "/t",
        "--credential-config", "c.json", "--no-impersonation",
    ).stdout.splitlines()  # fmt: skip
    assert f"export GOOGLE_APPLICATION_CREDENTIALS={tmp_path / 'c.json'}" in lines
    assert "export GOOGLE_CLOUD_PROJECT=default" in lines
    config = json.loads((tmp_path / "c.json").read_text())
    assert "service_account_impersonation_url" not in config


def test_gcp_default_file_is_named_by_its_content(server: RunningServer) -> None:
    """Without --credential-config: a file under the data directory, beside the CA the
    workload already reads; the same command again gives the same file, another token file
    another one (a running workload's file is never changed under it)."""

    def run(token: str) -> str:
        found = json.loads(
            server.cli(
                "--output", "json", "env", "billing", "--dialect", "gcp", "--token-file", token
            ).stdout
        )  # fmt: skip
        return str(found["env"]["GOOGLE_APPLICATION_CREDENTIALS"])

    first, again, other = run("/t1"), run("/t1"), run("/t2")
    assert first == again != other
    data_dir = server.ca.resolve().parents[1]
    assert Path(first).parent == data_dir / "gcp" / "default"
    assert Path(first).name.startswith("billing-") and Path(first).suffix == ".json"
    assert json.loads(Path(other).read_text())["credential_source"]["file"] == "/t2"
