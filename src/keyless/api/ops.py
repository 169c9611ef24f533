"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import Admin
from keyless.api.responses import JSONResponse

log = logging.getLogger("keyless.ops")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Admin = request.app.state.services
    if services.draining:
        # Stopping: load balancers take this replica out while it still serves (--shutdown-delay).
        return JSONResponse({"status": "not ready", "checks": {"shutdown": "draining"}}, 503)
    checks: dict[str, str] = {}
    try:
        await services.store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # any driver failure means "not ready"
        log.warning("store not reachable", extra={"error": type(exc).__name__})
        checks["store"] = "unreachable"
    checks["keys"] = "ok" if services.default_tenant.id in services.keys.tenants else "missing"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics),
]
