"""Store method for searching the audit log (core/auditsearch.py holds the rules).

The filters run in the database, on SQLite and PostgreSQL alike, within one window of seqs (a
primary-key range of at most ``query.scan`` rows), so a search costs a bounded read however big
the log is. The workload filters (namespace, pod) look for the key and value in the stored
workload text: it is sorted-key compact ASCII JSON (``auditchain.workload_json``), in which
``"namespace":"billing"`` can only be that key with that value (a quote inside a value is
escaped), so a substring test is exact, needs no JSON function, and still reads a row whose
workload was edited into something that is not JSON (verify names such rows; search skips them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keyless.core.auditchain import AuditRow, workload_json
from keyless.core.auditsearch import (
    ADMIN,
    DIALECT_ACTIONS,
    EXCHANGE_PREFIX,
    AuditPage,
    AuditQuery,
    page_of,
    window,
)
from keyless.store.audit import _row
from keyless.store.schema import audit_events

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def _contains(engine_dialect: str, column: Any, needle: str) -> Any:
    find = sa.func.strpos if engine_dialect == "postgresql" else sa.func.instr
    return find(column, needle) > 0


class AuditSearchMixin:
    engine: AsyncEngine

    async def search_audit(self, query: AuditQuery) -> AuditPage:
        c = audit_events.c
        async with self.engine.connect() as conn:
            head = (await conn.execute(sa.select(sa.func.max(c.seq)))).scalar_one_or_none()
            low, high = window(query, int(head or 0))
            if low > high:
                return page_of(query, [], low, high)
            where = [c.seq >= low, c.seq <= high]
            if query.tenant_id is not None:
                where.append(c.tenant_id == query.tenant_id)
            if query.actor is not None:
                where.append(c.actor == query.actor)
            if query.result is not None:
                where.append(c.result == query.result)
            if query.dialect == ADMIN:
                where.append(c.action.contains(" ", autoescape=True))
            elif query.dialect is not None:
                where.append(c.action.in_(DIALECT_ACTIONS[query.dialect]))
            if query.exchanges:
                where.append(c.action.startswith(EXCHANGE_PREFIX, autoescape=True))
            dialect = conn.dialect.name
            for key in ("namespace", "pod"):
                value = getattr(query, key)
                if value is not None:
                    needle = workload_json({key: value})[1:-1]  # "key":"value"
                    where.append(_contains(dialect, c.workload, needle))
            order = c.seq.asc() if query.order == "asc" else c.seq.desc()
            statement = sa.select(audit_events).where(*where).order_by(order).limit(query.limit)
            rows = [_row(r) for r in (await conn.execute(statement)).all()]
        return page_of(query, rows, low, high)

    async def audit_event(self, seq: int, tenant_id: str | None = None) -> AuditRow | None:
        """One stored event (None: no such seq, or another tenant's)."""
        c = audit_events.c
        statement = sa.select(audit_events).where(c.seq == seq)
        if tenant_id is not None:
            statement = statement.where(c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _row(row)
