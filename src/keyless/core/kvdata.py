"""One secret, readable as a string (Key Vault, Secrets Manager, Secret Manager) and as a JSON
object (Vault / OpenBao KV v2): the rule that maps the two, in one place.

- A value written as a JSON object is stored as its JSON text with the content type
  ``application/json``, and is that object again in KV v2.
- ``{"value": "s"}`` (exactly one key ``value``, a string) is stored as the plain string ``s``,
  so ``bao kv put VAULT/NAME value=s`` and ``SecretClient.get_secret(NAME).value == "s"`` agree.
- Any other stored value (a plain string, or text that is not a JSON object) is
  ``{"value": "<the string>"}`` in KV v2.
"""

from __future__ import annotations

import json
from typing import Any

from keyless.core import strictjson
from keyless.core.errors import InvalidRequest

JSON = "application/json"
VALUE = "value"
MAX_VERSION = 10**18 - 1  # 18 digits, as for a version given as text: fits a 64-bit column


def as_object(value: str, content_type: str | None) -> dict[str, Any]:
    """A stored value as KV v2's ``data.data``."""
    if content_type == JSON:
        try:
            parsed = strictjson.loads_object(value)
        except strictjson.InvalidJson:
            pass
        else:
            return parsed
    return {VALUE: value}


def from_object(data: object) -> tuple[str, str | None]:
    """KV v2's ``data`` as the value to store and its content type."""
    if not isinstance(data, dict):
        raise InvalidRequest("'data' must be a JSON object of the secret's keys and values")
    if set(data) == {VALUE} and isinstance(data[VALUE], str):
        return data[VALUE], None
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")), JSON


def subkeys(data: dict[str, Any]) -> dict[str, Any]:
    """KV v2's ``subkeys``: the object's keys, nested objects kept, every leaf null."""
    return {k: subkeys(v) if isinstance(v, dict) else None for k, v in data.items()}


def merge_patch(target: dict[str, Any], patch: object) -> dict[str, Any]:
    """RFC 7396 JSON merge patch (KV v2's ``PATCH .../data/PATH``)."""
    if not isinstance(patch, dict):
        raise InvalidRequest("'data' must be a JSON object (a JSON merge patch)")
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = value
    return out


def version_numbers(raw: object) -> list[int]:
    """KV v2's ``{"versions": [1, 2]}`` (numbers or numeric strings, as the CLI sends)."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("no versions provided: 'versions' must be a non-empty list")
    out: list[int] = []
    for item in raw:
        number = parse_version(item)
        if number is None or number < 1:
            raise InvalidRequest(f"version {str(item)[:20]!r} is not a positive integer")
        out.append(number)
    return out


def parse_version(raw: object) -> int | None:
    """``?version=N`` or a body's version: None for absent/0 (the current version)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise InvalidRequest("version must be an integer")
    if isinstance(raw, int):
        if raw > MAX_VERSION:
            raise InvalidRequest(f"version {str(raw)[:20]!r} is out of range")
        number = raw
    elif (
        isinstance(raw, str)
        and raw.isascii()
        and raw.isdigit()
        and len(raw) <= len(str(MAX_VERSION))
    ):
        number = int(raw)
    else:
        raise InvalidRequest(f"version {str(raw)[:20]!r} is not an integer")
    if number < 0:
        raise InvalidRequest("version must not be negative")
    return number or None
