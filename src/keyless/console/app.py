"""The console's ASGI app: login by link, a guard in front of every page, the pages' routes.

Only a browser on this machine (or behind ``kubectl port-forward``) reaches it: the listener is
loopback only, the Host header must name loopback (no DNS rebinding), a session cookie from the
one-time link is needed for every page, a POST must carry the session's CSRF token and no
foreign Origin, and the Content-Security-Policy allows only the console's own files.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from keyless.console.admin import AdminError, ConsoleAdmin
from keyless.console.pages import PAGES
from keyless.console.session import COOKIE, Gate
from keyless.console.web import render

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer Chromium sends ``Origin: null`` on form
    # POSTs, which the Guard refuses. Nothing links off the console, so no URL leaves it.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = Path(__file__).parent / "static"


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


class Guard(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.console_started = time.perf_counter()
        if _host_name(request.headers.get("host", "")).lower() not in LOOPBACK_HOSTS:
            return PlainTextResponse("the console answers only on a loopback address\n", 421)
        path = request.url.path
        gate: Gate = request.app.state.gate
        if path != "/login" and not path.startswith("/static/"):
            if gate.csrf(request.cookies.get(COOKIE)) is None:
                response = render(request, "login_needed.html", status=401)
                return _headers(response)
            origin = request.headers.get("origin")
            if (
                request.method == "POST"
                and origin
                and _host_name(origin.split("://", 1)[-1]).lower() not in LOOPBACK_HOSTS
            ):
                return _headers(PlainTextResponse("cross-origin request refused\n", 403))
        return _headers(await call_next(request))


def _headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def login(request: Request) -> Response:
    session = request.app.state.gate.login(request.query_params.get("token", ""))
    if session is None:
        return render(request, "login_needed.html", {"used": True}, status=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
    return response


async def admin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdminError)
    status = exc.status if 400 <= exc.status < 500 else 502
    return render(request, "error.html", {"message": exc.message}, status=status)


async def not_found(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", {"message": "no such page"}, status=404)


def console_app(admin: ConsoleAdmin, gate: Gate) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/login", login),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    for page in PAGES:
        routes += page.routes
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard)],
        exception_handlers={AdminError: admin_error, 404: not_found},
    )
    app.state.admin = admin
    app.state.gate = gate
    return app
