"""Secret Manager v1 REST (api/gcp/secretmanager.py) in process: the JSON shapes, Google's
messages and refusals, the audit, and one secret seen by every dialect (tests/api/gcp/smworld.py
has the world; the real client library drives the real server in test_secretmanager.py, hostile
input is test_secretmanager_hostile.py's).
"""

from __future__ import annotations

import base64

import pytest

from keyless.api.aws import smops as aws_smops
from keyless.core import gcpsecrets as gsm
from keyless.core.access import Principal
from keyless.core.secrets import PropertyChanges
from keyless.core.vault import Call
from tests.api.gcp.smworld import BASE, World, b64, crc
from tests.api.gcp.smworld import world as world  # the module's fixture

pytestmark = pytest.mark.asyncio(loop_scope="module")


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


async def test_one_secret_in_every_dialect(world: World) -> None:
    """A secret AWS created without a value has no versions here; the first value any dialect
    writes is version 1; Google's binary payload is AWS's SecretBinary."""
    assert gsm.EMPTY_SECRET_CONTENT_TYPE == aws_smops.NO_VALUE_CONTENT_TYPE  # one constant
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
