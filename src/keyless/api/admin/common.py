"""Helpers shared by admin routes: the services, the tenant, and JSON bodies."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from keyless.api.context import Admin
from keyless.api.forms import read_body
from keyless.core import strictjson
from keyless.core.errors import InvalidRequest
from keyless.core.models import Tenant


def services_of(request: Request) -> Admin:
    services: Admin = request.app.state.services
    return services


async def tenant_of(request: Request) -> Tenant:
    return await services_of(request).tenants.get(request.query_params.get("tenant", "default"))


async def json_body(request: Request, limit: int = 1024 * 1024) -> dict[str, Any]:
    raw = await read_body(request, limit)
    try:
        return strictjson.loads_object(raw or b"{}")
    except strictjson.InvalidJson as exc:
        raise InvalidRequest(f"request body refused: {exc.message}") from exc


def text(body: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if optional:
            return None
        raise InvalidRequest(f"{name!r} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{name!r} must be a string")
    return value
