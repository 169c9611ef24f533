"""``auth/MOUNT/login`` and the token's own endpoints (``auth/token/*-self``).

A login is the token exchange every dialect shares (``TokenService.exchange``): ``role`` names
the identity, ``jwt`` is the platform token, decided against that identity's trust policies and
audited as ``token.exchange.vault-login``. The client token is a keyless access token for the
vault resource (so it also reads through the Key Vault API); its accessor is the token's id.
Tokens are not renewable: clients log in again at lease end, as Vault Agent does.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.clientcert import client_cert_der
from keyless.api.context import edge_of
from keyless.api.responses import JSONResponse
from keyless.api.throttle import spend_token_request
from keyless.api.vault.wire import (
    envelope,
    principal_of,
    read_json,
    rfc3339,
    tenant_of,
    token_audiences,
    token_of,
)
from keyless.core import errors
from keyless.core.access import Principal
from keyless.core.exchange import ExchangeRequest, IssuedToken
from keyless.core.svidauth import AUTH_METHOD
from keyless.logs import request_id
from keyless.settings import default_mount_type

DEFAULT_POLICY = "default"
CERT_MOUNT = "cert"  # Vault's cert auth method, at its default path (hvac's mount_point)


def _policies(role: str) -> list[str]:
    return [DEFAULT_POLICY, role]


def _metadata(kind: str, role: str, workload: dict[str, Any]) -> dict[str, str]:
    """What Vault's Kubernetes auth puts in a token's metadata, for every mount (the platform
    token names the workload the same way whichever mount it came through); a ``jwt`` mount
    adds the token's issuer and subject, as claim mappings would."""
    meta = {
        "role": role,
        "service_account_name": str(workload.get("service_account", "")),
        "service_account_namespace": str(workload.get("namespace", "")),
        "service_account_uid": "",
        "service_account_secret_name": "",
    }
    if workload.get("pod"):
        meta["pod_name"] = str(workload["pod"])
    if kind == "jwt":
        for key in ("iss", "sub"):
            if workload.get(key):
                meta[key] = str(workload[key])
    return meta


def _mounts(request: Request) -> dict[str, str]:
    """The configured auth mounts (``--vault-auth-mount``): path -> jwt or kubernetes."""
    return dict(edge_of(request).settings.vault_auth_mounts)


async def login(request: Request) -> Response:
    edge = edge_of(request)
    mount = request.path_params["mount"].strip("/")
    kind = _mounts(request).get(mount)
    if kind is None and mount == CERT_MOUNT:
        return await cert_login(request)
    if kind is None:
        raise errors.NotFound(
            f'no handler for route "auth/{mount[:64]}/login". route entry not found.'
        )
    spend_token_request(request)
    body = await read_json(request)
    role, jwt = body.get("role"), body.get("jwt")
    if not isinstance(role, str) or not role:
        raise errors.InvalidRequest("missing role")
    if not isinstance(jwt, str) or not jwt.strip():
        raise errors.InvalidRequest("missing jwt")
    tenant = await tenant_of(request)
    via = f"auth/{mount}/login"
    issued = await edge.broker.exchange(
        ExchangeRequest(
            tenant=tenant,
            client_id="",
            assertion=jwt.strip(),
            resource=edge.settings.vault_resource,
            grant="vault-login",
            request_id=request_id.get(),
            identity_name=role,
            via=via,
        )
    )
    metadata = _metadata(kind, issued.identity.name, issued.workload or {})
    auth = _auth(issued, _policies(issued.identity.name), metadata)
    return JSONResponse(envelope(auth=auth), headers={"Cache-Control": "no-store"})


def _auth(issued: IssuedToken, policies: list[str], metadata: dict[str, str]) -> dict[str, Any]:
    """The ``auth`` block of a login's answer, as Vault's token store fills it."""
    return {
        "client_token": issued.access_token,
        "accessor": issued.token_id,
        "policies": policies,
        "token_policies": policies,
        "identity_policies": None,
        "metadata": metadata,
        "lease_duration": issued.expires_in,
        "renewable": False,
        "entity_id": "",
        "token_type": "service",
        "orphan": True,
        "mfa_requirement": None,
        "num_uses": 0,
    }


async def cert_login(request: Request) -> Response:
    """Vault's cert auth method (``auth/cert/login``, hvac's ``auth.cert.login()``) on the
    mTLS listener: the client certificate the handshake verified (an X.509-SVID keyless
    issued) acts as the identity it was issued for; ``name`` (Vault's certificate role), when
    given, must be that identity's name. The answer is the token a jwt/kubernetes login
    gives."""
    edge = edge_of(request)
    spend_token_request(request)
    body = await read_json(request)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise errors.InvalidRequest("name must be a string")
    cert = client_cert_der(request.scope)
    if cert is None:
        raise errors.InvalidRequest(
            "no client certificate supplied: cert auth works on the mTLS listener only"
        )
    issued = await edge.broker.svid_login(
        await tenant_of(request),
        cert,
        resource=edge.settings.vault_resource,
        role=name or None,
        via=f"auth/{CERT_MOUNT}/login",
        request_id=request_id.get(),
    )
    identity = issued.identity.name
    workload = issued.workload or {}
    metadata = {"cert_name": identity, "spiffe_id": str(workload.get("spiffe_id", ""))}
    return JSONResponse(
        envelope(auth=_auth(issued, _policies(identity), metadata)),
        headers={"Cache-Control": "no-store"},
    )


def token_view(request: Request, principal: Principal, token: str) -> dict[str, Any]:
    """``lookup-self``'s data, from the token itself (nothing about it is stored)."""
    edge = edge_of(request)
    identity = edge.broker.identity_by_client(principal.tenant_id, principal.client_id)
    name = identity.name if identity is not None else principal.client_id
    mount = (principal.via or "auth/token").removeprefix("auth/").removesuffix("/login")
    kind = _mounts(request).get(mount) or default_mount_type(mount)
    now = edge.broker.now()
    ttl = max(0, int(principal.expires_at - now))
    return {
        "id": token,
        "accessor": principal.token_id,
        "type": "service",
        "ttl": ttl,
        "expire_time": rfc3339(principal.expires_at),
        "issue_time": rfc3339(principal.issued_at),
        "creation_time": int(principal.issued_at),
        "creation_ttl": int(principal.expires_at - principal.issued_at),
        "explicit_max_ttl": 0,
        "policies": _policies(name),
        "meta": _metadata(kind, name, principal.fed),
        "renewable": False,
        "num_uses": 0,
        "orphan": True,
        "path": principal.via or "auth/token/create",
        "display_name": f"{mount}-{name}",
        "entity_id": "",
    }


async def lookup_self(request: Request) -> Response:
    principal = await principal_of(request)
    return JSONResponse(envelope(token_view(request, principal, token_of(request))))


async def lookup(request: Request) -> Response:
    """``auth/token/lookup`` with ``{"token"}``: a token looks up itself or another token of
    the same tenant that it presents (keyless keeps no token store to look others up in)."""
    await principal_of(request)
    body = await read_json(request)
    other = body.get("token")
    if not isinstance(other, str) or not other.strip():
        raise errors.InvalidRequest("missing token")
    target = await edge_of(request).broker.authenticate(
        await tenant_of(request),
        other.strip(),
        audiences=token_audiences(request),
        target="/v1/auth/token/lookup",
        request_id=request_id.get(),
    )
    return JSONResponse(envelope(token_view(request, target, other.strip())))


async def revoke_self(request: Request) -> Response:
    principal = await principal_of(request)
    if principal.via == AUTH_METHOD:
        raise errors.InvalidRequest("no token to revoke: the request came with a certificate")
    await edge_of(request).broker.revoke(principal, request_id=request_id.get())
    return Response(status_code=204)


async def renew_self(request: Request) -> Response:
    await principal_of(request)  # a bad token is a 403, as in Vault, before the refusal
    raise errors.InvalidRequest("lease is not renewable")


routes = [
    Route("/auth/token/lookup-self", lookup_self, methods=["GET", "POST"]),
    Route("/auth/token/lookup", lookup, methods=["POST", "PUT"]),
    Route("/auth/token/revoke-self", revoke_self, methods=["POST", "PUT"]),
    Route("/auth/token/renew-self", renew_self, methods=["POST", "PUT"]),
    Route("/auth/{mount:path}/login", login, methods=["POST", "PUT"]),
]
