"""Store methods for revoked access tokens (kept until they would have expired)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keyless.store.federation import bump_revision
from keyless.store.schema import revoked_tokens

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from keyless.store.engine import Writer


class TokenStoreMixin:
    engine: AsyncEngine
    writer: Writer

    async def revoke_token(
        self, token_id: str, tenant_id: str, expires_at: float, now: float
    ) -> bool:
        """Record a revocation (False if it was already revoked); expired ones are dropped."""
        t = revoked_tokens.c
        async with self.writer.begin() as conn:
            await bump_revision(conn, "tokens")  # every process reloads its revoked set
            await conn.execute(sa.delete(revoked_tokens).where(t.expires_at < now))
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        sa.insert(revoked_tokens).values(
                            token_id=token_id, tenant_id=tenant_id, expires_at=expires_at
                        )
                    )
            except IntegrityError:
                return False
        return True

    async def list_revoked_tokens(self, now: float) -> dict[str, float]:
        t = revoked_tokens.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(t.token_id, t.expires_at).where(t.expires_at >= now))
            ).all()
        return {r.token_id: r.expires_at for r in rows}
