"""Request ids, Prometheus metrics and the access log, as one pure ASGI middleware.

Labels are route templates (``/{tenant}/oauth2/v2.0/token``), never raw paths, so no name a
caller sends ends up in a metric; the access log has no query string and no header values.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.logs import request_id
from keyless.metrics import Metrics

log = logging.getLogger("keyless.access")


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, *, listener: str) -> None:
        self.app = app
        self.metrics = metrics
        self.listener = listener
        # Metric children by label values, looked up once each (``labels()`` costs a lock and
        # a dict build per call); the labels are route templates, so the maps stay small.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or secrets.token_hex(8)
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            method = scope["method"]
            counter = self._counts.get((route, method, status))
            if counter is None:
                counter = self.metrics.requests.labels(route, method, str(status))
                self._counts[(route, method, status)] = counter
            counter.inc()
            histogram = self._latency.get((route, method))
            if histogram is None:
                histogram = self.metrics.latency.labels(route, method)
                self._latency[(route, method)] = histogram
            histogram.observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "listener": self.listener,
                        "method": method,
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name in (b"x-request-id", b"client-request-id", b"x-ms-client-request-id"):
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 64 and all(
                c.isascii() and (c.isalnum() or c in "-_.") for c in text
            ):
                return text
    return None


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
