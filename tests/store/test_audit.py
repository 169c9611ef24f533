"""The audit log in the store, on SQLite and PostgreSQL: append, list, verify, tampering."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import GENESIS, AuditHead, verify_log, workload_json
from keyless.store.sql import SqlStore


def _event(n: int, tenant: str = "t1") -> AuditEvent:
    return AuditEvent(
        time=1_700_000_000.25 + n,
        request_id=f"req-{n}",
        tenant_id=tenant,
        action="secret.get",
        target=f"/vaults/v/secrets/s{n}",
        result="success" if n % 2 else "failure",
        reason="" if n % 2 else "forbidden: no role",
        actor="3f2a-object-id" if n % 3 else None,
        workload={"iss": "https://issuer.test", "sub": "system:serviceaccount:demo:app", "n": n},
    )


async def _sql(store: SqlStore, statement: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(statement))


async def test_append_list_and_verify(store: SqlStore) -> None:
    assert await store.audit_head() == AuditHead(0, GENESIS, 0)
    assert (await verify_log(store)).ok
    assert await store.append_audit([]) == []
    assert await store.append_audit([_event(1)]) == [1]
    assert await store.append_audit([_event(2, "t2"), _event(3), _event(4, "t2")]) == [2, 3, 4]
    rows = await store.list_audit()
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0].prev_hash == GENESIS and rows[1].prev_hash == rows[0].hash
    assert rows[2].event == _event(3)  # reads back exactly as written
    assert [r.seq for r in await store.list_audit(after_seq=2)] == [3, 4]
    assert [r.seq for r in await store.list_audit(limit=2)] == [1, 2]
    assert [r.seq for r in await store.list_audit(tenant_id="t2")] == [2, 4]
    assert [r.seq for r in await store.list_audit(after_seq=2, tenant_id="t2")] == [4]
    head = await store.audit_head()
    assert (head.seq, head.hash, head.past) == (4, rows[-1].hash, 0)
    report = await verify_log(store)
    assert report.ok and report.count == 4 and report.last_hash == rows[-1].hash


async def test_verify_reads_in_batches(store: SqlStore) -> None:
    await store.append_audit([_event(n) for n in range(1, 26)])
    batches = [b async for b in store.audit_rows_for_verify(upto=23, batch=10)]
    assert [len(b) for b in batches] == [10, 10, 3]
    assert [r.seq for b in batches for r in b] == list(range(1, 24))


async def test_an_edited_row_is_named(store: SqlStore) -> None:
    await store.append_audit([_event(n) for n in range(1, 6)])
    await _sql(store, "UPDATE audit_events SET reason = 'x' WHERE seq = 2")
    report = await verify_log(store)
    assert not report.ok and report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("edited", 2)
    assert report.verified == 1


async def test_an_edited_workload_that_is_no_longer_json_is_named(store: SqlStore) -> None:
    await store.append_audit([_event(n) for n in range(1, 4)])
    await _sql(store, "UPDATE audit_events SET workload = 'garbage' WHERE seq = 3")
    report = await verify_log(store)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("edited", 3)


async def test_a_deleted_row_is_named(store: SqlStore) -> None:
    await store.append_audit([_event(n) for n in range(1, 6)])
    await _sql(store, "DELETE FROM audit_events WHERE seq = 3")
    report = await verify_log(store)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("removed", 3)


async def test_deleted_newest_rows_are_seen_against_the_head(store: SqlStore) -> None:
    await store.append_audit([_event(n) for n in range(1, 6)])
    await _sql(store, "DELETE FROM audit_events WHERE seq >= 4")
    report = await verify_log(store)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("removed", 4)


async def test_swapped_rows_are_reported(store: SqlStore) -> None:
    await store.append_audit([_event(n) for n in range(1, 6)])
    rows = {r.seq: r for r in await store.list_audit()}
    columns = ("time", "request_id", "tenant_id", "actor", "action", "target", "result", "reason")
    async with store.engine.begin() as conn:
        for seq, other in ((2, 4), (4, 2)):
            ev = rows[other].event
            values = {c: getattr(ev, c) for c in columns}
            await conn.execute(
                sa.text(
                    "UPDATE audit_events SET time=:time, request_id=:request_id, "
                    "tenant_id=:tenant_id, actor=:actor, action=:action, target=:target, "
                    "result=:result, reason=:reason, workload=:workload WHERE seq=:seq"
                ),
                {**values, "workload": workload_json(ev.workload), "seq": seq},
            )
    report = await verify_log(store)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("reordered", 2)
    assert "seq 4" in report.problem.message


async def test_a_row_past_the_head_is_reported(store: SqlStore) -> None:
    await store.append_audit([_event(1), _event(2)])
    await _sql(
        store,
        "INSERT INTO audit_events (seq, time, action, target, result, reason, workload, "
        "prev_hash, hash) SELECT 3, time, action, target, result, reason, workload, hash, hash "
        "FROM audit_events WHERE seq = 2",
    )
    assert (await store.audit_head()).past == 1
    report = await verify_log(store)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("inserted", 3)


async def test_concurrent_appenders_on_one_database_write_one_chain(database_url: str) -> None:
    """Two stores (two engines, as two server processes have), four writers each."""
    a, b = await SqlStore.open(database_url), await SqlStore.open(database_url)
    try:

        async def writer(store: SqlStore, w: int) -> list[int]:
            seqs: list[int] = []
            for n in range(50):
                seqs += await store.append_audit([_event(w * 1000 + n)])
            return seqs

        results = await asyncio.gather(*(writer((a, b)[w % 2], w) for w in range(8)))
        seqs = sorted(s for r in results for s in r)
        assert seqs == list(range(1, 401))
        for r in results:
            assert r == sorted(r)  # each writer's own events are in its order
        report = await verify_log(b)
        assert report.ok and report.count == 400, report
        assert (await a.audit_head()).seq == 400
    finally:
        await a.close()
        await b.close()
