"""Secret Manager's names for keyless secrets and versions, and its rules that are not the wire's.

Names (CONTRACT.md "One identity, every dialect"): secret S of vault V is
``projects/V/secrets/S`` (also ``projects/V/locations/L/secrets/S``); V is the vault's name or
its project number (``project_number``), and answers name the number, as Google's do.

Versions. Google numbers a secret's versions 1, 2, 3 in creation order; keyless numbers them
the same way (``SecretVersion.number``, the store's ordinal per name). The one difference is a
secret created with no value (Google's CreateSecret, AWS's CreateSecret without a value):
keyless has no secret without a version, so such a secret holds one disabled, empty
*placeholder* version of content type ``EMPTY_SECRET_CONTENT_TYPE`` (the AWS dialect's own),
which is always keyless version 1 and never shown. So Google number = keyless number - offset,
offset 1 when keyless version 1 is a placeholder and 0 otherwise; it is fixed once version 1
is written, so every replica and every call gives the same numbers.

Payloads are bytes. Bytes that are UTF-8 are kept as that text (Key Vault, AWS and Vault read
the same string); other bytes are kept as base64 text under the AWS dialect's
``BINARY_CONTENT_TYPE`` (AWS reads them back as ``SecretBinary``). Google's labels are the
current version's tags that are valid labels (a new version keeps them); keyless's own marker
``gcp:client-crc32c`` on a version says its writer sent ``dataCrc32c``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import google_crc32c

from keyless.core import gcpnames
from keyless.core.awssecrets import BINARY_CONTENT_TYPE
from keyless.core.errors import InvalidRequest
from keyless.core.secrets import NO_VALUE_CONTENT_TYPE, VAULT_NAME, SecretVersion, Vault

# A secret's value-less first version (core/secrets.py: one placeholder for every dialect).
EMPTY_SECRET_CONTENT_TYPE = NO_VALUE_CONTENT_TYPE
CLIENT_CRC32C_TAG = "gcp:client-crc32c"
RESERVED_TAG_PREFIXES = ("gcp:", "aws:")
MAX_PAYLOAD = 64 * 1024  # Google's limit; keyless's own (25 KiB of stored text) is lower
MAX_PAGE_SIZE = 25000
MAX_LABELS = 14  # keyless keeps at most 15 tags per version, one is its own marker

ENABLED, DISABLED, DESTROYED = "ENABLED", "DISABLED", "DESTROYED"
STATE_NUMBERS = {ENABLED: 1, DISABLED: 2, DESTROYED: 3}  # google.cloud.secretmanager.v1 enum

_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_LOCATION = re.compile(r"[a-z0-9-]{1,63}")
_VERSION = re.compile(r"[1-9][0-9]{0,9}|latest")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_NUMBER = re.compile(r"[0-9]{12}")


# -- names ---------------------------------------------------------------------------------


def project_number(vault: Vault) -> str:
    """The vault's 12-digit project number (fixed per tenant and vault name)."""
    return gcpnames.vault_number(f"{vault.tenant_id}/{vault.name}")


def is_project_number(project: str) -> bool:
    return _NUMBER.fullmatch(project) is not None


@dataclass(frozen=True, slots=True)
class SecretName:
    """``projects/P[/locations/L]/secrets/S`` as requested (P a vault name or number)."""

    project: str
    secret: str
    location: str | None = None

    def render(self, number: str) -> str:
        where = f"projects/{number}" + (f"/locations/{self.location}" if self.location else "")
        return f"{where}/secrets/{self.secret}"

    def version(self, number: str, version: int | str) -> str:
        return f"{self.render(number)}/versions/{version}"


def validate_project(project: str) -> str:
    """A project segment: a vault's name or its 12-digit number."""
    if not (is_project_number(project) or VAULT_NAME.fullmatch(project)):
        raise InvalidRequest(f"Invalid project {project[:64]!r}: a keyless vault name or number.")
    return project


def validate_location(location: str) -> str:
    if not _LOCATION.fullmatch(location):
        raise InvalidRequest(f"Invalid location {location[:64]!r}.")
    return location


def validate_secret_id(secret: str) -> str:
    """Google's secret ids: 1-255 letters, digits, '-' and '_' (keyless holds up to 127)."""
    if not _SECRET_ID.fullmatch(secret) or len(secret) > 127:
        raise InvalidRequest(
            f"Invalid secret id {secret[:140]!r}: 1-127 letters, digits, '-' and '_' "
            "(keyless's limit is 127 characters, Google's 255)."
        )
    return secret


def addressable(name: str) -> bool:
    """Whether Secret Manager can name this keyless secret (no '/' or '.')."""
    return _SECRET_ID.fullmatch(name) is not None


def parse_version(version: str) -> int | None:
    """A version segment: its number, or None for ``latest``."""
    if not _VERSION.fullmatch(version):
        raise InvalidRequest(
            f"Invalid secret version {version[:40]!r}: a version number or 'latest'."
        )
    return None if version == "latest" else int(version)


# -- versions ------------------------------------------------------------------------------


def is_placeholder(props: SecretVersion) -> bool:
    return props.number == 1 and props.content_type == EMPTY_SECRET_CONTENT_TYPE


def offset(first: SecretVersion | None) -> int:
    """1 when a secret's keyless version 1 is the placeholder of a secret made empty."""
    return 1 if first is not None and is_placeholder(first) else 0


def google_number(props: SecretVersion, shift: int) -> int:
    return props.number - shift


@dataclass(frozen=True, slots=True)
class Versions:
    """A secret's versions as Google numbers them (placeholder left out), oldest first."""

    shift: int
    listed: list[SecretVersion]
    created: float  # the secret's creation: its first version's (placeholder included)

    @classmethod
    def of(cls, history: list[SecretVersion]) -> Versions:
        first = min(history, key=lambda p: p.number) if history else None
        listed = [p for p in history if not is_placeholder(p)]
        return cls(offset(first), listed, first.created if first is not None else 0.0)

    def number(self, props: SecretVersion) -> int:
        return google_number(props, self.shift)

    def find(self, number: int | None) -> SecretVersion | None:
        """Version ``number`` (Google's), or the newest for None (``latest``)."""
        if number is None:
            return max(self.listed, key=lambda p: p.number) if self.listed else None
        return next((p for p in self.listed if self.number(p) == number), None)


def state(props: SecretVersion, now: float) -> str:
    """ENABLED, DISABLED or DESTROYED; a keyless version outside its validity window (Key
    Vault's ``exp``/``nbf``) cannot be read, so it shows as DISABLED."""
    if props.destroyed:
        return DESTROYED
    if not props.enabled:
        return DISABLED
    if props.expires is not None and props.expires <= now:
        return DISABLED
    if props.not_before is not None and props.not_before > now:
        return DISABLED
    return ENABLED


def client_checksum(props: SecretVersion) -> bool:
    return props.tags.get(CLIENT_CRC32C_TAG) == "true"


def etag(*parts: object) -> str:
    """An opaque etag, quoted as Google's are."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return f'"{digest[:14]}"'


def timestamp(t: float) -> str:
    """RFC 3339 in UTC with microseconds (protobuf's Timestamp JSON)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- payloads ------------------------------------------------------------------------------


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def decode_data(raw: object) -> bytes:
    """``payload.data``: base64 (standard or URL-safe, padding optional, as protobuf's JSON
    parser accepts)."""
    if not isinstance(raw, str):
        raise InvalidRequest("Invalid payload.data: base64 text expected.")
    if len(raw) > (MAX_PAYLOAD * 4) // 3 + 4:
        raise InvalidRequest(f"Secret payload data cannot be larger than {MAX_PAYLOAD} bytes.")
    text = raw.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("Invalid payload.data: not valid base64.") from exc
    if len(data) > MAX_PAYLOAD:
        raise InvalidRequest(f"Secret payload data cannot be larger than {MAX_PAYLOAD} bytes.")
    return data


def parse_crc32c(raw: object) -> int | None:
    """``payload.dataCrc32c``: an int64, as a JSON string (canonical) or a number."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidRequest("Invalid payload.dataCrc32c: an integer expected.")
    if isinstance(raw, str) and not re.fullmatch(r"-?[0-9]{1,20}", raw):
        raise InvalidRequest("Invalid payload.dataCrc32c: an integer expected.")
    value = int(raw)
    if not -(2**63) <= value < 2**63:
        raise InvalidRequest("Invalid payload.dataCrc32c: out of the int64 range.")
    return value


def check_crc32c(data: bytes, given: int | None) -> None:
    if given is not None and given != crc32c(data):
        raise InvalidRequest(
            "Checksum mismatch: payload.dataCrc32c is not the CRC32C of payload.data; the "
            "data may have been corrupted in transit."
        )


def stored_value(data: bytes) -> tuple[str, str | None]:
    """(text keyless stores, content type) for a payload."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), BINARY_CONTENT_TYPE


def payload_bytes(value: str, content_type: str | None) -> bytes:
    """The bytes of a stored value (any dialect's): base64 text under BINARY_CONTENT_TYPE."""
    if content_type == BINARY_CONTENT_TYPE:
        try:
            return base64.b64decode(value)
        except (binascii.Error, ValueError):
            pass  # not base64 after all (an old Key Vault write): its text
    return value.encode("utf-8", "surrogatepass")


# -- labels --------------------------------------------------------------------------------


def validate_labels(raw: object) -> dict[str, str]:
    """Google's labels: at most MAX_LABELS lowercase keys and values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest("Invalid labels: an object of strings expected.")
    if len(raw) > MAX_LABELS:
        raise InvalidRequest(f"Invalid labels: keyless keeps at most {MAX_LABELS} labels.")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str) or not _LABEL_KEY.fullmatch(key):
            raise InvalidRequest(
                f"Invalid label key {str(key)[:64]!r}: 1-63 lowercase letters, digits, '_' and "
                "'-', starting with a letter."
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise InvalidRequest(
                f"Invalid label value for {key!r}: 0-63 lowercase letters, digits, '_' and '-'."
            )
        out[key] = value
    return out


def labels(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags that are Google labels (keyless's and AWS's own left out)."""
    return {
        k: v
        for k, v in sorted(tags.items())
        if not k.startswith(RESERVED_TAG_PREFIXES)
        and _LABEL_KEY.fullmatch(k)
        and _LABEL_VALUE.fullmatch(v)
    }


def version_tags(current: Mapping[str, str], client_crc: bool) -> dict[str, str]:
    """A new version's tags: the current version's (labels and other dialects' tags), and
    the marker of a client-sent checksum."""
    tags = {k: v for k, v in current.items() if k != CLIENT_CRC32C_TAG}
    if client_crc:
        tags[CLIENT_CRC32C_TAG] = "true"
    return tags


# -- listing -------------------------------------------------------------------------------


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return MAX_PAGE_SIZE
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise InvalidRequest("Invalid pageSize: a non-negative integer expected.")
    size = int(raw)
    if size > MAX_PAGE_SIZE:
        raise InvalidRequest(f"Invalid pageSize: at most {MAX_PAGE_SIZE}.")
    return size or MAX_PAGE_SIZE


def page_token(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def parse_page_token(raw: str | None) -> str | None:
    """The key a page resumes after (a secret name, or a version number as text)."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 512:
            raise ValueError
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequest("Invalid pageToken.") from None
