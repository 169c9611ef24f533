"""SPIFFE administration: the tenant's CA generations, rotating them now, and federation with
other trust domains' bundles (``keyless spiffe ...``; docs/spiffe.md)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, text
from keyless.api.responses import JSONResponse
from keyless.core.errors import Unavailable
from keyless.core.models import Tenant
from keyless.core.spiffeca import SpiffeCARecord
from keyless.core.spiffenames import trust_domain
from keyless.core.spiffesvid import SpiffeService


def _spiffe(request: Request) -> SpiffeService:
    spiffe = services_of(request).broker.spiffe
    if spiffe is None:
        raise Unavailable("SPIFFE is not enabled on this server")
    return spiffe


async def _tenant(request: Request) -> Tenant:
    return await services_of(request).tenants.get(request.path_params["tenant"])


def _ca_view(record: SpiffeCARecord) -> dict[str, Any]:
    return {
        "ca_id": record.ca_id,
        "state": record.state,
        "created_at": record.created_at,
        "activated_at": record.activated_at,
        "retired_at": record.retired_at,
        "not_after": record.not_after,
    }


async def cas_list(request: Request) -> Response:
    tenant = await _tenant(request)
    spiffe = _spiffe(request)
    cas = await spiffe.cas.load(tenant.id, trust_domain(tenant.alias))
    return JSONResponse(
        {
            "tenant": tenant.id,
            "trust_domain": trust_domain(tenant.alias),
            "cas": [_ca_view(r) for r in cas.published],
            "rotation_period": spiffe.cas.period,
            "next_rotation": spiffe.cas.next_rotation(cas),
        }
    )


async def rotate(request: Request) -> Response:
    tenant = await _tenant(request)
    spiffe = _spiffe(request)
    domain = trust_domain(tenant.alias)
    before = (await spiffe.cas.load(tenant.id, domain)).current.record.ca_id
    rotated = await spiffe.cas.rotate(tenant.id, domain, force=True)
    cas = spiffe.cas.cas(tenant.id)
    return JSONResponse(
        {
            "tenant": tenant.id,
            "trust_domain": domain,
            "rotated": rotated,
            "retired": before,
            "current": cas.current.record.ca_id,
            "next": cas.upcoming.ca_id if cas.upcoming else None,
        }
    )


async def federation_list(request: Request) -> Response:
    tenant = await _tenant(request)
    domains = await _spiffe(request).federated_domains(tenant)
    return JSONResponse({"tenant": tenant.id, "federation": [d.view() for d in domains]})


async def federation_add(request: Request) -> Response:
    tenant = await _tenant(request)
    body = await json_body(request)
    domain = await _spiffe(request).federate(
        tenant, str(text(body, "trust_domain")), str(text(body, "bundle_url"))
    )
    return JSONResponse(domain.view(), status_code=201)


async def federation_remove(request: Request) -> Response:
    tenant = await _tenant(request)
    name = request.path_params["trust_domain"]
    await _spiffe(request).unfederate(tenant, name)
    return JSONResponse({"tenant": tenant.id, "removed": name})


routes = [
    Route("/v1/tenants/{tenant}/spiffe/cas", cas_list),
    Route("/v1/tenants/{tenant}/spiffe/rotate", rotate, methods=["POST"]),
    Route("/v1/tenants/{tenant}/spiffe/federation", federation_list, methods=["GET"]),
    Route("/v1/tenants/{tenant}/spiffe/federation", federation_add, methods=["POST"]),
    Route(
        "/v1/tenants/{tenant}/spiffe/federation/{trust_domain}",
        federation_remove,
        methods=["DELETE"],
    ),
]
