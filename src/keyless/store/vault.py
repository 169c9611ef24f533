"""Store methods for vaults, secrets (versions, soft delete) and role assignments."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.core.errors import Conflict
from keyless.core.rbac import Assignment
from keyless.core.secrets import SecretState, SecretVersion, Vault
from keyless.store.engine import mark_changed
from keyless.store.federation import bump_revision
from keyless.store.schema import role_assignments, secret_versions, vaults
from keyless.store.schema import secrets_table as secrets

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from keyless.store.engine import Writer


def _version(row: Any) -> SecretVersion:
    return SecretVersion(
        vault=row.vault,
        name=row.name,
        version=row.version,
        content_type=row.content_type,
        tags=json.loads(row.tags),
        enabled=bool(row.enabled),
        not_before=row.not_before,
        expires=row.expires,
        created=row.created,
        updated=row.updated,
        number=row.number,
        destroyed=bool(row.destroyed),
    )


def _state(row: Any) -> SecretState:
    return SecretState(row.vault, row.name, row.current_version, row.deleted_at, row.purge_at)


def _version_values(v: SecretVersion, sealed: bytes) -> dict[str, Any]:
    return {
        "vault": v.vault,
        "name": v.name,
        "version": v.version,
        "sealed_value": sealed,
        "content_type": v.content_type,
        "tags": json.dumps(v.tags, sort_keys=True),
        "enabled": v.enabled,
        "not_before": v.not_before,
        "expires": v.expires,
        "created": v.created,
        "updated": v.updated,
        "number": v.number,
        "destroyed": v.destroyed,
    }


class VaultStoreMixin:
    engine: AsyncEngine
    writer: Writer

    # -- vaults ----------------------------------------------------------------------------

    async def create_vault(self, vault: Vault) -> Vault:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(vaults).values(
                        name=vault.name, tenant_id=vault.tenant_id, created_at=vault.created_at
                    )
                )
                # No cache holds a vault not yet made, but the set of vaults moved: the
                # writer's on_change tells the in-cluster vault Services (server/incluster.py).
                mark_changed(conn)
            return vault
        except IntegrityError:
            existing = await self.get_vault(vault.name)
            if existing is None or existing.tenant_id != vault.tenant_id:
                raise Conflict(f"vault name {vault.name!r} is already taken") from None
            return existing

    async def get_vault(self, name: str) -> Vault | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(vaults).where(vaults.c.name == name))).first()
        return Vault(row.name, row.tenant_id, row.created_at) if row else None

    async def list_vaults(self, tenant_id: str) -> list[Vault]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(vaults).where(vaults.c.tenant_id == tenant_id).order_by(vaults.c.name)
                )
            ).all()
        return [Vault(r.name, r.tenant_id, r.created_at) for r in rows]

    async def count_secrets(self, vault: str) -> int:
        """Secrets in the vault, soft-deleted ones included (they can still be recovered)."""
        async with self.engine.connect() as conn:
            count = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(secrets).where(secrets.c.vault == vault)
                )
            ).scalar_one()
        return int(count)

    async def delete_vault(self, tenant_id: str, name: str) -> bool:
        """Delete a vault with every secret in it and every role assignment on it or below.

        The assignments go too: a vault created later under the same name must not inherit
        the grants of the one deleted.
        """
        ra = role_assignments.c
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            await conn.execute(sa.delete(secret_versions).where(secret_versions.c.vault == name))
            await conn.execute(sa.delete(secrets).where(secrets.c.vault == name))
            await conn.execute(
                sa.delete(role_assignments).where(
                    ra.tenant_id == tenant_id,
                    sa.or_(ra.scope == f"/vaults/{name}", ra.scope.like(f"/vaults/{name}/%")),
                )
            )
            await bump_revision(conn, "rbac")
            result = await conn.execute(
                sa.delete(vaults).where(vaults.c.name == name, vaults.c.tenant_id == tenant_id)
            )
        return bool(result.rowcount)

    # -- secrets ---------------------------------------------------------------------------

    async def put_secret_version(
        self, props: SecretVersion, sealed: bytes, *, expect: int | None = None
    ) -> SecretVersion:
        """Add a version and make it current; refused while the name is soft-deleted. The
        version gets the next number of its name; with ``expect`` (check-and-set), only if
        the current version's number is ``expect`` (0: only if the name holds no version)."""
        c = secret_versions.c
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            state = await _lock_state(conn, props.vault, props.name)
            if state is not None and state.deleted_at is not None:
                raise _deleted_conflict(props.name)
            last = (
                await conn.execute(
                    sa.select(sa.func.max(c.number)).where(
                        c.vault == props.vault, c.name == props.name
                    )
                )
            ).scalar() or 0
            if expect is not None:
                current = 0
                if state is not None:
                    current = (
                        await conn.execute(
                            sa.select(c.number).where(
                                c.vault == props.vault,
                                c.name == props.name,
                                c.version == state.current_version,
                            )
                        )
                    ).scalar() or 0
                if current != expect:
                    raise Conflict(
                        "check-and-set parameter did not match the current version "
                        f"(expected {expect}, current {current})",
                        detail={"inner": "CheckAndSetMismatch"},
                    )
            props = replace(props, number=last + 1)
            if state is None:
                await conn.execute(
                    sa.insert(secrets).values(
                        vault=props.vault, name=props.name, current_version=props.version
                    )
                )
            else:
                await conn.execute(
                    sa.update(secrets)
                    .where(secrets.c.vault == props.vault, secrets.c.name == props.name)
                    .values(current_version=props.version)
                )
            await conn.execute(sa.insert(secret_versions).values(**_version_values(props, sealed)))
        return props

    async def get_secret_version_by_number(
        self, vault: str, name: str, number: int
    ) -> tuple[SecretVersion, bytes] | None:
        return await self._one_version(vault, name, secret_versions.c.number == number)

    async def _one_version(
        self, vault: str, name: str, which: sa.ColumnElement[bool]
    ) -> tuple[SecretVersion, bytes] | None:
        c = secret_versions.c
        query = sa.select(secret_versions).where(c.vault == vault, c.name == name, which)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (_version(row), bytes(row.sealed_value)) if row else None

    async def destroy_secret_versions(self, vault: str, name: str, numbers: list[int]) -> int:
        """Wipe these versions' values for good (they stay listed, disabled and destroyed)."""
        c = secret_versions.c
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            result = await conn.execute(
                sa.update(secret_versions)
                .where(
                    c.vault == vault, c.name == name, c.number.in_(numbers), c.destroyed.is_(False)
                )
                .values(sealed_value=b"", destroyed=True, enabled=False)
            )
        return int(result.rowcount or 0)

    async def get_secret_state(self, vault: str, name: str) -> SecretState | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(secrets).where(secrets.c.vault == vault, secrets.c.name == name)
                )
            ).first()
        return _state(row) if row else None

    async def get_secret_version(
        self, vault: str, name: str, version: str
    ) -> tuple[SecretVersion, bytes] | None:
        return await self._one_version(vault, name, secret_versions.c.version == version)

    async def get_current_secret(
        self, vault: str, name: str
    ) -> tuple[SecretState, SecretVersion, bytes] | None:
        """The name's state and its current version, in one query (the read hot path)."""
        v, s = secret_versions.c, secrets.c
        query = (
            sa.select(
                secret_versions, secrets.c.current_version, secrets.c.deleted_at, secrets.c.purge_at
            )
            .join(
                secrets,
                sa.and_(s.vault == v.vault, s.name == v.name, s.current_version == v.version),
            )
            .where(s.vault == vault, s.name == name)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        state = SecretState(vault, name, row.current_version, row.deleted_at, row.purge_at)
        return state, _version(row), bytes(row.sealed_value)

    async def update_secret_version(self, props: SecretVersion) -> None:
        c = secret_versions.c
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            await conn.execute(
                sa.update(secret_versions)
                .where(c.vault == props.vault, c.name == props.name, c.version == props.version)
                .values(
                    content_type=props.content_type,
                    tags=json.dumps(props.tags, sort_keys=True),
                    enabled=props.enabled,
                    not_before=props.not_before,
                    expires=props.expires,
                    updated=props.updated,
                )
            )

    async def list_secrets(
        self, vault: str, *, deleted: bool, after: str | None, limit: int
    ) -> list[tuple[SecretState, SecretVersion]]:
        v, s = secret_versions.c, secrets.c
        query = (
            sa.select(
                secret_versions, secrets.c.current_version, secrets.c.deleted_at, secrets.c.purge_at
            )
            .join(
                secrets,
                sa.and_(s.vault == v.vault, s.name == v.name, s.current_version == v.version),
            )
            .where(
                s.vault == vault, s.deleted_at.is_not(None) if deleted else s.deleted_at.is_(None)
            )
            .order_by(s.name)
            .limit(limit)
        )
        if after is not None:
            query = query.where(s.name > after)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (SecretState(vault, r.name, r.current_version, r.deleted_at, r.purge_at), _version(r))
            for r in rows
        ]

    async def list_secret_versions(
        self, vault: str, name: str, *, after: str | None, limit: int
    ) -> list[SecretVersion]:
        c = secret_versions.c
        query = (
            sa.select(secret_versions)
            .where(c.vault == vault, c.name == name)
            .order_by(c.version)
            .limit(limit)
        )
        if after is not None:
            query = query.where(c.version > after)
        async with self.engine.connect() as conn:
            return [_version(r) for r in (await conn.execute(query)).all()]

    async def all_secret_versions(self, vault: str, name: str) -> list[tuple[SecretVersion, bytes]]:
        c = secret_versions.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(secret_versions)
                    .where(c.vault == vault, c.name == name)
                    .order_by(c.number, c.created, c.version)
                )
            ).all()
        return [(_version(r), bytes(r.sealed_value)) for r in rows]

    async def mark_secret_deleted(self, vault: str, name: str, now: float, purge_at: float) -> bool:
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            result = await conn.execute(
                sa.update(secrets)
                .where(
                    secrets.c.vault == vault, secrets.c.name == name, secrets.c.deleted_at.is_(None)
                )
                .values(deleted_at=now, purge_at=purge_at)
            )
        return bool(result.rowcount)

    async def recover_secret(self, vault: str, name: str) -> bool:
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            result = await conn.execute(
                sa.update(secrets)
                .where(
                    secrets.c.vault == vault,
                    secrets.c.name == name,
                    secrets.c.deleted_at.is_not(None),
                )
                .values(deleted_at=None, purge_at=None)
            )
        return bool(result.rowcount)

    async def purge_secret(self, vault: str, name: str, *, only_deleted: bool = True) -> bool:
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            cond = [secrets.c.vault == vault, secrets.c.name == name]
            if only_deleted:
                cond.append(secrets.c.deleted_at.is_not(None))
            exists = (await conn.execute(sa.select(secrets.c.name).where(*cond))).first()
            if exists is None:
                return False
            await conn.execute(
                sa.delete(secret_versions).where(
                    secret_versions.c.vault == vault, secret_versions.c.name == name
                )
            )
            await conn.execute(sa.delete(secrets).where(*cond))
        return True

    async def purge_expired_secrets(self, now: float) -> int:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(secrets.c.vault, secrets.c.name).where(
                        secrets.c.purge_at.is_not(None), secrets.c.purge_at <= now
                    )
                )
            ).all()
        count = 0
        for row in rows:
            count += await self.purge_secret(row.vault, row.name)
        return count

    async def restore_secret(
        self, vault: str, name: str, versions: list[tuple[SecretVersion, bytes]], current: str
    ) -> None:
        async with self.writer.begin() as conn:
            await bump_revision(conn, "vault")  # other processes drop their caches
            state = await _lock_state(conn, vault, name)
            if state is not None:
                if state.deleted_at is not None:
                    raise _deleted_conflict(name)
                raise Conflict(
                    f"Secret {name} already exists; a backup can only be restored "
                    "under a name that is not in use."
                )
            await conn.execute(
                sa.insert(secrets).values(vault=vault, name=name, current_version=current)
            )
            await conn.execute(
                sa.insert(secret_versions), [_version_values(v, sealed) for v, sealed in versions]
            )

    # -- role assignments ------------------------------------------------------------------

    async def add_role_assignment(self, a: Assignment, now: float) -> bool:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(role_assignments).values(
                        tenant_id=a.tenant_id,
                        identity_id=a.identity_id,
                        role=a.role,
                        scope=a.scope,
                        created_at=now,
                    )
                )
                await bump_revision(conn, "rbac")
        except IntegrityError:
            return False
        return True

    async def remove_role_assignment(self, a: Assignment) -> bool:
        c = role_assignments.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(role_assignments).where(
                    c.tenant_id == a.tenant_id,
                    c.identity_id == a.identity_id,
                    c.role == a.role,
                    c.scope == a.scope,
                )
            )
            await bump_revision(conn, "rbac")
        return bool(result.rowcount)

    async def list_role_assignments(self, tenant_id: str | None = None) -> list[Assignment]:
        query = sa.select(role_assignments).order_by(role_assignments.c.scope)
        if tenant_id is not None:
            query = query.where(role_assignments.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Assignment(r.tenant_id, r.identity_id, r.role, r.scope) for r in rows]


async def _lock_state(conn: AsyncConnection, vault: str, name: str) -> SecretState | None:
    query = sa.select(secrets).where(secrets.c.vault == vault, secrets.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _state(row) if row else None


def _deleted_conflict(name: str) -> Conflict:
    return Conflict(
        f"Secret {name} is currently in a deleted but recoverable state, and its "
        "name cannot be reused; in this state, the secret can only be recovered "
        "or purged.",
        detail={"inner": "ObjectIsDeletedButRecoverable"},
    )
