"""Vault's database secrets engine and lease endpoints over keyless's database engine
(``core/dbengine.py``; docs/databases.md), as Vault Agent templates, ESO's
``VaultDynamicSecret`` generator and hvac call them:

- ``GET|POST /v1/database/creds/ROLE``: ROLE is ``DATABASE.ROLE`` (``core/dbnames.py``); the
  answer is Vault's (``lease_id``, ``lease_duration``, ``renewable``, ``data.username`` and
  ``data.password``) plus a top-level ``keyless`` object Vault clients ignore (where to
  connect, for the agent). No admin credential is ever in it.
- ``GET /v1/sys/internal/ui/mounts/database/...``: the mount is a database one (Vault Agent
  asks before it reads);
- ``PUT|POST /v1/sys/leases/renew|revoke|lookup`` (and ``.../revoke/LEASE_ID``, and the legacy
  ``sys/renew``, ``sys/revoke`` that older clients use): ``{"lease_id", "increment"}``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.responses import JSONResponse
from keyless.api.vault.wire import broker_of, envelope, principal_of, read_json, rfc3339
from keyless.core import dbnames, errors
from keyless.core.dbengine import DatabaseEngine
from keyless.core.vault import Call
from keyless.logs import request_id

_DURATION = re.compile(r"(\d{1,9})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _engine(request: Request) -> DatabaseEngine:
    engine = broker_of(request).databases
    if engine is None:
        raise errors.Unavailable("the database secrets engine is not running")
    return engine


async def _call(request: Request, target: str) -> Call:
    return Call(await principal_of(request, target), request_id.get())


async def creds(request: Request) -> Response:
    database, role = dbnames.parse_vault_role(request.path_params["name"])
    call = await _call(request, dbnames.scope(database, role))
    issued = await _engine(request).issue(call, database, role)
    lease, db = issued.lease, issued.database
    body = envelope({"username": lease.username, "password": issued.password})
    body["lease_id"] = lease.lease_id
    body["lease_duration"] = max(0, int(lease.expires_at - broker_of(request).now()))
    body["renewable"] = True
    body["keyless"] = {
        "database": database,
        "role": role,
        "host": db.host,
        "port": db.port,
        "dbname": db.dbname,
        "sslmode": db.sslmode,
        "expires_at": int(lease.expires_at),
    }
    return JSONResponse(body)


def _increment(raw: object) -> int | None:
    """Vault takes seconds as a number or a duration string ("3600", "1h")."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise errors.InvalidRequest("increment must be seconds or a duration like 1h")
    if isinstance(raw, int):
        if raw < 0:
            raise errors.InvalidRequest("increment must not be negative")
        return raw
    match = _DURATION.fullmatch(raw.strip().lower())
    if match is None:
        raise errors.InvalidRequest("increment must be seconds or a duration like 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


async def _lease_id(request: Request) -> tuple[str, dict[str, Any]]:
    body = await read_json(request)
    raw = request.path_params.get("lease_id") or body.get("lease_id") or body.get("lease")
    if not isinstance(raw, str) or not raw:
        raise errors.InvalidRequest("lease_id is required")
    return raw.strip("/"), body


def _lease_target(lease_id: str) -> str:
    try:
        database, role, _ = dbnames.parse_lease_id(lease_id)
    except errors.InvalidRequest:
        return "/databases"
    return dbnames.scope(database, role)


async def renew(request: Request) -> Response:
    lease_id, body = await _lease_id(request)
    call = await _call(request, _lease_target(lease_id))
    lease = await _engine(request).renew(call, lease_id, _increment(body.get("increment")))
    answer = envelope(None)
    answer["lease_id"] = lease.lease_id
    answer["lease_duration"] = max(0, int(lease.expires_at - broker_of(request).now()))
    answer["renewable"] = True
    return JSONResponse(answer)


async def revoke(request: Request) -> Response:
    """204 whether it was revoked now, already, or is being revoked by another replica."""
    lease_id, _ = await _lease_id(request)
    call = await _call(request, _lease_target(lease_id))
    await _engine(request).revoke(call, lease_id)
    return Response(status_code=204)


async def lookup(request: Request) -> Response:
    lease_id, _ = await _lease_id(request)
    call = await _call(request, _lease_target(lease_id))
    lease = await _engine(request).lookup(call, lease_id)
    now = broker_of(request).now()
    live = lease.state == "active" and lease.expires_at > now
    return JSONResponse(
        envelope(
            {
                "id": lease.lease_id,
                "issue_time": rfc3339(lease.issued_at),
                "expire_time": rfc3339(lease.expires_at),
                "last_renewal": None,
                "renewable": live,
                "ttl": max(0, int(lease.expires_at - now)) if live else 0,
            }
        )
    )


async def ui_mount(request: Request) -> Response:
    """``sys/internal/ui/mounts/database/...``: Vault Agent (consul-template) asks it of every
    path a template reads, to tell KV v2 apart, and fails the read on an error other than 404.
    The answer is Vault's for a database mount (not KV: the path is read as it is)."""
    await principal_of(request, "/databases")
    return JSONResponse(
        envelope(
            {
                "path": "database/",
                "type": "database",
                "description": "keyless database secrets engine (docs/databases.md)",
                "options": None,
                "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
                "local": False,
                "seal_wrap": False,
                "external_entropy_access": False,
            }
        )
    )


routes = [
    Route("/database/creds/{name}", creds, methods=["GET", "POST"]),
    # Before sys.py's own route of the same prefix (vaults): api/app.py lists these first.
    Route("/sys/internal/ui/mounts/database", ui_mount, methods=["GET"]),
    Route("/sys/internal/ui/mounts/database/{path:path}", ui_mount, methods=["GET"]),
    Route("/sys/leases/renew", renew, methods=["PUT", "POST"]),
    Route("/sys/leases/renew/{lease_id:path}", renew, methods=["PUT", "POST"]),
    Route("/sys/renew", renew, methods=["PUT", "POST"]),
    Route("/sys/renew/{lease_id:path}", renew, methods=["PUT", "POST"]),
    Route("/sys/leases/revoke", revoke, methods=["PUT", "POST"]),
    Route("/sys/leases/revoke/{lease_id:path}", revoke, methods=["PUT", "POST"]),
    Route("/sys/revoke", revoke, methods=["PUT", "POST"]),
    Route("/sys/revoke/{lease_id:path}", revoke, methods=["PUT", "POST"]),
    Route("/sys/leases/lookup", lookup, methods=["PUT", "POST"]),
]
