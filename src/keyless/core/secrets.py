"""Vaults and secrets: records and the rules on names, values, tags and times."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from keyless.core.errors import InvalidRequest

# Key Vault's own rule: the only names its API (and so the Azure SDKs) can address.
KEYVAULT_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
# Any dialect's: one or more '/'-separated segments (a Vault KV path such as ``db/creds``), at
# most 127 characters in all. A Key Vault name is one of these.
NAME = re.compile(r"(?!.*(?:^|/)\.{1,2}(?:/|$))[0-9a-zA-Z_.-]+(?:/[0-9a-zA-Z_.-]+)*")
MAX_NAME = 127
# The content type of the hidden, disabled version 1 a secret created without a value holds
# (AWS CreateSecret without a value, Google CreateSecret): every dialect skips it.
NO_VALUE_CONTENT_TYPE = "application/x-keyless-aws-no-value"
VAULT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,22}[a-z0-9])")
# Vault / OpenBao's own mount names: a vault is a KV v2 mount of the same name in the Vault
# dialect (``/v1/VAULT/data/...``), so these would be shadowed there.
RESERVED_VAULT_NAMES = frozenset(
    {"auth", "sys", "identity", "cubbyhole", "database", "pki", "transit"}
)
VERSION = re.compile(r"[0-9a-f]{32}")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_LENGTH = 256
MAX_CONTENT_TYPE = 255


def validate_secret_name(name: str) -> str:
    """A secret name in any dialect: Key Vault's names, and paths such as ``db/creds``."""
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid secret name {name[:140]!r}: 1-127 characters of 0-9, a-z, A-Z, '-', '_' "
            "and '.', in segments separated by '/' (no empty, '.' or '..' segment)"
        )
    return name


def validate_keyvault_name(name: str) -> str:
    """The names Key Vault's API can address (its URLs have no room for '/')."""
    if not KEYVAULT_NAME.fullmatch(name):
        raise InvalidRequest(
            f"The request URI contains an invalid name: {name[:140]!r}. "
            "Secret names are 1-127 characters of 0-9, a-z, A-Z and '-'."
        )
    return name


def keyvault_addressable(name: str) -> bool:
    return KEYVAULT_NAME.fullmatch(name) is not None


def validate_vault_name(name: str) -> str:
    if not VAULT_NAME.fullmatch(name):
        raise InvalidRequest(
            f"vault name {name[:40]!r} must be 3-24 characters of lowercase "
            "letters, digits and '-', starting and ending with a letter or "
            "digit (it is a DNS label)"
        )
    if name in RESERVED_VAULT_NAMES:
        raise InvalidRequest(
            f"vault name {name!r} is reserved: it is one of Vault's own mounts "
            f"({', '.join(sorted(RESERVED_VAULT_NAMES))}), which the Vault dialect serves"
        )
    return name


def validate_version(version: str) -> str:
    if not VERSION.fullmatch(version):
        raise InvalidRequest(f"secret version {version[:40]!r} is not 32 hex characters")
    return version


def validate_value(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("the secret value must be a string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        raise InvalidRequest(f"the secret value is larger than {MAX_VALUE_BYTES} bytes")
    return value


def validate_tags(tags: object) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise InvalidRequest(f"tags must be an object of at most {MAX_TAGS} string pairs")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
            raise InvalidRequest("tag names and values must be strings")
        text = str(value)
        if not key or len(key) > MAX_TAG_LENGTH or len(text) > MAX_TAG_LENGTH:
            raise InvalidRequest(f"tag names and values must be 1-{MAX_TAG_LENGTH} characters")
        if any(c < " " or c == "\x7f" for c in key):
            raise InvalidRequest(f"tag name {key[:64]!r} holds a control character")
        out[key] = text
    return out


def validate_content_type(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CONTENT_TYPE:
        raise InvalidRequest(
            f"contentType must be a string of at most {MAX_CONTENT_TYPE} characters"
        )
    return value


def validate_time(value: object, what: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 <= value < 253402300800)
    ):
        raise InvalidRequest(f"attributes.{what} must be unix seconds")
    return float(value)


@dataclass(frozen=True, slots=True)
class Vault:
    name: str
    tenant_id: str
    created_at: float


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One immutable version's properties (the value is stored sealed, apart)."""

    vault: str
    name: str
    version: str
    content_type: str | None
    tags: dict[str, str] = field(hash=False)
    enabled: bool
    not_before: float | None
    expires: float | None
    created: float
    updated: float
    # The version's ordinal within its name (1, 2, ...): Vault KV v2's version numbers. The
    # store assigns it when the version is written; 0 until then.
    number: int = 0
    destroyed: bool = False  # its value was wiped for good (Vault KV v2 ``destroy``)

    def seal_context(self) -> str:
        return secret_seal_context(self.vault, self.name, self.version)


def secret_seal_context(vault: str, name: str, version: str) -> str:
    return f"secret:{vault}/{name}/{version}"


@dataclass(frozen=True, slots=True)
class SecretState:
    vault: str
    name: str
    current_version: str
    deleted_at: float | None
    purge_at: float | None


@dataclass(frozen=True, slots=True)
class Secret:
    props: SecretVersion
    value: str | None = None
    state: SecretState | None = None


@dataclass(frozen=True, slots=True)
class PropertyChanges:
    """Properties a request sets on a secret version, already validated (``validate_*``);
    ``set_fields`` names those it gave, even as None (a dialect reads them from its body)."""

    content_type: str | None = None
    tags: dict[str, str] | None = None
    enabled: bool | None = None
    not_before: float | None = None
    expires: float | None = None
    set_fields: frozenset[str] = frozenset()
