"""Key Vault JSON shapes: SecretBundle, SecretItem, DeletedSecretBundle, pages, errors.

SDK quirks pinned here (azure-keyvault-secrets 4.12):
- ids must be ``https://host[:port]/secrets/NAME[/VERSION]`` (2-3 path segments), even when
  the request came in through the ``/vaults/NAME`` path form, or the SDK raises ValueError;
- dates are unix-seconds numbers (ISO strings are passed through undeserialised);
- ``nextLink`` must be absolute; null ends paging.
"""

from __future__ import annotations

from typing import Any

from keyless.api.responses import JSONResponse
from keyless.core.errors import InvalidRequest
from keyless.core.secrets import (
    PropertyChanges,
    Secret,
    validate_content_type,
    validate_tags,
    validate_time,
    validate_value,
)


def secret_value(body: dict[str, Any]) -> str:
    """``value`` of a SecretSetParameters body."""
    return validate_value(body.get("value"))


def property_changes(body: dict[str, Any]) -> PropertyChanges:
    """``contentType``, ``tags`` and ``attributes`` (enabled, nbf, exp) of a SecretSetParameters
    or SecretUpdateParameters body; members it leaves out are not in ``set_fields``."""
    fields: set[str] = set()
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise InvalidRequest("attributes must be an object")
    enabled = attrs.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidRequest("attributes.enabled must be a boolean")
    for key, name in (("contentType", "content_type"), ("tags", "tags")):
        if key in body:
            fields.add(name)
    for key, name in (("enabled", "enabled"), ("nbf", "not_before"), ("exp", "expires")):
        if key in attrs:
            fields.add(name)
    return PropertyChanges(
        content_type=validate_content_type(body.get("contentType")),
        tags=validate_tags(body.get("tags")) if "tags" in body else None,
        enabled=enabled,
        not_before=validate_time(attrs.get("nbf"), "nbf"),
        expires=validate_time(attrs.get("exp"), "exp"),
        set_fields=frozenset(fields),
    )


def _attributes(secret: Secret, recovery_days: int) -> dict[str, Any]:
    p = secret.props
    attrs: dict[str, Any] = {
        "enabled": p.enabled,
        "created": int(p.created),
        "updated": int(p.updated),
    }
    if p.not_before is not None:
        attrs["nbf"] = int(p.not_before)
    if p.expires is not None:
        attrs["exp"] = int(p.expires)
    attrs["recoveryLevel"] = (
        "Recoverable+Purgeable" if recovery_days >= 90 else "CustomizedRecoverable+Purgeable"
    )
    attrs["recoverableDays"] = recovery_days
    return attrs


def bundle(secret: Secret, base: str, recovery_days: int, *, value: bool = True) -> dict[str, Any]:
    p = secret.props
    body: dict[str, Any] = {}
    if value and secret.value is not None:
        body["value"] = secret.value
    body["id"] = f"{base}/secrets/{p.name}/{p.version}"
    if p.content_type is not None:
        body["contentType"] = p.content_type
    if p.tags:
        body["tags"] = p.tags
    body["attributes"] = _attributes(secret, recovery_days)
    return body


def item(secret: Secret, base: str, recovery_days: int, *, with_version: bool) -> dict[str, Any]:
    p = secret.props
    body: dict[str, Any] = {
        "id": f"{base}/secrets/{p.name}" + (f"/{p.version}" if with_version else "")
    }
    if p.content_type is not None:
        body["contentType"] = p.content_type
    if p.tags:
        body["tags"] = p.tags
    body["attributes"] = _attributes(secret, recovery_days)
    return body


def deleted(
    secret: Secret, base: str, recovery_days: int, *, listing: bool = False
) -> dict[str, Any]:
    state = secret.state
    body = (
        item(secret, base, recovery_days, with_version=False)
        if listing
        else bundle(secret, base, recovery_days, value=False)
    )
    body["recoveryId"] = f"{base}/deletedsecrets/{secret.props.name}"
    if state is not None and state.deleted_at is not None:
        body["deletedDate"] = int(state.deleted_at)
    if state is not None and state.purge_at is not None:
        body["scheduledPurgeDate"] = int(state.purge_at)
    return body


def kv_error(
    status: int,
    code: str,
    message: str,
    inner: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return JSONResponse({"error": error}, status_code=status, headers=headers)
