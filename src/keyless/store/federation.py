"""Store methods for identities, issuers, federated credentials, dev clusters and revisions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.core.errors import Conflict
from keyless.core.gcppolicy import GoogleSource
from keyless.core.issuers import IssuerRecord
from keyless.core.models import DevCluster, Identity
from keyless.core.trust import FederatedCredential
from keyless.store.engine import mark_changed
from keyless.store.schema import (
    dev_clusters,
    federated_credentials,
    identities,
    issuers,
    revisions,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyless.store.engine import Writer


def _identity(row: Any) -> Identity:
    return Identity(row.object_id, row.client_id, row.name, row.tenant_id, row.created_at)


def _credential(row: Any) -> FederatedCredential:
    return FederatedCredential(
        id=row.id,
        identity_id=row.identity_id,
        name=row.name,
        issuer=row.issuer,
        subject=row.subject,
        subject_pattern=row.subject_pattern,
        audiences=tuple(json.loads(row.audiences)),
        condition=row.condition,
        issuers=tuple(json.loads(row.issuers)) if row.issuers else (),
        google=_google(row.google),
    )


def _google(text: str | None) -> GoogleSource | None:
    if not text:
        return None
    data = json.loads(text)
    return GoogleSource(
        data["member"],
        tuple(sorted((data.get("attribute_mapping") or {}).items())),
        data.get("attribute_condition"),
    )


def _settings(credential: FederatedCredential) -> dict[str, Any]:
    """The columns of a credential that ``update_credential`` replaces."""
    google = credential.google
    return {
        "issuer": credential.issuer,
        "subject": credential.subject,
        "subject_pattern": credential.subject_pattern,
        "audiences": json.dumps(list(credential.audiences)),
        "condition": credential.condition,
        "issuers": json.dumps(list(credential.issuers)) if credential.issuers else None,
        "google": json.dumps(google.view(), sort_keys=True) if google is not None else None,
    }


def _row(credential: FederatedCredential, created_at: float) -> dict[str, Any]:
    return {
        "id": credential.id,
        "identity_id": credential.identity_id,
        "name": credential.name,
        **_settings(credential),
        "created_at": created_at,
    }


class FederationStoreMixin:
    engine: AsyncEngine
    writer: Writer

    # -- identities ------------------------------------------------------------------------

    async def create_identity(self, identity: Identity) -> Identity:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(identities).values(
                        object_id=identity.object_id,
                        tenant_id=identity.tenant_id,
                        client_id=identity.client_id,
                        name=identity.name,
                        created_at=identity.created_at,
                    )
                )
                await bump_revision(conn, "federation")
        except IntegrityError:
            existing = await self.get_identity(identity.tenant_id, identity.name)
            if existing is None:
                raise Conflict(f"identity {identity.name!r} conflicts with another") from None
            return existing
        return identity

    async def get_identity(self, tenant_id: str, name_or_id: str) -> Identity | None:
        c = identities.c
        query = sa.select(identities).where(
            c.tenant_id == tenant_id,
            sa.or_(c.name == name_or_id, c.client_id == name_or_id, c.object_id == name_or_id),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _identity(row) if row else None

    async def list_identities(self, tenant_id: str | None = None) -> list[Identity]:
        query = sa.select(identities).order_by(identities.c.name)
        if tenant_id is not None:
            query = query.where(identities.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            return [_identity(r) for r in (await conn.execute(query)).all()]

    async def delete_identity(self, object_id: str) -> bool:
        async with self.writer.begin() as conn:
            await conn.execute(
                sa.delete(federated_credentials).where(
                    federated_credentials.c.identity_id == object_id
                )
            )
            result = await conn.execute(
                sa.delete(identities).where(identities.c.object_id == object_id)
            )
            await bump_revision(conn, "federation")
        return bool(result.rowcount)

    async def rename_identity(self, object_id: str, name: str) -> bool:
        """Give an identity a new name (its ids, credentials and roles stay); False if gone."""
        try:
            async with self.writer.begin() as conn:
                result = await conn.execute(
                    sa.update(identities)
                    .where(identities.c.object_id == object_id)
                    .values(name=name)
                )
                await bump_revision(conn, "federation")
        except IntegrityError:
            raise Conflict(f"an identity named {name!r} already exists") from None
        return bool(result.rowcount)

    # -- issuers ---------------------------------------------------------------------------

    async def add_issuer(self, tenant_id: str, record: IssuerRecord) -> bool:
        """Insert, or replace the key source (or uploaded JWKS) of an existing issuer.

        True if it was new; an issuer re-added exactly as it is changes nothing.
        """
        jwks = json.dumps(record.jwks, sort_keys=True) if record.jwks is not None else None
        updated_at = record.updated_at or record.created_at
        async with self.writer.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(issuers.c.jwks, issuers.c.source).where(
                        issuers.c.tenant_id == tenant_id, issuers.c.url == record.url
                    )
                )
            ).first()
            if row is None:
                await conn.execute(
                    sa.insert(issuers).values(
                        tenant_id=tenant_id,
                        url=record.url,
                        jwks=jwks,
                        source=record.source,
                        created_at=record.created_at,
                        updated_at=updated_at,
                    )
                )
            elif (row.jwks, row.source) != (jwks, record.source):
                await conn.execute(
                    sa.update(issuers)
                    .where(issuers.c.tenant_id == tenant_id, issuers.c.url == record.url)
                    .values(jwks=jwks, source=record.source, updated_at=updated_at)
                )
            await bump_revision(conn, "federation")
        return row is None

    async def list_issuers(self, tenant_id: str | None = None) -> list[tuple[str, IssuerRecord]]:
        query = sa.select(issuers).order_by(issuers.c.url)
        if tenant_id is not None:
            query = query.where(issuers.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (
                r.tenant_id,
                IssuerRecord(
                    url=r.url,
                    jwks=json.loads(r.jwks) if r.jwks else None,
                    created_at=r.created_at,
                    kubernetes_api=r.source == "kubernetes",
                    updated_at=r.updated_at,
                ),
            )
            for r in rows
        ]

    async def remove_issuer(self, tenant_id: str, url: str) -> bool:
        fic, ident = federated_credentials.c, identities.c
        joined = federated_credentials.join(identities, fic.identity_id == ident.object_id)
        async with self.writer.begin() as conn:
            used = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(joined)
                    .where(ident.tenant_id == tenant_id, fic.issuer == url)
                )
            ).scalar_one()
            # An issuer named later in an issuer set (the first is ``issuer``): read the sets.
            sets = await conn.execute(
                sa.select(fic.issuers)
                .select_from(joined)
                .where(ident.tenant_id == tenant_id, fic.issuers.is_not(None), fic.issuer != url)
            )
            used += sum(url in json.loads(row.issuers) for row in sets)
            if used:
                raise Conflict(
                    f"issuer {url} is named by {used} federated credential(s); remove them first"
                )
            result = await conn.execute(
                sa.delete(issuers).where(issuers.c.tenant_id == tenant_id, issuers.c.url == url)
            )
            await bump_revision(conn, "federation")
        return bool(result.rowcount)

    # -- federated credentials -------------------------------------------------------------

    async def add_credential(
        self, credential: FederatedCredential, created_at: float
    ) -> FederatedCredential:
        """Insert; an identical credential under the same name is returned unchanged."""
        values = _row(credential, created_at)
        try:
            async with self.writer.begin() as conn:
                await conn.execute(sa.insert(federated_credentials).values(**values))
                await bump_revision(conn, "federation")
            return credential
        except IntegrityError:
            existing = await self.get_credential(credential.identity_id, credential.name)
            if existing is None:
                raise
            return existing

    async def get_credential(self, identity_id: str, name: str) -> FederatedCredential | None:
        c = federated_credentials.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(federated_credentials).where(
                        c.identity_id == identity_id, c.name == name
                    )
                )
            ).first()
        return _credential(row) if row else None

    async def list_credentials(self, identity_id: str | None = None) -> list[FederatedCredential]:
        query = sa.select(federated_credentials).order_by(federated_credentials.c.name)
        if identity_id is not None:
            query = query.where(federated_credentials.c.identity_id == identity_id)
        async with self.engine.connect() as conn:
            result = await conn.stream(query)
            return [_credential(r) async for r in result]

    async def update_credential(self, credential: FederatedCredential) -> bool:
        """Replace the settings of the identity's credential of that name; False if none."""
        c = federated_credentials.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.update(federated_credentials)
                .where(c.identity_id == credential.identity_id, c.name == credential.name)
                .values(**_settings(credential))
            )
            await bump_revision(conn, "federation")
        return bool(result.rowcount)

    async def remove_credential(self, identity_id: str, name: str) -> bool:
        c = federated_credentials.c
        async with self.writer.begin() as conn:
            result = await conn.execute(
                sa.delete(federated_credentials).where(c.identity_id == identity_id, c.name == name)
            )
            await bump_revision(conn, "federation")
        return bool(result.rowcount)

    async def add_credentials_bulk(
        self, credentials: list[FederatedCredential], created_at: float
    ) -> None:
        """Load many credentials at once (benchmarks, ``apply``)."""
        rows = [_row(fc, created_at) for fc in credentials]
        async with self.writer.begin() as conn:
            for start in range(0, len(rows), 5000):
                await conn.execute(sa.insert(federated_credentials), rows[start : start + 5000])
            await bump_revision(conn, "federation")

    # -- dev clusters ----------------------------------------------------------------------

    async def get_dev_cluster(self, name: str) -> DevCluster | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(dev_clusters).where(dev_clusters.c.name == name))
            ).first()
        if row is None:
            return None
        return DevCluster(
            row.name, row.kid, bytes(row.sealed_private), json.loads(row.public_jwk), row.created_at
        )

    async def create_dev_cluster(self, cluster: DevCluster) -> DevCluster:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    sa.insert(dev_clusters).values(
                        name=cluster.name,
                        kid=cluster.kid,
                        sealed_private=cluster.sealed_private,
                        public_jwk=json.dumps(cluster.public_jwk),
                        created_at=cluster.created_at,
                    )
                )
        except IntegrityError:
            existing = await self.get_dev_cluster(cluster.name)
            if existing is None:
                raise
            return existing
        return cluster

    # -- revisions -------------------------------------------------------------------------

    async def get_revision(self, name: str) -> int:
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(sa.select(revisions.c.value).where(revisions.c.name == name))
            ).scalar()
        return int(value or 0)


async def bump_revision(conn: Any, name: str) -> None:
    mark_changed(conn)
    updated = await conn.execute(
        sa.update(revisions).where(revisions.c.name == name).values(value=revisions.c.value + 1)
    )
    if not updated.rowcount:
        try:
            async with conn.begin_nested():
                await conn.execute(sa.insert(revisions).values(name=name, value=1))
        except IntegrityError:
            await conn.execute(
                sa.update(revisions)
                .where(revisions.c.name == name)
                .values(value=revisions.c.value + 1)
            )
