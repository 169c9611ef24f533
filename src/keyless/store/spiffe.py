"""Store methods for SPIFFE: CA generations (rotated by compare-and-swap like signing keys)
and federated trust domains' bundles (core/spiffeca.py, core/spiffefed.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.core.spiffeca import SpiffeCARecord
from keyless.core.spiffefed import FederatedDomain
from keyless.store.federation import bump_revision
from keyless.store.schema import spiffe_cas, spiffe_federation

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from keyless.core.ports import Rewrapper
    from keyless.store.engine import Writer

_LIVE = ("current", "next")


def _ca(row: Any) -> SpiffeCARecord:
    return SpiffeCARecord(
        ca_id=row.ca_id,
        tenant_id=row.tenant_id,
        state=row.state,
        created_at=row.created_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        sealed_private=bytes(row.sealed_private),
        intermediate=bytes(row.intermediate),
        root=bytes(row.root),
    )


def _ca_values(rec: SpiffeCARecord) -> dict[str, Any]:
    return {
        "ca_id": rec.ca_id,
        "tenant_id": rec.tenant_id,
        "state": rec.state,
        "slot": rec.state if rec.state in _LIVE else None,
        "created_at": rec.created_at,
        "activated_at": rec.activated_at,
        "retired_at": rec.retired_at,
        "sealed_private": rec.sealed_private,
        "intermediate": rec.intermediate,
        "root": rec.root,
    }


def _domain(row: Any) -> FederatedDomain:
    return FederatedDomain(
        tenant_id=row.tenant_id,
        trust_domain=row.trust_domain,
        bundle_url=row.bundle_url,
        bundle=json.loads(row.bundle) if row.bundle else None,
        fetched_at=row.fetched_at,
        refresh_at=row.refresh_at,
        last_error=row.last_error,
        created_at=row.created_at,
    )


class SpiffeStoreMixin:
    engine: AsyncEngine
    writer: Writer

    # -- CA generations ----------------------------------------------------------------------

    async def list_spiffe_cas(self, tenant_id: str) -> list[SpiffeCARecord]:
        c = spiffe_cas.c
        query = sa.select(spiffe_cas).where(c.tenant_id == tenant_id).order_by(c.created_at)
        async with self.engine.connect() as conn:
            return [_ca(r) for r in (await conn.execute(query)).all()]

    async def bootstrap_spiffe_cas(self, current: SpiffeCARecord, upcoming: SpiffeCARecord) -> bool:
        """Insert the first current and next generations; False if another process did."""
        try:
            async with self.writer.begin() as conn:
                await bump_revision(conn, "spiffe")
                await conn.execute(
                    sa.insert(spiffe_cas), [_ca_values(current), _ca_values(upcoming)]
                )
        except IntegrityError:
            return False
        return True

    async def rotate_spiffe_cas(
        self, tenant_id: str, expected_current: str, upcoming: SpiffeCARecord, now: float
    ) -> bool:
        """Atomically: current -> retired, next -> current, ``upcoming`` inserted as next; only
        if ``expected_current`` is still current (compare-and-swap)."""
        c = spiffe_cas.c
        try:
            async with self.writer.begin() as conn:
                retired = await conn.execute(
                    sa.update(spiffe_cas)
                    .where(
                        c.tenant_id == tenant_id, c.ca_id == expected_current, c.state == "current"
                    )
                    .values(state="retired", slot=None, retired_at=now)
                )
                if retired.rowcount != 1:
                    await conn.rollback()
                    return False
                await conn.execute(
                    sa.update(spiffe_cas)
                    .where(c.tenant_id == tenant_id, c.state == "next")
                    .values(state="current", slot="current", activated_at=now)
                )
                await conn.execute(sa.insert(spiffe_cas).values(**_ca_values(upcoming)))
                await bump_revision(conn, "spiffe")
        except IntegrityError:
            return False
        return True

    async def replace_next_spiffe_ca(self, expected_next: str, upcoming: SpiffeCARecord) -> bool:
        """Swap the ``next`` generation ``expected_next`` for ``upcoming`` (compare-and-swap:
        False if another process replaced or rotated it first)."""
        c = spiffe_cas.c
        try:
            async with self.writer.begin() as conn:
                gone = await conn.execute(
                    sa.delete(spiffe_cas).where(
                        c.tenant_id == upcoming.tenant_id,
                        c.ca_id == expected_next,
                        c.state == "next",
                    )
                )
                if gone.rowcount != 1:
                    await conn.rollback()
                    return False
                await conn.execute(sa.insert(spiffe_cas).values(**_ca_values(upcoming)))
                await bump_revision(conn, "spiffe")
        except IntegrityError:
            return False
        return True

    async def prune_spiffe_cas(self, tenant_id: str, retired_before: float) -> int:
        c = spiffe_cas.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(spiffe_cas).where(
                    c.tenant_id == tenant_id, c.state == "retired", c.retired_at < retired_before
                )
            )
        return int(result.rowcount or 0)

    async def _rewrap_spiffe_cas(self, conn: AsyncConnection, rewrap: Rewrapper) -> int:
        rows = (
            await conn.execute(sa.select(spiffe_cas.c.ca_id, spiffe_cas.c.sealed_private))
        ).all()
        for row in rows:
            blob = rewrap(SpiffeCARecord.seal_context(row.ca_id), bytes(row.sealed_private))
            await conn.execute(
                sa.update(spiffe_cas)
                .where(spiffe_cas.c.ca_id == row.ca_id)
                .values(sealed_private=blob)
            )
        return len(rows)

    # -- federated trust domains -------------------------------------------------------------

    async def add_federated_domain(self, domain: FederatedDomain) -> bool:
        """False if the tenant already federates with that trust domain."""
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(spiffe_federation).values(
                        tenant_id=domain.tenant_id,
                        trust_domain=domain.trust_domain,
                        bundle_url=domain.bundle_url,
                        bundle=None,
                        fetched_at=None,
                        refresh_at=domain.refresh_at,
                        last_error=None,
                        created_at=domain.created_at,
                    )
                )
                await bump_revision(conn, "spiffe")
        except IntegrityError:
            return False
        return True

    async def list_federated_domains(self, tenant_id: str | None = None) -> list[FederatedDomain]:
        f = spiffe_federation.c
        query = sa.select(spiffe_federation).order_by(f.tenant_id, f.trust_domain)
        if tenant_id is not None:
            query = query.where(f.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            return [_domain(r) for r in (await conn.execute(query)).all()]

    async def remove_federated_domain(self, tenant_id: str, trust_domain: str) -> bool:
        f = spiffe_federation.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(spiffe_federation).where(
                    f.tenant_id == tenant_id, f.trust_domain == trust_domain
                )
            )
            await bump_revision(conn, "spiffe")
        return bool(result.rowcount)

    async def record_federated_fetch(
        self,
        tenant_id: str,
        trust_domain: str,
        *,
        bundle: dict[str, Any] | None,
        now: float,
        refresh_at: float,
        error: str | None,
    ) -> None:
        """A fetch's outcome: a good bundle replaces the stored one; an error keeps it."""
        f = spiffe_federation.c
        values: dict[str, Any] = {"refresh_at": refresh_at, "last_error": error}
        if bundle is not None:
            values |= {"bundle": json.dumps(bundle, sort_keys=True), "fetched_at": now}
        async with self.writer.begin() as conn:
            await conn.execute(
                sa.update(spiffe_federation)
                .where(f.tenant_id == tenant_id, f.trust_domain == trust_domain)
                .values(**values)
            )
            if bundle is not None:
                await bump_revision(conn, "spiffe")
