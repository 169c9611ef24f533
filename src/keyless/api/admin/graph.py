"""Admin routes for the console: the federation graph a searched page at a time, the
tenant's counts, and a proposed trust policy previewed against the recent exchanges."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, tenant_of, text
from keyless.api.admin.federation import credential_view, identity_view
from keyless.api.responses import JSONResponse
from keyless.core import graph, trust_preview
from keyless.core.errors import InvalidRequest
from keyless.core.spiffenames import trust_domain
from keyless.core.trust import DEFAULT_AUDIENCE, new_credential

PREVIEW_FIELDS = frozenset(
    {"identity", "name", "issuer", "subject", "subject_pattern", "audiences", "condition"}
)


async def graph_page(request: Request) -> Response:
    """``?q=SEARCH&limit=N[&issuer=URL]``: the identities the search finds (at most N, by
    name; with ``issuer``, among those trusting exactly it) with their credentials and
    assignments, how many it found, and the tenant's issuers and vaults."""
    s, tenant = services_of(request), await tenant_of(request)
    query = graph.validate_query(request.query_params.get("q"))
    limit = graph.validate_limit(request.query_params.get("limit"))
    issuer = request.query_params.get("issuer") or None
    page = await graph.search(s.store, tenant.id, query, limit, issuer)
    identities = []
    for node in page.identities:
        assignments = []
        for a in node.assignments:
            vault, secret = graph.scope_target(a.scope)
            assignments.append({"role": a.role, "scope": a.scope, "vault": vault, "secret": secret})
        identities.append(
            {
                "identity": identity_view(node.identity, tenant),
                "federated_credentials": [credential_view(c) for c in node.credentials],
                "role_assignments": assignments,
            }
        )
    vaults = await s.vaults.list_vaults(tenant.id)
    return JSONResponse(
        {
            "query": page.query,
            "total": page.total,
            "more": page.more,
            "identities": identities,
            "issuers": sorted(s.federation.issuer_sources(tenant.id)),
            "vaults": [v.name for v in vaults],
        }
    )


async def summary(request: Request) -> Response:
    """How many identities, issuers, credentials, vaults and role assignments (no lists)."""
    s, tenant = services_of(request), await tenant_of(request)
    return JSONResponse(await s.store.tenant_counts(tenant.id))


def _audiences(body: dict[str, Any]) -> list[str]:
    audiences = body.get("audiences") or [DEFAULT_AUDIENCE]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidRequest("'audiences' must be a list of strings")
    return audiences


async def preview(request: Request) -> Response:
    """A federated credential as ``POST .../federated-credentials`` takes it (nothing is
    stored), judged against the tenant's last exchanges (core/trust_preview.py)."""
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    unknown = set(body) - PREVIEW_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown member {sorted(unknown)[0]!r} in the request body")
    identity_name = text(body, "identity", optional=True)
    if identity_name is not None:
        await s.federation.get_identity(tenant.id, identity_name)  # NotFound if it is not
    cred = new_credential(
        id="preview",
        identity_id="preview",
        name=text(body, "name", optional=True) or "preview",
        issuer=str(text(body, "issuer")),
        subject=text(body, "subject", optional=True),
        subject_pattern=text(body, "subject_pattern", optional=True),
        audiences=_audiences(body),
        condition=text(body, "condition", optional=True),
    )
    rows = await s.store.recent_audit(tenant.id, trust_preview.ACTION_PREFIX, trust_preview.RECENT)
    judged = trust_preview.preview(
        cred, [(r.seq, r.event) for r in rows], trust_domain(tenant.alias)
    )
    warning = None
    if not s.federation.is_registered(tenant.id, cred.issuer):
        warning = f"issuer {cred.issuer} is not registered: adding this policy would be refused"
    events = []
    for row in judged:
        e = row.event
        actor = s.federation.identity_by_object(e.actor) if e.actor else None
        w = e.workload
        events.append(
            {
                "seq": row.seq,
                "time": e.time,
                "identity": actor.name if actor is not None else None,
                "result": e.result,
                "issuer": w.get("iss"),
                "subject": w.get("sub"),
                **{k: w.get(k) for k in ("cluster", "namespace", "service_account", "pod")},
                "match": row.match,
                "reason": row.reason,
                "checks": [
                    {"name": c.name, "passed": c.passed, "reason": c.reason, "hint": c.hint}
                    for c in row.checks
                ],
            }
        )
    return JSONResponse(
        {
            "examined": len(events),
            "matched": sum(1 for e in events if e["match"]),
            "events": events,
            "notes": list(trust_preview.NOTES),
            "warning": warning,
        }
    )


routes = [
    Route("/v1/graph", graph_page, methods=["GET"]),
    Route("/v1/summary", summary, methods=["GET"]),
    Route("/v1/federation/preview", preview, methods=["POST"]),
]
