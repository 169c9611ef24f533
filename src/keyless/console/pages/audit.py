"""``/audit``: the audit timeline, newest first, paged and filtered by the server; a live tail
(static/audit.js polls ``/audit/tail``); the chain's verification on demand; one event's detail.

Every read goes through the admin API: ``GET /v1/audit/search`` (filters done by the store in a
bounded window of seqs), ``GET /v1/audit/events/SEQ`` and ``POST /v1/audit/verify``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.console.admin import AdminError
from keyless.console.auditrows import FILTERS, filters_of, for_people, row
from keyless.console.web import admin_of, form_of, render, templates
from keyless.core.auditsearch import DIALECTS, RESULTS
from keyless.text import printable

PAGE = 50
MAX_PAGE = 200
TAIL = 100


def _link(filters: dict[str, str], **more: Any) -> str:
    return "/audit?" + urlencode({**filters, **more}) if filters or more else "/audit"


async def _timeline(
    request: Request, filters: dict[str, str], before: str | None, limit: int = PAGE
) -> Any:
    """The page's context: one page of events, or the admin API's one-line refusal."""
    context: dict[str, Any] = {
        "filters": filters,
        "fields": FILTERS,
        "dialects": DIALECTS,
        "results": RESULTS,
        "events": [],
        "error": None,
        "older": None,
        "scanned": None,
        "before": before,
    }
    params: dict[str, Any] = {**filters, "limit": limit, "before": before or None}
    try:
        page = await admin_of(request).get("/v1/audit/search", **params)
    except AdminError as exc:
        if not 400 <= exc.status < 500:
            raise
        context["error"] = printable(exc.message)
        return context
    events = [row(e) for e in page["events"]]
    context["events"] = events
    context["head"] = max((e["seq"] for e in events), default=page["scanned"]["high"])
    if page["next"] is not None:
        more = {"limit": limit} if limit != PAGE else {}
        context["older"] = _link(filters, before=page["next"], **more)
    if filters:
        context["scanned"] = page["scanned"]
    context["tail_query"] = urlencode(filters)
    context["refresh"] = _link(filters)
    return context


async def audit(request: Request) -> Response:
    filters = filters_of(request.query_params)
    before = request.query_params.get("before") or None
    raw = request.query_params.get("limit", "")
    limit = int(raw) if raw.isdigit() and 1 <= int(raw) <= MAX_PAGE else PAGE
    context = await _timeline(request, filters, before, limit)
    return render(request, "audit.html", context, status=400 if context["error"] else 200)


async def audit_verify(request: Request) -> Response:
    """Verify the whole chain now (on demand: it reads every event)."""
    await form_of(request)
    report = await admin_of(request).post("/v1/audit/verify")
    context = await _timeline(request, {}, None)
    context["verify"] = for_people(report)
    return render(request, "audit.html", context)


async def audit_tail(request: Request) -> Response:
    """Events after ``after`` (the newest the page shows), newest first, as table rows."""
    raw = request.query_params.get("after", "")
    if not raw.isdigit():
        return JSONResponse({"error": "'after' must be a whole number"}, status_code=400)
    params = {**filters_of(request.query_params), "after": int(raw), "limit": TAIL}
    try:
        page = await admin_of(request).get("/v1/audit/search", **params)
    except AdminError as exc:
        return JSONResponse({"error": printable(exc.message)}, status_code=exc.status or 502)
    events = [row(e) for e in reversed(page["events"])]
    html = templates.get_template("audit_rows.html").render(events=events)
    return JSONResponse({"html": html, "count": len(events), "next": page["next"]})


async def audit_event(request: Request) -> Response:
    seq = request.path_params["seq"]
    event = row(await admin_of(request).get(f"/v1/audit/events/{seq}"))
    return render(request, "audit_event.html", {"event": event})


routes = [
    Route("/audit", audit, methods=["GET"]),
    Route("/audit/verify", audit_verify, methods=["POST"]),
    Route("/audit/tail", audit_tail, methods=["GET"]),
    Route("/audit/{seq:int}", audit_event, methods=["GET"]),
]
