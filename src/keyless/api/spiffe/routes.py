"""The keyless-native SPIFFE endpoints (paths and shapes fixed in core/spiffenames.py):

- ``GET /TENANT/spiffe/bundle``: the trust domain's SPIFFE bundle (a JWKS), cacheable;
- ``GET /TENANT/spiffe/bundles``: ``{TRUST_DOMAIN: bundle}``, this one and every federated one;
- ``POST /TENANT/spiffe/x509-svid`` ``{client_id, assertion, csr}`` and
  ``POST /TENANT/spiffe/jwt-svid`` ``{client_id, assertion, audience: [...]}``.

Errors are ``{"error": CODE, "error_description": TEXT}``: 400 for a bad request (a CSR whose
signature does not verify too), 401 for a platform token that fails its own checks or an unknown
client, 403 for a token no trust policy of the identity accepts, 404 for an unknown tenant.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import edge_of
from keyless.api.forms import read_json_object
from keyless.api.responses import JSONResponse
from keyless.api.tenancy import tenant_named
from keyless.api.throttle import discovery_refusal, spend_token_request
from keyless.core import errors, strictjson
from keyless.core.broker import Broker
from keyless.core.models import Tenant
from keyless.core.spiffenames import BUNDLE_PATH, BUNDLES_PATH, JWT_SVID_PATH, X509_SVID_PATH
from keyless.core.spiffesvid import SpiffeService
from keyless.logs import request_id

MAX_BODY = 64 * 1024
_STATUS: tuple[tuple[type[errors.KeylessError], int], ...] = (
    (errors.UnknownClient, 401),
    (errors.NotFound, 404),
    (errors.InvalidToken, 401),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
    (errors.InvalidRequest, 400),
)


def render_error(exc: errors.KeylessError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    response = JSONResponse(
        {"error": exc.code, "error_description": exc.message}, status_code=status
    )
    if isinstance(exc, errors.RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _service(broker: Broker) -> SpiffeService:
    if broker.spiffe is None:
        raise errors.Unavailable("SPIFFE is not enabled on this server")
    return broker.spiffe


def _cache(service: SpiffeService) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={service.refresh_hint}"}


async def _published(
    request: Request, view: Callable[[SpiffeService, Tenant], Awaitable[Any]]
) -> Response:
    """A cacheable public answer about the tenant's trust domain, under the discovery limit."""
    try:
        refused = discovery_refusal(request)
        if refused is not None:
            raise refused
        edge = edge_of(request)
        tenant = await tenant_named(edge, request.path_params["tenant"])
        service = _service(edge.broker)
        return JSONResponse(await view(service, tenant), headers=_cache(service))
    except errors.KeylessError as exc:
        return render_error(exc)


async def bundle(request: Request) -> Response:
    return await _published(request, lambda service, tenant: service.bundle(tenant))


async def bundles(request: Request) -> Response:
    return await _published(request, lambda service, tenant: service.federated_bundles(tenant))


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise errors.InvalidRequest(f"{name!r} is required (a non-empty string)")
    return value


async def _body(request: Request) -> dict[str, Any]:
    spend_token_request(request)  # the token endpoint's per-client budget
    try:
        return await read_json_object(request, MAX_BODY)
    except strictjson.InvalidJson as exc:
        raise errors.InvalidRequest(f"the body is not a JSON object: {exc}") from None


def _der(cert: Any) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


async def x509_svid(request: Request) -> Response:
    try:
        edge = edge_of(request)
        body = await _body(request)
        tenant = await tenant_named(edge, request.path_params["tenant"])
        try:
            csr = base64.b64decode(_string(body, "csr"), validate=True)
        except binascii.Error:
            raise errors.InvalidRequest("'csr' is not base64 (a DER PKCS#10 request)") from None
        svid = await _service(edge.broker).x509_svid(
            tenant,
            _string(body, "client_id"),
            _string(body, "assertion").strip(),
            csr,
            request_id=request_id.get(),
        )
    except errors.KeylessError as exc:
        return render_error(exc)
    return JSONResponse(
        {
            "spiffe_id": svid.spiffe_id,
            "svid": [_der(c) for c in svid.certificates],
            "expires_at": int(svid.expires_at),
            "bundle": [_der(c) for c in svid.bundle],
        },
        headers={"Cache-Control": "no-store"},
    )


async def jwt_svid(request: Request) -> Response:
    try:
        edge = edge_of(request)
        body = await _body(request)
        tenant = await tenant_named(edge, request.path_params["tenant"])
        audience = body.get("audience")
        if isinstance(audience, str):
            audience = [audience]
        svid = await _service(edge.broker).jwt_svid(
            tenant,
            _string(body, "client_id"),
            _string(body, "assertion").strip(),
            audience if isinstance(audience, list) else [],
            request_id=request_id.get(),
        )
    except errors.KeylessError as exc:
        return render_error(exc)
    return JSONResponse(
        {"spiffe_id": svid.spiffe_id, "token": svid.token, "expires_at": int(svid.expires_at)},
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route(BUNDLE_PATH, bundle, methods=["GET"]),
    Route(BUNDLES_PATH, bundles, methods=["GET"]),
    Route(X509_SVID_PATH, x509_svid, methods=["POST"]),
    Route(JWT_SVID_PATH, jwt_svid, methods=["POST"]),
]
