"""Tenants: the default one made at first start, and lookup by id or alias."""

from __future__ import annotations

import re
import uuid

from keyless.core.clock import Clock
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.models import Tenant
from keyless.core.ports import TenantStore

DEFAULT_ALIAS = "default"
_ALIAS = re.compile(r"[a-z][a-z0-9-]{0,62}")


class Tenants:
    """Tenants served from memory; they are few and change rarely."""

    def __init__(self, store: TenantStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, Tenant] = {}

    async def ensure_default(self) -> Tenant:
        tenant = await self._store.get_tenant(DEFAULT_ALIAS)
        if tenant is None:
            tenant = await self._store.create_tenant(
                Tenant(str(uuid.uuid4()), DEFAULT_ALIAS, self._clock.now())
            )
        self._remember(tenant)
        return tenant

    async def create(self, alias: str) -> tuple[Tenant, bool]:
        """A tenant with ``alias``; idempotent: returns (tenant, created)."""
        if not _ALIAS.fullmatch(alias) or alias.endswith("-"):
            raise InvalidRequest(
                f"tenant alias {alias[:64]!r} must be 1..63 of a-z, 0-9 and '-', "
                "starting with a letter"
            )
        existing = await self._store.get_tenant(alias)
        if existing is not None:
            self._remember(existing)
            return existing, False
        tenant = await self._store.create_tenant(
            Tenant(str(uuid.uuid4()), alias, self._clock.now())
        )
        self._remember(tenant)
        return tenant, True

    def _remember(self, tenant: Tenant) -> None:
        self._cache[tenant.id] = tenant
        self._cache[tenant.alias] = tenant

    async def get(self, id_or_alias: str) -> Tenant:
        tenant = self._cache.get(id_or_alias)
        if tenant is None:
            tenant = await self._store.get_tenant(id_or_alias)
            if tenant is None:
                raise NotFound(f"tenant {id_or_alias!r} not found")
            self._remember(tenant)
        return tenant

    def cached(self, id_or_alias: str) -> Tenant | None:
        return self._cache.get(id_or_alias)
