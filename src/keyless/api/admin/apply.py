"""Admin routes for ``keyless apply``: the plan (``--dry-run``, changes nothing) and the apply.

Body: ``{"document": {...}, "prune": bool}``; answer ``{"changes": [{action, kind, name}...]}``.
The rules are core's (``core/apply.py``); an uploaded JWKS comes inline (``keyless apply``
reads each ``jwks_file`` next to the document). A change that fails part way answers 409 with
what failed and ``changes``: those made before it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, tenant_of
from keyless.api.admin.errors import error_response
from keyless.api.admin.federation import ensure_dev_cluster
from keyless.api.responses import JSONResponse
from keyless.core.access import admin_principal
from keyless.core.apply import ApplyFailed, Document, Reconciler, parse_document
from keyless.core.errors import InvalidRequest
from keyless.core.vault import Call
from keyless.logs import request_id


async def _read(request: Request) -> tuple[Reconciler, Document, bool]:
    s = services_of(request)
    body = await json_body(request, limit=8 * 1024 * 1024)
    unknown = set(body) - {"document", "prune"}
    if unknown:
        raise InvalidRequest(f"unknown member {sorted(unknown)[0]!r} in the request body")
    prune = body.get("prune", False)
    if not isinstance(prune, bool):
        raise InvalidRequest("'prune' must be true or false")
    doc = parse_document(body.get("document"), dev=s.settings.dev)

    async def before_issuer(url: str) -> None:
        await ensure_dev_cluster(s, url)

    return Reconciler(s.federation, s.vaults, s.roles, before_issuer=before_issuer), doc, prune


def _answer(changes: list[Any], *, dry_run: bool) -> dict[str, Any]:
    return {"changes": [c.view() for c in changes], "dry_run": dry_run}


async def apply_plan(request: Request) -> Response:
    reconciler, doc, prune = await _read(request)
    tenant = await tenant_of(request)
    return JSONResponse(_answer(await reconciler.plan(tenant.id, doc, prune=prune), dry_run=True))


async def apply(request: Request) -> Response:
    reconciler, doc, prune = await _read(request)
    tenant = await tenant_of(request)
    call = Call(admin_principal(tenant.id), request_id.get())
    try:
        done = await reconciler.apply(call, doc, prune=prune)
    except ApplyFailed as exc:
        failed = error_response(exc.cause)
        body = {
            "error": {"code": exc.code, "message": exc.message},
            **_answer(exc.done, dry_run=False),
        }
        return JSONResponse(body, status_code=failed.status_code)
    return JSONResponse(_answer(done, dry_run=False))


routes = [
    Route("/v1/apply", apply, methods=["POST"]),
    Route("/v1/apply/plan", apply_plan, methods=["POST"]),
]
