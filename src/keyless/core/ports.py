"""The ports core needs, one Protocol each; implementations live in ``keyless.store``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from keyless.core.issuers import IssuerRecord
from keyless.core.models import DevCluster, Identity, SigningKeyRecord, Tenant
from keyless.core.trust import FederatedCredential

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


class FederationStore(Protocol):
    async def create_identity(self, identity: Identity) -> Identity: ...

    async def get_identity(self, tenant_id: str, name_or_id: str) -> Identity | None: ...

    async def list_identities(self, tenant_id: str | None = None) -> list[Identity]: ...

    async def delete_identity(self, object_id: str) -> bool: ...

    async def add_issuer(self, tenant_id: str, record: IssuerRecord) -> bool: ...

    async def list_issuers(
        self, tenant_id: str | None = None
    ) -> list[tuple[str, IssuerRecord]]: ...

    async def remove_issuer(self, tenant_id: str, url: str) -> bool: ...

    async def add_credential(
        self, credential: FederatedCredential, created_at: float
    ) -> FederatedCredential: ...

    async def list_credentials(
        self, identity_id: str | None = None
    ) -> list[FederatedCredential]: ...

    async def remove_credential(self, identity_id: str, name: str) -> bool: ...

    async def get_dev_cluster(self, name: str) -> DevCluster | None: ...

    async def create_dev_cluster(self, cluster: DevCluster) -> DevCluster: ...

    async def get_revision(self, name: str) -> int: ...
