"""The SPIFFE CA lifecycle of every tenant: first generations, scheduled and manual rotation,
fresh snapshots (like ``rotation.RotationManager`` for the key ring).

Rotation is a compare-and-swap in the store: any number of processes sharing one database may
run this manager; exactly one of them rotates, the others reload. A generation is ``next`` for
one period (its root is in the bundle, it signs nothing), ``current`` for one period, then
``retired`` (still in the bundle until the last SVID it signed has expired), so its
certificates live ``3 * period`` plus a day of margin.
"""

from __future__ import annotations

import logging
from typing import Protocol

from cryptography import x509

from keyless.core.clock import Clock
from keyless.core.envelope import RootKeys
from keyless.core.errors import NotFound
from keyless.core.spiffeca import SpiffeCARecord, SpiffeCAs, generate_ca
from keyless.core.spiffeupstream import UpstreamCA

log = logging.getLogger("keyless.spiffe")
_MARGIN = 86400


class SpiffeCAStore(Protocol):
    async def list_spiffe_cas(self, tenant_id: str) -> list[SpiffeCARecord]: ...

    async def bootstrap_spiffe_cas(
        self, current: SpiffeCARecord, upcoming: SpiffeCARecord
    ) -> bool: ...

    async def rotate_spiffe_cas(
        self, tenant_id: str, expected_current: str, upcoming: SpiffeCARecord, now: float
    ) -> bool: ...

    async def prune_spiffe_cas(self, tenant_id: str, retired_before: float) -> int: ...

    async def replace_next_spiffe_ca(
        self, expected_next: str, upcoming: SpiffeCARecord
    ) -> bool: ...


class SpiffeCAManager:
    def __init__(
        self,
        store: SpiffeCAStore,
        root: RootKeys,
        clock: Clock,
        *,
        period: int,
        svid_ttl: int,
        upstream: UpstreamCA | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.root = root
        self.period = period
        self.svid_ttl = svid_ttl
        self.upstream = upstream
        self._cas: dict[str, SpiffeCAs] = {}
        self._domains: dict[str, str] = {}  # tenant id -> trust domain, of loaded tenants
        self.generation = 0  # grows with every snapshot loaded (server/mtls.py follows it)

    def cas(self, tenant_id: str) -> SpiffeCAs:
        try:
            return self._cas[tenant_id]
        except KeyError:
            raise NotFound(f"no SPIFFE CA loaded for tenant {tenant_id}") from None

    def _generate(self, tenant_id: str, trust_domain: str, state: str) -> SpiffeCARecord:
        lifetime = 3 * self.period + self.svid_ttl + _MARGIN
        return generate_ca(
            tenant_id,
            trust_domain,
            self.root,
            self._clock.now(),
            state,
            lifetime=lifetime,
            upstream=self.upstream,
        )

    async def load(self, tenant_id: str, trust_domain: str) -> SpiffeCAs:
        """Create the first generations if the tenant has none, then load a snapshot."""
        records = await self._store.list_spiffe_cas(tenant_id)
        if not any(r.state == "current" for r in records):
            current = self._generate(tenant_id, trust_domain, "current")
            upcoming = self._generate(tenant_id, trust_domain, "next")
            if await self._store.bootstrap_spiffe_cas(current, upcoming):
                log.info("created SPIFFE CA", extra={"tenant": tenant_id, "ca": current.ca_id})
            records = await self._store.list_spiffe_cas(tenant_id)
        if await self._adopt_upstream(tenant_id, trust_domain, records):
            records = await self._store.list_spiffe_cas(tenant_id)
        snapshot = SpiffeCAs.build(
            tenant_id, records, self.root, now=self._clock.now(), svid_ttl=self.svid_ttl
        )
        self._cas[tenant_id] = snapshot
        self._domains[tenant_id] = trust_domain
        self.generation += 1
        return snapshot

    async def _adopt_upstream(
        self, tenant_id: str, trust_domain: str, records: list[SpiffeCARecord]
    ) -> bool:
        """With an operator CA newly configured, the ``next`` generation (published, signing
        nothing yet) is made again under it, so the next rotation moves to the operator's CA;
        the current generation keeps signing until then."""
        if self.upstream is None:
            return False
        upcoming = next((r for r in records if r.state == "next"), None)
        if upcoming is None or upcoming.root == self.upstream.der:
            return False
        replaced = await self._store.replace_next_spiffe_ca(
            upcoming.ca_id, self._generate(tenant_id, trust_domain, "next")
        )
        if replaced:
            log.info("next SPIFFE CA now under the upstream CA", extra={"tenant": tenant_id})
        return True

    def published_roots(self) -> list[x509.Certificate]:
        """The roots of every loaded tenant's published generations (current, next, retired
        until its SVIDs have expired): what a verifier of this keyless's SVIDs trusts."""
        return [root for cas in self._cas.values() for root in cas.x509_authorities()]

    @property
    def loaded(self) -> dict[str, str]:
        """Tenant id -> trust domain of every tenant whose CA this process has loaded."""
        return dict(self._domains)

    def next_rotation(self, snapshot: SpiffeCAs) -> float:
        """When the scheduler rotates the CA generations of ``snapshot`` next."""
        record = snapshot.current.record
        return (record.activated_at or record.created_at) + self.period

    def due(self, snapshot: SpiffeCAs) -> bool:
        return self.next_rotation(snapshot) <= self._clock.now()

    async def rotate(self, tenant_id: str, trust_domain: str, *, force: bool = False) -> bool:
        """Rotate if due (or forced): the next generation (already in the bundle) signs, a new
        next is published. True if this process performed the rotation."""
        snapshot = await self.load(tenant_id, trust_domain)
        if not force and not self.due(snapshot):
            return False
        now = self._clock.now()
        upcoming = self._generate(tenant_id, trust_domain, "next")
        done = await self._store.rotate_spiffe_cas(
            tenant_id, snapshot.current.record.ca_id, upcoming, now
        )
        if done:
            log.info(
                "rotated SPIFFE CA",
                extra={"tenant": tenant_id, "retired": snapshot.current.record.ca_id},
            )
        await self._store.prune_spiffe_cas(tenant_id, retired_before=now - self.svid_ttl - 2 * 300)
        await self.load(tenant_id, trust_domain)
        return done
