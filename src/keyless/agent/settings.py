"""What the agent reads from its environment (CONTRACT.md "The agent"): exactly what an Azure
workload reads (``AZURE_AUTHORITY_HOST``, ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``,
``AZURE_FEDERATED_TOKEN_FILE``, ``REQUESTS_CA_BUNDLE``), plus, for the dialects that name an
identity rather than a client id (AWS role ARN, Google service account), ``KEYLESS_IDENTITY``
(the identity's name) and ``KEYLESS_TENANT_ALIAS`` (its tenant's alias, default ``default``),
which the webhook sets when it injects the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keyless.core.errors import ConfigError

REQUIRED = (
    "AZURE_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
)


@dataclass(frozen=True, slots=True)
class AgentEnv:
    authority: str  # keyless's public URL (AZURE_AUTHORITY_HOST), no trailing slash
    tenant_id: str
    client_id: str
    token_file: str
    ca_file: str | None  # REQUESTS_CA_BUNDLE; None: the system's trust store
    identity: str | None = None  # KEYLESS_IDENTITY
    tenant_alias: str = "default"  # KEYLESS_TENANT_ALIAS

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> AgentEnv:
        """The agent's settings, or ConfigError naming every missing variable."""
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing:
            raise ConfigError(
                f"the agent needs {', '.join(missing)} (what the webhook injects and "
                "`keyless env IDENTITY --dialect azure` prints)"
            )
        authority = env["AZURE_AUTHORITY_HOST"].rstrip("/")
        if not authority.startswith("https://"):
            raise ConfigError(f"AZURE_AUTHORITY_HOST must be an https:// URL, not {authority!r}")
        return cls(
            authority=authority,
            tenant_id=env["AZURE_TENANT_ID"],
            client_id=env["AZURE_CLIENT_ID"],
            token_file=env["AZURE_FEDERATED_TOKEN_FILE"],
            ca_file=env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE") or None,
            identity=env.get("KEYLESS_IDENTITY") or None,
            tenant_alias=env.get("KEYLESS_TENANT_ALIAS") or "default",
        )

    @property
    def token_url(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    def need_identity(self, what: str) -> str:
        if self.identity is None:
            raise ConfigError(f"{what} needs KEYLESS_IDENTITY (the identity's name)")
        return self.identity
