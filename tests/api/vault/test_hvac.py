"""hvac, the Python Vault client, against keyless's Vault dialect (issue 14).

``hvac.Client(url, verify=CA)`` and nothing else: the JWT and Kubernetes auth methods, token
lookup and revocation, and every KV v2 call hvac makes, with the exceptions hvac raises for
Vault's error statuses (403 Forbidden, 404 InvalidPath, 400 InvalidRequest).
"""

from __future__ import annotations

import json

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest

from tests.api.vault.conftest import KUBE_AUDIENCE, MOUNT, PLAIN_NAME, PLAIN_VALUE, VaultKeyless

# hvac's own patch() reads without raise_on_deleted_version and so warns about hvac 3's default
HVAC_PATCH_WARNING = "ignore:The raise_on_deleted_version parameter:DeprecationWarning"


def client(kl: VaultKeyless, token: str | None = None) -> hvac.Client:
    return hvac.Client(url=kl.addr, verify=kl.ca, token=token)


def jwt_client(kl: VaultKeyless, role: str = "app", namespace: str = "demo") -> hvac.Client:
    c = client(kl)
    response = c.auth.jwt.jwt_login(role=role, jwt=kl.jwt(namespace, role), path="jwt")
    kl.secrets_seen.append(response["auth"]["client_token"])
    return c


@pytest.fixture(scope="module")
def app(kl: VaultKeyless) -> hvac.Client:
    """Logged in as role ``app`` (secrets-officer on ``secret``)."""
    return jwt_client(kl)


def read(c: hvac.Client, path: str, version: int | None = None) -> dict:
    return c.secrets.kv.v2.read_secret_version(
        path=path, version=version, mount_point=MOUNT, raise_on_deleted_version=True
    )


def test_jwt_login(kl: VaultKeyless) -> None:
    c = client(kl)
    assert not c.is_authenticated()
    response = c.auth.jwt.jwt_login(role="app", jwt=kl.jwt("orders", "app"), path="jwt")
    auth = response["auth"]
    kl.secrets_seen.append(auth["client_token"])
    assert c.token == auth["client_token"]  # use_token: hvac keeps it
    assert auth["policies"] == ["default", "app"]
    assert auth["metadata"]["role"] == "app"
    assert auth["metadata"]["service_account_namespace"] == "orders"
    assert auth["renewable"] is False and auth["lease_duration"] == 3600
    assert c.is_authenticated()
    looked = c.lookup_token()["data"]
    assert looked["meta"]["service_account_namespace"] == "orders"
    assert looked["path"] == "auth/jwt/login" and looked["type"] == "service"
    assert isinstance(looked["ttl"], int) and 60 <= looked["ttl"] <= 3600


def test_kubernetes_login(kl: VaultKeyless) -> None:
    c = client(kl)
    jwt = kl.jwt("inventory", "app", audience=KUBE_AUDIENCE)
    response = c.auth.kubernetes.login(role="app", jwt=jwt)  # mount "kubernetes"
    kl.secrets_seen.append(response["auth"]["client_token"])
    assert response["auth"]["metadata"]["service_account_name"] == "app"
    assert response["auth"]["metadata"]["service_account_namespace"] == "inventory"
    assert c.is_authenticated()
    assert c.lookup_token()["data"]["path"] == "auth/kubernetes/login"
    assert read(c, PLAIN_NAME)["data"]["data"] == {"value": PLAIN_VALUE}


def test_login_errors(kl: VaultKeyless) -> None:
    c = client(kl)
    with pytest.raises(InvalidRequest) as unknown:
        c.auth.jwt.jwt_login(role="ghost", jwt=kl.jwt("demo", "app"), path="jwt")
    assert 'role "ghost" could not be found' in str(unknown.value)
    with pytest.raises(Forbidden):
        c.auth.jwt.jwt_login(role="app", jwt=kl.jwt("demo", "app", audience="other"), path="jwt")
    with pytest.raises(Forbidden):
        c.auth.jwt.jwt_login(role="app", jwt="not-a-jwt", path="jwt")
    assert not c.is_authenticated()


def test_create_read_versions(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    one, two = kl.remember("hv-one-l3"), kl.remember("hv-two-l3")
    first = kv.create_or_update_secret(path="hv/db", secret={"password": one}, mount_point=MOUNT)
    assert first["data"]["version"] == 1 and first["data"]["destroyed"] is False
    second = kv.create_or_update_secret(path="hv/db", secret={"password": two}, mount_point=MOUNT)
    assert second["data"]["version"] == 2
    latest = read(app, "hv/db")
    assert latest["data"]["data"] == {"password": two}
    assert latest["data"]["metadata"]["version"] == 2
    assert read(app, "hv/db", version=1)["data"]["data"] == {"password": one}
    meta = kv.read_secret_metadata(path="hv/db", mount_point=MOUNT)["data"]
    assert meta["current_version"] == 2 and sorted(meta["versions"]) == ["1", "2"]


def test_plain_string_value(kl: VaultKeyless, app: hvac.Client) -> None:
    """``{"value": s}`` is keyless's plain string s; any other object stays an object."""
    value = kl.remember("hv-plain-m4")
    app.secrets.kv.v2.create_or_update_secret(
        path="hv-plain", secret={"value": value}, mount_point=MOUNT
    )
    assert read(app, "hv-plain")["data"]["data"] == {"value": value}
    assert kl.server.cli("secret", "get", MOUNT, "hv-plain").stdout == value
    pair = {"user": "app", "pw": kl.remember("hv-object-m4")}
    app.secrets.kv.v2.create_or_update_secret(path="hv-object", secret=pair, mount_point=MOUNT)
    stored = json.loads(
        kl.server.cli("--output", "json", "secret", "get", MOUNT, "hv-object").stdout
    )
    assert json.loads(stored["value"]) == pair
    assert stored["content_type"] == "application/json"


def test_list_secrets(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    for path in ("hv-list/x", "hv-list/y", "hv-list/sub/z"):
        kv.create_or_update_secret(
            path=path, secret={"k": kl.remember(f"{path}-value-w5")}, mount_point=MOUNT
        )
    keys = kv.list_secrets(path="hv-list", mount_point=MOUNT)["data"]["keys"]
    assert keys == ["sub/", "x", "y"]
    assert kv.list_secrets(path="hv-list/sub/", mount_point=MOUNT)["data"]["keys"] == ["z"]
    with pytest.raises(InvalidPath):
        kv.list_secrets(path="hv-list-none", mount_point=MOUNT)


def test_delete_undelete_destroy(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    one, two = kl.remember("hv-del-one-n5"), kl.remember("hv-del-two-n5")
    kv.create_or_update_secret(path="hv/del", secret={"v": one}, mount_point=MOUNT)
    kv.create_or_update_secret(path="hv/del", secret={"v": two}, mount_point=MOUNT)
    kv.delete_latest_version_of_secret(path="hv/del", mount_point=MOUNT)
    with pytest.raises(InvalidPath):
        read(app, "hv/del")
    deleted = kv.read_secret_version(
        path="hv/del", mount_point=MOUNT, raise_on_deleted_version=False
    )
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    kv.undelete_secret_versions(path="hv/del", versions=[2], mount_point=MOUNT)
    assert read(app, "hv/del")["data"]["data"] == {"v": two}
    kv.destroy_secret_versions(path="hv/del", versions=[1], mount_point=MOUNT)
    with pytest.raises(InvalidPath):
        read(app, "hv/del", version=1)
    meta = kv.read_secret_metadata(path="hv/del", mount_point=MOUNT)["data"]
    assert meta["versions"]["1"]["destroyed"] is True
    assert read(app, "hv/del")["data"]["data"] == {"v": two}


def test_update_metadata(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    kv.create_or_update_secret(
        path="hv/meta", secret={"v": kl.remember("hv-meta-o6")}, mount_point=MOUNT
    )
    kv.update_metadata(path="hv/meta", custom_metadata={"owner": "team-a"}, mount_point=MOUNT)
    meta = kv.read_secret_metadata(path="hv/meta", mount_point=MOUNT)["data"]
    assert meta["custom_metadata"] == {"owner": "team-a"}
    assert read(app, "hv/meta")["data"]["metadata"]["custom_metadata"] == {"owner": "team-a"}


@pytest.mark.filterwarnings(HVAC_PATCH_WARNING)
def test_patch(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    kv.create_or_update_secret(
        path="hv/patch", secret={"user": "app", "pw": kl.remember("p-old-p7")}, mount_point=MOUNT
    )
    new = kl.remember("p-new-p7")
    patched = kv.patch(path="hv/patch", secret={"pw": new}, mount_point=MOUNT)
    assert patched["data"]["version"] == 2
    assert read(app, "hv/patch")["data"]["data"] == {"user": "app", "pw": new}


def test_check_and_set(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    kv.create_or_update_secret(
        path="hv/cas", secret={"v": kl.remember("hv-cas-q8")}, cas=0, mount_point=MOUNT
    )
    with pytest.raises(InvalidRequest) as mismatch:
        kv.create_or_update_secret(path="hv/cas", secret={"v": "x"}, cas=0, mount_point=MOUNT)
    assert "check-and-set parameter did not match the current version" in str(mismatch.value)
    with pytest.raises(InvalidRequest):
        kv.create_or_update_secret(path="hv/cas", secret={"v": "x"}, cas=5, mount_point=MOUNT)
    done = kv.create_or_update_secret(
        path="hv/cas", secret={"v": kl.remember("hv-cas-r9")}, cas=1, mount_point=MOUNT
    )
    assert done["data"]["version"] == 2


def test_delete_metadata_and_all_versions(kl: VaultKeyless, app: hvac.Client) -> None:
    kv = app.secrets.kv.v2
    kv.create_or_update_secret(
        path="hv/gone", secret={"v": kl.remember("hv-gone-s1")}, mount_point=MOUNT
    )
    kv.delete_metadata_and_all_versions(path="hv/gone", mount_point=MOUNT)
    with pytest.raises(InvalidPath):
        kv.read_secret_metadata(path="hv/gone", mount_point=MOUNT)
    with pytest.raises(InvalidPath):
        read(app, "hv/gone")


def test_missing_secret(app: hvac.Client) -> None:
    with pytest.raises(InvalidPath):
        read(app, "hv/never-written")
    with pytest.raises(InvalidPath):
        app.secrets.kv.v2.read_secret_metadata(path="hv/never-written", mount_point=MOUNT)


def test_bad_token_is_forbidden(kl: VaultKeyless) -> None:
    c = client(kl, token="hvs.not-a-keyless-token")
    assert not c.is_authenticated()
    with pytest.raises(Forbidden):
        read(c, PLAIN_NAME)
    with pytest.raises(Forbidden):
        c.lookup_token()


def test_identity_without_a_role_is_forbidden(kl: VaultKeyless, app: hvac.Client) -> None:
    app.secrets.kv.v2.create_or_update_secret(
        path="hv/private", secret={"v": kl.remember("hv-priv-t2")}, mount_point=MOUNT
    )
    nobody = jwt_client(kl, "nobody")
    assert nobody.is_authenticated()  # the login is the trust policy's; KV calls are RBAC's
    with pytest.raises(Forbidden):
        read(nobody, "hv/private")
    with pytest.raises(Forbidden):
        nobody.secrets.kv.v2.create_or_update_secret(
            path="hv/private", secret={"v": "x"}, mount_point=MOUNT
        )
    with pytest.raises(Forbidden):
        nobody.secrets.kv.v2.list_secrets(path="hv", mount_point=MOUNT)


def test_reader_cannot_write(kl: VaultKeyless) -> None:
    reader = jwt_client(kl, "reader")
    assert read(reader, PLAIN_NAME)["data"]["data"] == {"value": PLAIN_VALUE}
    with pytest.raises(Forbidden):
        reader.secrets.kv.v2.create_or_update_secret(
            path=PLAIN_NAME, secret={"value": "x"}, mount_point=MOUNT
        )
    with pytest.raises(Forbidden):
        reader.secrets.kv.v2.delete_metadata_and_all_versions(path=PLAIN_NAME, mount_point=MOUNT)


def test_revoke_self(kl: VaultKeyless) -> None:
    c = jwt_client(kl, "app", "revoke-ns")
    assert read(c, PLAIN_NAME)["data"]["data"] == {"value": PLAIN_VALUE}
    c.auth.token.revoke_self()
    assert not c.is_authenticated()
    with pytest.raises(Forbidden):
        read(c, PLAIN_NAME)
    with pytest.raises(Forbidden):
        c.lookup_token()


def test_renew_self_is_refused_as_not_renewable(kl: VaultKeyless) -> None:
    c = jwt_client(kl, "app", "renew-ns")
    with pytest.raises(InvalidRequest) as refused:
        c.auth.token.renew_self()
    assert "lease is not renewable" in str(refused.value)
    assert c.is_authenticated()


def test_namespace(kl: VaultKeyless) -> None:
    c = hvac.Client(url=kl.addr, verify=kl.ca, namespace="team-b")
    response = c.auth.jwt.jwt_login(role="app", jwt=kl.jwt("demo", "app"), path="jwt")
    kl.secrets_seen.append(response["auth"]["client_token"])
    value = kl.remember("hv-team-b-u3")
    c.secrets.kv.v2.create_or_update_secret(path="hv/ns", secret={"v": value}, mount_point="kvb")
    got = c.secrets.kv.v2.read_secret_version(
        path="hv/ns", mount_point="kvb", raise_on_deleted_version=True
    )
    assert got["data"]["data"] == {"v": value}
    with pytest.raises(InvalidRequest):
        c.auth.jwt.jwt_login(role="nobody", jwt=kl.jwt("demo", "nobody"), path="jwt")


def test_no_token_or_value_in_the_server_log(kl: VaultKeyless) -> None:
    """Last in the module: everything the server wrote while the tests above ran."""
    assert len(kl.secrets_seen) > 10
    assert kl.leaked() == []
