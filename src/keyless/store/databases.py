"""Store methods of the database secrets engine: databases, roles, leases (core/dbengine.py).

A lease is claimed for revocation by one conditional UPDATE (``claim_lease``): on both
SQLite (one writer) and PostgreSQL (the row lock re-checks the WHERE clause after a
concurrent update commits) exactly one of several racing replicas sees ``rowcount == 1``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.core.databases import ACTIVE, REVOKED, REVOKING, Database, DbRole, Lease
from keyless.core.errors import Conflict
from keyless.store.schema import database_leases, database_roles, databases

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyless.store.engine import Writer


def _database(row: Any) -> Database:
    return Database(
        row.tenant_id,
        row.name,
        row.host,
        row.port,
        row.dbname,
        row.admin_user,
        row.sslmode,
        row.created_at,
    )


def _role(row: Any) -> DbRole:
    return DbRole(
        row.tenant_id,
        row.database,
        row.name,
        tuple(json.loads(row.grants)),
        row.creation_sql,
        row.revocation_sql,
        row.ttl,
        row.max_ttl,
        row.created_at,
    )


def _lease(row: Any) -> Lease:
    return Lease(
        suffix=row.suffix,
        tenant_id=row.tenant_id,
        database=row.database,
        role=row.role,
        username=row.username,
        actor=row.actor,
        workload=json.loads(row.workload),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        max_expires_at=row.max_expires_at,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        revoked_at=row.revoked_at,
    )


class DatabaseStoreMixin:
    engine: AsyncEngine
    writer: Writer

    # -- databases ------------------------------------------------------------------------

    async def put_database(self, db: Database, sealed: bytes) -> Database:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(databases).values(
                        tenant_id=db.tenant_id,
                        name=db.name,
                        host=db.host,
                        port=db.port,
                        dbname=db.dbname,
                        admin_user=db.admin_user,
                        sslmode=db.sslmode,
                        sealed_password=sealed,
                        created_at=db.created_at,
                    )
                )
            return db
        except IntegrityError:
            found = await self.get_database(db.tenant_id, db.name)
            if found is None or found[0].url != db.url:
                raise Conflict(
                    f"database {db.name!r} is already registered with another URL"
                ) from None
            return found[0]

    async def get_database(self, tenant_id: str, name: str) -> tuple[Database, bytes] | None:
        c = databases.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(databases).where(c.tenant_id == tenant_id, c.name == name)
                )
            ).first()
        return (_database(row), bytes(row.sealed_password)) if row else None

    async def list_databases(self, tenant_id: str) -> list[Database]:
        c = databases.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(databases).where(c.tenant_id == tenant_id).order_by(c.name)
                )
            ).all()
        return [_database(r) for r in rows]

    async def set_database_password(self, tenant_id: str, name: str, sealed: bytes) -> None:
        c = databases.c
        async with self.writer.begin() as conn:
            await conn.execute(
                sa.update(databases)
                .where(c.tenant_id == tenant_id, c.name == name)
                .values(sealed_password=sealed)
            )

    async def all_database_passwords(self) -> list[tuple[str, str, bytes]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(databases.c.tenant_id, databases.c.name, databases.c.sealed_password)
                )
            ).all()
        return [(r.tenant_id, r.name, bytes(r.sealed_password)) for r in rows]

    # -- roles ----------------------------------------------------------------------------

    async def put_db_role(self, role: DbRole) -> DbRole:
        """Create, or change an existing role's templates and TTLs (leases issued under the
        old ones keep their revocation: the current template is used at revocation)."""
        values = {
            "grants": json.dumps(list(role.grants)),
            "creation_sql": role.creation_sql,
            "revocation_sql": role.revocation_sql,
            "ttl": role.ttl,
            "max_ttl": role.max_ttl,
        }
        c = database_roles.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.update(database_roles)
                .where(
                    c.tenant_id == role.tenant_id, c.database == role.database, c.name == role.name
                )
                .values(**values)
            )
            if not result.rowcount:
                await conn.execute(
                    sa.insert(database_roles).values(
                        tenant_id=role.tenant_id,
                        database=role.database,
                        name=role.name,
                        created_at=role.created_at,
                        **values,
                    )
                )
        return role

    async def get_db_role(self, tenant_id: str, database: str, name: str) -> DbRole | None:
        c = database_roles.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(database_roles).where(
                        c.tenant_id == tenant_id, c.database == database, c.name == name
                    )
                )
            ).first()
        return _role(row) if row else None

    async def list_db_roles(self, tenant_id: str, database: str) -> list[DbRole]:
        c = database_roles.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(database_roles)
                    .where(c.tenant_id == tenant_id, c.database == database)
                    .order_by(c.name)
                )
            ).all()
        return [_role(r) for r in rows]

    # -- leases ---------------------------------------------------------------------------

    async def insert_lease(self, lease: Lease) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                sa.insert(database_leases).values(
                    suffix=lease.suffix,
                    tenant_id=lease.tenant_id,
                    database=lease.database,
                    role=lease.role,
                    username=lease.username,
                    actor=lease.actor,
                    workload=json.dumps(lease.workload, sort_keys=True),
                    issued_at=lease.issued_at,
                    expires_at=lease.expires_at,
                    max_expires_at=lease.max_expires_at,
                    state=lease.state,
                    attempts=lease.attempts,
                )
            )

    async def delete_lease(self, suffix: str) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(sa.delete(database_leases).where(database_leases.c.suffix == suffix))

    async def get_lease(self, suffix: str) -> Lease | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(database_leases).where(database_leases.c.suffix == suffix)
                )
            ).first()
        return _lease(row) if row else None

    async def list_leases(self, tenant_id: str, *, include_revoked: bool) -> list[Lease]:
        c = database_leases.c
        query = sa.select(database_leases).where(c.tenant_id == tenant_id)
        if not include_revoked:
            query = query.where(c.state != REVOKED)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(c.issued_at, c.suffix))).all()
        return [_lease(r) for r in rows]

    async def extend_lease(self, suffix: str, expires_at: float, now: float) -> bool:
        c = database_leases.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.update(database_leases)
                .where(c.suffix == suffix, c.state == ACTIVE, c.expires_at > now)
                .values(expires_at=expires_at)
            )
        return bool(result.rowcount)

    @staticmethod
    def _due(now: float) -> sa.ColumnElement[bool]:
        c = database_leases.c
        return sa.or_(
            sa.and_(c.state == ACTIVE, c.expires_at <= now),
            sa.and_(c.state == REVOKING, c.next_attempt_at <= now),
        )

    async def due_leases(self, now: float, limit: int) -> list[Lease]:
        c = database_leases.c
        query = sa.select(database_leases).where(self._due(now)).order_by(c.expires_at).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_lease(r) for r in rows]

    async def claim_lease(
        self, suffix: str, claimer: str, now: float, until: float, *, due_only: bool
    ) -> bool:
        c = database_leases.c
        claimable = (
            self._due(now)
            if due_only
            else sa.or_(c.state == ACTIVE, sa.and_(c.state == REVOKING, c.next_attempt_at <= now))
        )
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.update(database_leases)
                .where(c.suffix == suffix, claimable)
                .values(state=REVOKING, claimed_by=claimer, next_attempt_at=until)
            )
        return result.rowcount == 1

    async def finish_lease(self, suffix: str, claimer: str, now: float) -> bool:
        c = database_leases.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.update(database_leases)
                .where(c.suffix == suffix, c.state == REVOKING, c.claimed_by == claimer)
                .values(state=REVOKED, revoked_at=now, next_attempt_at=None)
            )
        return result.rowcount == 1

    async def retry_lease(self, suffix: str, claimer: str, at: float, attempts: int) -> None:
        c = database_leases.c
        async with self.writer.begin() as conn:
            await conn.execute(
                sa.update(database_leases)
                .where(c.suffix == suffix, c.state == REVOKING, c.claimed_by == claimer)
                .values(next_attempt_at=at, attempts=attempts)
            )

    async def forget_revoked_leases(self, before: float) -> int:
        c = database_leases.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(database_leases).where(c.state == REVOKED, c.revoked_at < before)
            )
        return int(result.rowcount or 0)
