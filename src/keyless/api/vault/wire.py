"""Vault's wire shapes: the response envelope, ``{"errors": [...]}``, times, the caller.

The caller's token comes in ``X-Vault-Token`` (or ``Authorization: Bearer``, which Vault also
accepts); ``X-Vault-Namespace`` names the tenant (alias or id; absent or ``root``: the default
tenant). Errors map once, here: 400 for malformed input and refused writes (a check-and-set
mismatch, as Vault), 403 for a missing, bad, expired or revoked token and for an RBAC refusal
(the Vault CSI provider logs in again on a 403), 404 ``{"errors": []}`` for what is not there.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.api.clientcert import client_cert_der
from keyless.api.context import edge_of
from keyless.api.forms import read_json_object
from keyless.api.responses import JSONResponse
from keyless.core import errors, strictjson
from keyless.core.access import Principal
from keyless.core.audit import AuditEvent
from keyless.core.broker import Broker
from keyless.core.models import Tenant
from keyless.core.resources import AZURE_KEY_VAULT_CLOUDS
from keyless.core.vault import Call, SecretNotFound
from keyless.logs import request_id

MAX_BODY = 64 * 1024  # a secret is at most 25 KiB; its JSON and options fit well within
PERMISSION_DENIED = "permission denied"


def vault_error(status: int, messages: list[str]) -> JSONResponse:
    return JSONResponse({"errors": messages}, status_code=status)


def render(exc: errors.KeylessError) -> Response:
    if isinstance(exc, SecretNotFound):
        return vault_error(404, [])
    if isinstance(exc, errors.UnknownClient):
        return vault_error(400, [exc.message])
    if isinstance(exc, errors.Unauthorized | errors.Forbidden | errors.InvalidToken):
        return vault_error(403, [PERMISSION_DENIED, exc.message])
    if isinstance(exc, errors.NotFound):
        return vault_error(404, [exc.message])
    if isinstance(exc, errors.InvalidRequest | errors.Conflict | errors.InvalidTarget):
        return vault_error(400, [exc.message])
    if isinstance(exc, errors.RateLimited):
        response = vault_error(429, [exc.message])
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, errors.Unavailable):
        return vault_error(503, [exc.message])
    return vault_error(500, ["internal error"])


async def handle_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.KeylessError)
    return render(exc)


def envelope(
    data: dict[str, Any] | None = None, auth: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Vault's response: every field its clients read, leases always 0 (nothing is leased)."""
    return {
        "request_id": request_id.get() or str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }


def rfc3339(seconds: float) -> str:
    """Vault's time format (Go's RFC 3339 with nanoseconds, in UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (the CLI sends none for some calls)."""
    try:
        return await read_json_object(request, MAX_BODY)
    except strictjson.InvalidJson as exc:
        raise errors.InvalidRequest(f"failed to parse JSON input: {exc.message}") from exc


def broker_of(request: Request) -> Broker:
    return edge_of(request).broker


async def tenant_of(request: Request) -> Tenant:
    """``X-Vault-Namespace``: a tenant alias or id (slashes around it ignored)."""
    edge = edge_of(request)
    name = (request.headers.get("x-vault-namespace") or "").strip().strip("/")
    if not name or name == "root":
        return edge.default_tenant
    try:
        return await edge.broker.tenant(name)
    except errors.NotFound:
        raise errors.Forbidden(f"namespace {name[:64]!r} is not a keyless tenant") from None


def _presented_token(request: Request) -> str:
    token = (request.headers.get("x-vault-token") or "").strip()
    if not token:
        scheme, _, rest = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
    return token


def token_of(request: Request) -> str:
    token = _presented_token(request)
    if not token:
        raise errors.Unauthorized("no token: send it in X-Vault-Token (from auth/MOUNT/login)")
    return token


def token_audiences(request: Request) -> frozenset[str]:
    """What a client token is for: the vault resource (so a Key Vault token serves too)."""
    return frozenset({edge_of(request).settings.vault_resource, *AZURE_KEY_VAULT_CLOUDS})


async def principal_of(request: Request, target: str = "/v1") -> Principal:
    """The caller, by its token (a keyless access token for the vault resource); with no
    token, on the mTLS listener, by its client certificate (an X.509-SVID keyless issued)."""
    broker = edge_of(request).broker
    token = _presented_token(request)
    cert = None if token else client_cert_der(request.scope)
    if cert is not None:
        return await broker.authenticate_svid(
            await tenant_of(request), cert, target=target, request_id=request_id.get()
        )
    return await broker.authenticate(
        await tenant_of(request),
        token_of(request),
        audiences=token_audiences(request),
        target=target,
        request_id=request_id.get(),
    )


async def refuse_mount(request: Request, principal: Principal, vault: str) -> None:
    """The caller's identity holds no role on the vault it asked about as a mount: audited
    (``vault.mount``, failure), then refused by the caller."""
    broker = broker_of(request)
    await broker.record(
        AuditEvent(
            time=broker.now(),
            request_id=request_id.get(),
            tenant_id=principal.tenant_id,
            action="vault.mount",
            target=f"/vaults/{vault[:64]}",
            result="failure",
            reason="denied: no role of this identity reaches the vault",
            actor=principal.object_id,
            workload=dict(principal.fed),
        )
    )


async def call_of(request: Request, vault: str) -> Call:
    principal = await principal_of(request, f"/vaults/{vault[:64]}")
    return Call(principal, request_id.get())
