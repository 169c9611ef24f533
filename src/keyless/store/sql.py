"""The one store implementation: SQLAlchemy Core over SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.core.auditkey import SEAL_CONTEXT as AUDIT_KEY_CONTEXT
from keyless.core.databases import database_seal_context
from keyless.core.errors import Unavailable
from keyless.core.models import DevCluster, SigningKeyRecord, Tenant
from keyless.core.ports import Rewrapper
from keyless.core.secrets import secret_seal_context
from keyless.store import migrate
from keyless.store.audit import AuditStoreMixin
from keyless.store.auditsearch import AuditSearchMixin
from keyless.store.auditwriter import AuditWriter
from keyless.store.databases import DatabaseStoreMixin
from keyless.store.engine import make_engine, writer_of
from keyless.store.federation import FederationStoreMixin, bump_revision
from keyless.store.graph import GraphStoreMixin
from keyless.store.schema import (
    audit_key,
    databases,
    dev_clusters,
    secret_versions,
    signing_keys,
    tenants,
)
from keyless.store.spiffe import SpiffeStoreMixin
from keyless.store.svids import SvidStoreMixin
from keyless.store.tokens import TokenStoreMixin
from keyless.store.urls import DatabaseUrl
from keyless.store.vault import VaultStoreMixin


def _key(row: Any) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=row.kid,
        tenant_id=row.tenant_id,
        alg=row.alg,
        state=row.state,
        created_at=row.created_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        sealed_private=bytes(row.sealed_private),
        public_jwk=json.loads(row.public_jwk),
    )


def _key_values(rec: SigningKeyRecord) -> dict[str, Any]:
    return {
        "kid": rec.kid,
        "tenant_id": rec.tenant_id,
        "alg": rec.alg,
        "state": rec.state,
        "created_at": rec.created_at,
        "activated_at": rec.activated_at,
        "retired_at": rec.retired_at,
        "sealed_private": rec.sealed_private,
        "public_jwk": json.dumps(rec.public_jwk, sort_keys=True),
    }


class SqlStore(
    FederationStoreMixin,
    VaultStoreMixin,
    AuditStoreMixin,
    AuditSearchMixin,
    TokenStoreMixin,
    DatabaseStoreMixin,
    SpiffeStoreMixin,
    SvidStoreMixin,
    GraphStoreMixin,
):
    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.writer = writer_of(self.engine, url)
        self.audit_writer = AuditWriter(url)

    @classmethod
    async def open(
        cls, raw_url: str, *, migrate_schema: bool = True, migrate_in_child: bool = False
    ) -> SqlStore:
        """``migrate_in_child``: migrate in a child process (a server's: see
        ``migrate.upgrade_in_child``)."""
        url = DatabaseUrl(raw_url)
        if migrate_schema and migrate_in_child:
            try:
                await asyncio.to_thread(migrate.upgrade_in_child, url)
            except (migrate.MigrationFailed, OSError, subprocess.SubprocessError) as exc:
                raise Unavailable(f"database {url.redacted()} cannot be migrated: {exc}") from exc
        elif migrate_schema:
            try:
                migrate.upgrade(url)
            except Exception as exc:
                raise Unavailable(
                    f"database {url.redacted()} cannot be migrated: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
        if url.is_sqlite:
            path = url.sqlite_path
            if os.path.exists(path):
                os.chmod(path, 0o600)
        return cls(url)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await asyncio.to_thread(self.audit_writer.close)
        await self.engine.dispose()

    # -- tenants ---------------------------------------------------------------------------

    async def get_tenant(self, id_or_alias: str) -> Tenant | None:
        query = sa.select(tenants).where(
            sa.or_(tenants.c.id == id_or_alias, tenants.c.alias == id_or_alias)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Tenant(row.id, row.alias, row.created_at) if row else None

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(tenants).values(
                        id=tenant.id, alias=tenant.alias, created_at=tenant.created_at
                    )
                )
            return tenant
        except IntegrityError:
            existing = await self.get_tenant(tenant.alias)
            if existing is None:
                raise
            return existing

    async def list_tenants(self) -> list[Tenant]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(tenants).order_by(tenants.c.created_at))).all()
        return [Tenant(r.id, r.alias, r.created_at) for r in rows]

    # -- signing keys ----------------------------------------------------------------------

    async def list_signing_keys(self, tenant_id: str) -> list[SigningKeyRecord]:
        query = (
            sa.select(signing_keys)
            .where(signing_keys.c.tenant_id == tenant_id)
            .order_by(signing_keys.c.created_at)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_key(r) for r in rows]

    async def bootstrap_signing_keys(
        self, current: SigningKeyRecord, upcoming: SigningKeyRecord
    ) -> bool:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(signing_keys), [_key_values(current), _key_values(upcoming)]
                )
        except IntegrityError:
            return False
        return True

    async def rotate_signing_keys(
        self, tenant_id: str, expected_current: str, upcoming: SigningKeyRecord, now: float
    ) -> bool:
        c = signing_keys.c
        try:
            async with self.writer.begin() as conn:
                retired = await conn.execute(
                    sa.update(signing_keys)
                    .where(
                        c.tenant_id == tenant_id, c.kid == expected_current, c.state == "current"
                    )
                    .values(state="retired", retired_at=now)
                )
                if retired.rowcount != 1:
                    await conn.rollback()
                    return False
                await conn.execute(
                    sa.update(signing_keys)
                    .where(c.tenant_id == tenant_id, c.state == "next")
                    .values(state="current", activated_at=now)
                )
                await conn.execute(sa.insert(signing_keys).values(**_key_values(upcoming)))
        except IntegrityError:
            return False
        return True

    async def prune_signing_keys(self, tenant_id: str, retired_before: float) -> int:
        c = signing_keys.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(signing_keys).where(
                    c.tenant_id == tenant_id, c.state == "retired", c.retired_at < retired_before
                )
            )
        return int(result.rowcount or 0)

    # -- sealed values ---------------------------------------------------------------------

    async def rewrap_all(self, rewrap: Rewrapper) -> int:
        count = 0
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # cached sealed secrets are re-wrapped too
            rows = (
                await conn.execute(sa.select(signing_keys.c.kid, signing_keys.c.sealed_private))
            ).all()
            for row in rows:
                blob = rewrap(SigningKeyRecord.seal_context(row.kid), bytes(row.sealed_private))
                await conn.execute(
                    sa.update(signing_keys)
                    .where(signing_keys.c.kid == row.kid)
                    .values(sealed_private=blob)
                )
                count += 1
            rows = (
                await conn.execute(sa.select(dev_clusters.c.name, dev_clusters.c.sealed_private))
            ).all()
            for row in rows:
                blob = rewrap(DevCluster.seal_context(row.name), bytes(row.sealed_private))
                await conn.execute(
                    sa.update(dev_clusters)
                    .where(dev_clusters.c.name == row.name)
                    .values(sealed_private=blob)
                )
                count += 1
            rows = (
                await conn.execute(
                    sa.select(
                        secret_versions.c.vault,
                        secret_versions.c.name,
                        secret_versions.c.version,
                        secret_versions.c.sealed_value,
                    ).where(secret_versions.c.destroyed.is_(False))  # nothing left to re-wrap
                )
            ).all()
            for row in rows:
                context = secret_seal_context(row.vault, row.name, row.version)
                await conn.execute(
                    sa.update(secret_versions)
                    .where(
                        secret_versions.c.vault == row.vault,
                        secret_versions.c.name == row.name,
                        secret_versions.c.version == row.version,
                    )
                    .values(sealed_value=rewrap(context, bytes(row.sealed_value)))
                )
                count += 1
            rows = (
                await conn.execute(
                    sa.select(databases.c.tenant_id, databases.c.name, databases.c.sealed_password)
                )
            ).all()
            for row in rows:
                context = database_seal_context(row.tenant_id, row.name)
                await conn.execute(
                    sa.update(databases)
                    .where(databases.c.tenant_id == row.tenant_id, databases.c.name == row.name)
                    .values(sealed_password=rewrap(context, bytes(row.sealed_password)))
                )
                count += 1
            count += await self._rewrap_spiffe_cas(conn, rewrap)
            sealed = (await conn.execute(sa.select(audit_key.c.sealed))).scalar_one_or_none()
            if sealed is not None:
                blob = rewrap(AUDIT_KEY_CONTEXT, bytes(sealed))
                await conn.execute(sa.update(audit_key).values(sealed=blob))
                count += 1
        return count
