"""The request sequences of the Kubernetes secret-delivery tools, replayed with httpx (issue 14).

Each sequence is taken from the tool's source (see ../shared/reference/vault-eso-csi-interop.md):
the method, path, headers and JSON body the tool sends, in its order, and the response fields it
reads, checked with the types it decodes them into. The bodies are serialised as Go's
``encoding/json`` does (keys sorted, no spaces), as the Vault Go client (``api.Client``) sends them.

- External Secrets Operator, Vault provider: PUT login (kubernetes, jwt), GET lookup-self
  (``checkToken``), GET data, GET metadata, GET metadata ``?list=true``, PUT revoke-self
  (``Close``), then the token is refused.
- The Vault CSI provider: POST login, the raw ``GET /v1/{secretPath}``, ``secretKey`` from
  ``data.data``; on a 403 one re-login.
- Vault Agent (vault-k8s injector): PUT login, ``sys/internal/ui/mounts`` (consul-template's KV v2
  detection), GET data; ``renewable: false`` so it logs in again at lease end.
- Spring Cloud Vault: POST login, mount detection, read, session lookup/renew/revoke, sys/health.

Then what keyless adds: one secret through every dialect (the Azure SDK reads what Vault wrote,
Vault reads what ``keyless secret set`` wrote), the audit trail, namespaces, Bearer tokens.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

from keyless.localresolve import resolving
from tests.api.vault.conftest import (
    KUBE_AUDIENCE,
    MOUNT,
    MOUNT_B,
    PLAIN_NAME,
    PLAIN_VALUE,
    TENANT_B,
    VaultKeyless,
)

GO_CLIENT = {"X-Vault-Request": "true"}  # api.Client sets it on every request
# Vault's two default auth mounts, one more per cluster (a path with '/'), one for CI's JWTs.
SERVER_ARGS = (
    "--vault-auth-mount", "jwt",
    "--vault-auth-mount", "kubernetes",
    "--vault-auth-mount", "kubernetes/cluster-a=kubernetes",
    "--vault-auth-mount", "ci=jwt",
)  # fmt: skip


def go_json(body: dict[str, Any]) -> bytes:
    """``json.Marshal`` of a ``map[string]interface{}``: sorted keys, no spaces."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def token_headers(token: str, **extra: str) -> dict[str, str]:
    return {**GO_CLIENT, "X-Vault-Token": token, **extra}


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rfc3339(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def vault_login(
    http: httpx.Client, method: str, mount: str, jwt: str, role: str = "app", **headers: str
) -> httpx.Response:
    return http.request(
        method,
        f"/v1/auth/{mount}/login",
        content=go_json({"jwt": jwt, "role": role}),
        headers={**GO_CLIENT, **headers},
    )


def write(kl: VaultKeyless, path: str, data: dict[str, Any], mount: str = MOUNT) -> None:
    """A secret written through the Vault dialect by the officer role, for a sequence to read."""
    token = kl.login("app", "writer")
    with kl.http() as http:
        response = http.post(
            f"/v1/{mount}/data/{path}", json={"data": data}, headers=token_headers(token)
        )
    assert response.status_code == 200, response.text
    for key, value in data.items():
        if key != "username":
            kl.remember(str(value))


@pytest.fixture(scope="module", autouse=True)
def seeded(kl: VaultKeyless) -> None:
    """Secrets the sequences read: ``eso/db`` (two versions), ``eso/api``, ``apps/web/config``."""
    write(kl, "eso/db", {"username": "app", "password": "eso-db-old-1a"})
    write(kl, "eso/db", {"username": "app", "password": "eso-db-new-1a"})
    write(kl, "eso/api", {"key": "eso-api-key-2b"})
    write(kl, "apps/web/config", {"dsn": "postgres://web:web-dsn-3c@db/web"})
    token = kl.login("app", "writer")
    with kl.http() as http:
        response = http.post(
            f"/v1/{MOUNT}/metadata/eso/db",
            content=go_json({"custom_metadata": {"owner": "team-a"}}),
            headers=token_headers(token),
        )
    assert response.status_code == 204, response.text


# -- External Secrets Operator -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mount", "audience"), [("kubernetes", KUBE_AUDIENCE), ("jwt", "vault")], ids=str
)
def test_eso_vault_provider(kl: VaultKeyless, mount: str, audience: str) -> None:
    """providers/v1/vault: auth_kubernetes.go / auth_jwt.go, auth.go checkToken, client_get.go,
    client_get_all_secrets.go, client.go Close."""
    with kl.http() as http:
        # setAuth: PUT auth/{mount}/login with a TokenRequest token of the store's service account
        jwt = kl.jwt("team-eso", "app", audience=audience, pod="external-secrets-7c9")
        login = vault_login(http, "PUT", mount, jwt)
        assert login.status_code == 200, login.text
        token = login.json()["auth"]["client_token"]  # TokenID()
        assert isinstance(token, str) and token
        kl.secrets_seen.append(token)

        # Validate() -> checkToken: GET auth/token/lookup-self
        lookup = http.get("/v1/auth/token/lookup-self", headers=token_headers(token))
        assert lookup.status_code == 200, lookup.text
        data = lookup.json()["data"]
        assert isinstance(data["type"], str) and data["type"] != "batch"
        assert is_number(data["ttl"]) and data["ttl"] >= 60  # below 60: "expired", re-login
        assert rfc3339(data["expire_time"]) > dt.datetime.now(dt.UTC)

        # GetSecret: GET {path}/data/{key}, then data.data
        read = http.get(f"/v1/{MOUNT}/data/eso/db", headers=token_headers(token))
        assert read.status_code == 200, read.text
        assert read.json()["data"]["data"] == {"username": "app", "password": "eso-db-new-1a"}
        old = http.get(
            f"/v1/{MOUNT}/data/eso/db", params={"version": "1"}, headers=token_headers(token)
        )
        assert old.json()["data"]["data"]["password"] == "eso-db-old-1a"

        # metadataPolicy: Fetch / find.tags: GET {path}/metadata/{key}
        meta = http.get(f"/v1/{MOUNT}/metadata/eso/db", headers=token_headers(token))
        assert meta.status_code == 200, meta.text
        m = meta.json()["data"]
        rfc3339(m["created_time"])
        assert is_number(m["current_version"]) and m["current_version"] == 2
        assert m["custom_metadata"] == {"owner": "team-a"}

        # dataFrom.find: GET {path}/metadata/{prefix}?list=true, data.keys
        listed = http.get(
            f"/v1/{MOUNT}/metadata/eso", params={"list": "true"}, headers=token_headers(token)
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"]["keys"] == ["api", "db"]

        # Close(): PUT auth/token/revoke-self (token cache off, the default)
        revoke = http.put("/v1/auth/token/revoke-self", headers=token_headers(token))
        assert revoke.status_code == 204, revoke.text
        after = http.get(f"/v1/{MOUNT}/data/eso/db", headers=token_headers(token))
        assert after.status_code == 403
        assert after.json()["errors"] and "eso-db-new-1a" not in after.text
        relookup = http.get("/v1/auth/token/lookup-self", headers=token_headers(token))
        assert relookup.status_code == 403


def test_eso_deleted_version_is_no_secret(kl: VaultKeyless) -> None:
    """client_get.go: ``data.data == null`` (a deleted version) means the secret does not exist."""
    write(kl, "deleted/item", {"v": "eso-deleted-4d"})
    token = kl.login("app", "team-eso")
    with kl.http() as http:
        gone = http.delete(f"/v1/{MOUNT}/data/deleted/item", headers=token_headers(token))
        assert gone.status_code == 204, gone.text
        read = http.get(f"/v1/{MOUNT}/data/deleted/item", headers=token_headers(token))
        assert read.status_code == 404
        body = read.json()
        assert body["data"]["data"] is None
        assert body["data"]["metadata"]["deletion_time"] != ""
        assert "eso-deleted-4d" not in read.text


# -- The Vault CSI provider ---------------------------------------------------------------------


def test_vault_csi_provider(kl: VaultKeyless) -> None:
    """internal/auth/kubernetes_jwt.go, internal/client/client.go, internal/provider/provider.go:
    POST login with the CSI driver's token for audience ``vault``, the raw GET of ``secretPath``,
    and one re-login when the request is refused with 403."""
    secret_path = f"{MOUNT}/data/apps/web/config"  # the SecretProviderClass's secretPath
    with kl.http() as http:
        login = vault_login(http, "POST", "kubernetes", kl.jwt("web", "app", pod="web-5f7d-x2"))
        assert login.status_code == 200, login.text
        token = login.json()["auth"]["client_token"]
        kl.secrets_seen.append(token)

        response = http.get(f"/v1/{secret_path}", headers=token_headers(token))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"]["data"]["dsn"] == "postgres://web:web-dsn-3c@db/web"  # secretKey

        # the token is gone (revoked here); the next mount's request is refused, so it logs in again
        revoked = http.post("/v1/auth/token/revoke-self", headers=token_headers(token))
        assert revoked.status_code == 204
        refused = http.get(f"/v1/{secret_path}", headers=token_headers(token))
        assert refused.status_code == 403
        relogin = vault_login(http, "POST", "kubernetes", kl.jwt("web", "app", pod="web-5f7d-x2"))
        assert relogin.status_code == 200, relogin.text
        fresh = relogin.json()["auth"]["client_token"]
        kl.secrets_seen.append(fresh)
        assert fresh != token
        again = http.get(f"/v1/{secret_path}", headers=token_headers(fresh))
        assert again.status_code == 200
        assert again.json()["data"]["data"]["dsn"] == "postgres://web:web-dsn-3c@db/web"


# -- Vault Agent (vault-k8s) --------------------------------------------------------------------


def test_vault_agent(kl: VaultKeyless) -> None:
    """command/agentproxyshared/auth/kubernetes (PUT login with the pod's default projected token,
    the API server's audience), api/lifetime_watcher.go (renewable false: no renew-self, a new
    login at lease end), consul-template dependency/vault_common.go and vault_read.go."""
    with kl.http() as http:
        login = vault_login(
            http, "PUT", "kubernetes", kl.jwt("shop", "app", audience=KUBE_AUDIENCE, pod="shop-0")
        )
        assert login.status_code == 200, login.text
        body = login.json()
        assert body["auth"]["client_token"]
        kl.secrets_seen.append(body["auth"]["client_token"])
        assert body["auth"]["renewable"] is False  # LifetimeWatcher: no renew-self
        assert is_number(body["auth"]["lease_duration"]) and body["auth"]["lease_duration"] > 0
        assert is_number(body["lease_duration"])
        token = body["auth"]["client_token"]

        # {{ with secret "secret/data/apps/web/config" }}: KV v2 detection first
        mounts = http.get(
            "/v1/sys/internal/ui/mounts/secret/data/apps/web/config",
            headers=token_headers(token),
        )
        assert mounts.status_code == 200, mounts.text
        mount = mounts.json()["data"]
        assert mount["path"] == f"{MOUNT}/"
        assert mount["type"] == "kv" and mount["options"]["version"] == "2"

        read = http.get(f"/v1/{MOUNT}/data/apps/web/config", headers=token_headers(token))
        assert read.status_code == 200, read.text
        data = read.json()["data"]
        assert data["data"] == {"dsn": "postgres://web:web-dsn-3c@db/web"}
        assert data["metadata"]["deletion_time"] == ""  # a time here: "no secret"
        assert read.json()["lease_duration"] == 0  # re-read every static_secret_render_interval

        # at lease end: a new login, a new token, and the same read with it
        relogin = vault_login(
            http, "PUT", "kubernetes", kl.jwt("shop", "app", audience=KUBE_AUDIENCE, pod="shop-0")
        )
        assert relogin.status_code == 200, relogin.text
        fresh = relogin.json()["auth"]["client_token"]
        kl.secrets_seen.append(fresh)
        assert fresh != token
        assert (
            http.get(f"/v1/{MOUNT}/data/apps/web/config", headers=token_headers(fresh)).status_code
            == 200
        )


def test_mount_detection_of_an_invisible_vault_is_refused(kl: VaultKeyless) -> None:
    token = kl.login("nobody", "demo")
    with kl.http() as http:
        response = http.get(
            f"/v1/sys/internal/ui/mounts/{MOUNT}/apps/web/config", headers=token_headers(token)
        )
    assert response.status_code == 403
    assert response.json()["errors"]
    refused = [e for e in kl.audit() if e["action"] == "vault.mount"]
    assert refused and refused[-1]["result"] == "failure"
    assert refused[-1]["target"] == f"/vaults/{MOUNT}"
    assert refused[-1]["workload"]["namespace"] == "demo"  # the refusal names the pod's namespace


# -- Spring Cloud Vault -------------------------------------------------------------------------


def test_spring_cloud_vault(kl: VaultKeyless) -> None:
    """KubernetesAuthentication (POST login), VaultKeyValueAdapter's mount detection, the KV read,
    LifecycleAwareSessionManager (lookup-self, renew-self, revoke-self at shutdown), and the
    actuator's VaultHealthIndicator (sys/health)."""
    with kl.http() as http:
        health = http.get("/v1/sys/health")
        assert health.status_code == 200, health.text
        h = health.json()
        assert h["initialized"] is True and h["sealed"] is False and h["standby"] is False
        assert http.head("/v1/sys/health").status_code == 200
        seal = http.get("/v1/sys/seal-status")
        assert seal.status_code == 200 and seal.json()["sealed"] is False

        login = vault_login(http, "POST", "kubernetes", kl.jwt("spring", "app"))
        assert login.status_code == 200, login.text
        token = login.json()["auth"]["client_token"]
        kl.secrets_seen.append(token)

        mounts = http.get(f"/v1/sys/internal/ui/mounts/{MOUNT}", headers=token_headers(token))
        assert mounts.status_code == 200, mounts.text
        assert mounts.json()["data"]["options"]["version"] == "2"
        read = http.get(f"/v1/{MOUNT}/data/eso/api", headers=token_headers(token))
        assert read.json()["data"]["data"] == {"key": "eso-api-key-2b"}

        lookup = http.get("/v1/auth/token/lookup-self", headers=token_headers(token))
        assert lookup.json()["data"]["renewable"] is False
        renew = http.post("/v1/auth/token/renew-self", headers=token_headers(token))
        assert renew.status_code == 400
        assert renew.json() == {"errors": ["lease is not renewable"]}
        revoke = http.post("/v1/auth/token/revoke-self", headers=token_headers(token))
        assert revoke.status_code == 204
        assert http.get("/v1/auth/token/lookup-self", headers=token_headers(token)).status_code == (
            403
        )


# -- the wire details every client relies on ----------------------------------------------------


def test_login_errors(kl: VaultKeyless) -> None:
    with kl.http() as http:
        missing_role = http.put("/v1/auth/jwt/login", json={"jwt": kl.jwt()})
        assert missing_role.status_code == 400 and missing_role.json()["errors"]
        missing_jwt = http.put("/v1/auth/jwt/login", json={"role": "app"})
        assert missing_jwt.status_code == 400 and missing_jwt.json()["errors"]
        unknown = http.put("/v1/auth/jwt/login", json={"role": "ghost", "jwt": kl.jwt()})
        assert unknown.status_code == 400
        assert unknown.json() == {"errors": ['role "ghost" could not be found']}
        refused = http.put(
            "/v1/auth/jwt/login", json={"role": "app", "jwt": kl.jwt(audience="not-vault")}
        )
        assert refused.status_code == 403
        assert refused.json()["errors"][0] == "permission denied"
        garbage = http.put("/v1/auth/jwt/login", json={"role": "app", "jwt": "x.y.z"})
        assert garbage.status_code == 403


def test_kv_errors(kl: VaultKeyless) -> None:
    token = kl.login("app", "errors")
    with kl.http() as http:
        missing = http.get(f"/v1/{MOUNT}/data/never/there", headers=token_headers(token))
        assert missing.status_code == 404 and missing.json() == {"errors": []}
        no_version = http.get(
            f"/v1/{MOUNT}/data/eso/db", params={"version": "99"}, headers=token_headers(token)
        )
        assert no_version.status_code == 404 and no_version.json() == {"errors": []}
        no_meta = http.get(f"/v1/{MOUNT}/metadata/never/there", headers=token_headers(token))
        assert no_meta.status_code == 404 and no_meta.json() == {"errors": []}
        no_list = http.get(
            f"/v1/{MOUNT}/metadata/never", params={"list": "true"}, headers=token_headers(token)
        )
        assert no_list.status_code == 404 and no_list.json() == {"errors": []}
        cas = http.post(
            f"/v1/{MOUNT}/data/eso/db",
            json={"data": {"x": "y"}, "options": {"cas": 1}},
            headers=token_headers(token),
        )
        assert cas.status_code == 400
        (reason,) = cas.json()["errors"]
        assert reason.startswith("check-and-set parameter did not match the current version")
        malformed = http.put(
            f"/v1/{MOUNT}/data/eso/db", content=b"{not json", headers=token_headers(token)
        )
        assert malformed.status_code == 400 and malformed.json()["errors"]
        no_token = http.get(f"/v1/{MOUNT}/data/eso/db", headers=GO_CLIENT)
        assert no_token.status_code == 403 and no_token.json()["errors"]
        bad_token = http.get(f"/v1/{MOUNT}/data/eso/db", headers=token_headers("hvs.bogus"))
        assert bad_token.status_code == 403


def test_list_method_and_trailing_slash(kl: VaultKeyless) -> None:
    """hvac and the CLI send the LIST method; ESO sends GET ?list=true; both with or without a
    trailing slash, and on the mount's root."""
    token = kl.login("app", "lister")
    with kl.http() as http:
        for path in ("eso", "eso/"):
            listed = http.request(
                "LIST", f"/v1/{MOUNT}/metadata/{path}", headers=token_headers(token)
            )
            assert listed.status_code == 200, listed.text
            assert listed.json()["data"]["keys"] == ["api", "db"]
        root = http.get(
            f"/v1/{MOUNT}/metadata/", params={"list": "true"}, headers=token_headers(token)
        )
        assert root.status_code == 200, root.text
        assert {"eso/", "apps/", PLAIN_NAME} <= set(root.json()["data"]["keys"])


def test_sys_mounts_lists_visible_vaults(kl: VaultKeyless) -> None:
    token = kl.login("app", "mounts")
    with kl.http() as http:
        mounts = http.get("/v1/sys/mounts", headers=token_headers(token))
    assert mounts.status_code == 200, mounts.text
    body = mounts.json()
    listed = body.get("data", body)
    assert listed[f"{MOUNT}/"]["type"] == "kv"
    assert listed[f"{MOUNT}/"]["options"]["version"] == "2"
    assert f"{MOUNT_B}/" not in listed


def test_configured_auth_mounts(kl: VaultKeyless) -> None:
    """``--vault-auth-mount``: every mount decides the same way (the identity's trust policies);
    the mount names the login's path; a mount not configured has no route."""
    with kl.http() as http:
        for mount, audience in (("kubernetes/cluster-a", KUBE_AUDIENCE), ("ci", "vault")):
            login = vault_login(http, "PUT", mount, kl.jwt("mounts-ns", "app", audience=audience))
            assert login.status_code == 200, login.text
            auth = login.json()["auth"]
            kl.secrets_seen.append(auth["client_token"])
            assert auth["metadata"]["service_account_namespace"] == "mounts-ns"
            lookup = http.get(
                "/v1/auth/token/lookup-self", headers=token_headers(auth["client_token"])
            )
            assert lookup.json()["data"]["path"] == f"auth/{mount}/login"
        refused = vault_login(http, "PUT", "kubernetes/cluster-a", kl.jwt(audience="other"))
        assert refused.status_code == 403
        unknown = vault_login(http, "PUT", "cluster-z", kl.jwt())
        assert unknown.status_code == 404
        assert unknown.json()["errors"][0].startswith('no handler for route "auth/cluster-z/login"')


# -- one secret, every dialect ------------------------------------------------------------------


def azure_client(kl: VaultKeyless) -> SecretClient:
    """The Azure SDK as a workload of identity ``app`` uses it (Azure's audience)."""
    jwt = kl.jwt("azure-ns", "app", audience="api://AzureADTokenExchange")
    tenant = json.loads(kl.server.cli("--output", "json", "tenant", "show").stdout)["id"]
    app = json.loads(kl.server.cli("--output", "json", "identity", "show", "app").stdout)
    credential = WorkloadIdentityCredential(
        tenant_id=tenant,
        client_id=app["client_id"],
        token_file_path=str(kl.jwt_file(jwt)),
        authority=kl.addr,
        connection_verify=kl.ca,
    )
    return SecretClient(
        f"https://{MOUNT}.vault.localhost:{kl.server.port}", credential, connection_verify=kl.ca
    )


def test_azure_sdk_reads_what_vault_wrote(kl: VaultKeyless) -> None:
    """``{"data": {"value": s}}`` written through Vault is the plain string s for Key Vault."""
    value = kl.remember("azure-reads-this-5e")
    write(kl, "from-vault", {"value": value})
    with resolving("vault.localhost"):
        secret = azure_client(kl).get_secret("from-vault")
    assert secret.value == value


def test_names_with_slashes_in_every_dialect(kl: VaultKeyless) -> None:
    """docs/vault-api.md: the keyless CLI and role scopes name ``team-a/db/creds`` as Vault does;
    Key Vault's API cannot, and its list leaves it out."""
    pair = {"username": "a", "pw": kl.remember("slashed-pw-8h")}
    write(kl, "team-a/db/creds", pair)
    shown = kl.server.cli("secret", "get", MOUNT, "team-a/db/creds").stdout
    assert json.loads(shown) == pair
    cli = kl.server.cli
    cli("identity", "create", "scoped")
    cli(
        "federation", "add", "scoped", "--name", "vault", "--issuer",
        f"{kl.addr}/dev/clusters/dev", "--subject-pattern", "system:serviceaccount:*:scoped",
        "--audience", "vault",
    )  # fmt: skip
    cli("role", "assign", "scoped", "secrets-user", "--scope",
        f"/vaults/{MOUNT}/secrets/team-a/db/creds")  # fmt: skip
    token = kl.login("scoped", "team-a")
    with kl.http() as http:
        mine = http.get(f"/v1/{MOUNT}/data/team-a/db/creds", headers=token_headers(token))
        assert mine.status_code == 200, mine.text
        assert mine.json()["data"]["data"] == pair
        other = http.get(f"/v1/{MOUNT}/data/eso/api", headers=token_headers(token))
        assert other.status_code == 403 and "eso-api-key-2b" not in other.text
    with resolving("vault.localhost"):
        names = {p.name for p in azure_client(kl).list_properties_of_secrets()}
    assert PLAIN_NAME in names
    assert not any("/" in name or name.startswith("team-a") for name in names if name)


def test_vault_reads_what_keyless_cli_wrote(kl: VaultKeyless) -> None:
    token = kl.login("reader", "cli-read")
    with kl.http() as http:
        read = http.get(f"/v1/{MOUNT}/data/{PLAIN_NAME}", headers=token_headers(token))
    assert read.status_code == 200, read.text
    assert read.json()["data"]["data"] == {"value": PLAIN_VALUE}
    assert read.json()["data"]["metadata"]["version"] == 1


def test_client_token_reads_through_key_vault_api(kl: VaultKeyless) -> None:
    """The client token is a keyless access token for the vault resource."""
    token = kl.login("reader", "kv-api")
    with kl.http() as http:
        read = http.get(
            f"/vaults/{MOUNT}/secrets/{PLAIN_NAME}",
            params={"api-version": "7.4"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert read.status_code == 200, read.text
    assert read.json()["value"] == PLAIN_VALUE


def test_bearer_works_like_x_vault_token(kl: VaultKeyless) -> None:
    token = kl.login("reader", "bearer")
    with kl.http() as http:
        bearer = {"Authorization": f"Bearer {token}"}
        lookup = http.get("/v1/auth/token/lookup-self", headers=bearer)
        assert lookup.status_code == 200, lookup.text
        assert lookup.json()["data"]["meta"]["service_account_namespace"] == "bearer"
        read = http.get(f"/v1/{MOUNT}/data/{PLAIN_NAME}", headers=bearer)
        assert read.status_code == 200
        same = http.get(f"/v1/{MOUNT}/data/{PLAIN_NAME}", headers=token_headers(token))
        assert read.json()["data"] == same.json()["data"]
        assert http.put("/v1/auth/token/revoke-self", headers=bearer).status_code == 204
        assert http.get(f"/v1/{MOUNT}/data/{PLAIN_NAME}", headers=bearer).status_code == 403


def test_namespace_header_selects_the_tenant(kl: VaultKeyless) -> None:
    write_token = None
    tenant_b = json.loads(kl.server.cli("--output", "json", "tenant", "show", TENANT_B).stdout)
    with kl.http() as http:
        for namespace in (TENANT_B, tenant_b["id"]):  # alias or id
            ns = {"X-Vault-Namespace": namespace}
            login = vault_login(http, "PUT", "jwt", kl.jwt("demo", "app"), **ns)
            assert login.status_code == 200, login.text
            write_token = login.json()["auth"]["client_token"]
            kl.secrets_seen.append(write_token)
            wrote = http.post(
                f"/v1/{MOUNT_B}/data/ns/item",
                json={"data": {"v": kl.remember("team-b-value-6f")}},
                headers=token_headers(write_token, **ns),
            )
            assert wrote.status_code == 200, wrote.text
            read = http.get(f"/v1/{MOUNT_B}/data/ns/item", headers=token_headers(write_token, **ns))
            assert read.json()["data"]["data"] == {"v": "team-b-value-6f"}
        assert write_token is not None
        # without the header: the default tenant, whose `secret` this token cannot read
        cross = http.get(f"/v1/{MOUNT}/data/{PLAIN_NAME}", headers=token_headers(write_token))
        assert cross.status_code == 403 and PLAIN_VALUE not in cross.text
        # and the default tenant's token does not read team-b's vault, header or not
        default = kl.login("app", "demo")
        for headers in ({}, {"X-Vault-Namespace": TENANT_B}):
            other = http.get(
                f"/v1/{MOUNT_B}/data/ns/item", headers=token_headers(default, **headers)
            )
            assert other.status_code in (403, 404) and "team-b-value-6f" not in other.text
        # roles are the namespace's identities: team-b has no `reader`
        none = vault_login(
            http, "PUT", "jwt", kl.jwt("demo", "reader"), role="reader",
            **{"X-Vault-Namespace": TENANT_B},
        )  # fmt: skip
        assert none.status_code == 400
        assert none.json() == {"errors": ['role "reader" could not be found']}


# -- audit and logs (last: they look at everything above) ---------------------------------------


def test_every_login_and_read_is_audited_with_the_pod(kl: VaultKeyless) -> None:
    jwt = kl.jwt("audited-ns", "app", pod="audited-pod-7g")
    with kl.http() as http:
        login = vault_login(http, "PUT", "jwt", jwt)
        token = login.json()["auth"]["client_token"]
        kl.secrets_seen.append(token)
        assert http.get(f"/v1/{MOUNT}/data/eso/api", headers=token_headers(token)).status_code == (
            200
        )
        refused = vault_login(
            http, "PUT", "jwt", kl.jwt("audited-ns", "app", audience="x", pod="refused-pod-7g")
        )
        assert refused.status_code == 403
    events = kl.audit()
    logins = [e for e in events if e["action"] == "token.exchange.vault-login"]
    ok = [e for e in logins if e["workload"].get("pod") == "audited-pod-7g"]
    assert len(ok) == 1 and ok[0]["result"] == "success"
    assert ok[0]["workload"]["namespace"] == "audited-ns"
    assert ok[0]["workload"]["service_account"] == "app"
    failed = [e for e in logins if e["workload"].get("pod") == "refused-pod-7g"]
    assert len(failed) == 1 and failed[0]["result"] == "failure"
    reads = [
        e
        for e in events
        if e["action"] == "secrets/getSecret"
        and e["target"] == f"/vaults/{MOUNT}/secrets/eso/api"
        and e["workload"].get("pod") == "audited-pod-7g"
    ]
    assert len(reads) == 1 and reads[0]["result"] == "success"
    assert reads[0]["workload"]["namespace"] == "audited-ns"
    assert kl.server.cli("audit", "verify").returncode == 0


def test_no_token_or_value_in_the_server_log(kl: VaultKeyless) -> None:
    assert len(kl.secrets_seen) > 10
    assert kl.leaked() == []
