"""Helpers shared by admin routes: the services, the tenant, and JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from keyless.api.forms import read_body
from keyless.core.errors import InvalidRequest
from keyless.core.models import Tenant
from keyless.server.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def tenant_of(request: Request) -> Tenant:
    return await services_of(request).tenants.get(request.query_params.get("tenant", "default"))


async def json_body(request: Request, limit: int = 1024 * 1024) -> dict[str, Any]:
    raw = await read_body(request, limit)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[… nested too deep
        raise InvalidRequest("request body is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:  # lone surrogate escapes ("\ud800") cannot be stored or rendered back: refuse them
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest("request body holds a lone UTF-16 surrogate escape") from exc
    return body


def text(body: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if optional:
            return None
        raise InvalidRequest(f"{name!r} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{name!r} must be a string")
    return value
