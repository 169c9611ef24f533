"""Store methods for the audit log: append (one chain across processes), list, verify reads.

Appenders serialise on the one ``audit_head`` row, in the same transaction as their inserts:
``SELECT … FOR UPDATE`` on PostgreSQL, SQLite's single write lock (``BEGIN IMMEDIATE``) on
SQLite; the appends run on one thread of their own (store/auditwriter.py). So several
processes sharing the database write one chain, and events become visible in ``seq``
order: a reader that asks for ``seq > N`` never skips one committed later.

The audit key is made by the writer too (under the head's lock); checkpoints are plain rows,
one per seq, inserted unless one is there already (several replicas may sign the same head).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import AuditHead, AuditRow
from keyless.core.auditcheckpoint import Checkpoint
from keyless.core.auditkey import AuditKey
from keyless.store.schema import audit_checkpoints, audit_events, audit_head

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyless.store.auditwriter import AuditWriter
    from keyless.store.engine import Writer

_HEAD_ID = 1


def _workload(raw: str) -> dict[str, Any]:
    # A row edited into something else must still load, so that verify can name it.
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"unreadable": raw}


def _time(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return float("nan")


def _row(r: Any) -> AuditRow:
    event = AuditEvent(
        time=_time(r.time),
        request_id=r.request_id,
        tenant_id=r.tenant_id,
        action=r.action,
        target=r.target,
        result=r.result,
        reason=r.reason,
        actor=r.actor,
        workload=_workload(r.workload),
    )
    return AuditRow(int(r.seq), r.prev_hash, r.hash, event, r.mac)


def _checkpoint(r: Any) -> Checkpoint:
    return Checkpoint(int(r.seq), r.hash, _time(r.time), r.kid, r.jws, r.jwk, r.mac)


class AuditStoreMixin:
    engine: AsyncEngine
    writer: Writer
    audit_writer: AuditWriter

    async def append_audit(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append in order; committed (durable) before this returns (see auditwriter.py)."""
        if not events:
            return []
        return await self.audit_writer.append(events)

    async def list_audit(
        self, after_seq: int = 0, limit: int = 100, tenant_id: str | None = None
    ) -> list[AuditRow]:
        c = audit_events.c
        query = sa.select(audit_events).where(c.seq > after_seq).order_by(c.seq).limit(limit)
        if tenant_id is not None:
            query = query.where(c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_row(r) for r in rows]

    async def recent_audit(
        self, tenant_id: str, action_prefix: str, limit: int, window: int = 5000
    ) -> list[AuditRow]:
        """The tenant's newest events whose action starts with ``action_prefix``, newest
        first, looking at most at its last ``window`` events (a bounded read however long
        the log; the console's policy preview)."""
        c = audit_events.c
        last = (
            sa.select(c.seq)
            .where(c.tenant_id == tenant_id)
            .order_by(c.seq.desc())
            .limit(window)
            .subquery()
        )
        query = (
            sa.select(audit_events)
            .where(c.seq.in_(sa.select(last.c.seq)), c.action.startswith(action_prefix))
            .order_by(c.seq.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_row(r) for r in rows]

    async def audit_head(self) -> AuditHead:
        """The head and, read in the same statement, how many rows lie past it (none should)."""
        h, c = audit_head.c, audit_events.c
        past = sa.select(sa.func.count()).where(c.seq > h.seq).scalar_subquery()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(h.seq, h.hash, past, h.mac).where(h.id == _HEAD_ID))
            ).first()
            if row is None:
                count = (await conn.execute(sa.select(sa.func.count(c.seq)))).scalar_one()
                return AuditHead(past=int(count))
        return AuditHead(int(row[0]), str(row[1]), int(row[2]), row[3])

    async def audit_row(self, seq: int) -> AuditRow | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(audit_events).where(audit_events.c.seq == seq))
            ).first()
        return None if row is None else _row(row)

    # -- the audit key ---------------------------------------------------------------------

    async def ensure_audit_key(self, make: Callable[[int], tuple[AuditKey, bytes]]) -> bytes:
        return await self.audit_writer.ensure_key(make)

    def use_audit_key(self, key: AuditKey) -> None:
        self.audit_writer.use_key(key)

    # -- checkpoints -----------------------------------------------------------------------

    async def add_audit_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        cp = checkpoint
        values = {
            "seq": cp.seq,
            "hash": cp.hash,
            "time": cp.time,
            "kid": cp.kid,
            "jws": cp.jws,
            "jwk": cp.jwk,
            "mac": cp.mac,
        }
        try:
            async with self.writer.begin() as conn:
                await conn.execute(sa.insert(audit_checkpoints).values(**values))
        except IntegrityError:
            pass  # another process signed the same head first: its checkpoint stands
        query = sa.select(audit_checkpoints).where(audit_checkpoints.c.seq == cp.seq)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:  # deleted meanwhile: say what was signed
            return cp
        return _checkpoint(row)

    async def last_audit_checkpoint(self) -> Checkpoint | None:
        c = audit_checkpoints.c
        query = sa.select(audit_checkpoints).order_by(c.seq.desc()).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _checkpoint(row)

    async def list_audit_checkpoints(
        self, after_seq: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[Checkpoint]:
        c = audit_checkpoints.c
        query = sa.select(audit_checkpoints).where(c.seq > after_seq).order_by(c.seq).limit(limit)
        if upto is not None:
            query = query.where(c.seq <= upto)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_checkpoint(r) for r in rows]

    async def audit_checkpoints_for_verify(
        self, batch: int = 1000
    ) -> AsyncGenerator[list[Checkpoint], None]:
        after = -(2**63)  # every row, even one planted at seq 0 or below
        while True:
            page = await self.list_audit_checkpoints(after_seq=after, limit=batch)
            if not page:
                return
            yield page
            after = page[-1].seq
            if len(page) < batch:
                return

    async def audit_rows_for_verify(
        self, upto: int, batch: int = 1000
    ) -> AsyncGenerator[list[AuditRow], None]:
        """Rows with ``seq <= upto`` in order, ``batch`` at a time, each batch its own read."""
        c = audit_events.c
        after = 0
        while True:
            query = (
                sa.select(audit_events)
                .where(c.seq > after, c.seq <= upto)
                .order_by(c.seq)
                .limit(batch)
            )
            async with self.engine.connect() as conn:
                rows = [_row(r) for r in (await conn.execute(query)).all()]
            if not rows:
                return
            yield rows
            after = rows[-1].seq
            if len(rows) < batch:
                return
