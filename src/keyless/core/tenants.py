"""Tenants: the default one made at first start, and lookup by id or alias.

Lookups come from unauthenticated requests (discovery, JWKS, the token endpoint), so an
unknown name must not cost a database query every time: a name that cannot be a tenant (not
alias- or UUID-shaped) is refused without one, and a well-formed unknown name is remembered
as unknown for ``NEGATIVE_TTL`` seconds (at most ``NEGATIVE_MAX`` names, least recently
used dropped first). Creating a tenant in this process forgets every unknown name at once;
a tenant created by another process is found once the TTL has passed, so keep it short.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict

from keyless.core.clock import Clock
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.models import Tenant
from keyless.core.ports import TenantStore

DEFAULT_ALIAS = "default"
# The AD FS authority's tenant name: public URLs map it to the default tenant (api/tenancy.py),
# so no tenant may take it as its alias.
ADFS_ALIAS = "adfs"
_ALIAS = re.compile(r"[a-z][a-z0-9-]{0,62}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NEGATIVE_TTL = 5.0  # seconds an unknown tenant name is answered from memory
NEGATIVE_MAX = 4096  # unknown names remembered at most


class Tenants:
    """Tenants served from memory; they are few and change rarely."""

    def __init__(self, store: TenantStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, Tenant] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # name -> remembered until

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
        if alias == ADFS_ALIAS:
            raise InvalidRequest(
                f"tenant alias {alias!r} is reserved: it names the default tenant to AD FS "
                "clients (docs/kubernetes.md)"
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

    def forget_unknown(self) -> None:
        """Drop the remembered unknown names (a tenant may have been created elsewhere)."""
        self._unknown.clear()

    def _remember(self, tenant: Tenant) -> None:
        self._cache[tenant.id] = tenant
        self._cache[tenant.alias] = tenant
        self._unknown.clear()  # its id or alias may be remembered as unknown

    async def get(self, id_or_alias: str) -> Tenant:
        tenant = self._cache.get(id_or_alias)
        if tenant is not None:
            return tenant
        if not (_ALIAS.fullmatch(id_or_alias) or _UUID.fullmatch(id_or_alias)):
            raise NotFound(f"tenant {id_or_alias[:64]!r} not found")
        now = self._clock.now()
        until = self._unknown.get(id_or_alias)
        if until is not None and now < until:
            raise NotFound(f"tenant {id_or_alias!r} not found")
        tenant = await self._store.get_tenant(id_or_alias)
        if tenant is None:
            self._unknown.pop(id_or_alias, None)
            if len(self._unknown) >= NEGATIVE_MAX:
                self._unknown.popitem(last=False)
            self._unknown[id_or_alias] = now + NEGATIVE_TTL
            raise NotFound(f"tenant {id_or_alias!r} not found")
        self._remember(tenant)
        return tenant

    async def list(self) -> list[Tenant]:
        tenants = await self._store.list_tenants()
        for tenant in tenants:
            self._remember(tenant)
        return tenants

    def cached(self, id_or_alias: str) -> Tenant | None:
        return self._cache.get(id_or_alias)
