"""Admin route for ``keyless dev token`` (``--dev`` only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, text
from keyless.api.responses import JSONResponse
from keyless.core.devcluster import DEFAULT_AUDIENCE
from keyless.core.errors import InvalidRequest


async def dev_token(request: Request) -> Response:
    s = services_of(request)
    if not s.settings.dev:
        raise InvalidRequest("dev tokens need a server started with --dev")
    body = await json_body(request)
    lifetime = body.get("lifetime", 3600)
    if not isinstance(lifetime, int) or isinstance(lifetime, bool):
        raise InvalidRequest("'lifetime' must be an integer number of seconds")
    issuer, token = await s.dev_clusters.mint(
        text(body, "cluster", optional=True) or "dev",
        namespace=str(text(body, "namespace")),
        service_account=str(text(body, "service_account")),
        audience=text(body, "audience", optional=True) or DEFAULT_AUDIENCE,
        pod=text(body, "pod", optional=True),
        node=text(body, "node", optional=True),
        lifetime=lifetime,
    )
    return JSONResponse({"issuer": issuer, "token": token})


routes = [Route("/v1/dev/token", dev_token, methods=["POST"])]
