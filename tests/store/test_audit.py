"""The audit log in the store, on SQLite and PostgreSQL: append, list, verify, tampering,
the audit key (made once, race-free) and checkpoints."""

from __future__ import annotations

import asyncio
import os

import pytest
import sqlalchemy as sa

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import GENESIS, AuditHead, workload_json
from keyless.core.auditcheckpoint import AuditCheckpoints
from keyless.core.auditlog import load_audit_key, verify_log
from keyless.core.clock import ManualClock
from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError
from keyless.core.keyring import KeyRing, generate_key
from keyless.store.sql import SqlStore

ROOT = RootKeys((os.urandom(32),))


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
        key, same = await asyncio.gather(
            load_audit_key(a, ROOT, ManualClock()), load_audit_key(b, ROOT, ManualClock())
        )
        assert key == same  # both made one, one of them was stored: both use that one

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
        report = await verify_log(b, key.macs())
        assert report.ok and report.count == 400, report
        assert (report.keyed_from, report.unkeyed) == (1, 0)
        assert (await a.audit_head()).seq == 400
    finally:
        await a.close()
        await b.close()


async def test_the_audit_key_is_made_once_and_keys_what_follows(store: SqlStore) -> None:
    """A log written before the key: its rows stay unkeyed, the key starts after them."""
    await store.append_audit([_event(n) for n in range(1, 4)])
    key = await load_audit_key(store, ROOT, ManualClock(5.0))
    assert (key.keyed_from, key.created_at) == (4, 5.0)
    head = await store.audit_head()
    assert head.mac == key.macs().head(3, head.hash)  # the head is keyed from the start
    assert await load_audit_key(store, ROOT, ManualClock(9.0)) == key  # loaded, not made again
    await store.append_audit([_event(4), _event(5)])
    rows = await store.list_audit()
    assert [r.mac is None for r in rows] == [True, True, True, False, False]
    assert rows[3].mac == key.macs().row(4, rows[3].hash)
    report = await verify_log(store, key.macs())
    assert report.ok, report.problem
    assert (report.count, report.keyed_from, report.unkeyed, report.macs) == (5, 4, 3, True)


async def test_the_key_is_sealed_and_rewrapped_with_the_root_key(store: SqlStore) -> None:
    key = await load_audit_key(store, ROOT, ManualClock())
    async with store.engine.connect() as conn:
        sealed = (await conn.execute(sa.text("SELECT sealed FROM audit_key"))).scalar_one()
    assert key.secret not in bytes(sealed)
    both = RootKeys((os.urandom(32), *ROOT.keys))
    assert await store.rewrap_all(lambda ctx, blob: both.rewrap(blob, ctx)) == 1
    new_only = RootKeys(both.keys[:1])
    assert await load_audit_key(store, new_only, ManualClock()) == key


@pytest.mark.parametrize("sealed", [b"\x01" + b"\x00" * 120, b"garbage"], ids=["zeros", "short"])
async def test_an_audit_key_that_does_not_open_is_refused(store: SqlStore, sealed: bytes) -> None:
    """A database writer can break the key (the server then refuses to start), not replace it."""
    await load_audit_key(store, ROOT, ManualClock())
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_key SET sealed = :s"), {"s": sealed})
    with pytest.raises(CryptoError):
        await load_audit_key(store, ROOT, ManualClock())


async def test_a_row_rewritten_without_the_key_fails_its_mac(store: SqlStore) -> None:
    key = await load_audit_key(store, ROOT, ManualClock())
    await store.append_audit([_event(n) for n in range(1, 4)])
    await _sql(
        store,
        "UPDATE audit_events SET mac = (SELECT mac FROM audit_events WHERE seq = 1) WHERE seq = 2",
    )
    report = await verify_log(store, key.macs())
    assert report.problem is not None
    assert (report.problem.check, report.problem.kind, report.problem.seq) == ("mac", "forged", 2)
    await _sql(store, "UPDATE audit_events SET mac = NULL WHERE seq = 2")
    report = await verify_log(store, key.macs())
    assert report.problem is not None and report.problem.kind == "missing"


def _ring() -> KeyRing:
    keys = [generate_key("t1", "ES256", ROOT, 1.0, state) for state in ("current", "next")]
    return KeyRing.build("t1", keys, ROOT, now=2.0, token_lifetime=3600)


async def test_checkpoints_are_stored_once_per_seq_and_verified(store: SqlStore) -> None:
    key = await load_audit_key(store, ROOT, ManualClock())
    ring = _ring()
    writers = [
        AuditCheckpoints(store, key.macs(), lambda: ring, "https://iss", ManualClock(float(t)))
        for t in (10, 20)
    ]
    assert await writers[0].write() is None  # nothing to sign yet
    await store.append_audit([_event(n) for n in range(1, 4)])
    first, second = await asyncio.gather(writers[0].write(), writers[1].write())
    assert first == second and first is not None and first.seq == 3  # one row per seq
    await store.append_audit([_event(4)])
    latest = await writers[0].write()
    assert latest is not None and latest.seq == 4
    assert await store.last_audit_checkpoint() == latest
    assert [c.seq for c in await store.list_audit_checkpoints()] == [3, 4]
    assert [c.seq for c in await store.list_audit_checkpoints(after_seq=3)] == [4]
    assert [c.seq for c in await store.list_audit_checkpoints(upto=3)] == [3]
    report = await verify_log(store, key.macs())
    assert report.ok and report.checkpoints == 2, report.problem

    # The row's columns must say what its JWS says; its JWS and JWK need the audit key's MAC.
    for statement, kind in (
        (
            "UPDATE audit_checkpoints SET hash = (SELECT prev_hash FROM audit_events "
            "WHERE seq = 3) WHERE seq = 3",
            "signature",
        ),
        (
            "UPDATE audit_checkpoints SET jws = (SELECT jws FROM audit_checkpoints "
            "WHERE seq = 4), hash = (SELECT hash FROM audit_checkpoints WHERE seq = 4) "
            "WHERE seq = 3",
            "forged",
        ),
    ):
        await _sql(store, statement)
        report = await verify_log(store, key.macs())
        assert report.problem is not None
        problem = report.problem
        assert (problem.check, problem.kind, problem.seq) == ("checkpoint", kind, 3), problem
