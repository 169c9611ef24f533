"""Store reads for the federation graph: a searched page of identities with what hangs off
them, and the tenant's counts, without loading every identity (the console at 10,000).

A search is a case-insensitive substring of the identity's name, of an issuer, subject or
subject pattern of one of its federated credentials, or of the scope of one of its role
assignments (a vault's name is in ``/vaults/NAME``). The database filters and counts; only
the page comes back. ``LIKE`` wildcards in the search are escaped (``contains(autoescape)``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keyless.core.rbac import Assignment
from keyless.core.trust import FederatedCredential
from keyless.store.federation import _credential, _identity
from keyless.store.schema import (
    federated_credentials,
    identities,
    issuers,
    role_assignments,
    vaults,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyless.core.models import Identity


def _has(column: Any, needle: str) -> Any:
    return sa.func.lower(column).contains(needle, autoescape=True)


def _trusting(issuer: str, dialect: str) -> Any:
    """Identities with a credential trusting exactly ``issuer`` (alone, or in an issuer set
    kept as a JSON list, found by position: SQLite's LIKE ignores letter case, and issuer
    URLs are compared exactly). EXISTS, probing each identity's credentials by the
    (identity, name) index, beats collecting every id when most identities trust it."""
    f = federated_credentials.c
    position = sa.func.instr if dialect == "sqlite" else sa.func.strpos
    return sa.exists().where(
        f.identity_id == identities.c.object_id,
        sa.or_(
            f.issuer == issuer,
            sa.and_(f.issuers.is_not(None), position(f.issuers, json.dumps(issuer)) > 0),
        ),
    )


def _matching(
    tenant_id: str, query: str, issuer: str | None = None, dialect: str = "sqlite"
) -> Any:
    """The WHERE clause of identities of ``tenant_id`` that ``query`` finds (and that trust
    ``issuer``, when given)."""
    i, f, r = identities.c, federated_credentials.c, role_assignments.c
    where = i.tenant_id == tenant_id
    if issuer is not None:
        where = sa.and_(where, _trusting(issuer, dialect))
    needle = query.lower()
    if not needle:
        return where
    by_credential = sa.select(f.identity_id).where(
        sa.or_(
            _has(f.issuer, needle),
            _has(f.issuers, needle),
            _has(f.subject, needle),
            _has(f.subject_pattern, needle),
        )
    )
    by_assignment = sa.select(r.identity_id).where(r.tenant_id == tenant_id, _has(r.scope, needle))
    return sa.and_(
        where,
        sa.or_(
            _has(i.name, needle),
            i.object_id.in_(by_credential),
            i.object_id.in_(by_assignment),
        ),
    )


class GraphStoreMixin:
    engine: AsyncEngine

    async def search_identities(
        self, tenant_id: str, query: str, limit: int, issuer: str | None = None
    ) -> tuple[list[Identity], int]:
        """Up to ``limit`` identities that ``query`` finds (among those trusting ``issuer``),
        by name, and how many it finds."""
        where = _matching(tenant_id, query, issuer, self.engine.dialect.name)
        count = sa.select(sa.func.count()).select_from(identities).where(where)
        if limit <= 0:
            async with self.engine.connect() as conn:
                return [], int((await conn.execute(count)).scalar_one())
        # One scan: the page and, on each of its rows, how many the search found.
        found = sa.func.count().over().label("found")
        page = sa.select(identities, found).where(where).order_by(identities.c.name).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(page)).all()
        return [_identity(r) for r in rows], int(rows[0].found) if rows else 0

    async def credentials_of(self, identity_ids: Sequence[str]) -> list[FederatedCredential]:
        """The federated credentials of these identities, by identity and name."""
        if not identity_ids:
            return []
        c = federated_credentials.c
        query = (
            sa.select(federated_credentials)
            .where(c.identity_id.in_(list(identity_ids)))
            .order_by(c.identity_id, c.name)
        )
        async with self.engine.connect() as conn:
            return [_credential(r) for r in (await conn.execute(query)).all()]

    async def assignments_of(self, tenant_id: str, identity_ids: Sequence[str]) -> list[Assignment]:
        """The role assignments of these identities in ``tenant_id``, by scope and role."""
        if not identity_ids:
            return []
        c = role_assignments.c
        query = (
            sa.select(role_assignments)
            .where(c.tenant_id == tenant_id, c.identity_id.in_(list(identity_ids)))
            .order_by(c.scope, c.role)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Assignment(r.tenant_id, r.identity_id, r.role, r.scope) for r in rows]

    async def tenant_counts(self, tenant_id: str) -> dict[str, int]:
        """How many identities, issuers, federated credentials, vaults and role assignments
        the tenant has (one statement)."""
        i, f = identities.c, federated_credentials.c

        def count(table: Any, where: Any) -> Any:
            return sa.select(sa.func.count()).select_from(table).where(where).scalar_subquery()

        in_tenant = sa.select(i.object_id).where(i.tenant_id == tenant_id)
        query = sa.select(
            count(identities, i.tenant_id == tenant_id).label("identities"),
            count(issuers, issuers.c.tenant_id == tenant_id).label("issuers"),
            count(federated_credentials, f.identity_id.in_(in_tenant)).label("credentials"),
            count(vaults, vaults.c.tenant_id == tenant_id).label("vaults"),
            count(role_assignments, role_assignments.c.tenant_id == tenant_id).label(
                "role_assignments"
            ),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return {k: int(v) for k, v in row._mapping.items()}
