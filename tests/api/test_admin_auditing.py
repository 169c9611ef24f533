"""The admin socket's audit middleware on its own: one operation, one record, and events that
read as the command that made them.

A tiny Starlette app stands in for the admin routes; its handlers record through the real
durable sink (``StoreAuditSink`` over an in-memory appender) as the vault does, so what the
middleware sees is what it sees in the server.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.admin.auditing import MAX_BODY, MAX_NAME, AdminAuditMiddleware
from keyless.core.audit import AuditEvent
from keyless.core.auditsink import StoreAuditSink
from keyless.core.clock import ManualClock


class Appender:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append_audit(self, events: list[AuditEvent]) -> list[int]:
        self.events += events
        return list(range(len(self.events) - len(events) + 1, len(self.events) + 1))


def _event(result: str) -> AuditEvent:
    return AuditEvent(1.0, None, "t", "secrets/setSecret", "/vaults/v/secrets/s", result)


def _app(store: Appender) -> Starlette:
    sink = StoreAuditSink(store)

    async def vault_pair(request: Request) -> Response:  # the vault: pending, then outcome
        await sink.record(_event("pending"))
        await sink.record(_event("success"))
        return JSONResponse({})

    async def vault_dies(request: Request) -> Response:  # the change's outcome is unknown
        await sink.record(_event("pending"))
        raise RuntimeError("the process lost its database")

    async def refused(request: Request) -> Response:  # refused before any use case ran
        await request.body()
        return JSONResponse({"error": {"code": "not_found"}}, status_code=404)

    async def created(request: Request) -> Response:
        await request.body()
        return JSONResponse({}, status_code=201)

    services = SimpleNamespace(
        audit=sink, clock=ManualClock(), tenants=SimpleNamespace(cached=lambda name: None)
    )
    return Starlette(
        routes=[
            Route("/v1/vaults/{vault}/secrets/{name:path}", vault_pair, methods=["PUT"]),
            Route("/v1/vaults/{vault}/secrets/{name:path}", vault_dies, methods=["DELETE"]),
            Route("/v1/roles", refused, methods=["POST"]),
            Route("/v1/identities", created, methods=["POST"]),
            Route("/v1/somewhere/{thing}", created, methods=["POST"]),
        ],
        middleware=[Middleware(AdminAuditMiddleware, services=services)],
    )


async def _call(store: Appender, method: str, path: str, body: Any = None) -> int:
    transport = httpx.ASGITransport(app=_app(store), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://keyless") as client:
        content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        return (await client.request(method, path, content=content)).status_code


def _seen(store: Appender) -> list[tuple[str, str, str, str]]:
    return [(e.action, e.target, e.result, e.reason) for e in store.events]


async def test_the_use_cases_own_pair_is_the_record() -> None:
    store = Appender()
    assert await _call(store, "PUT", "/v1/vaults/v/secrets/s", {"value": "hunter2"}) == 200
    assert [e.result for e in store.events] == ["pending", "success"]  # nothing added
    assert "hunter2" not in repr(store.events)


async def test_a_pending_without_outcome_gets_the_admin_event_as_its_outcome() -> None:
    store = Appender()
    assert await _call(store, "DELETE", "/v1/vaults/v/secrets/s") == 500
    assert _seen(store)[1:] == [("secret delete", "v s", "failure", "status 500")]
    assert store.events[0].result == "pending"


async def test_refused_before_the_use_case_is_one_admin_event() -> None:
    store = Appender()
    body = {"identity": "billing", "role": "secrets-user", "scope": "/vaults/billing"}
    assert await _call(store, "POST", "/v1/roles", body) == 404
    assert _seen(store) == [
        ("role assign", "billing: secrets-user on /vaults/billing", "failure", "status 404")
    ]


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({"name": "billing", "secret": "never-recorded"}, "billing"),
        ({"name": "x" * 1000}, "x" * MAX_NAME),
        (b"{not json", ""),
        (json.dumps({"name": "big", "pad": "p" * MAX_BODY}).encode(), ""),
        ({"name": ["not", "a", "name"]}, ""),
    ],
    ids=["named", "long-name-cut", "not-json", "too-big-to-read", "not-a-string"],
)
async def test_the_target_names_the_object_and_nothing_else(body: Any, target: str) -> None:
    store = Appender()
    assert await _call(store, "POST", "/v1/identities", body) == 201
    assert _seen(store) == [("identity create", target, "success", "")]
    assert "never-recorded" not in repr(store.events)


async def test_a_route_without_a_command_name_is_recorded_as_the_route() -> None:
    store = Appender()
    assert await _call(store, "POST", "/v1/somewhere/else") == 201
    assert _seen(store) == [
        ("admin.POST /v1/somewhere/{thing}", "/v1/somewhere/else", "success", "")
    ]
