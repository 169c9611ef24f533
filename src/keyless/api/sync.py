"""Keeps a worker's in-memory state in step with the other workers of the same server.

Before each request: reload if a worker changed something (server/changes.py). The counter
itself is bumped by the store when a transaction that changes such state commits, so before
the client that asked for the change hears of it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.api.context import Edge


class LocalSync:
    def __init__(self, app: ASGIApp, services: Edge) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.services.follow_local()
        await self.app(scope, receive, send)
