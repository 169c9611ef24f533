"""The real Azure SDKs, msal, requests and curl get tokens from a running keyless."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
import msal
import requests
from azure.identity import WorkloadIdentityCredential

from tests.support.federation import SUBJECT, Federated


def _verify(fed: Federated, token: str, audience: str) -> dict:
    jwks = jwt.PyJWKSet.from_dict(fed.jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256", "ES256"],
        audience=audience,
        issuer=f"{fed.server.url}/{fed.tenant_id}/v2.0",
    )


def test_workload_identity_credential(fed: Federated) -> None:
    token_file = fed.token_file(fed.dev_token())
    cred = WorkloadIdentityCredential(
        tenant_id=fed.tenant_id,
        client_id=fed.client_id,
        token_file_path=str(token_file),
        authority=fed.server.url,
        connection_verify=str(fed.server.ca),
    )
    access = cred.get_token(fed.vault_scope)
    assert access.expires_on > 0
    claims = _verify(fed, access.token, f"https://vault.localhost:{fed.server.port}")
    assert claims["oid"] == claims["sub"] == fed.object_id
    assert claims["azp"] == claims["appid"] == fed.client_id
    assert claims["tid"] == fed.tenant_id
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["fed"] == {
        "iss": fed.dev_issuer,
        "sub": SUBJECT,
        "cluster": fed.dev_issuer,
        "namespace": "demo",
        "service_account": "app",
        "pod": "app-7d9f",
    }


def test_default_azure_credential_from_environment_only(fed: Federated) -> None:
    token_file = fed.token_file(fed.dev_token())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSAL_"))}
    env.update(
        {
            "AZURE_CLIENT_ID": fed.client_id,
            "AZURE_TENANT_ID": fed.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": fed.server.url,
            "REQUESTS_CA_BUNDLE": str(fed.server.ca),
        }
    )
    code = (
        "from azure.identity import DefaultAzureCredential\n"
        f"print(DefaultAzureCredential().get_token({fed.vault_scope!r}).token)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    claims = _verify(fed, result.stdout.strip(), f"https://vault.localhost:{fed.server.port}")
    assert claims["azp"] == fed.client_id


def test_msal_confidential_client_with_assertion(fed: Federated, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # requests lets REQUESTS_CA_BUNDLE override a session's verify=; point it at keyless's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fed.server.ca))
    app = msal.ConfidentialClientApplication(
        fed.client_id,
        authority=f"{fed.server.url}/{fed.tenant_id}",
        client_credential={"client_assertion": lambda: fed.dev_token()},
        instance_discovery=False,
        verify=str(fed.server.ca),
    )
    result = app.acquire_token_for_client(scopes=["https://vault.azure.net/.default"])
    assert "access_token" in result, result
    claims = _verify(fed, result["access_token"], "https://vault.azure.net")
    assert claims["oid"] == fed.object_id


def test_msal_validate_authority_false(fed: Federated, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fed.server.ca))
    app = msal.ConfidentialClientApplication(
        fed.client_id,
        authority=f"{fed.server.url}/{fed.tenant_id}",
        client_credential={"client_assertion": lambda: fed.dev_token()},
        validate_authority=False,
        verify=str(fed.server.ca),
    )
    result = app.acquire_token_for_client(scopes=[fed.vault_scope])
    assert result.get("token_type") == "Bearer", result


def test_rfc8693_with_requests(fed: Federated) -> None:
    response = requests.post(
        fed.token_url,
        verify=str(fed.server.ca),
        timeout=30,
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "subject_token": fed.dev_token(),
            "client_id": fed.client_id,
            "audience": "https://vault.azure.net",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert response.headers["cache-control"] == "no-store"
    assert _verify(fed, body["access_token"], "https://vault.azure.net")["fed"]["pod"]


def test_rfc8693_multipart_with_curl(fed: Federated) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(fed.server.ca),
            fed.token_url,
            "-F",
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
            "-F",
            "subject_token_type=urn:ietf:params:oauth:token-type:jwt",
            "-F",
            f"subject_token={fed.dev_token()}",
            "-F",
            f"client_id={fed.client_id}",
            "-F",
            f"scope={fed.vault_scope}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    body = json.loads(out)
    assert "access_token" in body, body


def test_entra_form_multipart(fed: Federated) -> None:
    files = {
        name: (None, value)
        for name, value in {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": fed.client_id,
            "client_assertion": fed.dev_token(),
            "scope": fed.vault_scope,
            "claims": '{"access_token":{"xms_cc":{"values":["CP1"]}}}',
        }.items()
    }
    with fed.server.client() as http:
        response = http.post(f"/{fed.tenant_id}/oauth2/v2.0/token", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["expires_in"] == body["ext_expires_in"] == 3600


def test_pattern_and_condition_policies(fed: Federated) -> None:
    fed.server.cli("identity", "create", "team")
    fed.server.cli(
        "federation",
        "add",
        "team",
        "--name",
        "any-reader",
        "--issuer",
        "https://issuer.test/clusters/a",
        "--subject-pattern",
        "system:serviceaccount:team-*:reader",
        "--condition",
        'claims["kubernetes.io"]["namespace"] == "team-blue"',
    )
    team = json.loads(fed.server.cli("--output", "json", "identity", "show", "team").stdout)
    ok = fed.test_token(
        sub="system:serviceaccount:team-blue:reader",
        **{"kubernetes.io": {"namespace": "team-blue"}},
    )
    assert fed.exchange(ok, client_id=team["client_id"]).status_code == 200
    wrong_ns = fed.test_token(
        sub="system:serviceaccount:team-red:reader", **{"kubernetes.io": {"namespace": "team-red"}}
    )
    response = fed.exchange(wrong_ns, client_id=team["client_id"])
    assert response.json()["error_codes"] == [70021]
    other = fed.test_token(sub="system:serviceaccount:team-blue:writer")
    assert fed.exchange(other, client_id=team["client_id"]).json()["error_codes"] == [700213]
