"""Secret backups: every version of a secret in one blob only the same root key can open."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError, InvalidRequest

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
