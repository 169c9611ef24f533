"""Secret backups: every version of a secret in one blob only the same root key can open."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError, InvalidRequest
from keyless.core.secrets import (
    SecretVersion,
    validate_content_type,
    validate_tags,
    validate_time,
    validate_value,
    validate_version,
)

# What a backup holds per version: its properties and its value (a destroyed version: none).
Opened = tuple[SecretVersion, str | None]

BACKUP_MAGIC = b"KLB1"
BACKUP_CONTEXT = "secret-backup:v1"


def seal_backup(root: RootKeys, doc: dict[str, Any]) -> bytes:
    plain = json.dumps(doc, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return BACKUP_MAGIC + root.seal(plain, BACKUP_CONTEXT)


def open_backup(root: RootKeys, blob: bytes) -> dict[str, Any]:
    if not blob.startswith(BACKUP_MAGIC):
        raise InvalidRequest("the backup blob is not a keyless secret backup")
    try:
        plain = root.open(blob[len(BACKUP_MAGIC) :], BACKUP_CONTEXT)
        doc = json.loads(plain)
    except CryptoError as exc:
        raise InvalidRequest(
            "the backup blob cannot be opened: it was made by a keyless "
            "with another root key, or it was altered"
        ) from exc
    except ValueError as exc:
        raise InvalidRequest("the backup blob is malformed") from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("versions"), list)
        or not doc["versions"]
    ):
        raise InvalidRequest("the backup blob is malformed")
    return doc


def decode_backup(value: object) -> bytes:
    """Backup values are base64url; clients send them unpadded."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'value' must hold the base64url backup blob")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("'value' is not base64url") from exc


def backup_doc(name: str, current: str, versions: list[Opened]) -> dict[str, Any]:
    """The document a backup seals: the name, its current version, every version."""
    return {
        "name": name,
        "current": current,
        "versions": [
            {
                "version": p.version,
                "number": p.number,
                "destroyed": p.destroyed,
                "value": "" if value is None else value,
                "contentType": p.content_type,
                "tags": p.tags,
                "enabled": p.enabled,
                "nbf": p.not_before,
                "exp": p.expires,
                "created": p.created,
                "updated": p.updated,
            }
            for p, value in versions
        ],
    }


def restored_versions(doc: dict[str, Any], vault: str, name: str) -> list[Opened]:
    """A backup document's versions, validated as on the way in, for ``vault``/``name``."""
    out: list[Opened] = []
    for ordinal, item in enumerate(doc["versions"], start=1):
        number = item.get("number")
        destroyed = item.get("destroyed") is True
        props = SecretVersion(
            vault=vault,
            name=name,
            version=validate_version(str(item["version"])),
            content_type=validate_content_type(item.get("contentType")),
            tags=validate_tags(item.get("tags")),
            enabled=bool(item.get("enabled")),
            not_before=validate_time(item.get("nbf"), "nbf"),
            expires=validate_time(item.get("exp"), "exp"),
            created=float(item["created"]),
            updated=float(item["updated"]),
            # Backups made before versions were numbered: their order is the number.
            number=number if isinstance(number, int) and number > 0 else ordinal,
            destroyed=destroyed,
        )
        value = validate_value(item.get("value"))
        out.append((props, None if destroyed else value))
    return out
