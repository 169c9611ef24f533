"""Key lifecycle: first keys, scheduled and manual rotation, and keeping snapshots fresh.

Rotation is a compare-and-swap in the store, so any number of processes sharing one
database may run this manager: exactly one of them rotates, the others reload.
"""

from __future__ import annotations

import logging

from keyless.core.clock import Clock
from keyless.core.envelope import RootKeys
from keyless.core.errors import NotFound
from keyless.core.keyring import KeyRing, generate_key
from keyless.core.ports import SigningKeyStore

log = logging.getLogger("keyless.keys")


class RotationManager:
    def __init__(
        self,
        store: SigningKeyStore,
        root: RootKeys,
        clock: Clock,
        *,
        alg: str,
        period: int,
        token_lifetime: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self.root = root
        self.alg = alg
        self.period = period
        self.token_lifetime = token_lifetime
        self._rings: dict[str, KeyRing] = {}

    def ring(self, tenant_id: str) -> KeyRing:
        try:
            return self._rings[tenant_id]
        except KeyError:
            raise NotFound(f"no key ring loaded for tenant {tenant_id}") from None

    @property
    def tenants(self) -> list[str]:
        return list(self._rings)

    async def load(self, tenant_id: str) -> KeyRing:
        """Create the first keys if the tenant has none, then load a snapshot."""
        records = await self._store.list_signing_keys(tenant_id)
        if not any(r.state == "current" for r in records):
            now = self._clock.now()
            current = generate_key(tenant_id, self.alg, self.root, now, "current")
            upcoming = generate_key(tenant_id, self.alg, self.root, now, "next")
            if await self._store.bootstrap_signing_keys(current, upcoming):
                log.info("created signing keys", extra={"tenant": tenant_id, "kid": current.kid})
            records = await self._store.list_signing_keys(tenant_id)
        ring = KeyRing.build(
            tenant_id, records, self.root, now=self._clock.now(), token_lifetime=self.token_lifetime
        )
        self._rings[tenant_id] = ring
        return ring

    def next_rotation(self, ring: KeyRing) -> float:
        """When the scheduler rotates ``ring`` next (it checks every minute or so after)."""
        return (ring.current.activated_at or ring.current.created_at) + self.period

    def due(self, ring: KeyRing) -> bool:
        return self.next_rotation(ring) <= self._clock.now()

    async def rotate(self, tenant_id: str, *, force: bool = False) -> bool:
        """Rotate if due (or forced); returns True if this process performed the rotation."""
        ring = await self.load(tenant_id)
        if not force and not self.due(ring):
            return False
        now = self._clock.now()
        upcoming = generate_key(tenant_id, self.alg, self.root, now, "next")
        done = await self._store.rotate_signing_keys(tenant_id, ring.current.kid, upcoming, now)
        if done:
            log.info(
                "rotated signing keys", extra={"tenant": tenant_id, "retired": ring.current.kid}
            )
        await self._store.prune_signing_keys(
            tenant_id, retired_before=now - self.token_lifetime - 300
        )
        await self.load(tenant_id)
        return done
