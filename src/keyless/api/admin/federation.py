"""Admin routes: identities, trusted issuers, federated credentials, explain."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, tenant_of, text
from keyless.core.errors import InvalidRequest
from keyless.core.explain import explain_token
from keyless.core.trust import DEFAULT_AUDIENCE, FederatedCredential


def _credential_view(fc: FederatedCredential) -> dict[str, Any]:
    return {
        "name": fc.name,
        "issuer": fc.issuer,
        "subject": fc.subject,
        "subject_pattern": fc.subject_pattern,
        "audiences": list(fc.audiences),
        "condition": fc.condition,
    }


async def identity_create(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    identity = await s.federation.create_identity(tenant.id, str(text(body, "name")))
    return JSONResponse(identity.view())


async def identity_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    return JSONResponse([i.view() for i in await s.federation.list_identities(tenant.id)])


async def identity_show(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    identity = await s.federation.get_identity(tenant.id, request.path_params["name"])
    return JSONResponse(identity.view())


async def identity_delete(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    await s.federation.delete_identity(tenant.id, request.path_params["name"])
    return JSONResponse({"deleted": request.path_params["name"]})


def _issuer_view(status: Any) -> dict[str, Any]:
    view = dataclasses.asdict(status)
    view["kids"] = list(view.get("kids") or ())
    return view


async def issuer_add(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    url = str(text(body, "url"))
    created = await s.federation.add_issuer(tenant.id, url, body.get("jwks"))
    status = await s.federation.refresh_issuer(tenant.id, url)
    return JSONResponse({"created": created, **_issuer_view(status)})


async def issuer_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    return JSONResponse([_issuer_view(st) for st in await s.federation.list_issuers(tenant.id)])


async def issuer_remove(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    url = str(text(body, "url"))
    await s.federation.remove_issuer(tenant.id, url)
    return JSONResponse({"removed": url})


async def issuer_refresh(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    status = await s.federation.refresh_issuer(tenant.id, str(text(body, "url")))
    return JSONResponse(_issuer_view(status))


async def credential_add(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    audiences = body.get("audiences") or [DEFAULT_AUDIENCE]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidRequest("'audiences' must be a list of strings")
    fc = await s.federation.add_credential(
        tenant.id,
        request.path_params["name"],
        name=str(text(body, "name")),
        issuer=str(text(body, "issuer")),
        subject=text(body, "subject", optional=True),
        subject_pattern=text(body, "subject_pattern", optional=True),
        audiences=audiences,
        condition=text(body, "condition", optional=True),
    )
    return JSONResponse(_credential_view(fc))


async def credential_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    creds = await s.federation.list_credentials(tenant.id, request.path_params["name"])
    return JSONResponse([_credential_view(fc) for fc in creds])


async def credential_remove(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    await s.federation.remove_credential(
        tenant.id, request.path_params["name"], request.path_params["credential"]
    )
    return JSONResponse({"removed": request.path_params["credential"]})


async def explain(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    report = await explain_token(
        s.tokens,
        tenant,
        str(text(body, "token")),
        identity_name=text(body, "identity", optional=True),
    )
    return JSONResponse(report)


routes = [
    Route("/v1/identities", identity_create, methods=["POST"]),
    Route("/v1/identities", identity_list, methods=["GET"]),
    Route("/v1/identities/{name}", identity_show, methods=["GET"]),
    Route("/v1/identities/{name}", identity_delete, methods=["DELETE"]),
    Route("/v1/identities/{name}/federated-credentials", credential_add, methods=["POST"]),
    Route("/v1/identities/{name}/federated-credentials", credential_list, methods=["GET"]),
    Route(
        "/v1/identities/{name}/federated-credentials/{credential}",
        credential_remove,
        methods=["DELETE"],
    ),
    Route("/v1/issuers", issuer_add, methods=["POST"]),
    Route("/v1/issuers", issuer_list, methods=["GET"]),
    Route("/v1/issuers/remove", issuer_remove, methods=["POST"]),
    Route("/v1/issuers/refresh", issuer_refresh, methods=["POST"]),
    Route("/v1/explain", explain, methods=["POST"]),
]
