"""The blog post's script (``tests/api/fixtures/seed.sh``), unmodified, reads a secret from keyless.

bash, curl and jq against a real server over real HTTPS. The script's environment holds only
what a pod gets from azure-workload-identity's webhook (``AZURE_*``), ``KEY_VAULT_URL``,
``SECRET_NAME`` and ``CURL_CA_BUNDLE`` (and ``PATH``, to find curl and jq): the token request is
``curl -X GET … --form …`` (a GET with a multipart body) for ``https://vault.azure.net/.default``,
the read is ``/secrets/NAME/?api-version=7.4`` (trailing slash). ``AZURE_AUTHORITY_HOST`` is
tried as AKS sets it (trailing slash: the script then sends ``//TENANT/…``) and without,
``AZURE_TENANT_ID`` as the alias and as the id, the vault by host (curl resolves
``*.localhost`` to loopback itself) and by path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyless.localresolve import resolving
from tests.support.server import RunningServer, ServerFactory

SCRIPT = Path(__file__).parent / "fixtures" / "seed.sh"
VALUE = "correct horse battery staple"
NEEDED = ("bash", "curl", "jq")  # `make test` installs them (the Makefile's tools step)


@dataclass
class Seeded:
    server: RunningServer
    tenant_id: str
    client_id: str
    token_file: Path


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed (make test installs them)")
    tmp = tmp_path_factory.mktemp("seed")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True)
        cli = server.cli
        issuer = f"{server.url}/dev/clusters/dev"
        cli("issuer", "add", issuer)  # the dev cluster exists from the start (--dev)
        ident = json.loads(cli("--output", "json", "identity", "create", "billing").stdout)
        cli(
            "federation",
            "add",
            "billing",
            "--name",
            "api",
            "--issuer",
            issuer,
            "--subject",
            "system:serviceaccount:billing:api",
        )
        cli("vault", "create", "billing")
        cli("secret", "set", "billing", "db-password", "--value", VALUE)
        cli("role", "assign", "billing", "secrets-user", "--scope", "/vaults/billing")
        token = cli("dev", "token", "--namespace", "billing", "--service-account", "api").stdout
        token_file = tmp / "azure-identity-token"
        token_file.write_text(token)  # as printed, final newline included
        tenant = json.loads(cli("--output", "json", "tenant", "show").stdout)
        yield Seeded(server, tenant["id"], ident["client_id"], token_file)
    finally:
        factory.stop_all()


@pytest.mark.parametrize("vault_by", ["host", "path"])
@pytest.mark.parametrize("tenant", ["default", "id"])
@pytest.mark.parametrize("authority", ["aks-trailing-slash", "no-slash"])
def test_blog_script_reads_the_secret(
    seeded: Seeded, authority: str, tenant: str, vault_by: str
) -> None:
    server = seeded.server
    vault_url = (
        f"https://billing.vault.localhost:{server.port}"
        if vault_by == "host"
        else f"{server.url}/vaults/billing"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AZURE_AUTHORITY_HOST": server.url + ("/" if authority == "aks-trailing-slash" else ""),
        "AZURE_TENANT_ID": seeded.tenant_id if tenant == "id" else "default",
        "AZURE_CLIENT_ID": seeded.client_id,
        "AZURE_FEDERATED_TOKEN_FILE": str(seeded.token_file),
        "KEY_VAULT_URL": vault_url,
        "SECRET_NAME": "db-password",
        "CURL_CA_BUNDLE": str(server.ca),
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == VALUE + "\n", (result.stdout, result.stderr)
    assert result.stderr == ""


@pytest.mark.parametrize("tenant", ["default", "id"])
@pytest.mark.parametrize("authority", ["aks-trailing-slash", "no-slash"])
def test_azure_sdk_with_tenant_alias_or_id(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, authority: str, tenant: str
) -> None:
    """The real SDK (DefaultAzureCredential + SecretClient) with ``AZURE_TENANT_ID=default``
    passes its challenge check (the challenge names no tenant) as with the tenant id."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient
    from azure.keyvault.secrets._shared.http_challenge_cache import clear

    server = seeded.server
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(
        "AZURE_AUTHORITY_HOST", server.url + ("/" if authority == "aks-trailing-slash" else "")
    )
    monkeypatch.setenv("AZURE_TENANT_ID", seeded.tenant_id if tenant == "id" else "default")
    monkeypatch.setenv("AZURE_CLIENT_ID", seeded.client_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(seeded.token_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca))
    clear()  # the SDK's challenge cache is process-wide, keyed by host:port
    with resolving("vault.localhost"), DefaultAzureCredential() as credential:
        client = SecretClient(f"https://billing.vault.localhost:{server.port}", credential)
        with client:
            assert client.get_secret("db-password").value == VALUE
