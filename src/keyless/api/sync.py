"""Keeps a worker's in-memory state in step with the other workers of the same server.

Before a request: reload if another worker changed something (server/changes.py). For a
request that may change something (any method but GET/HEAD/OPTIONS): bump the shared counter
when the response starts, after the change is committed and before the client hears of it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.server.services import Services

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class LocalSync:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = self.services
        await services.follow_local()
        if scope["method"] in _SAFE:
            await self.app(scope, receive, send)
            return

        async def send_after_bump(message: Message) -> None:
            if message["type"] == "http.response.start":
                services.changed()
            await send(message)

        await self.app(scope, receive, send_after_bump)
