"""The mTLS listener (``--mtls-listen``, server/mtls.py) of a real keyless over real TLS: an
X.509-SVID from the real endpoint reads a secret through the Key Vault API (httpx) and the
Vault API (hvac, directly and through ``auth.cert.login()``), acting as the identity it was
issued for under that identity's roles; the refusals (no certificate, another CA's, an expired
SVID at the handshake; no role, a deleted identity, another tenant's SVID at the edge, each
audited); and a CA rotation taking effect on the running listener."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hvac
import hvac.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from keyless import rootkey
from keyless.core.jose import public_jwk
from keyless.core.spiffeca import SpiffeCA, issue_x509_svid
from keyless.core.svidauth import record_of
from keyless.server.tls import issue, new_ca
from keyless.store.sql import SqlStore
from tests.support.federation import TEST_ISSUER, TEST_KID, Federated, federate
from tests.support.server import ServerFactory, free_port
from tests.support.svids import issue_svid, write_svid
from tests.support.tenants import Admin

TD = "default.keyless"
SPIFFE_ID = f"spiffe://{TD}/ns/demo/sa/app"  # what the forged certificates name


@dataclass
class Mtls:
    fed: Federated
    port: int
    admin: Admin
    noaccess_client_id: str
    other_tenant: str
    other_client_id: str

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


@pytest.fixture(scope="module")
def mt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    tmp = tmp_path_factory.mktemp("mtls")
    factory = ServerFactory(tmp)
    port = free_port()
    try:
        server = factory.start("--mtls-listen", f"127.0.0.1:{port}", dev=True)
        assert f"mTLS on https://127.0.0.1:{port}" in server.log
        fed = federate(server, tmp)
        cli = server.cli
        cli("vault", "create", "mtv")
        cli("secret", "set", "mtv", "s1", "--value", "from-mtls")
        cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/mtv")
        admin = Admin(server)
        noaccess = admin.create_identity("default", "noaccess")
        admin.trust("default", "noaccess", "test", TEST_ISSUER)
        # A second tenant trusting the same issuer, with a vault its identity may read.
        other = admin.create_tenant("other")
        jwks = {"keys": [public_jwk(fed.key.public_key(), TEST_KID, "RS256")]}
        admin.add_issuer("other", TEST_ISSUER, jwks)
        other_app = admin.create_identity("other", "app")
        admin.trust("other", "app", "test", TEST_ISSUER)
        admin.create_vault("other", "ovv")
        admin.set_secret("other", "ovv", "s1", "other-secret")
        admin.assign("other", "app", "Key Vault Secrets User", "/vaults/ovv")
        yield Mtls(fed, port, admin, noaccess["client_id"], other, other_app["client_id"])
    finally:
        factory.stop_all()


def get_svid(mt: Mtls, folder: Path, *, client_id: str | None = None, tenant: str | None = None):  # type: ignore[no-untyped-def]
    """An X.509-SVID from the real endpoint (public listener): (cert file, key file, leaf)."""
    svid = issue_svid(
        mt.fed.server,
        tenant or mt.fed.tenant_id,
        client_id or mt.fed.client_id,
        mt.fed.test_token(),
        folder,
    )
    return svid.cert_file, svid.key_file, svid.leaf


def write_pair(folder: Path, certs: list[x509.Certificate], key: Any) -> tuple[Path, Path, Any]:
    svid = write_svid(folder, certs, key)
    return svid.cert_file, svid.key_file, svid.leaf


def san(leaf: x509.Certificate) -> str:
    ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = ext.get_values_for_type(x509.UniformResourceIdentifier)
    return str(uri)


def tls(mt: Mtls, pair: tuple[Path, Path, Any] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(mt.fed.server.ca))
    if pair is not None:
        ctx.load_cert_chain(pair[0], pair[1])
    return ctx


def kv_get(mt: Mtls, pair: Any, vault: str = "mtv", **headers: str) -> httpx.Response:
    with httpx.Client(base_url=mt.url, verify=tls(mt, pair), timeout=30) as http:
        return http.get(
            f"/vaults/{vault}/secrets/s1",
            params={"api-version": "7.4"},
            headers={"client-request-id": headers.pop("rid", ""), **headers},
        )


def audit(mt: Mtls, request_id: str, tenant: str = "default") -> list[dict[str, Any]]:
    out = mt.fed.server.cli(
        "--output", "json", "audit", "list", "--limit", "1000", "--tenant", tenant
    ).stdout
    events = [json.loads(line) for line in out.splitlines() if line]
    return [e for e in events if e.get("request_id") == request_id]


def test_key_vault_read_with_an_svid_acts_as_its_identity(mt: Mtls, tmp_path: Path) -> None:
    pair = get_svid(mt, tmp_path)
    response = kv_get(mt, pair, rid="mtls-read")
    assert response.status_code == 200, response.text
    assert response.json()["value"] == "from-mtls"
    (event,) = audit(mt, "mtls-read")
    assert event["result"] == "success" and event["actor"] == mt.fed.object_id
    assert event["workload"]["spiffe_id"] == san(pair[2])
    assert san(pair[2]).startswith(f"spiffe://{TD}/")
    assert event["workload"]["auth"] == "x509-svid"
    pem = pair[0].read_text()
    assert pem.split("\n")[1] not in mt.fed.server.log  # no certificate in the logs


def test_curl_as_the_docs_show_it(mt: Mtls, tmp_path: Path) -> None:
    """docs/spiffe.md's example: the chain file as the agent writes it, and no token."""
    cert, key, _ = get_svid(mt, tmp_path)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "--cacert",
            str(mt.fed.server.ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
            f"{mt.url}/vaults/mtv/secrets/s1?api-version=7.4",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["value"] == "from-mtls"


def test_the_public_listener_takes_no_client_certificate(mt: Mtls, tmp_path: Path) -> None:
    pair = get_svid(mt, tmp_path)
    ctx = ssl.create_default_context(cafile=str(mt.fed.server.ca))
    ctx.load_cert_chain(pair[0], pair[1])
    with httpx.Client(base_url=mt.fed.server.url, verify=ctx, timeout=30) as http:
        response = http.get("/vaults/mtv/secrets/s1", params={"api-version": "7.4"})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


def test_a_bearer_token_still_works_on_the_mtls_listener(mt: Mtls, tmp_path: Path) -> None:
    token = mt.fed.exchange(mt.fed.test_token()).json()["access_token"]
    # The certificate is of an identity without a role: the token decides.
    pair = get_svid(mt, tmp_path, client_id=mt.noaccess_client_id)
    response = kv_get(mt, pair, authorization=f"Bearer {token}")
    assert response.status_code == 200, response.text


def test_no_client_certificate_fails_the_handshake(mt: Mtls) -> None:
    with pytest.raises(httpx.HTTPError):
        kv_get(mt, None)


def test_a_certificate_of_another_ca_fails_the_handshake(mt: Mtls, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca = new_ca(now, "not a tenant's CA")
    key, cert = issue(ca_key, ca, [x509.UniformResourceIdentifier(SPIFFE_ID)], now)
    with pytest.raises(httpx.HTTPError):
        kv_get(mt, write_pair(tmp_path, [cert, ca], key))


def sign_with_current_ca(
    mt: Mtls, key: ec.EllipticCurvePrivateKey, now: float, ttl: int, *, record: bool
) -> list[x509.Certificate]:
    """A certificate signed by the default tenant's current CA through the core API (the
    server's root key unseals it), recorded as issued or not."""
    data = mt.fed.server.data_dir
    root = rootkey.load_root_keys(data / "root.key", create=False)

    async def sign() -> list[x509.Certificate]:
        store = await SqlStore.open(f"sqlite:///{data / 'keyless.db'}")
        try:
            records = await store.list_spiffe_cas(mt.fed.tenant_id)
            ca = SpiffeCA.open(next(r for r in records if r.state == "current"), root)
            chain = issue_x509_svid(ca, SPIFFE_ID, key.public_key(), now, ttl)
            if record:
                await store.record_svids(
                    [
                        record_of(
                            chain[0],
                            tenant_id=mt.fed.tenant_id,
                            object_id=mt.fed.object_id,
                            client_id=mt.fed.client_id,
                            spiffe_id=SPIFFE_ID,
                            workload={},
                        )
                    ]
                )
            return chain
        finally:
            await store.close()

    return asyncio.run(sign())


def test_an_expired_svid_fails_the_handshake(mt: Mtls, tmp_path: Path) -> None:
    """Signed by the tenant's CA and recorded like an issued one: only its validity
    refuses it."""
    key = ec.generate_private_key(ec.SECP256R1())
    chain = sign_with_current_ca(mt, key, time.time() - 7200, 3600, record=True)
    with pytest.raises(httpx.HTTPError):
        kv_get(mt, write_pair(tmp_path, chain, key))


def test_an_svid_of_an_identity_without_a_role_is_403_and_audited(mt: Mtls, tmp_path: Path) -> None:
    pair = get_svid(mt, tmp_path, client_id=mt.noaccess_client_id)
    response = kv_get(mt, pair, rid="mtls-norole")
    assert response.status_code == 403, response.text
    (event,) = audit(mt, "mtls-norole")
    assert event["result"] == "failure"
    assert event["workload"]["spiffe_id"] == san(pair[2])
    assert event["workload"]["auth"] == "x509-svid"


def test_another_tenants_svid_is_refused_and_its_own_vault_served(mt: Mtls, tmp_path: Path) -> None:
    pair = get_svid(mt, tmp_path, client_id=mt.other_client_id, tenant="other")
    assert san(pair[2]).startswith("spiffe://other.keyless/")
    refused = kv_get(mt, pair, rid="mtls-cross-tenant")
    assert refused.status_code == 401
    assert "another tenant" in refused.json()["error"]["message"]
    (event,) = audit(mt, "mtls-cross-tenant")
    assert event["result"] == "failure" and "wrong_trust_domain" in event["reason"]
    served = kv_get(mt, pair, vault="ovv")
    assert served.status_code == 200 and served.json()["value"] == "other-secret"


def test_a_deleted_identitys_svid_is_refused(mt: Mtls, tmp_path: Path) -> None:
    admin = mt.admin
    gone = admin.create_identity("default", "gone")
    admin.trust("default", "gone", "test", TEST_ISSUER)
    admin.assign("default", "gone", "Key Vault Secrets User", "/vaults/mtv")
    pair = get_svid(mt, tmp_path, client_id=gone["client_id"])
    assert kv_get(mt, pair).status_code == 200
    mt.fed.server.cli("identity", "delete", "gone")
    response = kv_get(mt, pair, rid="mtls-gone")
    assert response.status_code == 401
    assert "no longer exists" in response.json()["error"]["message"]
    (event,) = audit(mt, "mtls-gone")
    assert event["result"] == "failure" and event["reason"].startswith("identity_gone")


def test_an_unknown_serial_is_401_with_a_reason(mt: Mtls, tmp_path: Path) -> None:
    """A certificate the tenant's CA signed but keyless never issued (no record)."""
    key = ec.generate_private_key(ec.SECP256R1())
    chain = sign_with_current_ca(mt, key, time.time(), 600, record=False)
    response = kv_get(mt, write_pair(tmp_path, chain, key))
    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "client certificate is not an X.509-SVID issued by this keyless"
    )


def test_hvac_reads_with_the_certificate_alone(mt: Mtls, tmp_path: Path) -> None:
    cert, key, _ = get_svid(mt, tmp_path)
    client = hvac.Client(url=mt.url, cert=(str(cert), str(key)), verify=str(mt.fed.server.ca))
    read = client.secrets.kv.v2.read_secret_version(
        path="s1", mount_point="mtv", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"value": "from-mtls"}


def test_hvac_with_a_certificate_keyless_never_issued_is_forbidden(
    mt: Mtls, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, key_file, _ = write_pair(
        tmp_path, sign_with_current_ca(mt, key, time.time(), 600, record=False), key
    )
    client = hvac.Client(url=mt.url, cert=(str(cert), str(key_file)), verify=str(mt.fed.server.ca))
    with pytest.raises(hvac.exceptions.Forbidden, match=r"not an X\.509-SVID issued"):
        client.secrets.kv.v2.read_secret_version(
            path="s1", mount_point="mtv", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.Forbidden, match=r"not an X\.509-SVID issued"):
        client.auth.cert.login(cert_pem=str(cert), key_pem=str(key_file))


def test_hvac_cert_login_returns_a_vault_token(mt: Mtls, tmp_path: Path) -> None:
    cert, key, leaf = get_svid(mt, tmp_path)
    client = hvac.Client(url=mt.url, cert=(str(cert), str(key)), verify=str(mt.fed.server.ca))
    login = client.auth.cert.login(cert_pem=str(cert), key_pem=str(key))
    token = login["auth"]["client_token"]
    assert login["auth"]["metadata"]["spiffe_id"] == san(leaf)
    assert login["auth"]["policies"] == ["default", "app"]
    assert client.token == token and client.is_authenticated()
    # The token is an ordinary Vault token of the identity: it reads on the public listener.
    public = hvac.Client(url=mt.fed.server.url, token=token, verify=str(mt.fed.server.ca))
    read = public.secrets.kv.v2.read_secret_version(
        path="s1", mount_point="mtv", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"value": "from-mtls"}
    assert public.auth.token.lookup_self()["data"]["path"] == "auth/cert/login"
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.cert.login(name="noaccess", cert_pem=str(cert), key_pem=str(key))
    out = mt.fed.server.cli("--output", "json", "audit", "list", "--limit", "1000").stdout
    logins = [
        e
        for e in (json.loads(line) for line in out.splitlines() if line)
        if e["action"] == "token.exchange.vault-cert-login"
        and e["workload"].get("spiffe_id") == san(leaf)
    ]
    assert [e["result"] for e in logins] == ["success", "failure"]
    assert {e["actor"] for e in logins} == {mt.fed.object_id}
    assert logins[0]["workload"]["auth"] == "x509-svid"
    assert token not in out


def test_cert_login_needs_the_mtls_listener(mt: Mtls) -> None:
    client = hvac.Client(url=mt.fed.server.url, verify=str(mt.fed.server.ca))
    with pytest.raises(hvac.exceptions.InvalidRequest, match="no client certificate"):
        client.adapter.post("/v1/auth/cert/login", json={})


def test_a_rotated_ca_is_trusted_by_the_running_listener(mt: Mtls, tmp_path: Path) -> None:
    """Two rotations: the generation that signs after them was created by the first, so it
    was not in the set the listener started with."""
    cli = mt.fed.server.cli
    before = json.loads(cli("--output", "json", "spiffe", "cas").stdout)
    cli("spiffe", "rotate")
    cli("spiffe", "rotate")
    after = json.loads(cli("--output", "json", "spiffe", "cas").stdout)
    assert before != after
    pair = get_svid(mt, tmp_path)
    deadline = time.monotonic() + 10
    while True:
        try:
            response = kv_get(mt, pair)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert response.status_code == 200, response.text
