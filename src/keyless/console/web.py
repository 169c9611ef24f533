"""What every console page uses: the admin client, templates, forms with their CSRF check."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from keyless.console.admin import AdminError, ConsoleAdmin
from keyless.console.session import COOKIE, Gate

# (label, path): the navigation bar, in this order, on every page.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/"),
    ("Federation graph", "/graph"),
    ("Token debugger", "/debug"),
    ("Audit", "/audit"),
    ("Keys & issuers", "/health"),
    ("Vaults", "/vaults"),
    ("Manage", "/manage"),
)

templates = Environment(
    loader=PackageLoader("keyless.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def admin_of(request: Request) -> ConsoleAdmin:
    admin: ConsoleAdmin = request.app.state.admin
    return admin


def gate_of(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


def render(
    request: Request, template: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """``template`` rendered with the page's context plus what the layout needs."""
    gate = gate_of(request)
    full = {
        "nav": NAV,
        "path": request.url.path,
        "tenant": admin_of(request).tenant,
        "csrf": gate.csrf(request.cookies.get(COOKIE)) or "",
        **(context or {}),
    }
    html = templates.get_template(template).render(full)
    response = HTMLResponse(html, status_code=status)
    started = request.scope.get("state", {}).get("console_started")
    if started is not None:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


class FormRefused(AdminError):
    """A POST without the session's CSRF token (or from another origin)."""


async def form_of(request: Request) -> dict[str, str]:
    """The POSTed form (single values, stripped), after its CSRF token is checked."""
    form = await request.form()
    values = {k: v.strip() for k, v in form.items() if isinstance(v, str)}
    if not gate_of(request).check_csrf(request.cookies.get(COOKIE), values.pop("csrf", None)):
        raise FormRefused("this form has expired or came from another site; reload the page", 403)
    return values
