"""The agent's local credential endpoints end to end: a real keyless over HTTPS, the agent's
``serve_credentials`` on loopback (in a thread of this process, as the CLI runs it), and the
clouds' unmodified SDKs in child processes configured by environment only, from the variables
the agent wrote to its environment file:

- azure-identity's ``ManagedIdentityCredential`` and ``DefaultAzureCredential`` (App Service
  form) read a Key Vault secret with ``SecretClient``;
- boto3's default chain (container credentials) reads the same secret from Secrets Manager;
- google-auth's ``google.auth.default()`` and ``compute_engine.Credentials`` (GCE metadata)
  get the identity's Google token, with which the Secret Manager client reads it too.

The identity, its trust policies (the Azure audience, which AWS's STS accepts too; the Google
provider's name for Google's STS), the vault and the role come from the Google tests' server
(tests/api/gcp/conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.agent.auth import KeylessAuth
from keyless.agent.endpoints import CredentialServer, Endpoints, loopback, serve_credentials
from keyless.agent.settings import AgentEnv
from keyless.core import awsnames, gcpnames, jose
from keyless.core.errors import ConfigError
from tests.api.aws.conftest import aws_env
from tests.api.gcp.conftest import (
    SECRET,
    SECRET_VALUE,
    VAULT,
    provider,
    run_python,
    secretmanager_endpoint,
    service_account,
)
from tests.api.gcp.conftest import fed as fed  # the server, identity ``app`` and its vault
from tests.support.federation import Federated


@dataclass
class Agent:
    endpoints: Endpoints
    env_file: Path
    variables: dict[str, str]
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread

    @property
    def secret(self) -> str:
        return self.variables["IDENTITY_HEADER"]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=30)


def agent_env(fed: Federated, token_file: Path, identity: str = "app", **over: Any) -> AgentEnv:
    """The agent's settings as the webhook injects them (the Azure workload variables plus
    KEYLESS_IDENTITY), for a pod whose projected token is ``token_file``."""
    return AgentEnv.from_environ(
        {
            "AZURE_AUTHORITY_HOST": fed.server.url,
            "AZURE_TENANT_ID": fed.tenant_id,
            "AZURE_CLIENT_ID": fed.client_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "REQUESTS_CA_BUNDLE": str(fed.server.ca),
            "KEYLESS_IDENTITY": identity,
            **over,
        }
    )


def run_agent(
    env: AgentEnv, env_file: Path, dialects: str, *, shared_auth: bool = False, **kw: Any
) -> Agent:
    """``serve_credentials`` on its own event loop in a thread, until ``Agent.close``; returns
    once the environment file is written (the endpoints answer by then). ``shared_auth``: with
    a ``KeylessAuth`` of the caller's, as the agent's CLI passes its own."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    result: dict[str, Any] = {}

    async def serve() -> Endpoints:
        auth = KeylessAuth(env) if shared_auth else None
        try:
            return await serve_credentials(env, dialects, env_file, stop=stop, auth=auth, **kw)
        finally:
            if auth is not None:
                assert not auth.http.is_closed  # the caller's to close
                await auth.aclose()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            result["endpoints"] = loop.run_until_complete(serve())
        except BaseException as exc:  # reported by the waiting test
            result["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not env_file.exists():
        assert "error" not in result, result.get("error")
        assert time.monotonic() < deadline, "the agent wrote no environment file"
        time.sleep(0.02)
    variables = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    host_port = (
        variables.get("GCE_METADATA_HOST")
        or variables[
            next(
                n
                for n in variables
                if n in ("IDENTITY_ENDPOINT", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
            )
        ].split("/")[2]
    )
    endpoints = Endpoints(
        f"http://{host_port}", host_port, env_file.parent / "credentials-secret", variables
    )
    return Agent(endpoints, env_file, variables, loop, stop, thread)


@pytest.fixture(scope="module")
def agent(fed: Federated) -> Iterator[Agent]:
    azure_token = fed.token_file(fed.dev_token())
    google_token = fed.token_file(fed.dev_token("--audience", provider(fed).name))
    env_file = fed.tmp / "agent-shared" / "credentials.env"
    running = run_agent(
        agent_env(fed, azure_token),
        env_file,
        "azure,aws,gcp",
        gcp_token_file=str(google_token),
    )
    try:
        yield running
    finally:
        running.close()


def app_env(fed: Federated, agent: Agent, *names: str) -> dict[str, str]:
    """A child's environment: nothing of any cloud's, keyless's CA (for the vault's HTTPS), and
    the variables of the agent's environment file whose names are given."""
    home = fed.tmp / "app-home"
    home.mkdir(exist_ok=True)
    prefixes = ("AZURE_", "IDENTITY_", "MSI_", "AWS_", "GOOGLE_", "GCE_", "GCLOUD_", "CLOUDSDK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("NO_GCE_CHECK", None)
    env.update(HOME=str(home), REQUESTS_CA_BUNDLE=str(fed.server.ca))
    env.update({name: agent.variables[name] for name in names})
    return env


def vault_url(fed: Federated) -> str:
    return f"https://{VAULT}.vault.localhost:{fed.server.port}"


# -- the environment file ---------------------------------------------------------------------


def test_env_file_names_every_endpoint_and_is_private(fed: Federated, agent: Agent) -> None:
    base = agent.endpoints.base_url
    assert base.startswith("http://127.0.0.1:")
    assert agent.variables == {
        "IDENTITY_ENDPOINT": base + "/msi/token",
        "IDENTITY_HEADER": agent.secret,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": base + "/aws/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(agent.endpoints.secret_file),
        "GCE_METADATA_HOST": agent.endpoints.host_port,
        "GCE_METADATA_IP": agent.endpoints.host_port,
    }
    assert len(agent.secret) >= 43
    # botocore refuses a token file with a newline; the secret is the file's whole content.
    assert agent.endpoints.secret_file.read_text() == agent.secret
    for path in (agent.env_file, agent.endpoints.secret_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -- Azure ------------------------------------------------------------------------------------

AZURE_READ = """
import json, sys
from azure.identity import {credential}
from azure.keyvault.secrets import SecretClient
from keyless.localresolve import resolving

with resolving("vault.localhost"):
    credential = {credential}()
    client = SecretClient({vault!r}, credential)
    value = client.get_secret({secret!r}).value
    token = credential.get_token("https://vault.azure.net/.default")
print(json.dumps({{"value": value, "token": token.token, "expires_on": token.expires_on}}))
"""


@pytest.mark.parametrize("credential", ["ManagedIdentityCredential", "DefaultAzureCredential"])
def test_azure_identity_reads_a_key_vault_secret(
    fed: Federated, agent: Agent, credential: str
) -> None:
    env = app_env(fed, agent, "IDENTITY_ENDPOINT", "IDENTITY_HEADER")
    code = AZURE_READ.format(credential=credential, vault=vault_url(fed), secret=SECRET)
    out = run_python(env, code)
    assert out["value"] == SECRET_VALUE
    claims = jose.parse_compact(out["token"]).payload
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["oid"] == fed.object_id
    assert out["expires_on"] == claims["exp"]


def _msi(agent: Agent, headers: dict[str, str], **params: str) -> httpx.Response:
    query = {"api-version": "2019-08-01", "resource": "https://vault.azure.net", **params}
    return httpx.get(agent.variables["IDENTITY_ENDPOINT"], params=query, headers=headers)


def test_azure_answer_is_app_services(fed: Federated, agent: Agent) -> None:
    reply = _msi(agent, {"X-IDENTITY-HEADER": agent.secret}, client_id=fed.client_id.upper())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time() + 600
    assert body["resource"] == "https://vault.azure.net" and body["token_type"] == "Bearer"
    assert reply.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        pytest.param({}, {}, 401, id="no-header"),
        pytest.param({"X-IDENTITY-HEADER": "wrong"}, {}, 403, id="wrong-header"),
        pytest.param(None, {"api-version": "2017-09-01"}, 400, id="old-api-version"),
        pytest.param(None, {"resource": ""}, 400, id="no-resource"),
        pytest.param(
            None, {"client_id": "00000000-0000-0000-0000-000000000000"}, 400, id="other-client"
        ),
        pytest.param(
            None, {"object_id": "00000000-0000-0000-0000-000000000000"}, 400, id="object-id"
        ),
    ],
)
def test_azure_refusals(
    agent: Agent, headers: dict[str, str] | None, params: dict[str, str], status: int
) -> None:
    reply = _msi(
        agent, {"X-IDENTITY-HEADER": agent.secret} if headers is None else headers, **params
    )
    assert reply.status_code == status
    body = reply.json()
    assert body["statusCode"] == status and body["message"] and "access_token" not in body
    assert agent.secret not in reply.text


def test_azure_identity_with_a_wrong_header_fails(fed: Federated, agent: Agent) -> None:
    env = app_env(fed, agent, "IDENTITY_ENDPOINT")
    env["IDENTITY_HEADER"] = "not-the-pod-secret"
    code = """
import json
from azure.identity import ManagedIdentityCredential
try:
    ManagedIdentityCredential().get_token("https://vault.azure.net/.default")
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""
    out = run_python(env, code)
    assert out["error"] == "CredentialUnavailableError"
    assert "403" in out["message"]


# -- AWS --------------------------------------------------------------------------------------

AWS_READ = """
import json, boto3
session = boto3.Session()
creds = session.get_credentials()
secret = session.client("secretsmanager").get_secret_value(SecretId={secret_id!r})
caller = session.client("sts").get_caller_identity()
print(json.dumps({{"value": secret["SecretString"], "arn": caller["Arn"],
                  "method": creds.method, "account": caller["Account"]}}))
"""


def aws_app_env(fed: Federated, agent: Agent) -> dict[str, str]:
    """The AWS tests' environment (tests/api/aws/conftest.py: no keys, no files, keyless's
    endpoints and CA) without the web identity: the container credentials instead."""
    env = aws_env(fed, fed.tmp / "unused", "unused")
    for name in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME"):
        del env[name]
    env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = fed.server.url + awsnames.SECRETS_MANAGER_PATH
    env.update({k: v for k, v in agent.variables.items() if k.startswith("AWS_CONTAINER")})
    return env


def test_boto3_default_chain_reads_a_secrets_manager_secret(fed: Federated, agent: Agent) -> None:
    out = run_python(aws_app_env(fed, agent), AWS_READ.format(secret_id=f"{VAULT}/{SECRET}"))
    assert out["value"] == SECRET_VALUE
    assert out["method"] == "container-role"
    assert out["account"] == awsnames.account_id(fed.tenant_id)
    assert out["arn"].startswith(f"arn:aws:sts::{out['account']}:assumed-role/app/")


def _aws(agent: Agent, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(agent.variables["AWS_CONTAINER_CREDENTIALS_FULL_URI"], headers=headers)


def test_aws_answer_is_the_container_endpoints(agent: Agent) -> None:
    first = _aws(agent, {"Authorization": agent.secret})
    assert first.status_code == 200, first.text
    body = first.json()
    assert {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"} <= set(body)
    assert body["Expiration"].endswith("Z")
    # Renewed at half its lifetime, not per request: the same session twice in a row.
    assert _aws(agent, {"Authorization": agent.secret}).json()["AccessKeyId"] == body["AccessKeyId"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no-header"),
        pytest.param({"Authorization": "x" * 43}, 403, id="wrong"),
    ],
)
def test_aws_refusals(agent: Agent, headers: dict[str, str], status: int) -> None:
    reply = _aws(agent, headers)
    assert reply.status_code == status
    assert "AccessKeyId" not in reply.json() and agent.secret not in reply.text


def test_boto3_with_a_wrong_token_file_fails(fed: Federated, agent: Agent) -> None:
    env = aws_app_env(fed, agent)
    wrong = fed.tmp / "wrong-aws-token"
    wrong.write_text("not-the-pod-secret")
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(wrong)
    code = """
import json, boto3
try:
    boto3.Session().get_credentials()
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""
    out = run_python(env, code)
    assert out["error"] == "CredentialRetrievalError"
    assert "403" in out["message"]


# -- Google -----------------------------------------------------------------------------------

GOOGLE_DEFAULT = """
import json, google.auth
from google.auth import compute_engine
from google.auth.transport.requests import Request
creds, project = google.auth.default()
creds.refresh(Request())
direct = compute_engine.Credentials(scopes=["https://www.googleapis.com/auth/cloud-platform"])
direct.refresh(Request())
print(json.dumps({"token": creds.token, "project": project, "type": type(creds).__module__,
                  "email": creds.service_account_email, "direct": direct.token,
                  "universe": creds.universe_domain,
                  "expiry": creds.expiry.timestamp() if creds.expiry else None}))
"""


def test_google_auth_default_gets_the_identitys_token(fed: Federated, agent: Agent) -> None:
    env = app_env(fed, agent, "GCE_METADATA_HOST", "GCE_METADATA_IP")
    out = run_python(env, GOOGLE_DEFAULT)
    assert out["type"] == "google.auth.compute_engine.credentials"
    assert out["project"] == "default"  # the tenant's alias: its Google project id
    assert out["email"] == service_account("app")
    assert out["universe"] == gcpnames.UNIVERSE_DOMAIN
    for token in (out["token"], out["direct"]):
        claims = jose.parse_compact(token).payload
        assert claims["aud"] == gcpnames.ACCESS_AUDIENCE
        assert claims["oid"] == fed.object_id


GOOGLE_READ = """
import json
from google.cloud import secretmanager
client = secretmanager.SecretManagerServiceClient(
    transport="rest", client_options={"api_endpoint": ENDPOINT})
answer = client.access_secret_version(name=NAME)
print(json.dumps({"value": answer.payload.data.decode()}))
"""


def test_secret_manager_client_reads_a_secret_with_the_metadata_token(
    fed: Federated, agent: Agent
) -> None:
    env = app_env(fed, agent, "GCE_METADATA_HOST", "GCE_METADATA_IP")
    name = f"projects/{VAULT}/secrets/{SECRET}/versions/latest"
    code = f"ENDPOINT = {secretmanager_endpoint(fed)!r}\nNAME = {name!r}\n" + GOOGLE_READ
    assert run_python(env, code)["value"] == SECRET_VALUE


def _gce(agent: Agent, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"Metadata-Flavor": "Google"} if headers is None else headers
    return httpx.get(agent.endpoints.base_url + path, headers=sent)


def test_gce_metadata_answers(fed: Federated, agent: Agent) -> None:
    sa = "/computeMetadata/v1/instance/service-accounts/default"
    expect = {
        "/computeMetadata/v1/project/project-id": "default",
        "/computeMetadata/v1/project/numeric-project-id": gcpnames.project_number(fed.tenant_id),
        sa + "/email": service_account("app"),
        f"/computeMetadata/v1/instance/service-accounts/{service_account('app')}/email": (
            service_account("app")
        ),
    }
    for path, text in expect.items():
        reply = _gce(agent, path)
        assert (reply.status_code, reply.text) == (200, text), path
        assert reply.headers["metadata-flavor"] == "Google"
        assert reply.headers["content-type"].startswith("application/text")
    info = _gce(agent, sa + "/?recursive=true").json()
    assert info["email"] == service_account("app") and info["aliases"] == ["default"]
    token = _gce(agent, sa + "/token?scopes=https://www.googleapis.com/auth/cloud-platform")
    body = token.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert 600 < body["expires_in"] <= 3600 and body["token_type"] == "Bearer"
    assert (
        _gce(agent, "/computeMetadata/v1/instance/service-accounts/someone@else/email").status_code
        == 404
    )


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-flavor"),
        pytest.param({"Metadata-Flavor": "google"}, id="wrong-flavor"),
        pytest.param({"Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.9"}, id="forwarded"),
    ],
)
def test_gce_refusals(agent: Agent, headers: dict[str, str]) -> None:
    for path in ("/", "/computeMetadata/v1/instance/service-accounts/default/token"):
        reply = _gce(agent, path, headers)
        assert reply.status_code == 403, path
        assert "access_token" not in reply.text


# -- the listener and the secret --------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "10.1.2.3", "localhost", "example.com"],  # noqa: S104
)
def test_a_non_loopback_bind_is_refused(fed: Federated, host: str) -> None:
    env = agent_env(fed, fed.tmp / "unused")
    with pytest.raises(ConfigError, match="loopback"):
        CredentialServer(env, ["azure"], state_dir=fed.tmp, host=host)


@pytest.mark.parametrize(
    ("host", "address"), [("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("[::1]", "::1")]
)
def test_loopback_addresses_are_taken(host: str, address: str) -> None:
    assert loopback(host) == address


def test_unknown_dialect_and_missing_identity_fail_at_start(fed: Federated) -> None:
    env = agent_env(fed, fed.tmp / "unused")
    with pytest.raises(ConfigError, match="azure, aws, gcp"):
        CredentialServer(env, ["azure", "oracle"], state_dir=fed.tmp)
    anonymous = agent_env(fed, fed.tmp / "unused", identity="")
    with pytest.raises(ConfigError, match="KEYLESS_IDENTITY"):
        CredentialServer(anonymous, ["aws"], state_dir=fed.tmp)


async def test_no_env_file_or_a_busy_port_fails_at_start(
    fed: Federated, agent: Agent, tmp_path: Path
) -> None:
    env = agent_env(fed, fed.tmp / "unused")
    with pytest.raises(ConfigError, match="--credentials-env-file"):
        await serve_credentials(env, "azure", None, stop=asyncio.Event())
    busy = int(agent.endpoints.host_port.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match="cannot listen"):
        await serve_credentials(env, "azure", tmp_path / "env", stop=asyncio.Event(), port=busy)
    assert list(tmp_path.iterdir()) == []  # neither the file nor the secret


def test_a_restarted_agent_keeps_the_pod_secret_and_never_logs_it(
    fed: Federated, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restarted sidecar finds the secret it kept in the shared volume: the application's
    environment, read once at its start, still holds it. Its logs never do."""
    caplog.set_level(logging.DEBUG)
    token = fed.token_file(fed.dev_token())
    env_file = tmp_path / "shared" / "credentials.env"
    # As the CLI runs it: sharing the file delivery's keyless client.
    first = run_agent(agent_env(fed, token), env_file, "azure,aws", shared_auth=True)
    try:
        assert _msi(first, {"X-IDENTITY-HEADER": first.secret}).status_code == 200
        assert _aws(first, {"Authorization": "wrong"}).status_code == 403
    finally:
        first.close()
    env_file.unlink()
    second = run_agent(agent_env(fed, token), env_file, "azure")
    try:
        assert second.secret == first.secret
        assert set(second.variables) == {"IDENTITY_ENDPOINT", "IDENTITY_HEADER"}
    finally:
        second.close()
    assert "credential endpoints" in caplog.text
    assert first.secret not in caplog.text


def test_an_identity_whose_policies_refuse_the_token_gets_errors_not_tokens(
    fed: Federated, tmp_path: Path
) -> None:
    """``other`` does not trust the dev cluster's demo/app: keyless refuses every exchange and
    each endpoint says so in its protocol's way (403), with no credential."""
    token = fed.token_file(fed.dev_token())
    env = agent_env(fed, token, identity="other", AZURE_CLIENT_ID=fed.client_id)
    running = run_agent(env, tmp_path / "credentials.env", "aws,gcp", gcp_token_file=str(token))
    try:
        aws = _aws(running, {"Authorization": running.endpoints.secret_file.read_text()})
        assert aws.status_code == 403 and aws.json()["code"] == "AccessDenied"
        gce = _gce(running, "/computeMetadata/v1/instance/service-accounts/default/token")
        assert gce.status_code == 403 and "access_token" not in gce.text
    finally:
        running.close()


def test_tenant_alias_is_resolved_to_the_tenants_id(fed: Federated, tmp_path: Path) -> None:
    token = fed.token_file(fed.dev_token())
    env = agent_env(fed, token, AZURE_TENANT_ID="default")
    running = run_agent(env, tmp_path / "credentials.env", "aws")
    try:
        reply = _aws(running, {"Authorization": running.endpoints.secret_file.read_text()})
        assert reply.status_code == 200, reply.text
        assert reply.json()["AccountId"] == awsnames.account_id(fed.tenant_id)
    finally:
        running.close()


# -- any request: the protocol's answer, never a crash, never a token without the secret ------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_SEGMENT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="/?#"),
    max_size=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from(["right", "wrong", "none"]),
    params=st.fixed_dictionaries(
        {},
        optional={
            "api-version": st.sampled_from(["2019-08-01", "2017-09-01", ""]) | _TEXT,
            "resource": st.sampled_from(["https://vault.azure.net", "https://vault.azure.net/"])
            | _TEXT,
            "client_id": _TEXT,
            "object_id": _TEXT,
        },
    ),
)
def test_any_msi_request_is_app_services_answer(
    agent: Agent, header: str, params: dict[str, str]
) -> None:
    sent = {"right": {"X-IDENTITY-HEADER": agent.secret}, "wrong": {"X-IDENTITY-HEADER": "no"}}
    reply = httpx.get(
        agent.variables["IDENTITY_ENDPOINT"], params=params, headers=sent.get(header, {})
    )
    body = reply.json()
    if reply.status_code == 200:
        assert header == "right" and body["access_token"]
    else:
        assert reply.status_code in (400, 401, 403), reply.text
        assert body["statusCode"] == reply.status_code and "access_token" not in body
    if header != "right":
        assert reply.status_code == {"wrong": 403, "none": 401}[header]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.lists(
        st.sampled_from(
            [
                "computeMetadata",
                "v1",
                "instance",
                "service-accounts",
                "default",
                "token",
                "email",
                "project",
                "project-id",
                "",
                "..",
                "%2F",
            ]
        )
        | _SEGMENT,
        max_size=6,
    ),
    flavor=st.sampled_from(["Google", "google", None]),
    method=st.sampled_from(["GET", "POST", "PUT"]),
)
def test_any_metadata_request_is_flavored_and_guarded(
    agent: Agent, path: list[str], flavor: str | None, method: str
) -> None:
    url = agent.endpoints.base_url + "/" + "/".join(path)
    headers = {"Metadata-Flavor": flavor} if flavor else {}
    reply = httpx.request(method, url, headers=headers)
    assert reply.status_code in (200, 307, 403, 404, 405), reply.text
    if reply.status_code == 200:
        assert flavor == "Google"
    if flavor != "Google":
        assert reply.status_code in (403, 404) and "access_token" not in reply.text
