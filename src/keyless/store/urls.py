"""Database URLs: what the operator writes, and the driver URLs SQLAlchemy is given."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    raw: str

    @property
    def is_sqlite(self) -> bool:
        return self.raw.startswith("sqlite")

    @property
    def _rest(self) -> str:
        return self.raw.split("://", 1)[1]

    @property
    def sqlite_path(self) -> str:
        """The file of a ``sqlite:///PATH`` URL ("" or ":memory:" for an in-memory one)."""
        return self.raw.split("sqlite:///", 1)[1] if self.is_sqlite else ""

    @property
    def sync_url(self) -> str:
        return f"sqlite://{self._rest}" if self.is_sqlite else f"postgresql+psycopg://{self._rest}"

    @property
    def async_url(self) -> str:
        if self.is_sqlite:
            return f"sqlite+aiosqlite://{self._rest}"
        return f"postgresql+psycopg://{self._rest}"

    def redacted(self) -> str:
        """The URL without a password, for logs and errors."""
        if self.is_sqlite or "@" not in self._rest:
            return self.raw
        creds, host = self._rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{self.raw.split('://', 1)[0]}://{user}:***@{host}"
