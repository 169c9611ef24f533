"""Plain records shared by core and the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keyless.core import awsnames


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


@dataclass(frozen=True, slots=True)
class Identity:
    """What a workload acts as (a managed identity): object id, client id, name."""

    object_id: str
    client_id: str
    name: str
    tenant_id: str
    created_at: float

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "client_id": self.client_id,
            "object_id": self.object_id,
            "tenant_id": self.tenant_id,
            # The same identity in the Vault dialect: the role of ``auth/MOUNT/login``.
            "vault_role": self.name,
            # ... and in the AWS dialect: the role of ``AssumeRoleWithWebIdentity``.
            "aws_role_arn": awsnames.role_arn(self.tenant_id, self.name),
        }


@dataclass(frozen=True, slots=True)
class DevCluster:
    """A development cluster issuer (``--dev``): its one RS256 service-account signing key."""

    name: str
    kid: str
    sealed_private: bytes
    public_jwk: dict[str, Any]
    created_at: float

    @staticmethod
    def seal_context(name: str) -> str:
        return f"dev-cluster:{name}"
