"""Key Vault secret operations: parse the wire format, call the vault, render its bodies.

SDK quirks pinned here (azure-keyvault-secrets 4.12):
- ``get_secret(name)`` and ``update_secret_properties(name)`` use ``/secrets/NAME/`` (empty
  version): the trailing-slash routes are the latest-version routes;
- every list page names ``nextLink``, null on the last page, as Key Vault's pages do; the
  versions of a name the vault never held are an empty page, not a 404 (core/vault.py; the
  SDK's samples list such a name's versions);
- purge must answer 204 exactly; every other success is 200 (a 201 raises);
- backup values are base64url, sent back unpadded;
- any ``api-version`` in Azure's forms is accepted (the SDK sends ``7.0``..``7.6`` and dates
  such as ``2025-07-01``; previews add ``-preview[.N]``); anything else is a 400, because the
  value is echoed into ``nextLink``, which the SDK follows as is.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import broker_of
from keyless.api.forms import read_body
from keyless.api.keyvault.bodies import (
    bundle,
    deleted,
    item,
    kv_error,
    property_changes,
    secret_value,
)
from keyless.api.keyvault.gateway import BASE, PRINCIPAL, VAULT
from keyless.api.responses import JSONResponse
from keyless.core import errors, strictjson
from keyless.core.broker import Broker
from keyless.core.secrets import Secret, keyvault_addressable, validate_keyvault_name
from keyless.core.vault import Call, Page, SecretNotFound, decode_backup
from keyless.logs import request_id

MAX_BODY = 64 * 1024
MAX_RESTORE_BODY = 8 * 1024 * 1024
PAGE_MAX = 25
DEFAULT_API_VERSION = "7.5"  # in nextLink when the request named none
API_VERSION = re.compile(
    r"(?:[0-9]{1,2}\.[0-9]{1,2}|[0-9]{4}-[0-9]{2}-[0-9]{2})(?:-preview(?:\.[0-9]{1,2})?)?"
)


def _api_version(request: Request) -> str:
    values = request.query_params.getlist("api-version")
    if not values:
        return DEFAULT_API_VERSION
    if len(values) > 1 or not API_VERSION.fullmatch(values[0]):
        raise errors.InvalidRequest(
            "api-version must be given once, as MAJOR.MINOR or YYYY-MM-DD "
            "(optionally with -preview[.N])"
        )
    return values[0]


def _call(request: Request) -> Call:
    _api_version(request)  # every operation refuses a malformed one, as Azure does
    name = request.path_params.get("name")
    if name is not None:
        validate_keyvault_name(name)  # Key Vault's own rule, stricter than keyless's
    return Call(request.scope[PRINCIPAL], request_id.get())


def _addressable(page: Page) -> list[Secret]:
    """A list page's secrets that Key Vault's API can name: a name holding '/', '_' or '.'
    (written through the Vault dialect) has no Key Vault URL, so it is left out."""
    return [s for s in page.items if keyvault_addressable(s.props.name)]


def _broker(request: Request) -> Broker:
    return broker_of(request)


def _ids(request: Request) -> str:
    url: str = request.scope["keyless.vault_url"]
    return url


def _days(request: Request) -> int:
    return _broker(request).vaults.recovery_days


async def _json(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    raw = await read_body(request, limit)
    try:
        return strictjson.loads_object(raw)
    except strictjson.InvalidJson as exc:
        raise errors.InvalidRequest(f"The request body is refused: {exc.message}.") from exc


def _page_args(request: Request) -> tuple[str | None, int]:
    raw = request.query_params.get("maxresults")
    limit = PAGE_MAX
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= PAGE_MAX:
            raise errors.InvalidRequest(f"maxresults must be an integer in 1..{PAGE_MAX}")
        limit = int(raw)
    token = request.query_params.get("$skiptoken")
    after = None
    if token:
        try:
            after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise errors.InvalidRequest("$skiptoken is not valid") from exc
    return after, limit


def _next_link(request: Request, path: str, after: str | None, limit: int) -> str | None:
    """The next page's absolute URL. Every part that came from the request is validated
    (Host by the edge and the gateway, api-version here) and encoded besides."""
    if after is None:
        return None
    token = base64.urlsafe_b64encode(after.encode()).rstrip(b"=").decode()
    query = urlencode(
        {"api-version": _api_version(request), "$skiptoken": token, "maxresults": limit},
        safe="$",
    )
    return f"{request.scope[BASE]}{quote(path)}?{query}"


def render(exc: errors.KeylessError) -> Response:
    inner = exc.detail.get("inner")
    if isinstance(exc, errors.Unauthorized):
        return kv_error(401, "Unauthorized", exc.message)
    if isinstance(exc, SecretNotFound):
        return kv_error(404, "SecretNotFound", exc.message)
    if isinstance(exc, errors.NotFound):
        return kv_error(404, "NotFound", exc.message)
    if isinstance(exc, errors.Forbidden):
        return kv_error(403, "Forbidden", exc.message, inner or "ForbiddenByRbac")
    if isinstance(exc, errors.Conflict):
        return kv_error(409, "Conflict", exc.message, inner)
    if isinstance(exc, errors.InvalidRequest):
        return kv_error(400, "BadParameter", exc.message)
    if isinstance(exc, errors.Unavailable):
        return kv_error(503, "ServiceUnavailable", exc.message)
    return kv_error(500, "InternalError", "internal error")


async def handle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.KeylessError)
    return render(exc)


async def get_secret(request: Request) -> Response:
    p = request.path_params
    secret = await _broker(request).vaults.get(
        _call(request), request.scope[VAULT], p["name"], p.get("version") or None
    )
    return JSONResponse(bundle(secret, _ids(request), _days(request)))


async def set_secret(request: Request) -> Response:
    body = await _json(request)
    value, changes = secret_value(body), property_changes(body)
    secret = await _broker(request).vaults.set(
        _call(request), request.scope[VAULT], request.path_params["name"], value, changes
    )
    return JSONResponse(bundle(secret, _ids(request), _days(request)))


async def update_secret(request: Request) -> Response:
    p = request.path_params
    changes = property_changes(await _json(request))
    secret = await _broker(request).vaults.update(
        _call(request), request.scope[VAULT], p["name"], p.get("version") or None, changes
    )
    return JSONResponse(bundle(secret, _ids(request), _days(request), value=False))


async def list_secrets(request: Request) -> Response:
    after, limit = _page_args(request)
    page = await _broker(request).vaults.list(
        _call(request), request.scope[VAULT], after=after, limit=limit
    )
    return JSONResponse(
        {
            "value": [
                item(s, _ids(request), _days(request), with_version=False)
                for s in _addressable(page)
            ],
            "nextLink": _next_link(request, "/secrets", page.next_after, limit),
        }
    )


async def list_versions(request: Request) -> Response:
    after, limit = _page_args(request)
    name = request.path_params["name"]
    page = await _broker(request).vaults.versions(
        _call(request), request.scope[VAULT], name, after=after, limit=limit
    )
    return JSONResponse(
        {
            "value": [
                item(s, _ids(request), _days(request), with_version=True) for s in page.items
            ],
            "nextLink": _next_link(request, f"/secrets/{name}/versions", page.next_after, limit),
        }
    )


async def delete_secret(request: Request) -> Response:
    secret = await _broker(request).vaults.delete(
        _call(request), request.scope[VAULT], request.path_params["name"]
    )
    return JSONResponse(deleted(secret, _ids(request), _days(request)))


async def get_deleted(request: Request) -> Response:
    secret = await _broker(request).vaults.get_deleted(
        _call(request), request.scope[VAULT], request.path_params["name"]
    )
    return JSONResponse(deleted(secret, _ids(request), _days(request)))


async def list_deleted(request: Request) -> Response:
    after, limit = _page_args(request)
    page = await _broker(request).vaults.list(
        _call(request), request.scope[VAULT], after=after, limit=limit, deleted=True
    )
    return JSONResponse(
        {
            "value": [
                deleted(s, _ids(request), _days(request), listing=True) for s in _addressable(page)
            ],
            "nextLink": _next_link(request, "/deletedsecrets", page.next_after, limit),
        }
    )


async def recover(request: Request) -> Response:
    secret = await _broker(request).vaults.recover(
        _call(request), request.scope[VAULT], request.path_params["name"]
    )
    return JSONResponse(bundle(secret, _ids(request), _days(request), value=False))


async def purge(request: Request) -> Response:
    await _broker(request).vaults.purge(
        _call(request), request.scope[VAULT], request.path_params["name"]
    )
    return Response(status_code=204)


async def backup(request: Request) -> Response:
    blob = await _broker(request).vaults.backup(
        _call(request), request.scope[VAULT], request.path_params["name"]
    )
    return JSONResponse({"value": base64.urlsafe_b64encode(blob).rstrip(b"=").decode()})


async def restore(request: Request) -> Response:
    body = await _json(request, MAX_RESTORE_BODY)
    secret = await _broker(request).vaults.restore(
        _call(request), request.scope[VAULT], decode_backup(body.get("value"))
    )
    return JSONResponse(bundle(secret, _ids(request), _days(request), value=False))


routes = [
    Route("/secrets", list_secrets, methods=["GET"]),
    Route("/secrets/", list_secrets, methods=["GET"]),
    Route("/secrets/restore", restore, methods=["POST"]),
    Route("/secrets/{name}/versions", list_versions, methods=["GET"]),
    Route("/secrets/{name}/backup", backup, methods=["POST"]),
    Route("/secrets/{name}", get_secret, methods=["GET"]),
    Route("/secrets/{name}/", get_secret, methods=["GET"]),
    Route("/secrets/{name}/{version}", get_secret, methods=["GET"]),
    Route("/secrets/{name}", set_secret, methods=["PUT"]),
    Route("/secrets/{name}", update_secret, methods=["PATCH"]),
    Route("/secrets/{name}/", update_secret, methods=["PATCH"]),
    Route("/secrets/{name}/{version}", update_secret, methods=["PATCH"]),
    Route("/secrets/{name}", delete_secret, methods=["DELETE"]),
    Route("/deletedsecrets", list_deleted, methods=["GET"]),
    Route("/deletedsecrets/", list_deleted, methods=["GET"]),
    Route("/deletedsecrets/{name}", get_deleted, methods=["GET"]),
    Route("/deletedsecrets/{name}", purge, methods=["DELETE"]),
    Route("/deletedsecrets/{name}/recover", recover, methods=["POST"]),
]
