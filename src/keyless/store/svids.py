"""Store methods for issued X.509-SVIDs (core/svidauth.py): written when one is issued, read
by serial at the mTLS listener, pruned once expired."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keyless.core.svidauth import SvidRecord
from keyless.store.schema import spiffe_svids

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyless.store.engine import Writer


def _record(row: Any) -> SvidRecord:
    workload = json.loads(row.workload) if row.workload else {}
    return SvidRecord(
        serial=row.serial,
        tenant_id=row.tenant_id,
        object_id=row.object_id,
        client_id=row.client_id,
        spiffe_id=row.spiffe_id,
        not_before=row.not_before,
        not_after=row.not_after,
        fingerprint=row.fingerprint,
        workload=workload if isinstance(workload, dict) else {},
    )


class SvidStoreMixin:
    engine: AsyncEngine
    writer: Writer

    async def record_svids(self, records: list[SvidRecord]) -> None:
        """Insert the records in one transaction (core/svidauth.py batches concurrent issues)."""
        if not records:
            return
        rows = [
            {
                "serial": r.serial,
                "tenant_id": r.tenant_id,
                "object_id": r.object_id,
                "client_id": r.client_id,
                "spiffe_id": r.spiffe_id,
                "not_before": r.not_before,
                "not_after": r.not_after,
                "fingerprint": r.fingerprint,
                "workload": r.workload_json(),
            }
            for r in records
        ]
        async with self.writer.begin() as conn:
            await conn.execute(sa.insert(spiffe_svids), rows)

    async def find_svid(self, serial: str) -> SvidRecord | None:
        query = sa.select(spiffe_svids).where(spiffe_svids.c.serial == serial)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def prune_svids(self, expired_before: float) -> int:
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(spiffe_svids).where(spiffe_svids.c.not_after < expired_before)
            )
        return int(result.rowcount or 0)
