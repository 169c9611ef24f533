"""Federation of SPIFFE bundles: other trust domains whose bundles a tenant fetches, keeps
fresh (each bundle's ``spiffe_refresh_hint``) and serves to its workloads
(``GET /TENANT/spiffe/bundles``, the agent's ``FetchX509Bundles``).

A bundle URL is fetched like an issuer's keys (``keyless.net``: https only, bounded, only to
globally routable addresses or the networks the operator allows), never on a request's path:
``refresh_due`` runs in the server's background loop. A failed fetch keeps the last good
bundle and is retried after ``RETRY`` seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from keyless.core.errors import InvalidRequest, KeylessError, Unavailable
from keyless.core.spiffebundle import bundle_x509_authorities
from keyless.core.spiffenames import spiffe_id

log = logging.getLogger("keyless.spiffe")
DEFAULT_REFRESH = 300
MIN_REFRESH, MAX_REFRESH = 30, 86400
RETRY = 60


@dataclass(frozen=True, slots=True)
class FederatedDomain:
    tenant_id: str
    trust_domain: str
    bundle_url: str
    bundle: dict[str, Any] | None
    fetched_at: float | None
    refresh_at: float
    last_error: str | None
    created_at: float

    def view(self) -> dict[str, Any]:
        return {
            "trust_domain": self.trust_domain,
            "bundle_url": self.bundle_url,
            "fetched_at": self.fetched_at,
            "refresh_at": self.refresh_at,
            "last_error": self.last_error,
            "x509_authorities": len(bundle_x509_authorities(self.bundle or {})),
        }


def check_trust_domain(name: str) -> str:
    spiffe_id(name, "x")  # InvalidRequest unless a valid trust domain name
    return name


def check_bundle_url(url: str) -> str:
    if not url.startswith("https://") or len(url) > 2048:
        raise InvalidRequest("a bundle URL must be an https URL")
    return url


def validate_bundle(doc: dict[str, Any]) -> dict[str, Any]:
    """A fetched SPIFFE bundle: a JWKS with at least one X.509 authority."""
    if not isinstance(doc.get("keys"), list):
        raise Unavailable("the document is not a SPIFFE bundle (no keys)")
    if not bundle_x509_authorities(doc):
        raise Unavailable("the SPIFFE bundle holds no x509-svid authority")
    return doc


def refresh_after(doc: dict[str, Any]) -> int:
    hint = doc.get("spiffe_refresh_hint")
    if isinstance(hint, int) and not isinstance(hint, bool):
        return max(MIN_REFRESH, min(MAX_REFRESH, hint))
    return DEFAULT_REFRESH


class BundleFetcher(Protocol):
    async def fetch_bundle(self, url: str) -> dict[str, Any]: ...


class FederatedStore(Protocol):
    async def add_federated_domain(self, domain: FederatedDomain) -> bool: ...

    async def remove_federated_domain(self, tenant_id: str, trust_domain: str) -> bool: ...

    async def list_federated_domains(
        self, tenant_id: str | None = None
    ) -> list[FederatedDomain]: ...

    async def record_federated_fetch(
        self,
        tenant_id: str,
        trust_domain: str,
        *,
        bundle: dict[str, Any] | None,
        now: float,
        refresh_at: float,
        error: str | None,
    ) -> None: ...


async def refresh_one(
    store: FederatedStore, fetcher: BundleFetcher, domain: FederatedDomain, now: float
) -> bool:
    """Fetch one federated bundle now; True if a good bundle was stored."""
    try:
        doc = validate_bundle(await fetcher.fetch_bundle(domain.bundle_url))
    except KeylessError as exc:
        log.warning(
            "federated bundle fetch failed",
            extra={"trust_domain": domain.trust_domain, "reason": exc.message},
        )
        await store.record_federated_fetch(
            domain.tenant_id,
            domain.trust_domain,
            bundle=None,
            now=now,
            refresh_at=now + RETRY,
            error=exc.message[:500],
        )
        return False
    await store.record_federated_fetch(
        domain.tenant_id,
        domain.trust_domain,
        bundle=doc,
        now=now,
        refresh_at=now + refresh_after(doc),
        error=None,
    )
    return True


async def refresh_due(store: FederatedStore, fetcher: BundleFetcher, now: float) -> int:
    """Fetch every federated bundle whose refresh time has come; the number refreshed."""
    count = 0
    for domain in await store.list_federated_domains():
        if domain.refresh_at <= now and await refresh_one(store, fetcher, domain, now):
            count += 1
    return count
