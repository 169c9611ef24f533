"""KV v2 on every keyless vault: mount = vault name, path = secret name (``db/creds`` too).

Every call is ``VaultService``'s (RBAC on ``/vaults/V`` or ``/vaults/V/secrets/S``, audited);
the value <-> JSON object rule is ``core/kvdata.py``. Versions are the secret's numbered
versions; Vault's per-version ``delete``/``undelete`` disable and enable a version (a deleted
version shows its ``deletion_time``), ``destroy`` wipes a version's value for good, and
``metadata`` delete puts the whole secret in keyless's soft delete (recoverable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.responses import JSONResponse
from keyless.api.vault.wire import broker_of, call_of, envelope, read_json, refuse_mount, rfc3339
from keyless.core import errors, kvdata
from keyless.core.secrets import PropertyChanges, Secret, SecretVersion, validate_tags
from keyless.core.vault import Call, SecretNotFound, SecretUnavailable

LIST_PAGE = 1000
DELETED_BUT_RECOVERABLE = "ObjectIsDeletedButRecoverable"  # store/vault.py's Conflict


def _path(request: Request) -> tuple[str, str]:
    return request.path_params["mount"], request.path_params.get("path", "").strip("/")


def _version_meta(props: SecretVersion) -> dict[str, Any]:
    deleted = "" if props.enabled or props.destroyed else rfc3339(props.updated)
    return {
        "created_time": rfc3339(props.created),
        "custom_metadata": dict(props.tags) or None,
        "deletion_time": deleted,
        "destroyed": props.destroyed,
        "version": props.number,
    }


async def _object(request: Request, field: str, shape: Callable[[dict[str, Any]], Any]) -> Response:
    """A version's object (``?version=N`` or the current one), shaped into ``data[field]``
    beside its metadata; a deleted (disabled), destroyed or expired version is a 404 with its
    metadata and ``field`` null, as Vault answers."""
    mount, path = _path(request)
    number = kvdata.parse_version(request.query_params.get("version"))
    call = await call_of(request, mount)
    try:
        secret = await broker_of(request).vaults.get(call, mount, path, number=number)
    except SecretUnavailable as exc:
        body = envelope({field: None, "metadata": _version_meta(exc.props)})
        return JSONResponse(body, status_code=404)
    assert secret.value is not None
    data = shape(kvdata.as_object(secret.value, secret.props.content_type))
    return JSONResponse(envelope({field: data, "metadata": _version_meta(secret.props)}))


async def read(request: Request) -> Response:
    if request.query_params.get("list") == "true":
        raise errors.InvalidRequest("list the keys at metadata/PATH, not data/PATH")
    return await _object(request, "data", lambda data: data)


def _cas(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    if options is None:
        return None
    if not isinstance(options, dict):
        raise errors.InvalidRequest("'options' must be an object")
    raw = options.get("cas")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise errors.InvalidRequest("options.cas must be an integer")
    text = str(raw)
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise errors.InvalidRequest("options.cas must be a non-negative integer")
    return int(text)


async def _write(
    request: Request, call: Call, mount: str, path: str, data: object, cas: int | None
) -> Response:
    value, content_type = kvdata.from_object(data)
    vaults = broker_of(request).vaults

    async def put() -> Secret:
        return await vaults.set(
            call,
            mount,
            path,
            value,
            PropertyChanges(content_type=content_type),
            expect=cas,
            inherit_tags=True,
        )

    try:
        secret = await put()
    except errors.Conflict as exc:
        if exc.detail.get("inner") != DELETED_BUT_RECOVERABLE:
            raise
        # Vault's metadata delete is for good, so a write makes the name anew (version 1);
        # keyless kept the deleted secret recoverable until now: it is purged first (audited).
        await vaults.purge(call, mount, path)
        secret = await put()
    return JSONResponse(envelope(_version_meta(secret.props)))


async def write(request: Request) -> Response:
    mount, path = _path(request)
    body = await read_json(request)
    if "data" not in body:
        raise errors.InvalidRequest("no data provided")
    call = await call_of(request, mount)
    return await _write(request, call, mount, path, body["data"], _cas(body))


async def patch(request: Request) -> Response:
    """A JSON merge patch of the current version's object, written as a new version with
    check-and-set on the version it read (a concurrent write makes it fail, not merge)."""
    mount, path = _path(request)
    body = await read_json(request)
    if "data" not in body:
        raise errors.InvalidRequest("no data provided")
    call = await call_of(request, mount)
    try:
        current = await broker_of(request).vaults.get(call, mount, path)
    except SecretUnavailable as exc:
        raise errors.NotFound(f"no current version of {path!r} to patch") from exc
    assert current.value is not None
    merged = kvdata.merge_patch(
        kvdata.as_object(current.value, current.props.content_type), body["data"]
    )
    cas = _cas(body)
    return await _write(
        request, call, mount, path, merged, cas if cas is not None else current.props.number
    )


async def delete_latest(request: Request) -> Response:
    """Deletes are idempotent, as in Vault: nothing there to delete is a 204 too."""
    mount, path = _path(request)
    call = await call_of(request, mount)
    with contextlib.suppress(SecretNotFound):
        await broker_of(request).vaults.set_enabled(call, mount, path, None, False)
    return Response(status_code=204)


async def delete_versions(request: Request) -> Response:
    return await _versions_op(request, "delete")


async def undelete_versions(request: Request) -> Response:
    return await _versions_op(request, "undelete")


async def destroy_versions(request: Request) -> Response:
    return await _versions_op(request, "destroy")


async def _versions_op(request: Request, op: str) -> Response:
    """``delete``/``undelete``/``destroy`` of the numbered versions in ``{"versions": [...]}``."""
    mount, path = _path(request)
    numbers = kvdata.version_numbers((await read_json(request)).get("versions"))
    call = await call_of(request, mount)
    vaults = broker_of(request).vaults
    with contextlib.suppress(SecretNotFound):  # idempotent, as in Vault
        if op == "destroy":
            await vaults.destroy(call, mount, path, numbers)
        else:
            await vaults.set_enabled(call, mount, path, numbers, op == "undelete")
    return Response(status_code=204)


async def metadata(request: Request) -> Response:
    if request.query_params.get("list") == "true":
        return await list_keys(request)
    mount, path = _path(request)
    if not path:
        return await list_keys(request)
    call = await call_of(request, mount)
    state, versions = await broker_of(request).vaults.history(call, mount, path)
    current = next((v for v in versions if v.version == state.current_version), versions[-1])
    data = {
        "created_time": rfc3339(versions[0].created),
        "updated_time": rfc3339(max(v.updated for v in versions)),
        "current_version": current.number,
        "oldest_version": 0,
        "max_versions": 0,
        "cas_required": False,
        "delete_version_after": "0s",
        "custom_metadata": dict(current.tags) or None,
        "versions": {
            str(v.number): {
                "created_time": rfc3339(v.created),
                "deletion_time": _version_meta(v)["deletion_time"],
                "destroyed": v.destroyed,
            }
            for v in versions
        },
    }
    return JSONResponse(envelope(data))


async def list_keys(request: Request) -> Response:
    """The names directly under PATH/ (``a``, and ``dir/`` for deeper ones); 404 if none.
    Every page of the vault is read: the store's name order is the database's collation."""
    mount, path = _path(request)
    prefix = f"{path}/" if path else ""
    call = await call_of(request, mount)
    vaults = broker_of(request).vaults
    keys: set[str] = set()
    after: str | None = None
    while True:
        page = await vaults.list(call, mount, after=after, limit=LIST_PAGE)
        for secret in page.items:
            name = secret.props.name
            if name.startswith(prefix):
                head, sep, _ = name[len(prefix) :].partition("/")
                keys.add(head + sep)
        if page.next_after is None:
            break
        after = page.next_after
    if not keys:
        return JSONResponse({"errors": []}, status_code=404)
    return JSONResponse(envelope({"keys": sorted(keys)}))


def _metadata_fields(body: dict[str, Any]) -> dict[str, str] | None:
    """``custom_metadata`` (as the current version's tags); Vault's version-retention settings
    are accepted only at the values keyless behaves by (keeps every version, no expiry)."""
    for key, default in (("max_versions", 0), ("cas_required", False)):
        if key in body and body[key] not in (default, str(default).lower(), None):
            raise errors.InvalidRequest(f"{key} is not supported by keyless (it keeps {default})")
    after = body.get("delete_version_after")
    if after not in (None, 0, "0", "0s", ""):
        raise errors.InvalidRequest("delete_version_after is not supported by keyless")
    if "custom_metadata" not in body:
        return None
    custom = body["custom_metadata"]
    return validate_tags(custom if custom is not None else {})


async def write_metadata(request: Request) -> Response:
    mount, path = _path(request)
    body = await read_json(request)
    tags = _metadata_fields(body)
    call = await call_of(request, mount)
    if tags is not None:
        vaults = broker_of(request).vaults
        if request.method == "PATCH":
            state, versions = await vaults.history(call, mount, path)
            current = next(v for v in versions if v.version == state.current_version)
            tags = {**current.tags, **tags}
        await vaults.update(
            call, mount, path, None, PropertyChanges(tags=tags, set_fields=frozenset({"tags"}))
        )
    return Response(status_code=204)


async def delete_metadata(request: Request) -> Response:
    mount, path = _path(request)
    call = await call_of(request, mount)
    with contextlib.suppress(SecretNotFound):  # idempotent, as in Vault
        await broker_of(request).vaults.delete(call, mount, path)
    return Response(status_code=204)


async def config(request: Request) -> Response:
    """The mount's KV settings: what keyless behaves by (every version kept, none expire)."""
    mount, _ = _path(request)
    call = await call_of(request, mount)
    visible = await broker_of(request).vaults.visible_vaults(call.principal)
    if mount not in {v.name for v in visible}:
        await refuse_mount(request, call.principal, mount)
        raise errors.Forbidden(f"no role of this identity reaches the vault {mount[:64]!r}")
    return JSONResponse(
        envelope({"cas_required": False, "delete_version_after": "0s", "max_versions": 0})
    )


async def subkeys(request: Request) -> Response:
    """The secret's keys without their values (nested objects as objects, leaves as null)."""
    return await _object(request, "subkeys", kvdata.subkeys)


routes = [
    Route("/{mount}/data/{path:path}", read, methods=["GET"]),
    Route("/{mount}/data/{path:path}", write, methods=["POST", "PUT"]),
    Route("/{mount}/data/{path:path}", patch, methods=["PATCH"]),
    Route("/{mount}/data/{path:path}", delete_latest, methods=["DELETE"]),
    Route("/{mount}/delete/{path:path}", delete_versions, methods=["POST", "PUT"]),
    Route("/{mount}/undelete/{path:path}", undelete_versions, methods=["POST", "PUT"]),
    Route("/{mount}/destroy/{path:path}", destroy_versions, methods=["POST", "PUT"]),
    Route("/{mount}/config", config, methods=["GET"]),
    Route("/{mount}/subkeys/{path:path}", subkeys, methods=["GET"]),
    Route("/{mount}/metadata", list_keys, methods=["GET", "LIST"]),
    Route("/{mount}/metadata/{path:path}", metadata, methods=["GET"]),
    Route("/{mount}/metadata/{path:path}", list_keys, methods=["LIST"]),
    Route("/{mount}/metadata/{path:path}", write_metadata, methods=["POST", "PUT", "PATCH"]),
    Route("/{mount}/metadata/{path:path}", delete_metadata, methods=["DELETE"]),
]
