"""``/``: what this keyless is, how much it holds, and the latest audit events."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.web import admin_of, render

RECENT = 10


async def overview(request: Request) -> Response:
    admin = admin_of(request)
    status, identities, issuers, vaults = await asyncio.gather(
        admin.call("GET", "/v1/status", tenant=False),
        admin.get("/v1/identities"),
        admin.get("/v1/issuers"),
        admin.get("/v1/vaults"),
    )
    return render(
        request,
        "overview.html",
        {
            "status": status,
            "counts": {
                "Identities": len(identities),
                "Issuers": len(issuers),
                "Vaults": len(vaults),
            },
        },
    )


routes = [Route("/", overview)]
