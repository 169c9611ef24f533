"""``/graph``: the federation graph (searchable SVG and its table), an identity's details
(``/graph/identity/NAME``) and an issuer's (``/graph/issuer?url=URL``).

Every read is one admin API call or a few in parallel; the graph asks ``GET /v1/graph`` for a
bounded page (``SHOWN`` identities), so it stays fast with any number of identities.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.admin import AdminError
from keyless.console.graphsvg import NODE_H, NODE_W, identity_href, issuer_href, layout, rows_of
from keyless.console.web import admin_of, render

SHOWN = 25  # identities drawn at once: the rest is "N more, refine the search"
ISSUER_SHOWN = 25  # identities listed on an issuer's page


async def graph(request: Request) -> Response:
    query = request.query_params.get("q", "")
    try:
        page = await admin_of(request).get("/v1/graph", q=query, limit=SHOWN)
    except AdminError as exc:
        if exc.status != 400:
            raise
        return render(request, "graph.html", {"q": query, "error": exc.message}, status=400)
    drawn = layout(page, all_issuers=not page["query"])
    return render(
        request,
        "graph.html",
        {
            "q": query,
            "page": page,
            "drawn": drawn,
            "edges": rows_of(drawn),
            "node_w": NODE_W,
            "node_h": NODE_H,
        },
    )


async def identity(request: Request) -> Response:
    admin, name = admin_of(request), request.path_params["name"]
    path = "/v1/identities/" + quote(name, safe="")
    found, credentials, roles = await asyncio.gather(
        admin.get(path),
        admin.get(path + "/federated-credentials"),
        admin.get("/v1/roles", identity=name),
    )
    for role in roles:
        role["vault"] = _vault_of(role["scope"])
    return render(
        request,
        "graph_identity.html",
        {
            "identity": found,
            "credentials": credentials,
            "roles": roles,
            "issuer_href": issuer_href,
        },
    )


def _vault_of(scope: str) -> str | None:
    parts = scope.split("/")
    return parts[2].lower() if len(parts) > 2 and parts[1] == "vaults" else None


async def issuer(request: Request) -> Response:
    url = request.query_params.get("url", "")
    admin = admin_of(request)
    if not url:
        raise AdminError("which issuer? this page needs ?url=ISSUER_URL", 400)
    issuers, page = await asyncio.gather(
        admin.get("/v1/issuers"), admin.get("/v1/graph", issuer=url, limit=ISSUER_SHOWN)
    )
    status = next((i for i in issuers if i.get("url") == url), None)
    if status is None:
        raise AdminError(f"issuer {url} is not registered in this tenant", 404)
    trusting: list[dict[str, Any]] = []
    for entry in page["identities"]:
        for cred in entry["federated_credentials"]:
            if url in cred["issuers"]:
                trusting.append({"identity": entry["identity"]["name"], "credential": cred})
    return render(
        request,
        "graph_issuer.html",
        {
            "url": url,
            "status": status,
            "trusting": trusting,
            "more": page["more"],
            "identity_href": identity_href,
        },
    )


routes = [
    Route("/graph", graph),
    Route("/graph/identity/{name}", identity),
    Route("/graph/issuer", issuer),
]
