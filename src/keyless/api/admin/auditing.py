"""Every admin change is audited: one event per mutating request on the admin socket.

The event is written when the response starts, before the caller sees it, and reads as the
command that made it: action ``identity create``, target ``billing`` (see ``ACTIONS``; a route
missing there is recorded as ``admin.<METHOD> <route template>`` with the path as target),
success below status 400. Bodies are never recorded: only the fields that name the object
changed (a name, a URL, a role assignment), each cut to ``MAX_NAME`` characters.

One operation, one record: a request whose use case made its own durable record (the vault
audits ``secret set`` as a pending event and its outcome) gets no second event here. If the
use case recorded only its pending event (it failed unexpectedly), this event is its outcome.

If the event cannot be written (audit fail-closed), the caller gets 503 in place of the
response, and is told that the change itself was applied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.api.context import Admin
from keyless.core import strictjson
from keyless.core.audit import AuditEvent, operation
from keyless.core.errors import KeylessError
from keyless.logs import request_id

log = logging.getLogger("keyless.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POST routes that change nothing (they carry a body to read, not a change to make).
READ_ONLY = frozenset(
    {"/v1/audit/verify", "/v1/explain", "/v1/apply/plan", "/v1/federation/preview"}
)
ACTOR = "admin-socket"
MAX_NAME = 256  # characters of one naming field kept in the event
MAX_BODY = 64 * 1024  # a larger body (an uploaded JWKS) is not read for names

Fields = dict[str, Any]


def _name(*keys: str) -> Callable[[Fields, Fields], str]:
    """The target: these fields, from the path parameters or else the JSON body, in order."""

    def target(params: Fields, body: Fields) -> str:
        values = (params.get(k, body.get(k)) for k in keys)
        return " ".join(str(v)[:MAX_NAME] for v in values if isinstance(v, str | int) and v != "")

    return target


def _assignment(params: Fields, body: Fields) -> str:
    who, role, scope = (_name(k)(params, body) for k in ("identity", "role", "scope"))
    return f"{who}: {role} on {scope}"


def _service_account(params: Fields, body: Fields) -> str:
    cluster = _name("cluster")(params, body) or "dev"
    return f"{cluster}/{_name('namespace')(params, body)}/{_name('service_account')(params, body)}"


# (method, route template) -> (action as the CLI command reads, its target from the request)
ACTIONS: dict[tuple[str, str], tuple[str, Callable[[Fields, Fields], str]]] = {
    ("POST", "/v1/tenants"): ("tenant create", _name("alias")),
    ("POST", "/v1/tenants/{tenant}/keys/rotate"): ("keys rotate", _name("tenant")),
    ("POST", "/v1/root-key/rotate"): ("root-key rotate", _name()),
    ("POST", "/v1/identities"): ("identity create", _name("name")),
    ("DELETE", "/v1/identities/{name}"): ("identity delete", _name("name")),
    ("POST", "/v1/identities/{name}/federated-credentials"): (
        "federation add",
        lambda p, b: f"{_name('name')(p, {})} {_name('name')(b, {})}".strip(),
    ),
    ("DELETE", "/v1/identities/{name}/federated-credentials/{credential}"): (
        "federation remove",
        _name("name", "credential"),
    ),
    ("POST", "/v1/issuers"): ("issuer add", _name("url")),
    ("POST", "/v1/issuers/remove"): ("issuer remove", _name("url")),
    ("POST", "/v1/issuers/refresh"): ("issuer refresh", _name("url")),
    ("POST", "/v1/dev/token"): ("dev token", _service_account),
    ("POST", "/v1/audit/checkpoints"): ("audit checkpoint", _name()),
    ("POST", "/v1/vaults"): ("vault create", _name("name")),
    ("PUT", "/v1/vaults/{vault}/secrets/{name:path}"): ("secret set", _name("vault", "name")),
    ("DELETE", "/v1/vaults/{vault}/secrets/{name:path}"): ("secret delete", _name("vault", "name")),
    ("POST", "/v1/roles"): ("role assign", _assignment),
    ("POST", "/v1/roles/remove"): ("role remove", _assignment),
    ("PATCH", "/v1/identities/{name}"): (
        "identity update",
        lambda p, b: " -> ".join(x for x in (_name("name")(p, {}), _name("name")(b, {})) if x),
    ),
    ("PATCH", "/v1/identities/{name}/federated-credentials/{credential}"): (
        "federation update",
        _name("name", "credential"),
    ),
    ("DELETE", "/v1/vaults/{vault}"): ("vault delete", _name("vault")),
    ("POST", "/v1/vaults/{vault}/secrets/{name:path}/recover"): (
        "secret recover",
        _name("vault", "name"),
    ),
    ("DELETE", "/v1/vaults/{vault}/deleted-secrets/{name:path}"): (
        "secret purge",
        _name("vault", "name"),
    ),
    ("POST", "/v1/apply"): ("apply", _name()),
    # Never the URL or the password: the name only (api/admin/databases.py).
    ("POST", "/v1/databases"): ("database add", _name("name")),
    ("POST", "/v1/databases/{name}/rotate-root"): ("database rotate-root", _name("name")),
    ("POST", "/v1/databases/{name}/roles"): (
        "database role add",
        lambda p, b: f"{_name('name')(p, {})} {_name('name')(b, {})}".strip(),
    ),
    ("POST", "/v1/databases/{name}/roles/{role}/creds"): ("database creds", _name("name", "role")),
    ("POST", "/v1/database-leases/renew"): ("database lease renew", _name("lease_id")),
    ("POST", "/v1/database-leases/revoke"): ("database lease revoke", _name("lease_id")),
}


class AdminAuditMiddleware:
    def __init__(self, app: ASGIApp, services: Admin) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        state = {"recorded": False, "refused": False}
        body = bytearray()

        async def receive_kept() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= MAX_BODY:
                body.extend(message.get("body", b""))
            return message

        with operation() as recorded:

            async def send_audited(message: Message) -> None:
                if message["type"] == "http.response.start" and not state["recorded"]:
                    state["recorded"] = True
                    try:
                        await self._record(scope, int(message["status"]), body, recorded)
                    except KeylessError:
                        state["refused"] = True
                        await _refuse(send)
                        return
                if not state["refused"]:
                    await send(message)

            try:
                await self.app(scope, receive_kept, send_audited)
            except Exception:
                if not state["recorded"]:
                    state["recorded"] = True
                    try:
                        await self._record(scope, 500, body, recorded)
                    except KeylessError:
                        log.error("audit of a failed admin request could not be written")
                raise

    async def _record(
        self, scope: Scope, status: int, body: bytearray, recorded: list[AuditEvent]
    ) -> None:
        route = _route_of(scope)
        if route in READ_ONLY:
            return
        if recorded and recorded[-1].result != "pending":
            return  # the use case's own record (e.g. the vault's pending/outcome pair) is it
        action, target = _action(scope, route, body)
        await self.services.audit.record(
            AuditEvent(
                time=self.services.clock.now(),
                request_id=request_id.get(),
                tenant_id=self._tenant(scope),
                action=action,
                target=target,
                result="success" if status < 400 else "failure",
                reason="" if status < 400 else f"status {status}",
                actor=ACTOR,
            )
        )

    def _tenant(self, scope: Scope) -> str:
        name = (scope.get("path_params") or {}).get("tenant")
        if not name:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            name = (query.get("tenant") or ["default"])[0]
        tenant = self.services.tenants.cached(name)
        return tenant.id if tenant is not None else str(name)


async def _refuse(send: Send) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "unavailable",
                "message": "audit log cannot be written: the change was applied, but its "
                "audit event is missing",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _action(scope: Scope, route: str, body: bytearray) -> tuple[str, str]:
    """The event's action and target: the command (``identity create``) and what it named."""
    named = ACTIONS.get((scope["method"], route))
    if named is None:
        return f"admin.{scope['method']} {route}", scope["path"]
    action, target = named
    fields: Fields = {}
    if body and len(body) <= MAX_BODY:
        try:
            fields = strictjson.loads_object(bytes(body))
        except strictjson.InvalidJson:
            fields = {}  # the handler refuses it; the event still names the action
    return action, target(dict(scope.get("path_params") or {}), fields)
