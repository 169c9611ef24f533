"""The admin routes the console's health and vault pages read, on SQLite and PostgreSQL: the
key and CA rotation schedule, the audit head, vault secret counts, one page of secrets, a
secret's versions, and a value read audited ``via: console``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, ServerFactory


@pytest.fixture
def keyless(servers: ServerFactory, database_url: str) -> RunningServer:
    return servers.start("--database", database_url, dev=True)


def call(admin: httpx.Client, method: str, path: str, body: Any = None, **params: str) -> Any:
    answer = admin.request(method, path, json=body, params={"tenant": "default", **params})
    assert answer.status_code == 200, f"{method} {path}: {answer.text}"
    return answer.json()


def test_rotation_schedule(keyless: RunningServer) -> None:
    with keyless.admin() as admin:
        keys = call(admin, "GET", "/v1/tenants/default/keys")
        current = next(k for k in keys["keys"] if k["state"] == "current")
        assert keys["next_rotation"] == current["activated_at"] + keys["rotation_period"]
        assert all(k["published_until"] is None for k in keys["keys"])
        rotated = call(admin, "POST", "/v1/tenants/default/keys/rotate")
        keys = call(admin, "GET", "/v1/tenants/default/keys")
        retired = next(k for k in keys["keys"] if k["kid"] == rotated["retired"])
        assert retired["state"] == "retired"
        assert retired["published_until"] > retired["retired_at"]
        current = next(k for k in keys["keys"] if k["state"] == "current")
        assert current["kid"] == rotated["current"]
        assert keys["next_rotation"] == current["activated_at"] + keys["rotation_period"]
        cas = call(admin, "GET", "/v1/tenants/default/spiffe/cas")
        ca = next(c for c in cas["cas"] if c["state"] == "current")
        assert cas["next_rotation"] == ca["activated_at"] + cas["rotation_period"]


def test_audit_head(keyless: RunningServer) -> None:
    with keyless.admin() as admin:
        call(admin, "POST", "/v1/vaults", {"name": "headv"})
        head = call(admin, "GET", "/v1/audit/head")
        events = call(admin, "GET", "/v1/audit", limit="1000")["events"]
        assert head["head"]["seq"] == events[-1]["seq"]
        assert head["head"]["hash"] == events[-1]["hash"]
        assert head["head"]["time"] == events[-1]["time"]
        assert head["unchained"] == 0
        signed = call(admin, "POST", "/v1/audit/checkpoints")["checkpoint"]
        head = call(admin, "GET", "/v1/audit/head")
        assert head["checkpoint"] == {k: signed[k] for k in ("seq", "hash", "time")}


def test_vault_counts_pages_and_versions(keyless: RunningServer) -> None:
    with keyless.admin() as admin:
        call(admin, "POST", "/v1/vaults", {"name": "pages"})
        call(admin, "POST", "/v1/vaults", {"name": "empty"})
        for name in ("c", "a", "b", "d"):
            call(admin, "PUT", f"/v1/vaults/pages/secrets/{name}", {"value": f"{name}-1"})
        call(admin, "PUT", "/v1/vaults/pages/secrets/a", {"value": "a-2", "tags": {"k": "v"}})
        call(admin, "DELETE", "/v1/vaults/pages/secrets/d")
        vaults = {v["name"]: v for v in call(admin, "GET", "/v1/vaults", counts="true")}
        assert vaults["pages"]["secrets"] == 4 and vaults["empty"]["secrets"] == 0
        assert "secrets" not in call(admin, "GET", "/v1/vaults")[0]
        page = call(admin, "GET", "/v1/vaults/pages/secrets", limit="2")
        assert [s["name"] for s in page] == ["a", "b"]
        assert page[0]["number"] == 2 and "value" not in page[0]
        rest = call(admin, "GET", "/v1/vaults/pages/secrets", limit="2", after="b")
        assert [s["name"] for s in rest] == ["c"]
        assert [s["name"] for s in call(admin, "GET", "/v1/vaults/pages/secrets")] == [
            "a",
            "b",
            "c",
        ]
        deleted = call(admin, "GET", "/v1/vaults/pages/secrets", deleted="true", limit="5")
        assert [s["name"] for s in deleted] == ["d"]
        history = call(admin, "GET", "/v1/vaults/pages/secret-versions/a")
        assert [v["number"] for v in history["versions"]] == [2, 1]
        assert history["current_version"] == history["versions"][0]["version"]
        assert history["versions"][0]["tags"] == {"k": "v"}
        assert not any("value" in v or v["destroyed"] for v in history["versions"])
        for params in ({"limit": "0"}, {"limit": "x"}, {"deleted": "yes"}):
            refused = admin.get("/v1/vaults/pages/secrets", params={"tenant": "default", **params})
            assert refused.status_code == 400, params
        missing = admin.get("/v1/vaults/pages/secret-versions/zz", params={"tenant": "default"})
        assert missing.status_code == 404


def test_value_read_via_console_is_audited(keyless: RunningServer) -> None:
    with keyless.admin() as admin:
        call(admin, "POST", "/v1/vaults", {"name": "seen"})
        call(admin, "PUT", "/v1/vaults/seen/secrets/s", {"value": "the-value-1"})
        before = call(admin, "GET", "/v1/audit/head")["head"]["seq"]
        got = call(admin, "GET", "/v1/vaults/seen/secrets/s", via="console")
        assert got["value"] == "the-value-1"
        call(admin, "GET", "/v1/vaults/seen/secrets/s")  # the CLI's read: no via
        events = call(admin, "GET", "/v1/audit", after=str(before))["events"]
        reads = [e for e in events if e["action"] == "secrets/getSecret"]
        assert [e["workload"] for e in reads] == [{"via": "console"}, {}]
        assert all(e["target"] == "/vaults/seen/secrets/s" for e in reads)
        assert all(e["actor"] == "admin-socket" for e in reads)
        assert "the-value-1" not in str(events)
        refused = admin.get("/v1/vaults/seen/secrets/s", params={"via": "web"})
        assert refused.status_code == 400 and "'via'" in refused.text


def test_roles_that_reach_a_secret(keyless: RunningServer) -> None:
    with keyless.admin() as admin:
        for vault in ("held", "other"):
            call(admin, "POST", "/v1/vaults", {"name": vault})
        call(admin, "PUT", "/v1/vaults/held/secrets/s", {"value": "v"})
        for name in ("everywhere", "vault-wide", "just-s", "elsewhere", "sibling"):
            call(admin, "POST", "/v1/identities", {"name": name})
        for identity, role, scope in [
            ("everywhere", "reader", "/"),
            ("vault-wide", "secrets-user", "/vaults/held"),
            ("just-s", "secrets-officer", "/vaults/held/secrets/s"),
            ("elsewhere", "secrets-user", "/vaults/other"),
            ("sibling", "reader", "/vaults/held/secrets/t"),
        ]:
            call(admin, "POST", "/v1/roles", {"identity": identity, "role": role, "scope": scope})
        reach = call(admin, "GET", "/v1/roles", reaches="/vaults/held/secrets/s")
        assert sorted((a["identity"], a["scope"]) for a in reach) == [
            ("everywhere", "/"),
            ("just-s", "/vaults/held/secrets/s"),
            ("vault-wide", "/vaults/held"),
        ]
        assert len(call(admin, "GET", "/v1/roles")) == 5
        bad = admin.get("/v1/roles", params={"reaches": "/nowhere"})
        assert bad.status_code == 400 and "scope" in bad.text
