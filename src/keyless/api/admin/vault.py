"""Admin routes: vaults, secrets (as the local admin) and role assignments."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, tenant_of, text
from keyless.api.context import Admin
from keyless.api.responses import JSONResponse
from keyless.api.urls import vault_url
from keyless.core import rbac
from keyless.core.access import admin_principal
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.secrets import (
    PropertyChanges,
    Secret,
    Vault,
    validate_content_type,
    validate_tags,
    validate_value,
)
from keyless.core.vault import Call
from keyless.logs import request_id


def _vault_view(request: Request, vault: Vault) -> dict[str, Any]:
    settings = services_of(request).settings
    return {
        "name": vault.name,
        "url": vault_url(vault.name, settings.vault_domain, settings.public_port),
        "path_url": f"{settings.public_url}/vaults/{vault.name}",
        "tenant_id": vault.tenant_id,
    }


def _secret_view(secret: Secret) -> dict[str, Any]:
    p = secret.props
    view: dict[str, Any] = {
        "name": p.name,
        "version": p.version,
        "content_type": p.content_type,
        "tags": p.tags,
        "enabled": p.enabled,
        "not_before": p.not_before,
        "expires": p.expires,
        "created": p.created,
        "updated": p.updated,
        "number": p.number,
    }
    if secret.value is not None:
        view["value"] = secret.value
    if secret.state is not None and secret.state.deleted_at is not None:
        view["deleted_at"] = secret.state.deleted_at
        view["purge_at"] = secret.state.purge_at
    return view


# ``via`` names the admin tool a value read came from, for the audit event's workload (the
# console shows a value only when asked, and the log says it was read there).
VIA = frozenset({"console"})


async def _call(request: Request) -> Call:
    tenant = await tenant_of(request)
    principal = admin_principal(tenant.id)
    via = request.query_params.get("via")
    if via is not None:
        if via not in VIA:
            raise InvalidRequest(f"'via' must be one of: {', '.join(sorted(VIA))}")
        principal = replace(principal, fed={"via": via})
    return Call(principal, request_id.get())


def _bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false")
    if value not in ("true", "false"):
        raise InvalidRequest(f"{name!r} must be true or false")
    return value == "true"


def _limit(request: Request) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("'limit' must be a whole number in 1..1000")
    return int(raw)


async def vault_create(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    vault = await s.vaults.create_vault(tenant.id, str(text(body, "name")))
    return JSONResponse(_vault_view(request, vault))


async def vault_list(request: Request) -> Response:
    """With ``?counts=true`` each vault says how many secrets it holds (deleted ones too)."""
    s, tenant = services_of(request), await tenant_of(request)
    counts = _bool(request, "counts")
    views = []
    for vault in await s.vaults.list_vaults(tenant.id):
        view = _vault_view(request, vault)
        if counts:
            view["secrets"] = await s.vaults.count_secrets(tenant.id, vault.name)
        views.append(view)
    return JSONResponse(views)


async def vault_delete(request: Request) -> Response:
    """Refused while the vault holds secrets (soft-deleted ones too) unless ``?force=true``."""
    s = services_of(request)
    force = request.query_params.get("force", "false")
    if force not in ("true", "false"):
        raise InvalidRequest("'force' must be true or false")
    vault, held = await s.vaults.delete_vault(
        await _call(request), request.path_params["vault"], force=force == "true"
    )
    await s.roles.reload()  # its assignments are gone: no grant may outlive the vault
    return JSONResponse({"deleted": vault.name, "secrets_deleted": held})


async def secret_set(request: Request) -> Response:
    s = services_of(request)
    body = await json_body(request)
    value = validate_value(body.get("value"))
    changes = PropertyChanges(
        content_type=validate_content_type(body.get("content_type")),
        tags=validate_tags(body.get("tags") or {}),
    )
    p = request.path_params
    secret = await s.vaults.set(await _call(request), p["vault"], p["name"], value, changes)
    return JSONResponse(_secret_view(Secret(secret.props)))


async def secret_get(request: Request) -> Response:
    s = services_of(request)
    p = request.path_params
    secret = await s.vaults.get(
        await _call(request), p["vault"], p["name"], request.query_params.get("version")
    )
    return JSONResponse(_secret_view(secret))


async def secret_list(request: Request) -> Response:
    """Every secret (by name), or with ``limit`` one page of them: those named after
    ``after`` (a full page means there may be more)."""
    s = services_of(request)
    call = await _call(request)
    items: list[dict[str, Any]] = []
    after = request.query_params.get("after") or None
    limit = _limit(request)
    deleted = _bool(request, "deleted")
    while True:
        page = await s.vaults.list(
            call, request.path_params["vault"], after=after, limit=limit or 100, deleted=deleted
        )
        items += [_secret_view(x) for x in page.items]
        if page.next_after is None or limit is not None:
            return JSONResponse(items)
        after = page.next_after


async def secret_versions(request: Request) -> Response:
    """Every version's properties (no values), newest first, and which one is current."""
    s = services_of(request)
    p = request.path_params
    state, versions = await s.vaults.history(await _call(request), p["vault"], p["name"])
    return JSONResponse(
        {
            "name": state.name,
            "current_version": state.current_version,
            "versions": [
                {**_secret_view(Secret(v)), "destroyed": v.destroyed} for v in reversed(versions)
            ],
        }
    )


async def secret_delete(request: Request) -> Response:
    s = services_of(request)
    p = request.path_params
    secret = await s.vaults.delete(await _call(request), p["vault"], p["name"])
    return JSONResponse(_secret_view(secret))


async def secret_recover(request: Request) -> Response:
    """Undo a soft delete: the secret and all its versions are back."""
    s = services_of(request)
    p = request.path_params
    secret = await s.vaults.recover(await _call(request), p["vault"], p["name"])
    return JSONResponse(_secret_view(secret))


async def secret_purge(request: Request) -> Response:
    """Delete a soft-deleted secret for good (no recovery after this)."""
    s = services_of(request)
    p = request.path_params
    await s.vaults.purge(await _call(request), p["vault"], p["name"])
    return JSONResponse({"purged": p["name"], "vault": p["vault"]})


def _assignment_body(body: dict[str, Any]) -> tuple[str, str, str]:
    return str(text(body, "identity")), str(text(body, "role")), str(text(body, "scope"))


async def role_assign(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    name, role_name, scope = _assignment_body(await json_body(request))
    identity = await s.federation.get_identity(tenant.id, name)
    if scope.startswith("/vaults/"):
        vault = await s.vaults.lookup(rbac.parse_scope(scope)[0])
        if vault is None or vault.tenant_id != tenant.id:
            raise InvalidRequest(f"scope {scope}: no such vault in this tenant")
    a = await s.roles.assign(tenant.id, identity.object_id, role_name, scope)
    return JSONResponse({"identity": identity.name, "role": a.role, "scope": a.scope})


async def role_remove(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    name, role_name, scope = _assignment_body(await json_body(request))
    identity = await s.federation.get_identity(tenant.id, name)
    await s.roles.remove(tenant.id, identity.object_id, role_name, scope)
    return JSONResponse({"removed": {"identity": name, "role": role_name, "scope": scope}})


async def _identity_name(s: Admin, tenant_id: str, object_id: str) -> str:
    """From the in-memory index, else the store (another replica made it a moment ago)."""
    found = s.federation.identity_by_object(object_id)
    if found is None:
        try:
            found = await s.federation.get_identity(tenant_id, object_id)
        except NotFound:
            return object_id
    return found.name


async def role_list(request: Request) -> Response:
    """Every assignment; ``?identity=NAME``: that identity's only; ``?reaches=SCOPE``: those
    that reach SCOPE (on it or on a scope holding it: who may act on one secret). Each names
    its identity."""
    s, tenant = services_of(request), await tenant_of(request)
    name = request.query_params.get("identity")
    reaches = request.query_params.get("reaches")
    if name:
        identity = await s.federation.get_identity(tenant.id, name)
        names = {identity.object_id: identity.name}
        found = await s.store.assignments_of(tenant.id, [identity.object_id])
    else:
        found = await s.roles.list(tenant.id)
    if reaches is not None:
        scopes = rbac.enclosing_scopes(reaches)
        found = [a for a in found if a.scope in scopes]
    if not name:
        if reaches is None:
            names = {i.object_id: i.name for i in await s.federation.list_identities(tenant.id)}
        else:
            names = {
                a.identity_id: await _identity_name(s, tenant.id, a.identity_id) for a in found
            }
    return JSONResponse(
        [
            {"identity": names.get(a.identity_id, a.identity_id), "role": a.role, "scope": a.scope}
            for a in found
        ]
    )


async def role_definitions(request: Request) -> Response:
    return JSONResponse(
        [
            {
                "name": r.name,
                "alias": r.alias,
                "description": r.description,
                "actions": sorted(r.actions),
            }
            for r in rbac.ROLES
        ]
    )


routes = [
    Route("/v1/vaults", vault_create, methods=["POST"]),
    Route("/v1/vaults", vault_list, methods=["GET"]),
    Route("/v1/vaults/{vault}", vault_delete, methods=["DELETE"]),
    Route("/v1/vaults/{vault}/secrets", secret_list, methods=["GET"]),
    # Names may hold '/' (Vault KV paths such as db/creds): the rest of the path is the name.
    Route("/v1/vaults/{vault}/secrets/{name:path}/recover", secret_recover, methods=["POST"]),
    Route("/v1/vaults/{vault}/secrets/{name:path}", secret_set, methods=["PUT"]),
    Route("/v1/vaults/{vault}/secrets/{name:path}", secret_get, methods=["GET"]),
    Route("/v1/vaults/{vault}/secrets/{name:path}", secret_delete, methods=["DELETE"]),
    Route("/v1/vaults/{vault}/deleted-secrets/{name:path}", secret_purge, methods=["DELETE"]),
    Route("/v1/vaults/{vault}/secret-versions/{name:path}", secret_versions, methods=["GET"]),
    Route("/v1/roles", role_assign, methods=["POST"]),
    Route("/v1/roles", role_list, methods=["GET"]),
    Route("/v1/roles/remove", role_remove, methods=["POST"]),
    Route("/v1/roles/definitions", role_definitions, methods=["GET"]),
]
