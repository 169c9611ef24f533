"""The ASGI apps: the public listener (TCP, TLS), the admin listener (Unix socket) and the
admission webhook's listener (TCP, TLS, ``--webhook-listen``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Scope

from keyless.api import fastpath, k8s, ops, token
from keyless.api.adfs import discovery as adfs
from keyless.api.admin import apply, audit, auditsearch, databases, dev, federation, system, vault
from keyless.api.admin import graph as graph_admin
from keyless.api.admin import spiffe as spiffe_admin
from keyless.api.admin.auditing import AdminAuditMiddleware
from keyless.api.admin.errors import handle_keyless_error
from keyless.api.admission import (
    Admission,
    InFlight,
    entra_busy,
    keyless_busy,
    keyvault_busy,
    vault_busy,
)
from keyless.api.aws import secretsmanager as aws_secretsmanager
from keyless.api.aws import sts as aws_sts
from keyless.api.aws.smwire import aws_error as sm_error
from keyless.api.aws.smwire import sm_busy
from keyless.api.aws.wire import error_response, sts_busy, sts_error
from keyless.api.context import Admin, Edge
from keyless.api.dev import clusters
from keyless.api.entra import discovery
from keyless.api.gcp import iamcredentials as gcp_iamcredentials
from keyless.api.gcp import secretmanager as gcp_secretmanager
from keyless.api.gcp import sts as gcp_sts
from keyless.api.gcp.wire import GoogleError, gcp_busy, google_error
from keyless.api.keyvault import secrets as kv_secrets
from keyless.api.keyvault.bodies import kv_error
from keyless.api.keyvault.gateway import KeyVaultAuth, VaultDispatcher
from keyless.api.observability import ObservabilityMiddleware
from keyless.api.responses import JSONResponse
from keyless.api.spiffe import routes as spiffe
from keyless.api.sync import LocalSync
from keyless.api.vault import auth as vault_auth
from keyless.api.vault import database as vault_database
from keyless.api.vault import kv as vault_kv
from keyless.api.vault import sys as vault_sys
from keyless.api.vault.wire import handle_error as vault_handle_error
from keyless.api.vault.wire import vault_error
from keyless.core.awsnames import SECRETS_MANAGER_PATH, STS_PATH
from keyless.core.errors import KeylessError
from keyless.core.gcpnames import GCP_PATH
from keyless.metrics import Metrics

log = logging.getLogger("keyless.api")


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The exception's text may carry request data; log only its type.
    log.error("unhandled error", extra={"error": type(exc).__name__})
    return JSONResponse(
        {"error": {"code": "internal", "message": "internal error"}}, status_code=500
    )


_ROUTING = {404: ("not_found", "NotFound"), 405: ("method_not_allowed", "MethodNotAllowed")}


async def _routing_error(request: Request, exc: Exception) -> Response:
    """The router's 404 (no such path) and 405 (no such method) as JSON, not Starlette's
    plain text: ``{"error": {"code", "message"}}``, with ``Allow`` on a 405."""
    assert isinstance(exc, HTTPException)
    code = _ROUTING.get(exc.status_code, ("http_error", "BadParameter"))[0]
    return JSONResponse(
        {"error": {"code": code, "message": exc.detail}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _kv_routing_error(request: Request, exc: Exception) -> Response:
    """The same, in Key Vault's error body."""
    assert isinstance(exc, HTTPException)
    code = _ROUTING.get(exc.status_code, ("http_error", "BadParameter"))[1]
    return kv_error(exc.status_code, code, exc.detail, headers=dict(exc.headers or {}))


async def _vault_routing_error(request: Request, exc: Exception) -> Response:
    """The same, in Vault's error body (404 names no route, as Vault's ``errors: []``)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return vault_error(404, [])
    response = vault_error(exc.status_code, ["unsupported operation"])
    response.headers.update(dict(exc.headers or {}))
    return response


def _dialect_app(
    services: Admin,
    routes: list[BaseRoute],
    routing_error: Callable[[Request, Exception], Awaitable[Response]],
    error: Callable[[Request, Exception], Awaitable[Response]],
) -> Starlette:
    """A dialect's sub-application: its routes, the router's 404/405 and keyless's errors in
    the dialect's own error body, anything unexpected as a logged 500."""
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: routing_error,
            KeylessError: error,
            Exception: _unexpected,
        },
    )
    app.state.services = services
    return app


def _vault_app(services: Admin) -> Starlette:
    """Vault / OpenBao's HTTP API under ``/v1`` (api/vault)."""
    return _dialect_app(
        services,
        [*vault_auth.routes, *vault_database.routes, *vault_sys.routes, *vault_kv.routes],
        _vault_routing_error,
        vault_handle_error,
    )


async def _aws_routing_error(request: Request, exc: Exception) -> Response:
    """The router's 404/405 under ``/aws`` in STS's XML error body (Secrets Manager's JSON
    one under its path)."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(SECRETS_MANAGER_PATH):
        response = sm_error(
            "UnknownOperationException" if exc.status_code == 405 else "NotFound",
            "Secrets Manager takes POST requests at its endpoint",
            exc.status_code,
        )
        response.headers.update(dict(exc.headers or {}))
        return response
    code = "InvalidAction" if exc.status_code == 404 else "MethodNotAllowed"
    return error_response(exc.status_code, code, exc.detail)


async def _aws_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeylessError)
    return sts_error(exc)


def _aws_app(services: Admin) -> Starlette:
    """AWS's APIs under ``/aws`` (api/aws): STS, then Secrets Manager."""
    return _dialect_app(
        services, [*aws_sts.routes, *aws_secretsmanager.routes], _aws_routing_error, _aws_error
    )


async def _gcp_routing_error(request: Request, exc: Exception) -> Response:
    """The router's 404/405 under ``/gcp`` in Google's JSON error body."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = (
        "Method not allowed." if status == 405 else f"The URL {request.url.path} was not found."
    )
    response = google_error(GoogleError(status, message))
    response.headers.update(dict(exc.headers or {}))
    return response


async def _gcp_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeylessError)
    return google_error(exc)


def _gcp_app(services: Admin) -> Starlette:
    """Google's APIs under ``/gcp`` (api/gcp): STS, IAM Credentials, Secret Manager."""
    return _dialect_app(
        services,
        [*gcp_sts.routes, *gcp_iamcredentials.routes, *gcp_secretmanager.routes],
        _gcp_routing_error,
        _gcp_error,
    )


def _dotall(mount: Mount) -> Mount:
    """Every ``/v1/...`` path reaches the Vault app, even one whose decoded path holds a newline
    (``%0A``): Starlette's ``.*`` stops at one, and the main app would answer in its own error
    body instead of Vault's."""
    mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
    return mount


def _app(
    routes: list[BaseRoute],
    services: Edge,
    metrics: Metrics,
    listener: str,
    gate: InFlight | None = None,
) -> Starlette:
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _routing_error,
            KeylessError: handle_keyless_error,
            Exception: _unexpected,
        },
    )
    app.state.services = services
    app.state.metrics = metrics
    if gate is not None:  # inside observability: the access log sees a shed request
        app.add_middleware(
            Admission,
            in_flight=gate,
            routes=routes,
            busy=_main_busy,
            metrics=metrics,
            listener=listener,
        )
    return app


def _observed(app: ASGIApp, metrics: Metrics, listener: str) -> ASGIApp:
    """``app`` inside the observability middleware, outside Starlette's
    ``ServerErrorMiddleware``: the 500 of an unexpected error carries the request id too, and
    its log line names it (``add_middleware`` would put observability inside it)."""
    return ObservabilityMiddleware(app, metrics=metrics, listener=listener)


# Route objects compare by value and do not hash: kept by identity.
_NEVER_SHED = frozenset(map(id, ops.routes))  # probes and metrics
_TOKEN = frozenset(map(id, token.routes))


def _main_busy(route: BaseRoute | None, scope: Scope) -> Response | None:
    """The 503 of a shed request on the main app, in the dialect of its URL."""
    if id(route) in _NEVER_SHED:
        return None
    path: str = scope["path"]
    if path == "/v1" or path.startswith("/v1/"):
        return vault_busy()
    if path.startswith(STS_PATH):
        return sts_busy()
    if path.startswith(SECRETS_MANAGER_PATH):
        return sm_busy()
    if path.startswith(GCP_PATH):
        return gcp_busy()
    if id(route) in _TOKEN:
        return entra_busy()
    return keyless_busy()


def _keyvault_busy(route: BaseRoute | None, scope: Scope) -> Response:
    return keyvault_busy()


def public_app(services: Admin, metrics: Metrics, *, fast_path: bool = True) -> ASGIApp:
    """``fast_path``: the hot routes ahead of the routers (api/fastpath.py); off, every request
    takes the routers, as the fast path's tests compare."""
    vault_api = _vault_app(services)
    routes: list[BaseRoute] = [
        *ops.routes,
        *discovery.routes,
        *token.routes,
        *adfs.routes,
        *spiffe.routes,
        _dotall(Mount(fastpath.VAULT_MOUNT, app=vault_api)),
        Mount("/aws", app=_aws_app(services)),
        _dotall(Mount("/gcp", app=_gcp_app(services))),
    ]
    if services.settings.dev:
        routes += clusters.routes
    # One limit for the whole listener of this process, whichever app a request reaches.
    gate = InFlight(services.settings.max_in_flight)
    metrics.in_flight.set_function(lambda: gate.count)
    main = _app(routes, services, metrics, "public", gate)
    keyvault = Starlette(
        routes=list(kv_secrets.routes),
        exception_handlers={
            HTTPException: _kv_routing_error,
            KeylessError: kv_secrets.handle_error,
            Exception: _unexpected,
        },
    )
    keyvault.state.services = services
    keyvault.state.metrics = metrics
    keyvault.add_middleware(
        KeyVaultAuth,
        broker=services.broker,
        settings=services.settings,
        default_tenant_id=services.default_tenant.id,
    )
    keyvault.add_middleware(
        Admission,
        in_flight=gate,
        routes=keyvault.routes,
        busy=_keyvault_busy,
        metrics=metrics,
        listener="keyvault",
    )
    public: ASGIApp = fastpath.main_routes(main, vault_api) if fast_path else main
    vaults: ASGIApp = fastpath.keyvault_routes(keyvault) if fast_path else keyvault
    return LocalSync(
        VaultDispatcher(
            _observed(public, metrics, "public"),
            _observed(vaults, metrics, "keyvault"),
            services.settings,
        ),
        services,
    )


def webhook_app(services: Edge, metrics: Metrics) -> ASGIApp:
    """Only ``POST /k8s/mutate``: the API server is its one client (docs/kubernetes.md)."""
    app = _app(list(k8s.routes), services, metrics, "webhook")
    return LocalSync(_observed(app, metrics, "webhook"), services)


def admin_app(services: Admin, metrics: Metrics) -> ASGIApp:
    app = _app(
        [
            *system.routes,
            *federation.routes,
            *dev.routes,
            *vault.routes,
            *databases.routes,
            *spiffe_admin.routes,
            *audit.routes,
            *auditsearch.routes,
            *apply.routes,
            *graph_admin.routes,
        ],
        services,
        metrics,
        "admin",
    )
    # Inside observability, so that audit events carry the request id.
    app.user_middleware.append(Middleware(AdminAuditMiddleware, services=services))
    return LocalSync(_observed(app, metrics, "admin"), services)
