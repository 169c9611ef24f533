"""Searching the audit log in the store, on SQLite and PostgreSQL: filters, both orders, the
window cap and its cursor, and workload values that only look like a match."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from keyless.core.audit import AuditEvent
from keyless.core.auditsearch import AuditQuery
from keyless.store.sql import SqlStore


def _event(
    action: str,
    result: str = "success",
    *,
    tenant: str = "t1",
    actor: str | None = "oid-a",
    **workload: str,
) -> AuditEvent:
    return AuditEvent(
        time=1_700_000_000.0,
        request_id=None,
        tenant_id=tenant,
        action=action,
        target="https://vault.localhost",
        result=result,
        reason="",
        actor=actor,
        workload=workload,
    )


EVENTS = [
    _event("identity create", actor="admin-socket"),  # 1
    _event("token.exchange.client_credentials", namespace="billing", pod="api-1"),  # 2
    _event("token.exchange.aws-sts", "failure", namespace="billing", pod="api-2"),  # 3
    _event("token.exchange.gcp-sts", namespace="reports", pod="w-1", actor="oid-b"),  # 4
    _event("secrets/getSecret", namespace="billing", pod="api-1"),  # 5
    _event("token.exchange.gcp-impersonate", "failure", tenant="t2", namespace="billing"),  # 6
    # A value that holds the needle's text: escaped in the stored JSON, so no match.
    _event("token.exchange.vault-login", "failure", sub='x","namespace":"billing'),  # 7
    _event("token.exchange.client_credentials", "failure", namespace="billing-x"),  # 8
    _event("vault.mount", namespace="Billing"),  # 9
]


@pytest.fixture
async def logged(store: SqlStore) -> SqlStore:
    assert await store.append_audit(EVENTS) == list(range(1, 10))
    return store


async def _seqs(store: SqlStore, **kw: object) -> list[int]:
    page = await store.search_audit(AuditQuery(**kw))  # type: ignore[arg-type]
    return [r.seq for r in page.rows]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [9, 8, 7, 6, 5, 4, 3, 2, 1]),
        ({"tenant_id": "t1"}, [9, 8, 7, 5, 4, 3, 2, 1]),
        ({"namespace": "billing"}, [6, 5, 3, 2]),
        ({"namespace": "billing", "tenant_id": "t1"}, [5, 3, 2]),
        ({"pod": "api-1"}, [5, 2]),
        ({"result": "failure"}, [8, 7, 6, 3]),
        ({"actor": "oid-b"}, [4]),
        ({"dialect": "gcp"}, [6, 4]),
        ({"dialect": "azure"}, [8, 2]),
        ({"dialect": "vault"}, [9, 7]),
        ({"dialect": "admin"}, [1]),
        ({"exchanges": True, "result": "failure"}, [8, 7, 6, 3]),
        ({"namespace": "billing", "result": "failure", "dialect": "aws"}, [3]),
        ({"namespace": "nobody"}, []),
    ],
    ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()) if isinstance(v, dict) else None,
)
async def test_filters(logged: SqlStore, filters: dict[str, object], expected: list[int]) -> None:
    assert await _seqs(logged, **filters) == expected


async def test_pages_newest_first_and_oldest_first(logged: SqlStore) -> None:
    first = await logged.search_audit(AuditQuery(limit=4))
    assert [r.seq for r in first.rows] == [9, 8, 7, 6] and first.next == 6
    second = await logged.search_audit(AuditQuery(limit=4, before=first.next))
    assert [r.seq for r in second.rows] == [5, 4, 3, 2] and second.next == 2
    last = await logged.search_audit(AuditQuery(limit=4, before=second.next))
    assert [r.seq for r in last.rows] == [1] and last.next is None
    tail = await logged.search_audit(AuditQuery(after=6, limit=2))
    assert [r.seq for r in tail.rows] == [7, 8] and tail.next == 8
    tail = await logged.search_audit(AuditQuery(after=8, limit=2, result="failure"))
    assert tail.rows == () and tail.next == 9  # read up to the head: nothing to read again
    assert (await logged.search_audit(AuditQuery(after=9))).next == 9


async def test_the_window_caps_rows_read(logged: SqlStore) -> None:
    """A filter that matches little reads ``scan`` rows, not the log: the cursor goes on."""
    page = await logged.search_audit(AuditQuery(namespace="billing", scan=3))
    assert [r.seq for r in page.rows] == [] and (page.low, page.high, page.next) == (7, 9, 7)
    page = await logged.search_audit(AuditQuery(namespace="billing", scan=3, before=page.next))
    assert [r.seq for r in page.rows] == [6, 5] and page.next == 4
    page = await logged.search_audit(AuditQuery(namespace="billing", scan=3, before=page.next))
    assert [r.seq for r in page.rows] == [3, 2] and page.next is None
    tail = await logged.search_audit(AuditQuery(after=0, scan=2, namespace="billing"))
    assert [r.seq for r in tail.rows] == [2] and tail.next == 2


async def test_empty_log_and_one_event(store: SqlStore) -> None:
    page = await store.search_audit(AuditQuery())
    assert page.rows == () and page.next is None
    assert (await store.search_audit(AuditQuery(after=0))).next == 0
    await store.append_audit(EVENTS[:1])
    assert (await store.audit_event(1)) is not None
    assert (await store.audit_event(1, "t2")) is None
    assert (await store.audit_event(2)) is None


async def test_a_row_edited_into_non_json_is_skipped_not_fatal(logged: SqlStore) -> None:
    async with logged.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_events SET workload = '{oops' WHERE seq = 2"))
    assert await _seqs(logged, namespace="billing", tenant_id="t1") == [5, 3]
    assert len(await _seqs(logged)) == 9
