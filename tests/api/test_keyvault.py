"""The real azure-keyvault-secrets SecretClient against keyless, every operation it calls.

Credentials come from a real DefaultAzureCredential configured only by environment variables;
``verify_challenge_resource`` stays at its default (True), so the vault is reached by host
(``https://NAME.vault.localhost:PORT``), which this process resolves to 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import httpx
import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

from keyless.localresolve import resolving
from tests.support.federation import SUBJECT, TEST_ISSUER, Federated

VALUES: list[str] = []  # every value written here; none may appear in the server's output
TOKENS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def vault_names() -> Iterator[None]:
    with resolving("vault.localhost"):
        yield


@pytest.fixture(scope="module")
def officer(fed: Federated) -> Federated:
    cli = fed.server.cli
    cli("vault", "create", "kv1")
    cli("vault", "create", "kv2")
    cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/kv1")
    return fed


def vault_url(fed: Federated, vault: str = "kv1") -> str:
    return f"https://{vault}.vault.localhost:{fed.server.port}"


@pytest.fixture
def client(officer: Federated, monkeypatch: pytest.MonkeyPatch) -> SecretClient:
    token = officer.dev_token()
    TOKENS.append(token)
    for name in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CLIENT_ID", officer.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", officer.tenant_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(officer.token_file(token)))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", officer.server.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(officer.server.ca))
    return SecretClient(vault_url(officer), DefaultAzureCredential())


def remember(value: str) -> str:
    VALUES.append(value)
    return value


def test_set_get_update_versions(client: SecretClient) -> None:
    v1 = client.set_secret(
        "db-password", remember("first-Value-8d1"), content_type="text/plain", tags={"env": "test"}
    )
    assert v1.value == "first-Value-8d1" and len(v1.properties.version) == 32
    assert v1.id.startswith("https://kv1.vault.localhost:")
    v2 = client.set_secret("db-password", remember("second-Value-3c7"))
    latest = client.get_secret("db-password")
    assert latest.value == "second-Value-3c7" and latest.properties.version == v2.properties.version
    assert client.get_secret("db-password", v1.properties.version).value == "first-Value-8d1"
    assert isinstance(latest.properties.created_on, dt.datetime)
    updated = client.update_secret_properties(
        "db-password", content_type="application/json", tags={"team": "a"}
    )
    assert updated.content_type == "application/json" and updated.tags == {"team": "a"}
    old = client.update_secret_properties("db-password", v1.properties.version, enabled=False)
    assert old.enabled is False
    versions = list(client.list_properties_of_secret_versions("db-password"))
    assert {v.version for v in versions} == {v1.properties.version, v2.properties.version}
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("db-password", v1.properties.version)
    assert disabled.value.status_code == 403 and disabled.value.error.code == "Forbidden"


def test_paging_across_pages(client: SecretClient) -> None:
    for i in range(7):
        client.set_secret(f"page-{i}", remember(f"page-value-{i}-x9"))
    pages = client.list_properties_of_secrets(max_page_size=3).by_page()
    sizes = [len(list(page)) for page in pages]
    assert len(sizes) >= 3 and all(s <= 3 for s in sizes)
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=2)]
    assert {f"page-{i}" for i in range(7)} <= set(names)
    assert len(names) == len(set(names))


def test_soft_delete_recover_purge_lifecycle(client: SecretClient) -> None:
    client.set_secret("doomed", remember("doomed-value-1f"))
    deleted = client.begin_delete_secret("doomed").result()
    assert deleted.recovery_id.endswith("/deletedsecrets/doomed")
    assert deleted.scheduled_purge_date > deleted.deleted_date
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("doomed")
    assert client.get_deleted_secret("doomed").name == "doomed"
    assert "doomed" in [d.name for d in client.list_deleted_secrets()]
    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret("doomed", "again")
    assert conflict.value.error.code == "Conflict"
    assert conflict.value.error.innererror["code"] == "ObjectIsDeletedButRecoverable"
    recovered = client.begin_recover_deleted_secret("doomed").result()
    assert recovered.name == "doomed"
    assert client.get_secret("doomed").value == "doomed-value-1f"
    client.begin_delete_secret("doomed").wait()
    client.purge_deleted_secret("doomed")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("doomed")


def test_backup_and_restore(client: SecretClient) -> None:
    client.set_secret("kept", remember("kept-v1-aa"))
    client.set_secret("kept", remember("kept-v2-bb"))
    blob = client.backup_secret("kept")
    with pytest.raises(ResourceExistsError):
        client.restore_secret_backup(blob)
    client.begin_delete_secret("kept").wait()
    client.purge_deleted_secret("kept")
    restored = client.restore_secret_backup(blob)
    assert restored.name == "kept"
    assert client.get_secret("kept").value == "kept-v2-bb"
    assert len(list(client.list_properties_of_secret_versions("kept"))) == 2
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    client.begin_delete_secret("kept").wait()
    client.purge_deleted_secret("kept")
    with pytest.raises(HttpResponseError) as bad:
        client.restore_secret_backup(bytes(tampered))
    assert bad.value.status_code == 400 and bad.value.error.code == "BadParameter"


def test_expiry_not_before_and_bad_names(client: SecretClient) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    client.set_secret("expired", remember("expired-value-q"), expires_on=past)
    client.set_secret("early", remember("early-value-w"), not_before=future)
    for name in ("expired", "early"):
        with pytest.raises(HttpResponseError) as denied:
            client.get_secret(name)
        assert denied.value.status_code == 403
    client.update_secret_properties("early", not_before=past)
    assert client.get_secret("early").value == "early-value-w"
    with pytest.raises(HttpResponseError) as bad:
        client.set_secret("bad_name!", "x")
    assert bad.value.status_code == 400 and bad.value.error.code == "BadParameter"
    with pytest.raises(HttpResponseError) as big:
        client.set_secret("big", "x" * (25 * 1024 + 1))
    assert big.value.status_code == 400


def test_challenge_before_body_and_wrong_audience(officer: Federated) -> None:
    with httpx.Client(verify=officer.server.ssl_context(), timeout=10) as http:
        url = f"{vault_url(officer)}/secrets/alpha?api-version=2026-04-01"
        response = http.put(
            url, headers={"content-type": "application/json", "content-length": "0"}
        )
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        # httpx is no Azure SDK: the tenant id, as Entra names it (api/tenancy.py).
        assert challenge == (
            f'Bearer authorization="https://localhost:{officer.server.port}/{officer.tenant_id}", '
            f'resource="https://vault.localhost:{officer.server.port}"'
        )
        assert response.json()["error"]["code"] == "Unauthorized"
        # The Python SDK gets no tenant (id or alias both pass its check), the Go SDK `adfs`.
        for agent, named in (
            ("azsdk-python-keyvault-secrets/4.9.0 Python/3.11.2 (Linux)", ""),
            ("myapp/1.0 azsdk-python-keyvault-secrets/4.9.0 Python/3.11.2", ""),
            ("azsdk-go-azsecrets/v1.4.0 (go1.22.5; linux)", "adfs"),
            ("azsdk-net-Security.KeyVault.Secrets/4.6.0", officer.tenant_id),
        ):
            probe = http.get(url, headers={"user-agent": agent})
            assert probe.headers["www-authenticate"].startswith(
                f'Bearer authorization="https://localhost:{officer.server.port}/{named}", '
            ), agent
        admin_token = officer.exchange(
            officer.test_token(), scope="api://keyless-admin/.default"
        ).json()
        TOKENS.append(admin_token["access_token"])
        wrong = http.get(url, headers={"authorization": f"Bearer {admin_token['access_token']}"})
        assert wrong.status_code == 401 and "audience" in wrong.json()["error"]["message"]
        garbage = http.get(url, headers={"authorization": "Bearer not.a.token"})
        assert garbage.status_code == 401
        path_form = http.get(f"{officer.server.url}/vaults/kv1/secrets/x")
        assert path_form.status_code == 401
        unknown = http.get(f"{officer.server.url}/vaults/nope/secrets/x")
        assert unknown.status_code == 404
        # Answered before routing, yet named in the metrics (and access log), not "unmatched".
        metrics = http.get(f"{officer.server.url}/metrics").text
        assert 'route="keyvault:unauthenticated"' in metrics and 'status="401"' in metrics


# -- RBAC matrix ----------------------------------------------------------------------------

ROLES = ["secrets-user", "reader", "secrets-officer", "administrator"]
SCOPES = ["/", "/vaults/kv2", "/vaults/kv2/secrets/target"]
OPS = {
    "get": ({"secrets-user", "secrets-officer", "administrator"}, True),
    "list": ({"secrets-user", "reader", "secrets-officer", "administrator"}, False),
    "set": ({"secrets-officer", "administrator"}, True),
    "backup": ({"secrets-officer", "administrator"}, True),
    "get-other": ({"secrets-user", "secrets-officer", "administrator"}, False),
}


def _matrix_client(fed: Federated, role: str, scope: str) -> SecretClient:
    name = f"m-{role}-{SCOPES.index(scope)}"
    cli = fed.server.cli
    cli("identity", "create", name)
    subject = f"system:serviceaccount:matrix:{name}"
    cli("federation", "add", name, "--name", "m", "--issuer", TEST_ISSUER, "--subject", subject)
    cli("role", "assign", name, role, "--scope", scope)
    ident = json.loads(cli("--output", "json", "identity", "show", name).stdout)
    token = fed.test_token(sub=subject)
    cred = WorkloadIdentityCredential(
        tenant_id=fed.tenant_id,
        client_id=ident["client_id"],
        token_file_path=str(fed.token_file(token)),
        authority=fed.server.url,
        connection_verify=str(fed.server.ca),
    )
    return SecretClient(vault_url(fed, "kv2"), cred, connection_verify=str(fed.server.ca))


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("role", ROLES)
def test_rbac_matrix(officer: Federated, role: str, scope: str) -> None:
    officer.server.cli("secret", "set", "kv2", "target", "--value", remember("target-val-77"))
    officer.server.cli("secret", "set", "kv2", "other", "--value", remember("other-val-88"))
    client = _matrix_client(officer, role, scope)
    per_secret = scope.endswith("/target")

    def attempt(op: str) -> bool:
        try:
            if op == "get":
                client.get_secret("target")
            elif op == "list":
                list(client.list_properties_of_secrets())
            elif op == "set":
                client.set_secret("target", remember("target-new-99"))
            elif op == "backup":
                client.backup_secret("target")
            else:
                client.get_secret("other")
        except HttpResponseError as exc:
            assert exc.status_code == 403, exc
            assert exc.error.code == "Forbidden"
            assert exc.error.innererror["code"] == "ForbiddenByRbac"
            return False
        return True

    for op, (roles, secret_level) in OPS.items():
        expected = role in roles and (not per_secret or secret_level)
        assert attempt(op) is expected, (role, scope, op)


def test_audit_names_the_pod(officer: Federated, client: SecretClient) -> None:
    client.set_secret("audited", remember("audited-value-zz"))
    client.get_secret("audited")
    events = [
        json.loads(line)
        for line in officer.server.cli(
            "--output", "json", "audit", "list", "--limit", "1000"
        ).stdout.splitlines()
        if line
    ]
    reads = [
        e
        for e in events
        if e["action"] == "secrets/getSecret" and e["target"] == "/vaults/kv1/secrets/audited"
    ]
    assert reads and reads[-1]["result"] == "success"
    assert reads[-1]["workload"]["pod"] == "app-7d9f"
    assert reads[-1]["workload"]["sub"] == SUBJECT
    assert officer.server.cli("audit", "verify").returncode == 0


def test_no_value_or_token_in_server_output(officer: Federated) -> None:
    """Runs last in this module: everything the server wrote so far, at any level."""
    output = officer.server.log
    assert VALUES and TOKENS
    for secret in VALUES:
        assert secret not in output
    for token in TOKENS:
        assert token not in output
        assert token.split(".")[2] not in output
