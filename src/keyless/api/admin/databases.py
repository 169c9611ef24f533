"""Admin routes of the database secrets engine (``keyless database ...``; docs/databases.md).

The admin password arrives in the body of ``POST /v1/databases`` (``password``, apart from
the URL) and is never in an answer: views are built from ``Database.view`` (no password).
Credentials asked for here are the admin's own (``keyless database creds``), audited as any.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, tenant_of, text
from keyless.api.responses import JSONResponse
from keyless.core.access import admin_principal
from keyless.core.errors import InvalidRequest
from keyless.core.vault import Call
from keyless.logs import request_id


async def _call(request: Request) -> Call:
    tenant = await tenant_of(request)
    return Call(admin_principal(tenant.id), request_id.get())


def _seconds(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name!r} must be whole seconds")
    return value


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{name!r} must be a list of strings")
    return value


async def database_add(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        raise InvalidRequest("'password' must be a string")
    db = await s.databases.add_database(
        tenant.id, str(text(body, "name")), str(text(body, "url")), password
    )
    return JSONResponse(db.view())


async def database_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    return JSONResponse([db.view() for db in await s.databases.list_databases(tenant.id)])


async def rotate_root(request: Request) -> Response:
    s = services_of(request)
    db = await s.databases.rotate_root(await _call(request), request.path_params["name"])
    return JSONResponse({**db.view(), "rotated": True})


async def role_add(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    role = await s.databases.add_role(
        tenant.id,
        request.path_params["name"],
        str(text(body, "name")),
        grants=_strings(body, "grants"),
        creation_sql=text(body, "creation_sql", optional=True),
        revocation_sql=text(body, "revocation_sql", optional=True),
        ttl=_seconds(body, "ttl"),
        max_ttl=_seconds(body, "max_ttl"),
    )
    return JSONResponse(role.view())


async def role_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    roles = await s.databases.list_roles(tenant.id, request.path_params["name"])
    return JSONResponse([r.view() for r in roles])


async def creds(request: Request) -> Response:
    s = services_of(request)
    issued = await s.databases.issue(
        await _call(request), request.path_params["name"], request.path_params["role"]
    )
    lease = issued.lease
    return JSONResponse(
        {
            "username": lease.username,
            "password": issued.password,
            "lease_id": lease.lease_id,
            "expires_at": lease.expires_at,
            "host": issued.database.host,
            "port": issued.database.port,
            "dbname": issued.database.dbname,
            "sslmode": issued.database.sslmode,
        }
    )


async def lease_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    everything = request.query_params.get("all", "false") == "true"
    leases = await s.databases.list_leases(tenant.id, include_revoked=everything)
    return JSONResponse([lease.view() for lease in leases])


async def lease_renew(request: Request) -> Response:
    s = services_of(request)
    body = await json_body(request)
    lease = await s.databases.renew(
        await _call(request), str(text(body, "lease_id")), _seconds(body, "increment")
    )
    return JSONResponse(lease.view())


async def lease_revoke(request: Request) -> Response:
    s = services_of(request)
    body = await json_body(request)
    lease_id = str(text(body, "lease_id"))
    done = await s.databases.revoke(await _call(request), lease_id)
    return JSONResponse({"lease_id": lease_id, "revoked": done})


routes = [
    Route("/v1/databases", database_add, methods=["POST"]),
    Route("/v1/databases", database_list, methods=["GET"]),
    Route("/v1/databases/{name}/rotate-root", rotate_root, methods=["POST"]),
    Route("/v1/databases/{name}/roles", role_add, methods=["POST"]),
    Route("/v1/databases/{name}/roles", role_list, methods=["GET"]),
    Route("/v1/databases/{name}/roles/{role}/creds", creds, methods=["POST"]),
    Route("/v1/database-leases", lease_list, methods=["GET"]),
    Route("/v1/database-leases/renew", lease_renew, methods=["POST"]),
    Route("/v1/database-leases/revoke", lease_revoke, methods=["POST"]),
]
