"""``/``: what this keyless is, how much it holds, and the latest audit events."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.auditrows import row
from keyless.console.web import admin_of, render

RECENT = 10  # latest audit events shown


async def overview(request: Request) -> Response:
    admin = admin_of(request)
    # Counts, not lists: the tenant may hold 10,000 identities (bench/results/console.md).
    status, counts, recent = await asyncio.gather(
        admin.call("GET", "/v1/status", tenant=False),
        admin.get("/v1/summary"),
        admin.get("/v1/audit/search", limit=RECENT),
    )
    return render(
        request,
        "overview.html",
        {
            "status": status,
            "counts": {
                "Identities": counts["identities"],
                "Issuers": counts["issuers"],
                "Trust policies": counts["credentials"],
                "Vaults": counts["vaults"],
                "Role assignments": counts["role_assignments"],
            },
            "recent": [row(e) for e in recent["events"]],
        },
    )


routes = [Route("/", overview)]
