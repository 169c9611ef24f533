"""OIDC discovery and JWKS of a tenant, as Entra v2 serves them.

Unauthenticated, so bounded: a per-client-IP rate limit (``--discovery-rate-limit``, 429 with
``Retry-After`` and an Entra body, like the token endpoint's) is taken before the tenant is
looked up, and unknown tenants are answered from memory (core/tenants.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import broker_of, edge_of
from keyless.api.oautherrors import common_error, entra_error
from keyless.api.oidcmeta import provider_metadata
from keyless.api.responses import JSONResponse
from keyless.api.tenancy import tenant_named
from keyless.api.throttle import discovery_refusal
from keyless.core.errors import NotFound
from keyless.core.models import Tenant

CACHE = "public, max-age=3600"


async def _tenant(request: Request) -> Tenant | Response:
    refused = discovery_refusal(request)
    if refused is not None:
        return common_error(refused)
    name = request.path_params["tenant"]
    try:
        return await tenant_named(edge_of(request), name)
    except NotFound:
        return entra_error(400, "invalid_tenant", 90002, f"Tenant '{name[:64]}' not found.")


async def openid_configuration(request: Request) -> Response:
    tenant = await _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    base = broker_of(request).public_url
    claims = ["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "azp", "appid", "jti", "fed"]
    doc = provider_metadata(
        issuer=tenant.issuer(base),
        authorization=f"{base}/{tenant.id}/oauth2/v2.0/authorize",
        token=f"{base}/{tenant.id}/oauth2/v2.0/token",
        jwks=f"{base}/{tenant.id}/discovery/v2.0/keys",
        claims=claims,
    )
    doc["tenant_region_scope"] = None
    return JSONResponse(doc, headers={"Cache-Control": CACHE})


async def jwks(request: Request) -> Response:
    tenant = await _tenant(request)
    if isinstance(tenant, Response):
        return tenant
    ring = broker_of(request).signing_keys(tenant.id)
    return JSONResponse(ring.jwks(), headers={"Cache-Control": CACHE})


routes = [
    Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
    Route("/{tenant}/discovery/v2.0/keys", jwks),
]
