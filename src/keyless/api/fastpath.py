"""The hot routes ahead of Starlette's routers (ADR 0002 item 1).

A request for ``GET /healthz``, the token endpoint, a Key Vault secret read, a Vault login or a
Vault KV read is matched by a split of its path instead of the router's walk down the route
list (and, for the Vault API, down the main app's list to the ``/v1`` mount and then the Vault
app's), and handed to the very ``Route`` that walk would have found: the same handler behind
Starlette's own ``request_response`` (its ``Request``, its exception-handler lookup), with the
scope the router would have left (``route``, ``endpoint``, ``path_params``, ``app``, the mount's
``root_path``), inside the same middleware the app runs (``ServerErrorMiddleware`` with the
app's 500 handler, then the app's own: ``Admission``, ``KeyVaultAuth``; the observability
middleware wraps the fast path and the app alike, api/app.py). What is
skipped is the walk and ``ExceptionMiddleware``, whose handler lookup the route's own wrapper
repeats with the same handlers. Every other request, and every request whose path is not
plainly one of these (a newline anywhere, ``HEAD``, an empty segment), goes to the app as
before, so routing errors (404, 405 with ``Allow``, Vault's ``{"errors": []}``) are still the
routers'. ``tests/api/test_fastpath.py`` holds the match to the routers' own and the responses
to the Starlette path's, byte for byte over HTTPS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class Hot(NamedTuple):
    """A hot route and the ASGI app that serves it (the route inside its app's middleware)."""

    route: Route
    app: ASGIApp


Params = dict[str, str]
Match = tuple[Hot, Params] | None

TOKEN_SUFFIX = "/oauth2/v2.0/token"
VAULT_MOUNT = "/v1"  # api/app.py mounts the Vault API here


def route_of(app: Starlette, path: str, method: str) -> Route:
    """The app's route of this template that takes ``method`` (the one its router finds)."""
    for route in app.routes:
        if isinstance(route, Route) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")


def _handlers(app: Starlette) -> tuple[dict[Any, Any], dict[int, Any]]:
    """The handlers Starlette's ExceptionMiddleware gives the route's wrapper in the scope:
    every one but the 500 one (``ServerErrorMiddleware``'s)."""
    handlers: dict[Any, Any] = {}
    statuses: dict[int, Any] = {}
    for key, handler in app.exception_handlers.items():
        if key in (500, Exception):
            continue
        if isinstance(key, int):
            statuses[key] = handler
        else:
            handlers[key] = handler
    return handlers, statuses


def around(app: Starlette, inner: ASGIApp) -> ASGIApp:
    """``inner`` inside ``app``'s middleware as Starlette's ``build_middleware_stack`` stacks it
    (``ServerErrorMiddleware``, then the app's own), without ``ExceptionMiddleware``."""
    if getattr(app, "max_body_size", None) is not None:
        raise ValueError("the fast path does not stack Starlette's body size limit")
    handler = app.exception_handlers.get(Exception, app.exception_handlers.get(500))
    stack = [Middleware(ServerErrorMiddleware, handler=handler, debug=app.debug)]
    for cls, args, kwargs in reversed([*stack, *app.user_middleware]):
        inner = cls(inner, *args, **kwargs)
    return inner


class Endpoint:
    """What a router does once it has matched ``route`` of ``app``: the scope it leaves, then
    the route's own ASGI app (the handler behind ``request_response``)."""

    def __init__(self, app: Starlette, route: Route, router: Any, mount: str = "") -> None:
        self.app = app
        self.route = route
        self.router = router  # the outermost router, which a mounted app's keeps
        self.handlers = _handlers(app)
        self.mount = mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.mount:  # as Mount.matches: the path stays whole, the prefix moves to root_path
            root = scope.get("root_path", "")
            scope["app_root_path"] = scope.get("app_root_path", root)
            scope["root_path"] = root + self.mount
        scope.setdefault("router", self.router)
        scope["app"] = self.app
        scope["starlette.exception_handlers"] = self.handlers
        scope["route"] = self.route
        scope["endpoint"] = self.route.endpoint
        await self.route.app(scope, receive, send)


class FastPath:
    """``app`` behind a matcher: ``match(method, path)`` returns the hot route with the ASGI app
    that serves it, and its path parameters, or None for the app itself."""

    def __init__(self, app: Starlette, match: Callable[[str, str], Match]) -> None:
        self.app = app
        self.match = match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = self.match(scope["method"], scope["path"])
            if hit is not None:
                scope["app"] = self.app  # as Starlette.__call__
                scope["path_params"] = hit[1]
                await hit[0].app(scope, receive, send)
                return
        await self.app(scope, receive, send)


def main_routes(main: Starlette, vault_api: Starlette) -> FastPath:
    """The main app (``/healthz``, the token endpoint) with the Vault API mounted at ``/v1``
    (login, KV read)."""

    def direct(path: str, method: str) -> Hot:
        route = route_of(main, path, method)
        return Hot(route, around(main, Endpoint(main, route, main.router)))

    def mounted(path: str, method: str) -> Hot:
        route = route_of(vault_api, path, method)
        endpoint = Endpoint(vault_api, route, main.router, VAULT_MOUNT)
        return Hot(route, around(main, around(vault_api, endpoint)))

    healthz = direct("/healthz", "GET")
    token = direct("/{tenant}" + TOKEN_SUFFIX, "POST")
    login = mounted("/auth/{mount:path}/login", "POST")
    kv_read = mounted("/{mount}/data/{path:path}", "GET")

    def match(method: str, path: str) -> Match:
        if "\n" in path:  # `$` and `.` treat a newline apart: the routers decide
            return None
        if path == "/healthz":
            return (healthz, {}) if method == "GET" else None
        if path.endswith(TOKEN_SUFFIX):  # /{tenant}/oauth2/v2.0/token, GET too as the route
            tenant = path[1 : -len(TOKEN_SUFFIX)]
            if method in ("POST", "GET") and path[0] == "/" and tenant and "/" not in tenant:
                return token, {"tenant": tenant}
            return None
        if not path.startswith("/v1/"):
            return None
        rest = path[len(VAULT_MOUNT) :]
        if method == "GET":  # /{mount}/data/{path:path}
            mount, _, tail = rest[1:].partition("/")
            if mount and tail.startswith("data/"):
                return kv_read, {"mount": mount, "path": tail[len("data/") :]}
            return None
        # /auth/{mount:path}/login (the mount may be empty: "/auth//login" is 12 characters)
        is_login = rest.startswith("/auth/") and rest.endswith("/login") and len(rest) >= 12
        if is_login and method in ("POST", "PUT"):
            return login, {"mount": rest[len("/auth/") : -len("/login")]}
        return None

    return FastPath(main, match)


def keyvault_routes(keyvault: Starlette) -> FastPath:
    """The Key Vault app's secret read: ``/secrets/{name}``, ``/{name}/`` (the SDK's latest
    version) and ``/{name}/{version}``."""

    def read(path: str) -> Hot:
        route = route_of(keyvault, path, "GET")
        return Hot(route, around(keyvault, Endpoint(keyvault, route, keyvault.router)))

    latest, latest_slash, version = (
        read("/secrets/{name}"),
        read("/secrets/{name}/"),
        read("/secrets/{name}/{version}"),
    )

    def match(method: str, path: str) -> Match:
        if method != "GET" or not path.startswith("/secrets/") or "\n" in path:
            return None
        name, slash, rest = path[len("/secrets/") :].partition("/")
        if not name:
            return None
        if not slash:
            return latest, {"name": name}
        if not rest:
            return latest_slash, {"name": name}
        if "/" in rest or rest == "versions":  # /secrets/{name}/versions lists them
            return None
        return version, {"name": name, "version": rest}

    return FastPath(keyvault, match)
