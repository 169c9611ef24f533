"""The ports core needs, one Protocol each; implementations live in ``keyless.store``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from keyless.core.models import SigningKeyRecord, Tenant

# (kind, id, blob) -> new blob; used to re-wrap every sealed value under a new root key.
Rewrapper = Callable[[str, bytes], bytes]


class TenantStore(Protocol):
    async def get_tenant(self, id_or_alias: str) -> Tenant | None: ...

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        """Insert, or return the existing tenant with the same alias (first start races)."""
        ...

    async def list_tenants(self) -> list[Tenant]: ...


class SigningKeyStore(Protocol):
    async def list_signing_keys(self, tenant_id: str) -> list[SigningKeyRecord]: ...

    async def bootstrap_signing_keys(
        self, current: SigningKeyRecord, upcoming: SigningKeyRecord
    ) -> bool:
        """Insert the first current and next keys; False if another process already did."""
        ...

    async def rotate_signing_keys(
        self, tenant_id: str, expected_current: str, upcoming: SigningKeyRecord, now: float
    ) -> bool:
        """Atomically: current -> retired, next -> current, insert ``upcoming`` as next.

        Only if ``expected_current`` is still the current key (compare-and-swap), so that
        several processes sharing one database rotate exactly once.
        """
        ...

    async def prune_signing_keys(self, tenant_id: str, retired_before: float) -> int: ...


class SealedStore(Protocol):
    async def rewrap_all(self, rewrap: Rewrapper) -> int:
        """Replace every sealed blob by ``rewrap(context, blob)`` in one transaction."""
        ...


class Store(TenantStore, SigningKeyStore, SealedStore, Protocol):
    async def ping(self) -> None: ...

    async def close(self) -> None: ...
