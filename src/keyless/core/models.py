"""Plain records shared by core and the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    alias: str
    created_at: float

    def issuer(self, public_url: str) -> str:
        return f"{public_url}/{self.id}/v2.0"


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A signing key as stored: the private half only sealed by the root key."""

    kid: str
    tenant_id: str
    alg: str
    state: str  # "next" | "current" | "retired"
    created_at: float
    activated_at: float | None
    retired_at: float | None
    sealed_private: bytes
    public_jwk: dict[str, Any]

    @staticmethod
    def seal_context(kid: str) -> str:
        return f"signing-key:{kid}"
