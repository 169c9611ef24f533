"""Every admin change is audited: one event per mutating request on the admin socket.

The event is written when the response starts, before the caller sees it: action
``admin.<METHOD> <route template>``, the path as target, success below status 400. Bodies are
never recorded. If the event cannot be written (audit fail-closed), the caller gets 503 in
place of the response, and is told that the change itself was applied.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.api.context import Admin
from keyless.core.audit import AuditEvent
from keyless.core.errors import KeylessError
from keyless.logs import request_id

log = logging.getLogger("keyless.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POST routes that change nothing (they carry a body to read, not a change to make).
READ_ONLY = frozenset({"/v1/audit/verify", "/v1/explain", "/v1/apply/plan"})
ACTOR = "admin-socket"


class AdminAuditMiddleware:
    def __init__(self, app: ASGIApp, services: Admin) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        state = {"recorded": False, "refused": False}

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start" and not state["recorded"]:
                state["recorded"] = True
                try:
                    await self._record(scope, int(message["status"]))
                except KeylessError:
                    state["refused"] = True
                    await _refuse(send)
                    return
            if not state["refused"]:
                await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception:
            if not state["recorded"]:
                state["recorded"] = True
                try:
                    await self._record(scope, 500)
                except KeylessError:
                    log.error("audit of a failed admin request could not be written")
            raise

    async def _record(self, scope: Scope, status: int) -> None:
        route = _route_of(scope)
        if route in READ_ONLY:
            return
        await self.services.audit.record(
            AuditEvent(
                time=self.services.clock.now(),
                request_id=request_id.get(),
                tenant_id=self._tenant(scope),
                action=f"admin.{scope['method']} {route}",
                target=scope["path"],
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
