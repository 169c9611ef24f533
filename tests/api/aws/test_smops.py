"""Secrets Manager's operations (api/aws/smops.py) on keyless's own vault, in process.

The caller is the identity's principal as the SigV4 authentication makes it; every call goes
through ``VaultService`` (RBAC, audit). The wire and the real SDKs are test_secretsmanager.py's.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from keyless.api.aws import smops
from keyless.api.aws.smops import Context, SmError
from keyless.api.aws.smwire import error_code
from keyless.core import awssecrets as aws
from keyless.core.access import Principal
from keyless.core.errors import KeylessError
from keyless.core.vault import Call
from tests.support.inprocess import InProcess, in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")

FED = {"sub": "system:serviceaccount:demo:app", "kubernetes.io": {"namespace": "demo"}}


@dataclass
class World:
    kl: InProcess
    tenant_id: str
    app: Principal
    other: Principal

    def ctx(self, who: Principal | None = None) -> Context:
        return Context(self.kl.services.vaults, Call(who or self.app, "req-1"), "eu-west-1")

    async def op(self, name: str, body: Any, who: Principal | None = None) -> Any:
        return await smops.OPERATIONS[name](self.ctx(who), body)

    async def refused(self, name: str, body: Any, who: Principal | None = None) -> str:
        with pytest.raises(KeylessError) as info:
            await self.op(name, body, who)
        return error_code(info.value)[0]

    async def audit(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await self.kl.call("GET", "/v1/audit", limit="1000", after=str(after))
            if not page["events"]:
                return rows
            rows += page["events"]
            after = page["next"]


async def _principal(kl: InProcess, tenant_id: str, name: str) -> Principal:
    ident = await kl.call("POST", "/v1/identities", {"name": name})
    return Principal(
        tenant_id,
        ident["object_id"],
        ident["client_id"],
        fed=FED,
        via="sts:AssumeRoleWithWebIdentity",
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("smops")
    async with in_process(tmp, dev=True) as kl:
        tenant = await kl.call("GET", "/v1/tenants/default")
        app = await _principal(kl, tenant["id"], "app")
        other = await _principal(kl, tenant["id"], "other")
        for vault in ("billing", "shared", "private"):
            await kl.call("POST", "/v1/vaults", {"name": vault})
        for identity, role, scope in [
            ("app", "secrets-officer", "/vaults/billing"),
            ("app", "secrets-user", "/vaults/shared"),
            ("other", "secrets-officer", "/vaults/private"),
        ]:
            await kl.call("POST", "/v1/roles", {"identity": identity, "role": role, "scope": scope})
        yield World(kl, tenant["id"], app, other)


async def test_create_get_put_previous(world: World) -> None:
    made = await world.op(
        "CreateSecret",
        {
            "Name": "billing/db/password",
            "SecretString": "one",
            "Description": "the database",
            "Tags": [{"Key": "team", "Value": "billing"}],
        },
    )
    arn = made["ARN"]
    assert arn == aws.secret_arn(world.tenant_id, "eu-west-1", "billing", "db/password")
    assert made["Name"] == "billing/db/password"
    first = made["VersionId"]
    got = await world.op("GetSecretValue", {"SecretId": "billing/db/password"})
    assert got["SecretString"] == "one" and got["VersionStages"] == ["AWSCURRENT"]
    assert got["VersionId"] == first and got["ARN"] == arn
    assert isinstance(got["CreatedDate"], float)

    put = await world.op("PutSecretValue", {"SecretId": arn, "SecretString": "two"})
    assert put["VersionStages"] == ["AWSCURRENT"] and put["VersionId"] != first
    by_arn = await world.op("GetSecretValue", {"SecretId": arn})
    assert by_arn["SecretString"] == "two"
    previous = await world.op("GetSecretValue", {"SecretId": arn, "VersionStage": "AWSPREVIOUS"})
    assert previous["SecretString"] == "one" and previous["VersionId"] == first
    assert previous["VersionStages"] == ["AWSPREVIOUS"]
    old = await world.op("GetSecretValue", {"SecretId": arn, "VersionId": first})
    assert old["SecretString"] == "one" and old["VersionStages"] == ["AWSPREVIOUS"]

    described = await world.op("DescribeSecret", {"SecretId": "billing/db/password"})
    assert described["Description"] == "the database"  # inherited by the new version
    assert described["Tags"] == [{"Key": "team", "Value": "billing"}]
    assert described["VersionIdsToStages"] == {
        put["VersionId"]: ["AWSCURRENT"],
        first: ["AWSPREVIOUS"],
    }
    assert described["CreatedDate"] <= described["LastChangedDate"]


async def test_exists_and_missing(world: World) -> None:
    await world.op("CreateSecret", {"Name": "billing/dup", "SecretString": "x"})
    code = await world.refused("CreateSecret", {"Name": "billing/dup", "SecretString": "y"})
    assert code == "ResourceExistsException"
    for body in (
        {"SecretId": "billing/nope"},
        {"SecretId": "nope"},
        {"SecretId": "billing/dup", "VersionStage": "AWSPENDING"},
        {"SecretId": "billing/dup", "VersionStage": "AWSPREVIOUS"},  # only one version
        {"SecretId": "billing/dup", "VersionId": "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE"},
    ):
        assert await world.refused("GetSecretValue", body) == "ResourceNotFoundException", body
    code = await world.refused("PutSecretValue", {"SecretId": "billing/nope", "SecretString": "x"})
    assert code == "ResourceNotFoundException"
    code = await world.refused("CreateSecret", {"Name": "novault", "SecretString": "x"})
    assert code == "InvalidParameterException"


async def test_binary_values(world: World) -> None:
    data = bytes(range(200))
    blob = base64.b64encode(data).decode()
    await world.op("CreateSecret", {"Name": "billing/cert", "SecretBinary": blob})
    got = await world.op("GetSecretValue", {"SecretId": "billing/cert"})
    assert "SecretString" not in got and base64.b64decode(got["SecretBinary"]) == data
    await world.op("PutSecretValue", {"SecretId": "billing/cert", "SecretString": "text now"})
    got = await world.op("GetSecretValue", {"SecretId": "billing/cert"})
    assert got["SecretString"] == "text now" and "SecretBinary" not in got
    code = await world.refused(
        "PutSecretValue", {"SecretId": "billing/cert", "SecretString": "a", "SecretBinary": blob}
    )
    assert code == "InvalidParameterException"


async def test_created_without_a_value(world: World) -> None:
    made = await world.op("CreateSecret", {"Name": "billing/later", "Description": "soon"})
    assert "VersionId" not in made
    code = await world.refused("GetSecretValue", {"SecretId": "billing/later"})
    assert code == "ResourceNotFoundException"
    described = await world.op("DescribeSecret", {"SecretId": "billing/later"})
    assert described["VersionIdsToStages"] == {} and described["Description"] == "soon"
    put = await world.op("PutSecretValue", {"SecretId": "billing/later", "SecretString": "now"})
    described = await world.op("DescribeSecret", {"SecretId": "billing/later"})
    assert described["VersionIdsToStages"] == {put["VersionId"]: ["AWSCURRENT"]}
    code = await world.refused(
        "GetSecretValue", {"SecretId": "billing/later", "VersionStage": "AWSPREVIOUS"}
    )
    assert code == "ResourceNotFoundException"


async def test_update_and_tags(world: World) -> None:
    await world.op("CreateSecret", {"Name": "billing/api", "SecretString": "k1"})
    same = await world.op("UpdateSecret", {"SecretId": "billing/api", "Description": "API key"})
    assert "VersionId" not in same
    new = await world.op("UpdateSecret", {"SecretId": "billing/api", "SecretString": "k2"})
    assert "VersionId" in new
    await world.op(
        "TagResource",
        {
            "SecretId": "billing/api",
            "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}],
        },
    )
    await world.op("UntagResource", {"SecretId": "billing/api", "TagKeys": ["a"]})
    described = await world.op("DescribeSecret", {"SecretId": "billing/api"})
    assert described["Description"] == "API key"
    assert described["Tags"] == [{"Key": "b", "Value": "2"}]
    got = await world.op("GetSecretValue", {"SecretId": "billing/api"})
    assert got["SecretString"] == "k2"
    code = await world.refused(
        "TagResource", {"SecretId": "billing/api", "Tags": [{"Key": "aws:x", "Value": "1"}]}
    )
    assert code == "InvalidParameterException"


async def test_delete_restore_and_force(world: World) -> None:
    await world.op("CreateSecret", {"Name": "billing/temp", "SecretString": "t"})
    now = world.kl.clock.now()
    gone = await world.op("DeleteSecret", {"SecretId": "billing/temp", "RecoveryWindowInDays": 7})
    assert gone["DeletionDate"] == pytest.approx(now + 7 * 86400, abs=2)
    for op, body in [
        ("GetSecretValue", {"SecretId": "billing/temp"}),
        ("PutSecretValue", {"SecretId": "billing/temp", "SecretString": "x"}),
        ("CreateSecret", {"Name": "billing/temp", "SecretString": "x"}),
        ("DeleteSecret", {"SecretId": "billing/temp"}),
    ]:
        assert await world.refused(op, body) == "InvalidRequestException", op
    described = await world.op("DescribeSecret", {"SecretId": "billing/temp"})
    assert described["DeletedDate"] == pytest.approx(now, abs=2)
    listed = await world.op("ListSecrets", {"IncludePlannedDeletion": True})
    assert "billing/temp" in [s["Name"] for s in listed["SecretList"]]
    assert "billing/temp" not in [
        s["Name"] for s in (await world.op("ListSecrets", {}))["SecretList"]
    ]

    await world.op("RestoreSecret", {"SecretId": "billing/temp"})
    assert (await world.op("GetSecretValue", {"SecretId": "billing/temp"}))["SecretString"] == "t"
    await world.op("RestoreSecret", {"SecretId": "billing/temp"})  # live: a no-op, as AWS

    await world.op("DeleteSecret", {"SecretId": "billing/temp", "ForceDeleteWithoutRecovery": True})
    code = await world.refused("DescribeSecret", {"SecretId": "billing/temp"})
    assert code == "ResourceNotFoundException"
    await world.op("CreateSecret", {"Name": "billing/temp", "SecretString": "again"})  # name free
    code = await world.refused(
        "DeleteSecret", {"SecretId": "billing/temp", "RecoveryWindowInDays": 3}
    )
    assert code == "InvalidParameterException"


async def test_rbac_decides_and_audit_names_the_workload(world: World) -> None:
    await world.op("CreateSecret", {"Name": "private/key", "SecretString": "p"}, world.other)
    await world.kl.call("PUT", "/v1/vaults/shared/secrets/ro", {"value": "read-only"})
    # Another identity's secret, and a vault where app may only read.
    assert await world.refused("GetSecretValue", {"SecretId": "private/key"}) == (
        "AccessDeniedException"
    )
    assert (await world.op("GetSecretValue", {"SecretId": "shared/ro"}))["SecretString"] == (
        "read-only"
    )
    for op, body in [
        ("PutSecretValue", {"SecretId": "shared/ro", "SecretString": "x"}),
        ("CreateSecret", {"Name": "shared/new", "SecretString": "x"}),
        ("DeleteSecret", {"SecretId": "shared/ro"}),
        ("TagResource", {"SecretId": "shared/ro", "Tags": [{"Key": "k", "Value": "v"}]}),
    ]:
        assert await world.refused(op, body) == "AccessDeniedException", op
    events = await world.audit()
    denied = [
        e
        for e in events
        if e["result"] == "failure" and e["target"] == "/vaults/private/secrets/key"
    ]
    assert denied and denied[-1]["workload"]["sub"] == "system:serviceaccount:demo:app"
    assert denied[-1]["action"] == "secrets/getSecret"


async def test_list_pages_filters_and_reach(world: World) -> None:
    for i in range(5):
        await world.op(
            "CreateSecret",
            {
                "Name": f"billing/page/{i}",
                "SecretString": "v",
                "Tags": [{"Key": "n", "Value": str(i)}],
            },
        )
    names: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        body: dict[str, Any] = {
            "MaxResults": 2,
            "Filters": [{"Key": "name", "Values": ["billing/page/"]}],
        }
        if token:
            body["NextToken"] = token
        page = await world.op("ListSecrets", body)
        pages += 1
        names += [s["Name"] for s in page["SecretList"]]
        token = page.get("NextToken")
        if not token:
            break
    assert names == [f"billing/page/{i}" for i in range(5)] and pages >= 3
    everything = [s["Name"] for s in (await world.op("ListSecrets", {}))["SecretList"]]
    assert "private/key" not in everything  # no role on that vault
    assert any(n.startswith("shared/") for n in everything)
    entry = next(
        s
        for s in (await world.op("ListSecrets", {}))["SecretList"]
        if s["Name"] == "billing/page/3"
    )
    assert entry["Tags"] == [{"Key": "n", "Value": "3"}] and entry["ARN"].endswith(
        aws.arn_suffix(world.tenant_id, "billing", "page/3")
    )
    tagged = await world.op("ListSecrets", {"Filters": [{"Key": "tag-value", "Values": ["3"]}]})
    assert [s["Name"] for s in tagged["SecretList"]] == ["billing/page/3"]


async def test_batch_get(world: World) -> None:
    await world.op("CreateSecret", {"Name": "billing/batch/a", "SecretString": "A"})
    await world.op("CreateSecret", {"Name": "billing/batch/b", "SecretString": "B"})
    out = await world.op(
        "BatchGetSecretValue",
        {"SecretIdList": ["billing/batch/a", "billing/batch/b", "billing/batch/zz", "private/key"]},
    )
    assert [v["SecretString"] for v in out["SecretValues"]] == ["A", "B"]
    assert {e["SecretId"]: e["ErrorCode"] for e in out["Errors"]} == {
        "billing/batch/zz": "ResourceNotFoundException",
        "private/key": "AccessDeniedException",
    }
    by_filter = await world.op(
        "BatchGetSecretValue", {"Filters": [{"Key": "name", "Values": ["billing/batch/"]}]}
    )
    assert sorted(v["Name"] for v in by_filter["SecretValues"]) == [
        "billing/batch/a",
        "billing/batch/b",
    ]
    code = await world.refused("BatchGetSecretValue", {})
    assert code == "InvalidParameterException"


async def test_version_ids_list(world: World) -> None:
    made = await world.op("CreateSecret", {"Name": "billing/vers", "SecretString": "1"})
    second = await world.op("PutSecretValue", {"SecretId": "billing/vers", "SecretString": "2"})
    third = await world.op("PutSecretValue", {"SecretId": "billing/vers", "SecretString": "3"})
    staged = await world.op("ListSecretVersionIds", {"SecretId": "billing/vers"})
    assert [(v["VersionId"], v["VersionStages"]) for v in staged["Versions"]] == [
        (third["VersionId"], ["AWSCURRENT"]),
        (second["VersionId"], ["AWSPREVIOUS"]),
    ]
    every = await world.op(
        "ListSecretVersionIds", {"SecretId": "billing/vers", "IncludeDeprecated": True}
    )
    assert every["Versions"][-1] == {
        "VersionId": made["VersionId"],
        "VersionStages": [],
        "CreatedDate": every["Versions"][-1]["CreatedDate"],
    }


async def test_errors_map_to_aws_codes() -> None:
    assert error_code(SmError("ResourceExistsException", "x")) == ("ResourceExistsException", 400)


async def test_client_request_token_is_the_version_and_makes_retries_idempotent(
    world: World,
) -> None:
    token = "0b0c6d2e-8f43-4c1a-9a57-3d2f1e0a9b11"
    made = await world.op(
        "CreateSecret", {"Name": "billing/tok", "SecretString": "a", "ClientRequestToken": token}
    )
    assert made["VersionId"] == token
    again = "6f0b1f7e-2a8b-4c4e-8e55-0c9c4d7f2a10"
    body = {"SecretId": "billing/tok", "SecretString": "b", "ClientRequestToken": again}
    first = await world.op("PutSecretValue", body)
    retry = await world.op("PutSecretValue", body)  # a retry: no new version
    assert first == retry and first["VersionId"] == again
    versions = await world.op("ListSecretVersionIds", {"SecretId": "billing/tok"})
    assert [v["VersionId"] for v in versions["Versions"]] == [again, token]
    got = await world.op("GetSecretValue", {"SecretId": "billing/tok", "VersionId": token})
    assert got["SecretString"] == "a"
    changed = {**body, "SecretString": "c"}
    assert await world.refused("PutSecretValue", changed) == "ResourceExistsException"
    odd = await world.op(
        "PutSecretValue",
        {"SecretId": "billing/tok", "SecretString": "d", "ClientRequestToken": "x" * 40},
    )
    assert odd["VersionId"] not in (token, again)  # not a UUID: keyless picks the version
