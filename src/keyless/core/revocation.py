"""Access tokens revoked before they expire (Vault's ``revoke-self``).

An access token is verified offline, so a revocation must reach every process that verifies:
it is written to the store (the change counter makes sibling workers reload before their next
request; other replicas follow the store's revision within ~2 s) and each process checks the
token's id against its in-memory set on every use. Entries go once the token would have
expired anyway.
"""

from __future__ import annotations

from typing import Protocol

from keyless.core.clock import Clock


class RevocationStore(Protocol):
    async def revoke_token(
        self, token_id: str, tenant_id: str, expires_at: float, now: float
    ) -> bool: ...

    async def list_revoked_tokens(self, now: float) -> dict[str, float]: ...

    async def get_revision(self, name: str) -> int: ...


class Revocations:
    def __init__(self, store: RevocationStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._revoked: dict[str, float] = {}
        self.revision = -1

    def revoked(self, token_id: str) -> bool:
        return bool(token_id) and token_id in self._revoked

    async def revoke(self, token_id: str, tenant_id: str, expires_at: float) -> None:
        await self._store.revoke_token(token_id, tenant_id, expires_at, self._clock.now())
        self._revoked[token_id] = expires_at  # at once in this process, whatever the reload
        await self.reload()

    async def reload(self) -> None:
        revision = await self._store.get_revision("tokens")
        self._revoked = await self._store.list_revoked_tokens(self._clock.now())
        self.revision = revision

    async def reload_if_changed(self) -> bool:
        if await self._store.get_revision("tokens") != self.revision:
            await self.reload()
            return True
        return False
