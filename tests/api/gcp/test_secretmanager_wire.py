"""Secret Manager v1 REST (api/gcp/secretmanager.py) in process: the JSON shapes, Google's
refusals and every operation given hostile input (a Google error, never a 500).

The callers hold real tokens of keyless's Google STS (``broker.gcp.exchange`` over a test
issuer's token with the provider audience), so authentication, RBAC and audit are the
server's own; the real client library drives the real server in test_secretmanager.py.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import google_crc32c
import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.api.aws import smops as aws_smops
from keyless.core import gcpnames
from keyless.core import gcpsecrets as gsm
from keyless.core.access import Principal
from keyless.core.secrets import PropertyChanges
from keyless.core.vault import Call
from tests.support.federation import TEST_ISSUER
from tests.support.inprocess import InProcessFederated, federate, in_process
from tests.support.oidc import SUBJECT

pytestmark = pytest.mark.asyncio(loop_scope="module")

OTHER = "system:serviceaccount:demo:other"
BASE = gcpnames.SECRET_MANAGER_PATH + "/v1"


@dataclass
class World:
    fed: InProcessFederated
    app: str  # bearer tokens
    other: str
    numbers: dict[str, str]  # vault -> project number

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        **params: str,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token or self.app}"}
        return await self.fed.kl.public.request(
            method, BASE + "/" + path, json=body, params=params, headers=headers
        )

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        response = await self.call(method, path, None, body, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def refused(
        self,
        status: int,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        **params: str,
    ) -> dict[str, Any]:
        response = await self.call(method, path, token, body, **params)
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == status
        return error


async def _token(fed: InProcessFederated, subject: str) -> str:
    services = fed.kl.services
    tenant = await services.broker.tenant(fed.tenant_id)
    provider = gcpnames.provider(fed.tenant_id)
    token = fed.test_token(sub=subject, aud=[provider.name])
    issued = await services.broker.gcp.exchange(tenant, token, provider, request_id=None)
    return issued.access_token


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with in_process(tmp_path_factory.mktemp("gsm"), dev=True) as kl:
        fed = await federate(kl)
        audience = gcpnames.provider(fed.tenant_id).name
        await kl.call("POST", "/v1/identities", {"name": "other"})
        for identity, subject in (("app", SUBJECT), ("other", OTHER)):
            await kl.call(
                "POST",
                f"/v1/identities/{identity}/federated-credentials",
                {"name": "gcp", "issuer": TEST_ISSUER, "subject": subject, "audiences": [audience]},
            )
        numbers = {}
        for vault in ("billing", "shared", "private"):
            await kl.call("POST", "/v1/vaults", {"name": vault})
        for identity, role, scope in [
            ("app", "secrets-officer", "/vaults/billing"),
            ("app", "secrets-user", "/vaults/shared"),
            ("other", "secrets-officer", "/vaults/private"),
        ]:
            await kl.call("POST", "/v1/roles", {"identity": identity, "role": role, "scope": scope})
        for v in await kl.services.vaults.list_vaults(fed.tenant_id):
            numbers[v.name] = gsm.project_number(v)
        yield World(fed, await _token(fed, SUBJECT), await _token(fed, OTHER), numbers)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def crc(data: bytes) -> str:
    return str(int(google_crc32c.Checksum(data).hexdigest(), 16))


async def test_create_add_access(world: World) -> None:
    n = world.numbers["billing"]
    made = await world.ok(
        "POST",
        "projects/billing/secrets",
        {"replication": {"automatic": {}}, "labels": {"team": "billing"}},
        secretId="db-pass",
    )
    assert made["name"] == f"projects/{n}/secrets/db-pass"
    assert made["labels"] == {"team": "billing"} and made["replication"] == {"automatic": {}}
    # created with no version: access says so, as Google does
    error = await world.refused(
        404, "GET", "projects/billing/secrets/db-pass/versions/latest:access"
    )
    assert (
        error["message"] == f"Secret [projects/{n}/secrets/db-pass] not found or has no versions."
    )
    added = await world.ok(
        "POST",
        "projects/billing/secrets/db-pass:addVersion",
        {"payload": {"data": b64(b"s3cr3t"), "dataCrc32c": crc(b"s3cr3t")}},
    )
    assert added["name"] == f"projects/{n}/secrets/db-pass/versions/1"
    assert added["state"] == "ENABLED" and added["clientSpecifiedPayloadChecksum"] is True
    got = await world.ok("GET", "projects/billing/secrets/db-pass/versions/latest:access")
    assert got == {
        "name": f"projects/{n}/secrets/db-pass/versions/1",
        "payload": {"data": b64(b"s3cr3t"), "dataCrc32c": crc(b"s3cr3t")},
    }
    # by number, by project number, and the locations form
    again = await world.ok("GET", f"projects/{n}/secrets/db-pass/versions/1:access")
    assert again["payload"]["data"] == b64(b"s3cr3t")
    regional = await world.ok(
        "GET", "projects/billing/locations/europe-west1/secrets/db-pass/versions/1:access"
    )
    assert regional["name"] == f"projects/{n}/locations/europe-west1/secrets/db-pass/versions/1"
    # binary data round-trips
    blob = bytes(range(256))
    await world.ok(
        "POST", "projects/billing/secrets/db-pass:addVersion", {"payload": {"data": b64(blob)}}
    )
    got = await world.ok("GET", "projects/billing/secrets/db-pass/versions/latest:access")
    assert got["name"].endswith("/versions/2") and base64.b64decode(got["payload"]["data"]) == blob
    assert got["payload"]["dataCrc32c"] == crc(blob)
    version = await world.ok("GET", "projects/billing/secrets/db-pass/versions/2")
    assert version["clientSpecifiedPayloadChecksum"] is False
    secret = await world.ok("GET", "projects/billing/secrets/db-pass")
    assert secret["labels"] == {"team": "billing"}  # kept by each new version


async def test_enum_ints_for_the_client(world: World) -> None:
    await world.ok(
        "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="e"
    )
    await world.ok("POST", "projects/billing/secrets/e:addVersion", {"payload": {"data": "eA=="}})
    got = await world.ok(
        "GET", "projects/billing/secrets/e/versions/1", **{"$alt": "json;enum-encoding=int"}
    )
    assert got["state"] == 1


async def test_states(world: World) -> None:
    n = world.numbers["billing"]
    await world.ok(
        "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="st"
    )
    for value in (b"one", b"two", b"three"):
        await world.ok(
            "POST", "projects/billing/secrets/st:addVersion", {"payload": {"data": b64(value)}}
        )
    off = await world.ok("POST", "projects/billing/secrets/st/versions/2:disable", {})
    assert off["state"] == "DISABLED"
    error = await world.refused(400, "GET", "projects/billing/secrets/st/versions/2:access")
    assert error["status"] == "FAILED_PRECONDITION"
    assert (
        error["message"]
        == f"Secret Version [projects/{n}/secrets/st/versions/2] is in DISABLED state."
    )
    on = await world.ok("POST", "projects/billing/secrets/st/versions/2:enable", {})
    assert on["state"] == "ENABLED"
    assert (await world.ok("GET", "projects/billing/secrets/st/versions/2:access"))["payload"][
        "data"
    ] == b64(b"two")
    gone = await world.ok("POST", "projects/billing/secrets/st/versions/3:destroy", {})
    assert gone["state"] == "DESTROYED" and "destroyTime" in gone
    error = await world.refused(400, "GET", "projects/billing/secrets/st/versions/latest:access")
    assert (
        error["message"]
        == f"Secret Version [projects/{n}/secrets/st/versions/3] is in DESTROYED state."
    )
    error = await world.refused(400, "POST", "projects/billing/secrets/st/versions/3:enable", {})
    assert error["status"] == "FAILED_PRECONDITION"
    listed = await world.ok("GET", "projects/billing/secrets/st/versions")
    assert [v["name"].rsplit("/", 1)[1] for v in listed["versions"]] == ["3", "2", "1"]
    assert [v["state"] for v in listed["versions"]] == ["DESTROYED", "ENABLED", "ENABLED"]
    assert listed["totalSize"] == 3
    page = await world.ok("GET", "projects/billing/secrets/st/versions", pageSize="2")
    assert len(page["versions"]) == 2 and page["nextPageToken"]
    rest = await world.ok(
        "GET", "projects/billing/secrets/st/versions", pageSize="2", pageToken=page["nextPageToken"]
    )
    assert [v["name"][-1] for v in rest["versions"]] == ["1"] and "nextPageToken" not in rest
    enabled = await world.ok("GET", "projects/billing/secrets/st/versions", filter="state:ENABLED")
    assert len(enabled["versions"]) == 2
    error = await world.refused(404, "GET", "projects/billing/secrets/st/versions/9")
    assert error["message"] == f"Secret Version [projects/{n}/secrets/st/versions/9] not found."


async def test_list_and_delete(world: World) -> None:
    n = world.numbers["billing"]
    for name, team in (("l-a", "x"), ("l-b", "y"), ("l-c", "x")):
        await world.ok(
            "POST",
            "projects/billing/secrets",
            {"replication": {"automatic": {}}, "labels": {"team": team}},
            secretId=name,
        )
    everything = await world.ok("GET", "projects/billing/secrets", filter="name:l-")
    assert [s["name"] for s in everything["secrets"]] == [
        f"projects/{n}/secrets/l-{c}" for c in "abc"
    ]
    assert everything["totalSize"] == 0  # Google's: 0 when filtered
    first = await world.ok("GET", "projects/billing/secrets", pageSize="1", filter="name:l-")
    second = await world.ok(
        "GET",
        "projects/billing/secrets",
        pageSize="1",
        filter="name:l-",
        pageToken=first["nextPageToken"],
    )
    assert second["secrets"][0]["name"].endswith("/l-b")
    labelled = await world.ok("GET", "projects/billing/secrets", filter="labels.team=x")
    assert [s["name"].rsplit("/", 1)[1] for s in labelled["secrets"]] == ["l-a", "l-c"]
    whole = await world.ok("GET", f"projects/{n}/secrets")
    assert whole["totalSize"] == len(whole["secrets"]) >= 3
    assert await world.ok("DELETE", "projects/billing/secrets/l-b") == {}
    error = await world.refused(404, "GET", "projects/billing/secrets/l-b")
    assert error["message"] == f"Secret [projects/{n}/secrets/l-b] not found."
    # Google's delete is for good: the name is free again at once
    await world.ok(
        "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="l-b"
    )
    error = await world.refused(
        409, "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="l-b"
    )
    assert error["status"] == "ALREADY_EXISTS"
    assert error["message"] == f"Secret [projects/{n}/secrets/l-b] already exists."


async def test_refusals(world: World) -> None:
    await world.ok(
        "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="mine"
    )
    await world.ok(
        "POST", "projects/billing/secrets/mine:addVersion", {"payload": {"data": "eA=="}}
    )
    # another identity: no role on billing
    error = await world.refused(
        403, "GET", "projects/billing/secrets/mine/versions/latest:access", token=world.other
    )
    assert error["status"] == "PERMISSION_DENIED"
    assert error["message"].startswith(
        "Permission 'secretmanager.versions.access' denied for resource "
        "'projects/billing/secrets/mine/versions/latest' (or it may not exist)."
    )
    assert error["details"][0]["reason"] == "IAM_PERMISSION_DENIED"
    # a reader's role does not add versions; a vault of another tenant or none is a 403 too
    error = await world.refused(
        403, "POST", "projects/shared/secrets/x:addVersion", {"payload": {"data": "eA=="}}
    )
    assert "secretmanager.versions.add" in error["message"]
    await world.refused(403, "GET", "projects/nowhere/secrets/x/versions/1:access")
    await world.refused(403, "GET", "projects/123456789012/secrets")
    # unknown secret
    await world.refused(404, "GET", "projects/billing/secrets/none/versions/latest:access")
    # bad token: 401 (the client refreshes and retries once)
    error = await world.refused(
        401, "GET", "projects/billing/secrets/mine/versions/1:access", token="x.y.z"
    )
    assert error["status"] == "UNAUTHENTICATED"
    response = await world.fed.kl.public.get(
        BASE + "/projects/billing/secrets/mine/versions/1:access"
    )
    assert response.status_code == 401
    # bad input: 400
    for path in (
        "projects/billing/secrets/mine/versions/0:access",
        "projects/billing/secrets/mine/versions/x:access",
        "projects/billing/secrets/a.b/versions/1:access",
        "projects/BAD/secrets/mine",
    ):
        assert (await world.call("GET", path)).status_code == 400, path
    error = await world.refused(
        400,
        "POST",
        "projects/billing/secrets/mine:addVersion",
        {"payload": {"data": b64(b"abc"), "dataCrc32c": "1"}},
    )
    assert error["status"] == "INVALID_ARGUMENT" and "Checksum mismatch" in error["message"]
    for body in (
        {},
        {"replication": {"userManaged": {"replicas": []}}},
        {"replication": {"automatic": {}}, "ttl": "5s"},
        {"replication": {"automatic": {}}, "nope": 1},
        {"replication": {"automatic": {}}, "labels": {"A": "b"}},
    ):
        await world.refused(400, "POST", "projects/billing/secrets", body, secretId="newone")
    await world.refused(400, "POST", "projects/billing/secrets", {"replication": {"automatic": {}}})
    # unknown paths and verbs
    await world.refused(404, "GET", "projects/billing/secrets/mine/versions/1:nope")
    await world.refused(404, "GET", "projects/billing/other")


async def test_every_decision_audited_with_the_workload(world: World) -> None:
    await world.ok("GET", "projects/billing/secrets/mine/versions/latest:access")
    await world.refused(
        403, "GET", "projects/billing/secrets/mine/versions/latest:access", token=world.other
    )
    page = await world.fed.kl.call("GET", "/v1/audit", limit="1000")
    events = [
        e
        for e in page["events"]
        if e["target"] == "/vaults/billing/secrets/mine" and e["action"] == "secrets/getSecret"
    ]
    assert {e["result"] for e in events} >= {"success", "failure"}
    assert all(e["workload"].get("sub") for e in events)


async def test_update_labels(world: World) -> None:
    await world.ok(
        "POST",
        "projects/billing/secrets",
        {"replication": {"automatic": {}}, "labels": {"team": "a", "env": "dev"}},
        secretId="relabel",
    )
    changed = await world.ok(
        "PATCH", "projects/billing/secrets/relabel", {"labels": {"team": "b"}}, updateMask="labels"
    )
    assert changed["labels"] == {"team": "b"}
    assert (await world.ok("GET", "projects/billing/secrets/relabel"))["labels"] == {"team": "b"}
    await world.refused(400, "PATCH", "projects/billing/secrets/relabel", {"labels": {}})
    await world.refused(
        400, "PATCH", "projects/billing/secrets/relabel", {"ttl": "5s"}, updateMask="ttl"
    )
    await world.refused(
        403, "PATCH", "projects/shared/secrets/x", {"labels": {}}, updateMask="labels"
    )


async def test_etags(world: World) -> None:
    await world.ok(
        "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="tagged"
    )
    version = await world.ok(
        "POST", "projects/billing/secrets/tagged:addVersion", {"payload": {"data": "eA=="}}
    )
    stale = version["etag"]
    off = await world.ok(
        "POST", "projects/billing/secrets/tagged/versions/1:disable", {"etag": stale}
    )
    assert off["etag"] != stale
    error = await world.refused(
        409, "POST", "projects/billing/secrets/tagged/versions/1:enable", {"etag": stale}
    )
    assert error["status"] == "ABORTED"
    secret = await world.ok("GET", "projects/billing/secrets/tagged")
    await world.refused(409, "DELETE", "projects/billing/secrets/tagged", etag='"nope"')
    assert await world.ok("DELETE", "projects/billing/secrets/tagged", etag=secret["etag"]) == {}


async def test_another_tenant_cannot_reach_a_vault(world: World) -> None:
    """An identity of tenant B naming tenant A's vault, by name or by number: 403, as for a
    project that does not exist."""
    kl = world.fed.kl
    b = await kl.call("POST", "/v1/tenants", {"alias": "tenant-b"})
    provider = gcpnames.provider(b["id"])
    await kl.call("POST", "/v1/identities", {"name": "intruder"}, tenant="tenant-b")
    await kl.call(
        "POST", "/v1/issuers", {"url": TEST_ISSUER, "jwks": world.fed.jwks}, tenant="tenant-b"
    )
    await kl.call(
        "POST",
        "/v1/identities/intruder/federated-credentials",
        {"name": "gcp", "issuer": TEST_ISSUER, "subject": SUBJECT, "audiences": [provider.name]},
        tenant="tenant-b",
    )
    await kl.call(
        "POST",
        "/v1/roles",
        {"identity": "intruder", "role": "secrets-officer", "scope": "/"},
        tenant="tenant-b",
    )
    tenant = await kl.services.broker.tenant(b["id"])
    token = world.fed.test_token(aud=[provider.name])
    issued = await kl.services.broker.gcp.exchange(tenant, token, provider, request_id=None)
    for project in ("billing", world.numbers["billing"]):
        error = await world.refused(
            403,
            "GET",
            f"projects/{project}/secrets/mine/versions/1:access",
            token=issued.access_token,
        )
        assert error["status"] == "PERMISSION_DENIED"
    await world.refused(403, "GET", "projects/billing/secrets", token=issued.access_token)


async def test_one_secret_in_every_dialect(world: World) -> None:
    """A secret AWS created without a value has no versions here; the first value any dialect
    writes is version 1; Google's binary payload is AWS's SecretBinary."""
    assert gsm.EMPTY_SECRET_CONTENT_TYPE == aws_smops.NO_VALUE_CONTENT_TYPE
    vaults = world.fed.kl.services.vaults
    admin = Call(Principal(world.fed.tenant_id, "admin", "admin", admin=True), "req-x")
    aws = aws_smops.Context(vaults, admin, "us-east-1")
    await aws_smops.OPERATIONS["CreateSecret"](aws, {"Name": "billing/from-aws"})
    error = await world.refused(
        404, "GET", "projects/billing/secrets/from-aws/versions/latest:access"
    )
    assert error["message"].endswith("/secrets/from-aws] not found or has no versions.")
    assert (await world.ok("GET", "projects/billing/secrets/from-aws/versions"))["versions"] == []
    await aws_smops.OPERATIONS["PutSecretValue"](
        aws, {"SecretId": "billing/from-aws", "SecretString": "v1"}
    )
    got = await world.ok("GET", "projects/billing/secrets/from-aws/versions/latest:access")
    assert got["name"].endswith("/secrets/from-aws/versions/1")
    assert base64.b64decode(got["payload"]["data"]) == b"v1"
    # created here, written by Key Vault (VaultService.set, as its PUT does)
    await world.ok(
        "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId="kv-after"
    )
    await vaults.set(admin, "billing", "kv-after", "from key vault", PropertyChanges())
    got = await world.ok("GET", "projects/billing/secrets/kv-after/versions/1:access")
    assert base64.b64decode(got["payload"]["data"]) == b"from key vault"
    # Google's bytes are AWS's SecretBinary
    blob = bytes([0xFF, 0x00, 0x80])
    await world.ok(
        "POST", "projects/billing/secrets/kv-after:addVersion", {"payload": {"data": b64(blob)}}
    )
    read = await aws_smops.OPERATIONS["GetSecretValue"](aws, {"SecretId": "billing/kv-after"})
    assert base64.b64decode(read["SecretBinary"]) == blob


# -- hostile input: a Google error, never a 500 ---------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_SEGMENT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)
_ROUTES = [
    ("GET", "projects/{p}/secrets"),
    ("POST", "projects/{p}/secrets"),
    ("GET", "projects/{p}/secrets/{s}"),
    ("DELETE", "projects/{p}/secrets/{s}"),
    ("PATCH", "projects/{p}/secrets/{s}"),
    ("POST", "projects/{p}/secrets/{s}:addVersion"),
    ("GET", "projects/{p}/secrets/{s}/versions"),
    ("GET", "projects/{p}/secrets/{s}/versions/{v}"),
    ("GET", "projects/{p}/locations/{l}/secrets/{s}/versions/{v}:access"),
    ("POST", "projects/{p}/secrets/{s}/versions/{v}:enable"),
    ("POST", "projects/{p}/secrets/{s}/versions/{v}:disable"),
    ("POST", "projects/{p}/secrets/{s}/versions/{v}:destroy"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(_ROUTES),
    p=st.sampled_from(["billing", "shared"]) | _SEGMENT,
    s=st.sampled_from(["mine", "st"]) | _SEGMENT,
    v=st.sampled_from(["1", "latest", "2"]) | _SEGMENT,
    body=_JSON,
    params=st.dictionaries(
        st.sampled_from(["pageSize", "pageToken", "filter", "secretId", "etag", "$alt"]),
        st.text(max_size=30),
        max_size=3,
    ),
)
async def test_hostile_input_is_a_google_error(
    world: World, route: tuple[str, str], p: str, s: str, v: str, body: Any, params: dict[str, str]
) -> None:
    method, template = route
    path = template.format(
        p=quote(p, safe=""), s=quote(s, safe=""), v=quote(v, safe=""), l="us-east1"
    )
    response = await world.fed.kl.public.request(
        method,
        BASE + "/" + path,
        json=body if method in ("POST", "PATCH") else None,
        params=params,
        headers={"authorization": f"Bearer {world.app}"},
    )
    assert response.status_code < 500, (path, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] == response.status_code and error["status"] and error["message"]
