"""The graph's store reads (store/graph.py) and the preview's audit read, on SQLite and
PostgreSQL: searched pages, counts, credentials and assignments of a page, newest exchanges."""

from __future__ import annotations

import pytest

from keyless.core.audit import AuditEvent
from keyless.core.models import Identity, Tenant
from keyless.core.rbac import Assignment
from keyless.core.secrets import Vault
from keyless.core.trust import new_credential
from keyless.store.sql import SqlStore


async def _seed(store: SqlStore) -> None:
    for tenant in ("t1", "t2"):
        await store.create_tenant(Tenant(tenant, f"alias-{tenant}", 0.0))
    for n in range(12):
        await store.create_identity(Identity(f"o{n}", f"c{n}", f"svc_{n:02}", "t1", 0.0))
    await store.create_identity(Identity("other", "c-other", "svc_00", "t2", 0.0))
    await store.create_identity(Identity("pct", "c-pct", "100%-sure", "t1", 0.0))
    cred = new_credential(
        id="f1",
        identity_id="o3",
        name="k8s",
        issuer="https://Cluster.example",
        subject_pattern="system:serviceaccount:pay:*",
    )
    await store.add_credential(cred, 0.0)
    pair = new_credential(
        id="f2",
        identity_id="o5",
        name="pair",
        issuers=["https://a.example", "https://Cluster.example"],
        subject="sa",
    )
    await store.add_credential(pair, 0.0)
    await store.create_vault(Vault("ledger", "t1", 0.0))
    await store.add_role_assignment(Assignment("t1", "o7", "secrets-user", "/vaults/ledger"), 0.0)


@pytest.mark.parametrize(
    ("query", "limit", "names", "total"),
    [
        pytest.param("", 3, ["100%-sure", "svc_00", "svc_01"], 13, id="all-paged"),
        pytest.param("SVC_1", 10, ["svc_10", "svc_11"], 2, id="name-any-case"),
        pytest.param("cluster.EXAMPLE", 10, ["svc_03", "svc_05"], 2, id="issuer"),
        pytest.param(":pay:", 10, ["svc_03"], 1, id="pattern"),
        pytest.param("ledger", 10, ["svc_07"], 1, id="scope"),
        pytest.param("%", 10, ["100%-sure"], 1, id="percent-literal"),
        pytest.param("sv_", 10, [], 0, id="underscore-literal"),
        pytest.param("svc", 0, [], 12, id="count-only"),
    ],
)
async def test_search_identities(
    store: SqlStore, query: str, limit: int, names: list[str], total: int
) -> None:
    await _seed(store)
    found, count = await store.search_identities("t1", query, limit)
    assert [i.name for i in found] == names
    assert count == total


@pytest.mark.parametrize(
    ("issuer", "query", "names"),
    [
        pytest.param("https://Cluster.example", "", ["svc_03", "svc_05"], id="alone-and-in-a-set"),
        pytest.param("https://a.example", "", ["svc_05"], id="first-of-a-set"),
        pytest.param("https://cluster.example", "", [], id="exact-case"),
        pytest.param("https://Cluster.example", "svc_05", ["svc_05"], id="and-search"),
    ],
)
async def test_search_by_issuer(store: SqlStore, issuer: str, query: str, names: list[str]) -> None:
    await _seed(store)
    found, count = await store.search_identities("t1", query, 10, issuer)
    assert [i.name for i in found] == names and count == len(names)


async def test_page_details_and_counts(store: SqlStore) -> None:
    await _seed(store)
    assert [c.name for c in await store.credentials_of(["o3", "o4"])] == ["k8s"]
    assert await store.credentials_of([]) == []
    assert [a.scope for a in await store.assignments_of("t1", ["o7", "o3"])] == ["/vaults/ledger"]
    assert await store.assignments_of("t2", ["o7"]) == []
    assert await store.tenant_counts("t1") == {
        "identities": 13,
        "issuers": 0,
        "credentials": 2,
        "vaults": 1,
        "role_assignments": 1,
    }
    assert (await store.tenant_counts("t2"))["identities"] == 1


async def test_recent_audit_is_newest_first_and_bounded(store: SqlStore) -> None:
    await _seed(store)

    def event(n: int, tenant: str, action: str) -> AuditEvent:
        return AuditEvent(float(n), None, tenant, action, "t", "success", workload={"n": n})

    events = [event(n, "t1", "token.exchange.client_credentials") for n in range(5)]
    events += [event(5, "t2", "token.exchange.client_credentials")]
    events += [event(6, "t1", "vault.access")]
    await store.append_audit(events)
    recent = await store.recent_audit("t1", "token.exchange.", 3)
    assert [r.event.workload["n"] for r in recent] == [4, 3, 2]
    # Only the last `window` events of the tenant are looked at: 6 (vault) and 4.
    assert [r.event.workload["n"] for r in await store.recent_audit("t1", "token.", 9, 2)] == [4]
