"""Admission control on the public listener: at most ``--max-in-flight`` requests in
progress per process; one more is answered at once with 503 and ``Retry-After: 1``.

Past a point, more requests in progress only make every one of them slower: the event loop
takes them in turn, so p99 grows with the queue while throughput stays flat. A request over
the limit costs a route lookup and a small JSON body here: no handler runs, no store is read,
no token is verified, no audit event is written (shedding decides nothing about access, so
it is not an audit event; the access log and ``keyless_shed_requests_total`` record it).

Each listener app (main, Key Vault) gets its own :class:`Admission` middleware, inside the
observability middleware (so the access log and ``keyless_http_requests_total`` see the 503
under its route template) and before routing, the Key Vault token check and the handler.
Both share one :class:`InFlight`: the limit is per process, whatever the dialect. Probes
(``/healthz``, ``/readyz``, ``/metrics``) are never shed: a load balancer must still see a
busy process as alive (below the limit they count like any request: telling them apart costs
a route lookup, which only a request over the limit pays). The admin socket and the webhook
listener have no limit.

A client that re-sends at once on the same connection instead of waiting ``Retry-After`` is
held to it: the server does not read that connection again until the time has passed
(server/limits.py), so a shed answer costs a hammering client its wait, not the server one
loop turn after another.

The 503 speaks the dialect of the URL, as the SDK that called it expects: the token endpoint
(Entra v2, RFC 8693, AD FS) an OAuth error ``temporarily_unavailable`` (RFC 6749 5.2) in
Entra's body, a vault host or ``/vaults/NAME`` Key Vault's error body, ``/v1/...`` Vault's
``{"errors": [...]}``, anything else keyless's ``{"error": {"code", "message"}}``. What the
clients then do with it: docs/performance.md, "Overload".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, MutableMapping
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.api.admin.errors import error_response
from keyless.api.keyvault.secrets import render as kv_render
from keyless.api.oautherrors import entra_error
from keyless.api.vault.wire import render as vault_render
from keyless.core.errors import Unavailable
from keyless.metrics import Metrics

RETRY_AFTER = "1"
# Scope key: the server's protocol (server/limits.py) puts here a function that, given
# seconds, stops reading the connection for that long once the current response is sent.
HOLD_READS = "keyless.hold_reads"
MESSAGE = "the server is busy; retry after 1 second"


class InFlight:
    """Requests in progress in this process on the public listener (counted with no limit
    too: ``keyless_http_requests_in_flight`` helps choose one), and the limit (0: none)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0


def _retry_later(response: Response) -> Response:
    response.headers["Retry-After"] = RETRY_AFTER
    return response


def entra_busy() -> Response:
    """Per request: Entra's body carries a trace id and a timestamp."""
    return _retry_later(entra_error(503, "temporarily_unavailable", 50196, MESSAGE))


# The other dialects' bodies never change: made once, by each dialect's own error renderer.
_KEYVAULT = _retry_later(kv_render(Unavailable(MESSAGE)))
_VAULT = _retry_later(vault_render(Unavailable(MESSAGE)))
_KEYLESS = _retry_later(error_response(Unavailable(MESSAGE)))


def keyvault_busy() -> Response:
    return _KEYVAULT


def vault_busy() -> Response:
    return _VAULT


def keyless_busy() -> Response:
    return _KEYLESS


def match_route(routes: Collection[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route the router would take (a partial match, i.e. a 405, if no full one),
    inside mounts: the one whose template the access log names."""
    partial: tuple[BaseRoute, MutableMapping[str, Any]] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            partial = (route, child)
            break
        if match is Match.PARTIAL and partial is None:
            partial = (route, child)
    if partial is None:
        return None
    route, child = partial
    if isinstance(route, Mount):
        return match_route(route.routes, {**scope, **child}) or route
    return route


class Admission:
    """The gate of one listener app; ``busy(route)`` answers a request over the limit, or
    None for a route that is never shed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        in_flight: InFlight,
        routes: Collection[BaseRoute],
        busy: Callable[[BaseRoute | None, Scope], Response | None],
        metrics: Metrics,
        listener: str,
    ) -> None:
        self.app = app
        self.in_flight = in_flight
        self.routes = routes
        self.busy = busy
        self.listener = listener
        self._shed = metrics.shed
        self._children: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.in_flight
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if gate.count >= gate.limit > 0:
            route = match_route(self.routes, scope)
            response = self.busy(route, scope)
            if response is not None:
                await self._refuse(route, scope, response, send)
                return
            await self.app(scope, receive, send)  # a probe: never shed
            return
        gate.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.count -= 1

    async def _refuse(
        self, route: BaseRoute | None, scope: Scope, response: Response, send: Send
    ) -> None:
        template = getattr(route, "path", None)
        label = template if isinstance(template, str) else "unmatched"
        if route is not None:
            scope["route"] = route  # the access log's and request counter's route template
        counter = self._children.get(label)
        if counter is None:
            counter = self._children[label] = self._shed.labels(self.listener, label)
        counter.inc()
        hold = scope.get(HOLD_READS)
        if hold is not None:  # the connection's next request waits out Retry-After
            hold(float(RETRY_AFTER))
        # Sent as raw messages: the response may be shared, its header list must not be.
        headers = list(response.raw_headers)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
