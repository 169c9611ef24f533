"""``/dev/clusters/{name}/.well-known/openid-configuration`` and ``…/openid/v1/jwks``.

Shaped as kube-apiserver serves its service-account issuer discovery; rate-limited per client
IP with the tenants' discovery (``--discovery-rate-limit``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import Edge
from keyless.api.responses import JSONResponse
from keyless.api.throttle import discovery_refusal
from keyless.core import devcluster
from keyless.core.models import DevCluster


async def _cluster(request: Request) -> DevCluster | Response | None:
    refused = discovery_refusal(request)
    if refused is not None:
        return JSONResponse(
            {"error": refused.message},
            status_code=429,
            headers={"Retry-After": str(refused.retry_after)},
        )
    services: Edge = request.app.state.services
    return await services.dev_clusters.get(request.path_params["name"])


def _missing(name: str) -> Response:
    return JSONResponse({"error": f"dev cluster {name!r} does not exist"}, status_code=404)


async def discovery(request: Request) -> Response:
    services: Edge = request.app.state.services
    cluster = await _cluster(request)
    if cluster is None:
        return _missing(request.path_params["name"])
    if isinstance(cluster, Response):
        return cluster
    return JSONResponse(
        devcluster.discovery(services.settings.public_url, cluster.name),
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def jwks(request: Request) -> Response:
    cluster = await _cluster(request)
    if cluster is None:
        return _missing(request.path_params["name"])
    if isinstance(cluster, Response):
        return cluster
    return JSONResponse(devcluster.jwks(cluster), headers={"Cache-Control": "public, max-age=3600"})


routes = [
    Route("/dev/clusters/{name}/.well-known/openid-configuration", discovery),
    Route("/dev/clusters/{name}/openid/v1/jwks", jwks),
]
