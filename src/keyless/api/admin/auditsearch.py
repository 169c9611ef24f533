"""Admin routes: search the audit log (filters, newest first, a bounded window per request),
read one event, and check a recorded token exchange against today's trust policies."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import services_of
from keyless.api.context import Admin
from keyless.api.responses import JSONResponse
from keyless.core.audit_explain import explain_recorded, recorded_claims
from keyless.core.auditchain import AuditRow
from keyless.core.auditsearch import (
    DEFAULT_SCAN,
    MAX_LIMIT,
    MAX_SCAN,
    MAX_SEQ,
    AuditQuery,
    dialect_of,
)
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.models import Tenant


def _int(request: Request, name: str, *, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name!r} must be a whole number in {low}..{high}")
    return int(raw)


def _text(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


async def _tenant(s: Admin, request: Request) -> Tenant | None:
    name = request.query_params.get("tenant")
    return await s.tenants.get(name) if name else None


def event_view(s: Admin, row: AuditRow) -> dict[str, Any]:
    """The stored event plus what a reader wants named: its dialect and identity's name."""
    actor = row.event.actor
    identity = s.federation.identity_by_object(actor) if actor else None
    return row.as_dict() | {
        "dialect": dialect_of(row.event.action),
        "identity": identity.name if identity is not None else None,
    }


async def audit_search(request: Request) -> Response:
    s = services_of(request)
    tenant = await _tenant(s, request)
    actor = None
    name = _text(request, "identity")
    if name is not None:
        found = s.federation.identity_by_name(tenant.id if tenant else "", name)
        if found is None and tenant is None:
            raise InvalidRequest("'identity' needs 'tenant'")
        if found is None:
            raise NotFound(f"identity {name!r} not found")
        actor = found.object_id
    exchanges = request.query_params.get("exchanges", "false")
    if exchanges not in ("true", "false"):
        raise InvalidRequest("'exchanges' must be true or false")
    query = AuditQuery(
        tenant_id=tenant.id if tenant else None,
        actor=actor,
        namespace=_text(request, "namespace"),
        pod=_text(request, "pod"),
        result=_text(request, "result"),
        dialect=_text(request, "dialect"),
        exchanges=exchanges == "true",
        before=_int(request, "before", low=1, high=MAX_SEQ),
        after=_int(request, "after", low=0, high=MAX_SEQ),
        limit=_int(request, "limit", low=1, high=MAX_LIMIT) or 50,
        scan=_int(request, "scan", low=1, high=MAX_SCAN) or DEFAULT_SCAN,
    )
    page = await s.store.search_audit(query)
    return JSONResponse(
        {
            "events": [event_view(s, r) for r in page.rows],
            "next": page.next,
            "scanned": {"low": page.low, "high": page.high},
        }
    )


async def _row(request: Request) -> tuple[Admin, Tenant | None, AuditRow]:
    s = services_of(request)
    tenant = await _tenant(s, request)
    raw = request.path_params["seq"]
    seq = int(raw) if raw.isdigit() and 1 <= int(raw) <= MAX_SEQ else None
    row = None if seq is None else await s.store.audit_event(seq, tenant.id if tenant else None)
    if row is None:
        raise NotFound(f"audit event {request.path_params['seq']} not found")
    return s, tenant, row


async def audit_event(request: Request) -> Response:
    s, _, row = await _row(request)
    return JSONResponse(event_view(s, row))


async def audit_event_explain(request: Request) -> Response:
    s, tenant, row = await _row(request)
    tenant_id = tenant.id if tenant else row.event.tenant_id or ""
    actor_id = row.event.actor
    actor = s.federation.identity_by_object(actor_id) if actor_id else None
    if actor is not None and actor.tenant_id != tenant_id:
        actor = None
    issuer = recorded_claims(row).get("iss")
    credentials = s.federation.snapshot.trust.credentials()
    candidates = {c.identity_id for c in credentials if issuer in c.trusted_issuers}
    identities = [
        i
        for i in (s.federation.identity_by_object(oid) for oid in sorted(candidates))
        if i is not None and i.tenant_id == tenant_id
    ]
    report = explain_recorded(
        row,
        identities,
        [c for c in credentials if actor is None or c.identity_id == actor.object_id],
        issuer_registered=bool(issuer) and s.federation.is_registered(tenant_id, issuer or ""),
        actor=actor,
    )
    return JSONResponse(report)


routes = [
    Route("/v1/audit/search", audit_search, methods=["GET"]),
    Route("/v1/audit/events/{seq}", audit_event, methods=["GET"]),
    Route("/v1/audit/events/{seq}/explain", audit_event_explain, methods=["GET"]),
]
