"""Admin routes: read the audit log a page at a time, and verify its hash chain."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.admin.common import services_of
from keyless.core.auditchain import verify_log
from keyless.core.errors import InvalidRequest

MAX_PAGE = 1000


def _int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name!r} must be a whole number in {low}..{high}")
    return int(raw)


async def audit_list(request: Request) -> Response:
    """Events with ``seq > after`` in order; ``next`` is the cursor for the following page."""
    s = services_of(request)
    after = _int(request, "after", 0, low=0, high=2**63 - 1)
    limit = _int(request, "limit", 100, low=1, high=MAX_PAGE)
    tenant = request.query_params.get("tenant")
    tenant_id = (await s.tenants.get(tenant)).id if tenant else None
    rows = await s.store.list_audit(after_seq=after, limit=limit, tenant_id=tenant_id)
    return JSONResponse(
        {"events": [r.as_dict() for r in rows], "next": rows[-1].seq if rows else after}
    )


async def audit_verify(request: Request) -> Response:
    report = await verify_log(services_of(request).store)
    return JSONResponse(report.as_dict())


routes = [
    Route("/v1/audit", audit_list, methods=["GET"]),
    Route("/v1/audit/verify", audit_verify, methods=["POST"]),
]
