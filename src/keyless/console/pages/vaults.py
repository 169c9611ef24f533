"""``/vaults``: the tenant's vaults, a vault's secrets (metadata, a page at a time), and one
secret's versions and who may read it. A value is shown only when its "Show value" button is
pressed (a POST with the session's CSRF token), once, on that response; the server audits the
read as ``secrets/getSecret`` by the admin socket ``via: console``."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.admin import AdminError
from keyless.console.auditrows import for_people
from keyless.console.timeline import at, relative
from keyless.console.web import admin_of, form_of, render

PAGE = 50  # secrets per page of a vault
READ_VALUE = "secrets/getSecret"  # the action that reads a value (GET /v1/roles/definitions)


class BadName(AdminError):
    """A vault or secret name no admin path can carry (empty, '.' or '..' segments)."""


def _seg(name: str) -> str:
    """``name`` as one admin path segment (vault names) or a '/'-separated path (secrets)."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") for p in parts):
        raise BadName(f"{name!r} is not a valid name", 400)
    return quote(name, safe="/")


def _times(now: float) -> dict[str, Any]:
    return {"at": at, "relative": lambda t: relative(t, now), "now": now}


async def vault_list(request: Request) -> Response:
    vaults = await admin_of(request).get("/v1/vaults", counts="true")
    return render(request, "vaults.html", {"vaults": vaults})


async def vault_show(request: Request) -> Response:
    admin = admin_of(request)
    vault = request.path_params["vault"]
    path = f"/v1/vaults/{_seg(vault)}/secrets"
    after = request.query_params.get("after") or None
    # Tags and content types are what a workload with write access set: escape their controls.
    live, deleted = for_people(
        await asyncio.gather(
            admin.get(path, limit=PAGE + 1, after=after),
            admin.get(path, deleted="true", limit=PAGE + 1),
        )
    )
    return render(
        request,
        "vault.html",
        {
            "vault": vault,
            "secrets": live[:PAGE],
            "after": after,
            "more": live[PAGE - 1]["name"] if len(live) > PAGE else None,
            "deleted": deleted[:PAGE],
            "more_deleted": len(deleted) > PAGE,
            **_times(time.time()),
        },
    )


def _readers(
    roles: list[dict[str, Any]], definitions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The role assignments that reach the secret (on it, its vault, or the tenant: the
    server filters), each saying where it sits and whether its role reads values."""
    reads = {d["name"] for d in definitions if READ_VALUE in d["actions"]}
    return [{**a, "level": _level(a["scope"]), "reads_value": a["role"] in reads} for a in roles]


def _level(scope: str) -> str:
    return "tenant" if scope == "/" else "secret" if "/secrets/" in scope else "vault"


async def _secret_page(
    request: Request, shown: dict[str, Any] | None = None, status: int = 200
) -> Response:
    admin = admin_of(request)
    vault, name = request.path_params["vault"], request.path_params["name"]
    history, roles, definitions = await asyncio.gather(
        admin.get(f"/v1/vaults/{_seg(vault)}/secret-versions/{_seg(name)}"),
        admin.get("/v1/roles", reaches=f"/vaults/{vault}/secrets/{name}"),
        admin.call("GET", "/v1/roles/definitions", tenant=False),
    )
    versions = for_people(history["versions"])
    current = next((v for v in versions if v["version"] == history["current_version"]), None)
    return render(
        request,
        "secret.html",
        {
            "vault": vault,
            "name": name,
            "versions": versions,
            "current": current,
            "readers": _readers(roles, definitions),
            "shown": shown,
            **_times(time.time()),
        },
        status=status,
    )


async def secret_show(request: Request) -> Response:
    return await _secret_page(request)


async def secret_value(request: Request) -> Response:
    """The "Show value" button: one version's value, read through the admin API (which
    audits it), on this response only."""
    form = await form_of(request)
    vault, name = request.path_params["vault"], request.path_params["name"]
    version = form.get("version") or None
    try:
        secret = await admin_of(request).get(
            f"/v1/vaults/{_seg(vault)}/secrets/{_seg(name)}", version=version, via="console"
        )
    except AdminError as exc:
        if exc.status not in (400, 403, 404):
            raise
        refused = {"version": version, "error": exc.message}
        return await _secret_page(request, refused, exc.status)
    return await _secret_page(request, {"version": secret["version"], "value": secret["value"]})


routes = [
    Route("/vaults", vault_list),
    Route("/vaults/{vault}", vault_show),
    Route("/vaults/{vault}/secrets/{name:path}", secret_show, methods=["GET"]),
    Route("/vaults/{vault}/secrets/{name:path}", secret_value, methods=["POST"]),
]
