"""The AD FS authority shape, replayed as the Azure SDK for Go drives it, over real HTTPS.

External Secrets Operator (``useAzureSDK: true``) and the Secrets Store CSI Azure provider
build ``azidentity.NewClientAssertionCredential(tenant, client, …)`` with a custom cloud and
``azsecrets.NewClient(vaultURL, cred, nil)``. With ``tenantId: adfs`` MSAL Go skips instance
discovery (which would ask login.microsoftonline.com about keyless's host and fail). What the
Go libraries send and check is transcribed in tests/support/gosdk.py, function by function,
from their source; this module replays that sequence with httpx against a real server
(``servers.start(dev=True)``, real TLS) and asserts every step: the unauthenticated Key Vault
GET and its 401 challenge, parsed as Go parses it; AD FS discovery; the client-assertion token
request with MSAL Go's form and headers; the authorized GET with azsecrets' api-version.
The Python SDK keeps working against the same vault (its challenge names no tenant), also with
tenant ``adfs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import jwt
import pytest
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.api.tenancy import challenge_tenant
from keyless.localresolve import resolving
from tests.support import gosdk
from tests.support.federation import SUBJECT, Federated

VALUE = "adfs-Secret-value-4q2"
TOKENS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def vault_names() -> Iterator[None]:
    with resolving("vault.localhost"):
        yield


@pytest.fixture(scope="module")
def go_vault(fed: Federated) -> str:
    """A vault of the default tenant that identity ``app`` may read, holding one secret."""
    cli = fed.server.cli
    cli("vault", "create", "gokv")
    cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/gokv")
    cli("secret", "set", "gokv", "db-password", "--value", VALUE)
    return f"https://gokv.vault.localhost:{fed.server.port}"


@pytest.fixture
def http(fed: Federated) -> Iterator[httpx.Client]:
    with httpx.Client(verify=fed.server.ssl_context(), timeout=30) as client:
        yield client


def _authority(fed: Federated) -> gosdk.AuthorityInfo:
    """ESO: ``customCloudConfig.activeDirectoryEndpoint: PUBLIC_URL/`` and ``tenantId: adfs``;
    azidentity joins them (``runtime.JoinPaths(host, tenantID)``)."""
    assert not gosdk.instance_discovery_enabled("adfs")
    return gosdk.authority_info(gosdk.join_paths(fed.server.url + "/", "adfs"))


def _go_token(
    http: httpx.Client, fed: Federated, scopes: list[str]
) -> tuple[str, str, dict[str, str]]:
    """MSAL Go's AcquireTokenByCredential for an AD FS authority: discovery (the exact URL it
    builds: port kept, empty query), then the token request. Returns the token, the
    ``client-request-id`` MSAL sent with it, and the discovery document."""
    info = _authority(fed)
    discovery = http.get(gosdk.openid_configuration_url(info), headers=gosdk.std_headers())
    assert discovery.status_code == 200, discovery.text
    assert discovery.headers["content-type"] == "application/json"
    doc: dict[str, str] = discovery.json()
    endpoints = gosdk.endpoints_from_discovery(doc, info)
    assertion = fed.dev_token()  # the projected service-account token ESO / the CSI driver read
    TOKENS.append(assertion)
    headers = {**gosdk.std_headers(), "Content-Type": gosdk.TOKEN_CONTENT_TYPE}
    response = http.post(
        endpoints["token_endpoint"],
        content=gosdk.token_form(fed.client_id, assertion, scopes),
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token: str = gosdk.parse_token_response(response.content)["access_token"]
    TOKENS.append(token)
    return token, headers["client-request-id"], doc


def test_go_sdk_request_sequence(fed: Federated, go_vault: str, http: httpx.Client) -> None:
    info = _authority(fed)
    assert (info.kind, info.tenant, info.host) == ("ADFS", "adfs", f"localhost:{fed.server.port}")
    seen: list[tuple[str, str, int]] = []
    http.event_hooks["response"] = [
        lambda r: seen.append((r.request.method, r.request.url.path, r.status_code))
    ]

    # 1. azsecrets GetSecret(ctx, "db-password", "", nil): no token known yet, so the challenge
    #    policy sends the request without one.
    url, headers = gosdk.secret_request(go_vault, "db-password")
    probe = http.get(url, headers=headers)
    assert probe.status_code == 401
    assert probe.json()["error"]["code"] == "Unauthorized"
    challenge = gosdk.parse_challenge(probe.headers["www-authenticate"], url)
    assert challenge.tenant == "adfs"
    assert challenge.scopes == [f"https://vault.localhost:{fed.server.port}/.default"]
    assert gosdk.resolve_tenant("adfs", challenge.tenant) == "adfs"

    # 2-3. MSAL Go: AD FS discovery, then the client-assertion token request with the
    #      challenge's scope (+ MSAL's default scopes, CP1 claims, client_info).
    token, _, doc = _go_token(http, fed, challenge.scopes)
    assert doc["token_endpoint"] == f"{fed.server.url}/adfs/oauth2/token"
    assert doc["issuer"] == f"{fed.server.url}/{fed.tenant_id}/v2.0"
    assert doc["jwks_uri"] == f"{fed.server.url}/adfs/discovery/keys"
    keys = jwt.PyJWKSet.from_dict(http.get(doc["jwks_uri"]).json())
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(
        token,
        next(k for k in keys.keys if k.key_id == kid).key,
        algorithms=["RS256", "ES256"],
        audience=f"https://vault.localhost:{fed.server.port}",
        issuer=doc["issuer"],
    )
    assert claims["tid"] == fed.tenant_id and claims["azp"] == fed.client_id
    assert claims["fed"]["sub"] == SUBJECT

    # 4. The same GET again, now with the token: the secret.
    ok = http.get(url, headers={**headers, "Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text
    secret = ok.json()
    assert secret["value"] == VALUE
    assert secret["id"].startswith(f"{go_vault}/secrets/db-password/")

    # The CSI provider's azsecrets (v0.13) sends api-version 7.4; any Azure form is served.
    older = http.get(
        url.replace(f"api-version={gosdk.AZSECRETS_API_VERSION}", "api-version=7.4"),
        headers={**headers, "Authorization": f"Bearer {token}"},
    )
    assert older.status_code == 200 and older.json()["value"] == VALUE

    # 5. The tenant is cached with the scope, so later requests go out with the token at once
    #    (a challenge without a tenant would cost a probe before every request).
    assert not gosdk.needs_probe(challenge)
    version = secret["id"].rsplit("/", 1)[1]
    url2, headers2 = gosdk.secret_request(go_vault, "db-password", version)
    again = http.get(url2, headers={**headers2, "Authorization": f"Bearer {token}"})
    assert again.status_code == 200 and again.json()["value"] == VALUE

    assert seen == [
        ("GET", "/secrets/db-password/", 401),
        ("GET", "/adfs/.well-known/openid-configuration", 200),
        ("POST", "/adfs/oauth2/token", 200),
        ("GET", "/adfs/discovery/keys", 200),  # this test's own check of the signature
        ("GET", "/secrets/db-password/", 200),
        ("GET", "/secrets/db-password/", 200),  # api-version 7.4
        ("GET", f"/secrets/db-password/{version}", 200),
    ]


def test_same_trust_decision_as_the_entra_token_endpoint(
    fed: Federated, http: httpx.Client
) -> None:
    """The AD FS token URL is the Entra one for the default tenant: same verdicts, same errors,
    same token claims."""
    scope = [f"https://vault.localhost:{fed.server.port}/.default"]
    stranger = fed.test_token(sub="system:serviceaccount:other:intruder")
    forged = fed.test_token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for assertion in (stranger, forged):
        answers = []
        for path in ("/adfs/oauth2/token", f"/{fed.tenant_id}/oauth2/v2.0/token"):
            r = http.post(
                fed.server.url + path,
                content=gosdk.token_form(fed.client_id, assertion, scope),
                headers={**gosdk.std_headers(), "Content-Type": gosdk.TOKEN_CONTENT_TYPE},
            )
            with pytest.raises(ValueError):
                gosdk.parse_token_response(r.content)  # what MSAL Go makes of the refusal
            answers.append((r.status_code, r.json()["error"], r.json()["error_codes"]))
        assert answers[0] == answers[1] and answers[0][0] in (400, 401)

    good = fed.test_token()
    entra = fed.exchange(good, scope=scope[0])
    with fed.server.client() as plain:
        via_adfs = plain.post(
            "/adfs/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": gosdk.CLIENT_ASSERTION,
                "client_assertion": good,
                "client_id": fed.client_id,
                "scope": scope[0],
            },
        )
    assert entra.status_code == via_adfs.status_code == 200
    a, b = (
        jwt.decode(r.json()["access_token"], options={"verify_signature": False})
        for r in (entra, via_adfs)
    )
    for claim in ("iss", "tid", "aud", "oid", "sub", "azp", "fed"):
        assert a[claim] == b[claim], claim


def test_adfs_exchange_is_audited_like_entra(fed: Federated, go_vault: str) -> None:
    """One event per exchange, the Entra path's: found by the client-request-id MSAL sent."""
    resource = f"https://vault.localhost:{fed.server.port}"
    with httpx.Client(verify=fed.server.ssl_context(), timeout=30) as http:
        _, go_request, _ = _go_token(http, fed, [f"{resource}/.default"])
    with fed.server.client() as plain:
        entra = plain.post(
            fed.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": gosdk.CLIENT_ASSERTION,
                "client_assertion": fed.dev_token(),
                "client_id": fed.client_id,
                "scope": f"{resource}/.default",
            },
            headers={"client-request-id": "entra-twin"},
        )
    assert entra.status_code == 200
    TOKENS.append(entra.json()["access_token"])
    events = [
        json.loads(line)
        for line in fed.server.cli(
            "--output", "json", "audit", "list", "--limit", "1000"
        ).stdout.splitlines()
        if line
    ]
    go = [e for e in events if e.get("request_id") == go_request]
    twin = [e for e in events if e.get("request_id") == "entra-twin"]
    assert len(go) == len(twin) == 1
    same = ("action", "actor", "reason", "result", "target", "tenant_id", "workload")
    assert {k: go[0][k] for k in same} == {k: twin[0][k] for k in same}
    assert go[0]["action"] == "token.exchange.client_credentials"
    assert go[0]["result"] == "success" and go[0]["tenant_id"] == fed.tenant_id
    assert go[0]["actor"] == fed.object_id and go[0]["target"] == resource
    assert fed.server.cli("audit", "verify").returncode == 0


def test_other_tenants_keep_their_id_in_the_challenge(fed: Federated, http: httpx.Client) -> None:
    """``adfs`` is the default tenant only: another tenant's vault names that tenant, which a Go
    credential configured for ``adfs`` refuses (azidentity ``resolveTenant``), as it must."""
    with fed.server.admin() as admin:
        made = admin.post("/v1/tenants", json={"alias": "acme"})
        assert made.status_code in (200, 201), made.text
        acme = made.json()["id"]
        refused = admin.post("/v1/tenants", json={"alias": "adfs"})
        assert refused.status_code == 400 and "reserved" in refused.text
    fed.server.cli("vault", "create", "acmekv", "--tenant", "acme")
    url, headers = gosdk.secret_request(f"https://acmekv.vault.localhost:{fed.server.port}", "x")
    probe = http.get(url, headers=headers)
    assert probe.status_code == 401
    challenge = gosdk.parse_challenge(probe.headers["www-authenticate"], url)
    assert challenge.tenant == acme
    with pytest.raises(ValueError, match="ADFS doesn't support tenants"):
        gosdk.resolve_tenant("adfs", challenge.tenant)
    go = gosdk.USER_AGENT_SECRETS
    assert challenge_tenant(go, fed.tenant_id, fed.tenant_id) == "adfs"
    assert challenge_tenant(go, fed.tenant_id, acme) == acme


@pytest.mark.parametrize("tenant", ["default", "adfs", "id"])
def test_python_sdk_reads_the_go_vault_with_any_tenant_name(
    fed: Federated, go_vault: str, monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    """The Python SDK's challenge names no tenant, so the credential uses its own: the id, the
    alias, or ``adfs`` (azure-identity then posts to ``AUTHORITY/adfs/oauth2/v2.0/token``)."""
    token = fed.dev_token()
    TOKENS.append(token)
    for name in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CLIENT_ID", fed.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", fed.tenant_id if tenant == "id" else tenant)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(fed.token_file(token)))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", fed.server.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fed.server.ca))
    client = SecretClient(go_vault, DefaultAzureCredential())
    assert client.get_secret("db-password").value == VALUE


# The header shapes of keyvault/internal's challenge_policy_test.go (authScope, authResource,
# authResourceScope, resourceScopeAuth), to check the transcription in tests/support/gosdk.py.
T = "00000000-0000-0000-0000-000000000000"
GO_CHALLENGES = {
    "auth-scope": (
        f'Bearer authorization="https://login.microsoftonline.com/{T}", '
        'scope="https://vault.azure.net/.default"',
        "https://vault.azure.net/.default",
    ),
    "auth-resource": (
        f'Bearer authorization="https://login.microsoftonline.com/{T}", '
        'resource="https://vault.azure.net"',
        "https://vault.azure.net/.default",
    ),
    "auth-resource-scope": (
        f'Bearer authorization="https://login.microsoftonline.com/{T}", '
        'resource="https://managedhsm.azure.net" scope="https://vault.azure.net/.default"',
        "https://vault.azure.net/.default",
    ),
    "resource-scope-auth": (
        'Bearer resource="https://managedhsm.azure.net" scope="https://vault.azure.net/.default",'
        f' authorization="https://login.microsoftonline.com/{T}"',
        "https://vault.azure.net/.default",
    ),
}


@pytest.mark.parametrize(("header", "scope"), GO_CHALLENGES.values(), ids=GO_CHALLENGES.keys())
def test_go_challenge_parser_transcription(header: str, scope: str) -> None:
    parsed = gosdk.parse_challenge(header, "https://kv.vault.azure.net/secrets/x/?api-version=7.6")
    assert parsed == gosdk.Challenge(T, [scope])
    assert gosdk.parse_tenant("") == ""
    with pytest.raises(ValueError, match="doesn't match"):  # the port is part of the host
        gosdk.parse_challenge(
            'Bearer authorization="https://h/adfs", resource="https://vault.example"',
            "https://kv.vault.example:8443/secrets/x/",
        )


def test_no_value_or_token_in_server_output(
    fed: Federated, go_vault: str, http: httpx.Client
) -> None:
    """Runs last in this module: everything the server wrote so far, at any level, after an
    exchange and a read of its own (so the check has tokens and a value to look for however
    the module's tests are spread over workers)."""
    scope = f"https://vault.localhost:{fed.server.port}/.default"
    token, _, _ = _go_token(http, fed, [scope])
    url, headers = gosdk.secret_request(go_vault, "db-password")
    read = http.get(url, headers={**headers, "Authorization": f"Bearer {token}"})
    assert read.status_code == 200 and read.json()["value"] == VALUE
    output = fed.server.log
    assert TOKENS
    assert VALUE not in output
    for token in TOKENS:
        assert token not in output and token.split(".")[2] not in output
