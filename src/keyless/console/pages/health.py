"""``/health``: the tenant's signing keys and SPIFFE CAs on their rotation timelines, the
trusted issuers with the state of their keys (and a button to fetch them now), and the audit
chain's head and newest checkpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.admin import AdminError, ConsoleAdmin
from keyless.console.timeline import Row, Segment, at, layout, relative, span
from keyless.console.web import admin_of, form_of, render

LEGEND = (
    ("published", "published, not signing yet"),
    ("signing", "signing"),
    ("verifying", "retired, still published for tokens it signed"),
)


def key_rows(keys: list[dict[str, Any]], next_rotation: float, period: float) -> list[Row]:
    rows = []
    for k in keys:
        if k["state"] == "next":
            segments = [
                Segment("published", k["created_at"], next_rotation),
                Segment("signing", next_rotation, next_rotation + period),
            ]
        elif k["state"] == "current":
            segments = [Segment("signing", k["activated_at"] or k["created_at"], next_rotation)]
        else:
            retired = k["retired_at"] or k["created_at"]
            segments = [Segment("signing", k["activated_at"] or k["created_at"], retired)]
            if k.get("published_until"):
                segments.append(Segment("verifying", retired, k["published_until"]))
        rows.append(Row(k.get("kid") or k.get("ca_id") or "?", k["state"], segments))
    return rows


def _timeline(found: dict[str, Any] | None, items: str, now: float) -> dict[str, Any] | None:
    if found is None:
        return None
    nxt, period = found["next_rotation"], found["rotation_period"]
    rows = key_rows(found[items], nxt, period)
    marks = [("now", now, "now"), ("rotation", nxt, "next rotation")]
    return {**found, "svg": layout(rows, marks), "period_text": span(period)}


async def _optional(admin: ConsoleAdmin, path: str) -> tuple[dict[str, Any] | None, str | None]:
    """The answer, or None and why (SPIFFE may be off: 503)."""
    try:
        return await admin.call("GET", path, tenant=False), None
    except AdminError as exc:
        if exc.status in (404, 503):
            return None, exc.message
        raise


async def _page(
    request: Request, outcome: dict[str, Any] | None = None, status: int = 200
) -> Response:
    admin = admin_of(request)
    now = time.time()
    tenant = quote(admin.tenant, safe="")
    keys, (cas, cas_problem), issuers, (audit, audit_problem) = await asyncio.gather(
        admin.call("GET", f"/v1/tenants/{tenant}/keys", tenant=False),
        _optional(admin, f"/v1/tenants/{tenant}/spiffe/cas"),
        admin.get("/v1/issuers"),
        _optional(admin, "/v1/audit/head"),
    )
    fmt: dict[str, Callable[..., str]] = {"at": at, "relative": lambda t: relative(t, now)}
    return render(
        request,
        "health.html",
        {
            "keys": _timeline(keys, "keys", now),
            "cas": _timeline(cas, "cas", now),
            "cas_problem": cas_problem,
            "issuers": issuers,
            "unhealthy": [i for i in issuers if i["state"] != "ok"],
            "audit": audit,
            "audit_problem": audit_problem,
            "outcome": outcome,
            "legend": LEGEND,
            **fmt,
        },
        status=status,
    )


async def health(request: Request) -> Response:
    return await _page(request)


async def refresh(request: Request) -> Response:
    """Fetch one issuer's keys now; the page says how it went."""
    form = await form_of(request)
    url = form.get("url", "")
    if not url:
        return await _page(request, {"ok": False, "url": "", "message": "no issuer chosen"}, 400)
    try:
        status = await admin_of(request).post("/v1/issuers/refresh", {"url": url})
    except AdminError as exc:
        code = exc.status if 400 <= exc.status < 500 else 502
        return await _page(request, {"ok": False, "url": url, "message": exc.message}, code)
    ok = status["state"] == "ok"
    if status["source"] == "file":
        message = "its keys are an uploaded JWKS: nothing to fetch"
    elif ok:
        message = f"keys fetched: {len(status['kids'])} key(s)"
    else:
        message = status.get("reason") or status.get("last_error") or status["state"]
    return await _page(request, {"ok": ok, "url": url, "message": message})


routes = [
    Route("/health", health),
    Route("/health/refresh", refresh, methods=["POST"]),
]
