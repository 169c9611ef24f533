"""A database as the agent's options name it (``DATABASE/ROLE``, mapped to the Vault role with
``keyless.core.dbnames`` exactly as the server maps it back) and one lease's credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keyless.core import dbnames
from keyless.core.errors import ConfigError, KeylessError


@dataclass(frozen=True, slots=True, order=True)
class DbRef:
    """``DATABASE/ROLE`` as the agent's options name it."""

    database: str
    role: str

    @classmethod
    def parse(cls, text: str) -> DbRef:
        try:
            return cls(*dbnames.parse_pair(text.strip()))
        except KeylessError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def vault_role(self) -> str:
        return dbnames.vault_role(self.database, self.role)

    def __str__(self) -> str:
        return f"{self.database}/{self.role}"


@dataclass(frozen=True, slots=True)
class DbCredentials:
    """One lease's credentials and where they log in (never the admin's)."""

    username: str
    password: str = field(repr=False)
    host: str
    port: int
    dbname: str
    sslmode: str
    expires_at: float  # wall clock
    lease_id: str
    lease_duration: float  # seconds the lease had when issued or last renewed

    def public(self) -> dict[str, Any]:
        """What files and templates see: {username, password, host, port, dbname, sslmode,
        expires_at (epoch seconds)}."""
        return {
            "username": self.username,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
            "expires_at": int(self.expires_at),
        }
