"""``sys/health``, ``sys/seal-status``, ``sys/mounts`` and ``sys/internal/ui/mounts``.

keyless is always initialized and unsealed (its root key is a file, not Shamir shares). The
mounts a token sees are the tenant's vaults on which its identity holds any role, each a KV v2
mount (consul-template and Spring Cloud Vault detect KV v2 through ``sys/internal/ui/mounts``).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless import __version__
from keyless.api.context import edge_of
from keyless.api.responses import JSONResponse
from keyless.api.vault.wire import envelope, principal_of, read_json, refuse_mount, vault_error
from keyless.core import errors, rbac
from keyless.core.access import Principal
from keyless.core.models import Tenant

VERSION = f"{__version__}+keyless"


def _cluster(tenant: Tenant) -> dict[str, str]:
    return {"cluster_name": "keyless", "cluster_id": str(uuid.uuid5(uuid.NAMESPACE_URL, tenant.id))}


async def health(request: Request) -> Response:
    edge = edge_of(request)
    body = {
        "initialized": True,
        "sealed": False,
        "standby": False,
        "performance_standby": False,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": int(edge.broker.now()),
        "version": VERSION,
        "enterprise": False,
        **_cluster(edge.default_tenant),
    }
    if request.method == "HEAD":
        return Response(status_code=200, media_type="application/json")
    return JSONResponse(body)


async def seal_status(request: Request) -> Response:
    edge = edge_of(request)
    return JSONResponse(
        {
            "type": "shamir",
            "initialized": True,
            "sealed": False,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": VERSION,
            "build_date": "",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "keyless",
            **_cluster(edge.default_tenant),
        }
    )


async def leader(request: Request) -> Response:
    """No HA cluster to lead (replicas share the database, not a Raft log): ``bao status``
    reads this after the seal status."""
    return JSONResponse(
        {
            "ha_enabled": False,
            "is_self": False,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": False,
            "performance_standby_last_remote_wal": 0,
        }
    )


def _kv_mount(name: str) -> dict[str, Any]:
    return {
        "type": "kv",
        "description": f"keyless vault {name}",
        "accessor": f"kv_{uuid.uuid5(uuid.NAMESPACE_URL, name).hex[:8]}",
        "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
        "options": {"version": "2"},
        "local": False,
        "seal_wrap": False,
        "external_entropy_access": False,
        "plugin_version": "",
        "running_plugin_version": VERSION,
        "running_sha256": "",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"vault:{name}")),
    }


async def _visible(request: Request, principal: Principal | None = None) -> list[str]:
    principal = principal or await principal_of(request)
    vaults = await edge_of(request).broker.vaults.visible_vaults(principal)
    return [v.name for v in vaults]


async def mounts(request: Request) -> Response:
    """The visible vaults as KV v2 mounts (``bao secrets list``), at the top level and in
    ``data``, as Vault answers."""
    listed = {f"{name}/": _kv_mount(name) for name in await _visible(request)}
    return JSONResponse({**listed, **envelope(dict(listed))})


async def ui_mounts(request: Request) -> Response:
    names = await _visible(request)
    return JSONResponse(envelope({"secret": {f"{n}/": _kv_mount(n) for n in names}, "auth": {}}))


async def ui_mount(request: Request) -> Response:
    path = request.path_params["path"].strip("/")
    vault = path.split("/", 1)[0]
    principal = await principal_of(request, f"/vaults/{vault[:64]}")
    if vault not in await _visible(request, principal):
        await refuse_mount(request, principal, vault)
        return vault_error(
            403,
            [
                "preflight capability check returned 403, please ensure client's policies "
                f'grant access to path "{vault[:64]}/"'
            ],
        )
    return JSONResponse(envelope({"path": f"{vault}/", **_kv_mount(vault)}))


def _auth_mount(path: str, kind: str) -> dict[str, Any]:
    return {
        "type": kind,
        "description": "token store (keyless access tokens)"
        if kind == "token"
        else f"keyless {kind} login (the identity's trust policies decide)",
        "accessor": f"auth_{kind}_{uuid.uuid5(uuid.NAMESPACE_URL, path).hex[:8]}",
        "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "token_type": "default-service"},
        "local": False,
        "seal_wrap": False,
        "options": None,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"auth:{path}")),
    }


async def auth_mounts(request: Request) -> Response:
    """The login mounts (``bao auth list``), and the token store every token belongs to."""
    await principal_of(request)
    listed = {
        f"{path}/": _auth_mount(path, kind)
        for path, kind in edge_of(request).settings.vault_auth_mounts
    }
    listed["token/"] = _auth_mount("token", "token")
    return JSONResponse({**listed, **envelope(dict(listed))})


# What each KV v2 path operation needs of keyless's roles (core/rbac.py), as capabilities.
_KV_CAPABILITIES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "data": ((rbac.GET_VALUE, ("read",)), (rbac.SET, ("create", "update", "patch")),
             (rbac.DELETE, ("delete",))),
    "metadata": ((rbac.READ_METADATA, ("read", "list")), (rbac.UPDATE, ("update", "patch")),
                 (rbac.DELETE, ("delete",))),
    "subkeys": ((rbac.GET_VALUE, ("read",)),),
    "delete": ((rbac.DELETE, ("update",)),),
    "undelete": ((rbac.RECOVER, ("update",)),),
    "destroy": ((rbac.PURGE, ("update",)),),
}  # fmt: skip
_SELF = ("auth/token/lookup-self", "auth/token/renew-self", "auth/token/revoke-self")


def _capabilities(request: Request, principal: Principal, path: str) -> list[str]:
    path = path.strip("/")
    if path in _SELF:
        return ["read", "update"] if path.endswith("lookup-self") else ["update"]
    vault, _, rest = path.partition("/")
    op, _, name = rest.partition("/")
    table = _KV_CAPABILITIES.get(op)
    if table is None:
        return ["deny"]
    target = (vault, name) if name else (vault,)
    vaults = edge_of(request).broker.vaults
    caps = [c for action, given in table if vaults.allows(principal, action, target) for c in given]
    return sorted(set(caps)) or ["deny"]


async def capabilities_self(request: Request) -> Response:
    """``bao token capabilities PATH``: what the caller's roles allow on each path."""
    principal = await principal_of(request)
    body = await read_json(request)
    paths = body.get("paths", body.get("path"))
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise errors.InvalidRequest("missing paths")
    found = {p: _capabilities(request, principal, p) for p in paths[:64]}
    merged = sorted({c for caps in found.values() for c in caps})
    data: dict[str, Any] = {**found, "capabilities": merged}
    return JSONResponse({**data, **envelope(dict(data))})


routes = [
    Route("/sys/health", health, methods=["GET", "HEAD"]),
    Route("/sys/seal-status", seal_status, methods=["GET"]),
    Route("/sys/leader", leader, methods=["GET"]),
    Route("/sys/mounts", mounts, methods=["GET"]),
    Route("/sys/auth", auth_mounts, methods=["GET"]),
    Route("/sys/capabilities-self", capabilities_self, methods=["POST", "PUT"]),
    Route("/sys/internal/ui/mounts", ui_mounts, methods=["GET"]),
    Route("/sys/internal/ui/mounts/{path:path}", ui_mount, methods=["GET"]),
]
