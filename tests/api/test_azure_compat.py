"""What scripts and SDKs written against Azure send, accepted as Entra and Key Vault accept it.

- the token endpoint answers GET with a form body (urlencoded or multipart), as Entra does
  (the blog's script: ``curl -X GET … --form …``);
- ``AZURE_AUTHORITY_HOST`` with a trailing slash (AKS sets ``https://login.microsoftonline.com/``)
  gives ``//TENANT/oauth2/v2.0/token``;
- ``scope=https://vault.azure.net/.default`` and the sovereign clouds' Key Vault resources are
  accepted at the token endpoint, and their tokens by the vault, besides keyless's own resource;
- ``/secrets/NAME/`` (trailing slash) answers the latest version;
- the 401 challenge names no tenant to the Python SDK, so it asks the tenant it is configured
  with, the alias or the id (see ``api/tenancy.py``).

In process (tests/support/inprocess.py); ``tests/api/test_seed_script.py`` runs the blog's own
script with bash, curl and jq against a real server.
"""

from __future__ import annotations

import httpx
import jwt
import pytest
import pytest_asyncio

from keyless.core.resources import AZURE_KEY_VAULT_CLOUDS
from tests.support.inprocess import InProcessFederated as Federated

pytestmark = pytest.mark.asyncio(loop_scope="module")

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SECRET = "s3cr3t-from-azure-compat"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault(ifed: Federated) -> str:
    kl = ifed.kl
    await kl.call("POST", "/v1/vaults", {"name": "compat"})
    await kl.call("PUT", "/v1/vaults/compat/secrets/db-password", {"value": SECRET})
    body = {"identity": "app", "role": "secrets-user", "scope": "/vaults/compat"}
    await kl.call("POST", "/v1/roles", body)
    return "compat"


def _form(f: Federated, assertion: str, scope: str) -> dict[str, str]:
    return {
        "scope": scope,
        "client_id": f.client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "grant_type": "client_credentials",
    }


def _multipart(fields: dict[str, str]) -> dict[str, tuple[None, str]]:
    """``curl --form k=v`` parts: no filename, so they are fields, not files."""
    return {key: (None, value) for key, value in fields.items()}


async def _token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize("body", ["urlencoded", "multipart"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("tenant", ["alias", "id"])
async def test_token_by_get_or_post_with_form_body(
    ifed: Federated, body: str, method: str, tenant: str
) -> None:
    fields = _form(ifed, ifed.test_token(), "https://vault.azure.net/.default")
    path = f"/{'default' if tenant == 'alias' else ifed.tenant_id}/oauth2/v2.0/token"
    if body == "urlencoded":
        response = await ifed.kl.public.request(method, path, data=fields)
    else:
        response = await ifed.kl.public.request(method, path, files=_multipart(fields))
    token = await _token(response)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["tid"] == ifed.tenant_id and claims["appid"] == ifed.client_id


async def test_token_get_without_body_is_an_entra_error_not_405(ifed: Federated) -> None:
    response = await ifed.kl.public.get(f"/{ifed.tenant_id}/oauth2/v2.0/token")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "path",
    [
        "//default/oauth2/v2.0/token",  # AZURE_AUTHORITY_HOST=https://host/ + /$TENANT/...
        "///default/oauth2/v2.0/token",
    ],
)
async def test_authority_host_with_trailing_slash(ifed: Federated, path: str) -> None:
    # A full URL: httpx reads a bare "//default/..." as a network-path reference (host default).
    fields = _form(ifed, ifed.test_token(), ifed.vault_scope)
    await _token(await ifed.kl.public.post(ifed.kl.url + path, data=fields))
    discovery = await ifed.kl.public.get(
        ifed.kl.url + "//default/v2.0/.well-known/openid-configuration"
    )
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == f"{ifed.kl.url}/{ifed.tenant_id}/v2.0"


@pytest.mark.parametrize("resource", [*AZURE_KEY_VAULT_CLOUDS, "own"])
async def test_every_clouds_key_vault_resource_reads_the_vault(
    ifed: Federated, vault: str, resource: str
) -> None:
    scope = ifed.vault_scope if resource == "own" else f"{resource}/.default"
    token = await _token(await ifed.exchange(ifed.test_token(), scope=scope))
    expected = scope.removesuffix("/.default")
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == expected
    headers = {"authorization": f"Bearer {token}"}
    for path in (
        f"/vaults/{vault}/secrets/db-password?api-version=7.4",
        f"/vaults/{vault}/secrets/db-password/?api-version=7.4",  # the script's trailing slash
    ):
        response = await ifed.kl.public.get(path, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["value"] == SECRET
    by_host = {**headers, "host": f"{vault}.vault.localhost:{ifed.kl.settings.public_port}"}
    response = await ifed.kl.public.get("/secrets/db-password/?api-version=7.4", headers=by_host)
    assert response.status_code == 200 and response.json()["value"] == SECRET


async def test_other_resources_are_still_refused(ifed: Federated, vault: str) -> None:
    for scope in ("https://vault.azure.net.evil/.default", "https://management.azure.com/.default"):
        response = await ifed.exchange(ifed.test_token(), scope=scope)
        assert response.status_code == 400 and response.json()["error"] == "invalid_resource"
    admin = await _token(
        await ifed.exchange(ifed.test_token(), scope="api://keyless-admin/.default")
    )
    response = await ifed.kl.public.get(
        f"/vaults/{vault}/secrets/db-password?api-version=7.4",
        headers={"authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 401 and "audience" in response.json()["error"]["message"]


async def test_python_sdk_challenge_names_no_tenant(ifed: Federated, vault: str) -> None:
    """azure-keyvault parses the tenant from the first path segment of ``authorization``
    (``HttpChallenge``: path ``/`` -> ``None``) and azure-identity refuses a tenant other than
    the credential's; with none, both ``AZURE_TENANT_ID=default`` and the id work. The Python
    SDK is known by its User-Agent (azure-core's ``UserAgentPolicy``: ``azsdk-python-…``)."""
    from azure.core.pipeline.policies import UserAgentPolicy
    from azure.keyvault.secrets._shared.http_challenge import HttpChallenge

    agent = UserAgentPolicy(sdk_moniker="keyvault-secrets/4.9.0").user_agent
    response = await ifed.kl.public.get(
        f"/vaults/{vault}/secrets/db-password?api-version=7.4", headers={"user-agent": agent}
    )
    assert response.status_code == 401
    header = response.headers["www-authenticate"]
    port = ifed.kl.settings.public_port
    assert header == (
        f'Bearer authorization="https://localhost:{port}/", '
        f'resource="https://vault.localhost:{port}"'
    )
    challenge = HttpChallenge(f"https://{vault}.vault.localhost:{port}/secrets/x", header)
    assert challenge.tenant_id is None
    assert challenge.get_resource() == f"https://vault.localhost:{port}"
    # Go's azsecrets parseTenant: strings.Split(authorization, "/")[3] must exist and be "".
    authorization = header.split('"')[1]
    assert authorization.split("/")[3] == ""
    assert ifed.tenant_id not in header and "default" not in header
