"""A secret as the agent's declarations name it: ``VAULT/NAME`` (the latest version) or
``VAULT/NAME/VERSION`` (pinned), the vault and secret names of the Key Vault API."""

from __future__ import annotations

import re
from dataclasses import dataclass

from keyless.core.errors import ConfigError

# Key Vault's own rules: vault names 3-24 alphanumerics and dashes, secret names 1-127
# alphanumerics and dashes, versions 32 hex digits. Checked here so that a typo is a one-line
# error at start, not a 404 every poll.
_VAULT = re.compile(r"[A-Za-z0-9-]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_VERSION = re.compile(r"[A-Fa-f0-9]{32}")


@dataclass(frozen=True, slots=True, order=True)
class SecretRef:
    vault: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3):
            raise ConfigError(f"{text!r} is no secret reference: expected VAULT/NAME[/VERSION]")
        vault, name = parts[0], parts[1]
        version = parts[2] if len(parts) == 3 else None
        if not _VAULT.fullmatch(vault):
            raise ConfigError(f"{text!r}: {vault!r} is no vault name (letters, digits, dashes)")
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{text!r}: {name!r} is no secret name (letters, digits, dashes)")
        if version is not None and not _VERSION.fullmatch(version):
            raise ConfigError(f"{text!r}: {version!r} is no secret version (32 hex digits)")
        return cls(vault.lower(), name, version.lower() if version else None)

    def __str__(self) -> str:
        tail = f"/{self.version}" if self.version else ""
        return f"{self.vault}/{self.name}{tail}"
