"""Status, tenant, signing keys and root key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless import __version__
from keyless.api.admin.common import json_body, text
from keyless.api.context import Admin
from keyless.api.responses import JSONResponse
from keyless.core.keyring import published_until
from keyless.core.models import SigningKeyRecord, Tenant
from keyless.core.spiffenames import trust_domain
from keyless.settings import ca_path


def _services(request: Request) -> Admin:
    services: Admin = request.app.state.services
    return services


async def status(request: Request) -> Response:
    s = _services(request)
    settings = s.settings
    return JSONResponse(
        {
            "version": __version__,
            "public_url": settings.public_url,
            "listen": f"{settings.listen_host}:{settings.listen_port}",
            "database": s.store.url.redacted(),
            "data_dir": str(settings.data_dir.resolve()),
            "ca": None
            if settings.tls_cert or settings.insecure_http
            else str(ca_path(settings.data_dir).resolve()),
            "dev": settings.dev,
            "default_tenant": s.default_tenant.id,
            "root_key": s.root.active_id,
            "uptime_seconds": round(s.clock.now() - s.started_at, 1),
        }
    )


async def tenant_create(request: Request) -> Response:
    s = _services(request)
    alias = text(await json_body(request), "alias")
    tenant, created = await s.tenants.create(str(alias))
    await s.keys.load(tenant.id)
    return JSONResponse(
        {"id": tenant.id, "alias": tenant.alias, "issuer": tenant.issuer(s.settings.public_url)},
        status_code=201 if created else 200,
    )


async def tenant_list(request: Request) -> Response:
    s = _services(request)
    return JSONResponse(
        [
            {"id": t.id, "alias": t.alias, "issuer": t.issuer(s.settings.public_url)}
            for t in await s.tenants.list()
        ]
    )


def _tenant_view(s: Admin, tenant: Tenant) -> dict[str, object]:
    return {
        "id": tenant.id,
        "alias": tenant.alias,
        "issuer": tenant.issuer(s.settings.public_url),
        "trust_domain": trust_domain(tenant.alias),  # SPIFFE (CONTRACT.md, docs/spiffe.md)
    }


async def tenant_show(request: Request) -> Response:
    s = _services(request)
    tenant = await s.tenants.get(request.path_params["tenant"])
    return JSONResponse(_tenant_view(s, tenant))


def _key_view(record: SigningKeyRecord, token_lifetime: int) -> dict[str, object]:
    return {
        "kid": record.kid,
        "alg": record.alg,
        "state": record.state,
        "created_at": record.created_at,
        "activated_at": record.activated_at,
        "retired_at": record.retired_at,
        "published_until": published_until(record, token_lifetime)
        if record.state == "retired"
        else None,
    }


async def keys_list(request: Request) -> Response:
    s = _services(request)
    tenant = await s.tenants.get(request.path_params["tenant"])
    ring = await s.keys.load(tenant.id)
    lifetime = s.keys.token_lifetime
    return JSONResponse(
        {
            "tenant": tenant.id,
            "keys": [_key_view(r, lifetime) for r in ring.published],
            "rotation_period": s.keys.period,
            "next_rotation": s.keys.next_rotation(ring),
        }
    )


async def keys_rotate(request: Request) -> Response:
    s = _services(request)
    tenant = await s.tenants.get(request.path_params["tenant"])
    before = s.keys.ring(tenant.id).current.kid
    rotated = await s.keys.rotate(tenant.id, force=True)
    if rotated:
        request.app.state.metrics.key_rotations.inc()
    ring = s.keys.ring(tenant.id)
    return JSONResponse(
        {
            "tenant": tenant.id,
            "rotated": rotated,
            "retired": before,
            "current": ring.current.kid,
            "next": ring.upcoming.kid if ring.upcoming else None,
        }
    )


async def root_key_rotate(request: Request) -> Response:
    return JSONResponse(await _services(request).rotate_root_key())


routes = [
    Route("/v1/status", status),
    Route("/v1/tenants", tenant_create, methods=["POST"]),
    Route("/v1/tenants", tenant_list, methods=["GET"]),
    Route("/v1/tenants/{tenant}", tenant_show),
    Route("/v1/tenants/{tenant}/keys", keys_list),
    Route("/v1/tenants/{tenant}/keys/rotate", keys_rotate, methods=["POST"]),
    Route("/v1/root-key/rotate", root_key_rotate, methods=["POST"]),
]
