"""The caller of a Google API request (IAM Credentials, Secret Manager): a bearer token keyless's
Google STS or ``generateAccessToken`` issued (``core/gcpsts.py``).

- ``authenticate``: an identity's token (audience ``urn:keyless:gcp``), verified as every dialect
  verifies an access token (``Broker.authenticate``: signature, tenant, audience, expiry,
  revocation, the identity still existing). A *principal* token (STS matched several
  identities) is genuine but names no identity: 403 saying to impersonate one. Anything else
  is 401, which google-auth answers by refreshing its token and retrying once.
- ``federated``: any token of keyless's Google STS or ``generateAccessToken`` (the caller of
  ``generateAccessToken``), with its claims.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from keyless.api.context import edge_of
from keyless.api.gcp.wire import GoogleError, unauthenticated
from keyless.core import errors, gcpnames, jose
from keyless.core.access import Principal
from keyless.core.models import Tenant
from keyless.logs import request_id


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated()
    return token.strip()


async def _tenant_of(request: Request, token: str) -> tuple[Tenant, dict[str, Any]]:
    try:
        claims = jose.parse_compact(token, max_size=32 * 1024).payload
    except errors.InvalidToken:
        raise unauthenticated() from None
    tid = claims.get("tid")
    if not isinstance(tid, str):
        raise unauthenticated()
    try:
        return await edge_of(request).broker.tenant(tid), claims
    except errors.NotFound:
        raise unauthenticated() from None


async def federated(request: Request) -> tuple[Tenant, dict[str, Any]]:
    """The tenant and verified claims of a token keyless's Google endpoints issued."""
    token = bearer(request)
    tenant, _ = await _tenant_of(request, token)
    try:
        return tenant, edge_of(request).broker.gcp.federated_claims(tenant, token)
    except errors.Unauthorized:
        raise unauthenticated() from None


async def authenticate(request: Request, *, target: str, permission: str) -> Principal:
    """The identity calling a Google API on ``target`` (for the audit of a refused token and
    the 403 of a principal token, which names ``permission``)."""
    token = bearer(request)
    tenant, claims = await _tenant_of(request, token)
    broker = edge_of(request).broker
    if claims.get("aud") == gcpnames.PRINCIPAL_AUDIENCE:
        try:
            broker.gcp.federated_claims(tenant, token)
        except errors.Unauthorized:
            raise unauthenticated() from None
        raise GoogleError(
            403,
            f"Permission '{permission}' denied for resource '{target}' (or it may not exist). "
            "The federated principal is trusted by several keyless identities: impersonate one "
            "(service_account_impersonation_url in the credential configuration).",
        )
    try:
        return await broker.authenticate(
            tenant,
            token,
            audiences=frozenset({gcpnames.ACCESS_AUDIENCE}),
            target=target,
            request_id=request_id.get(),
        )
    except errors.Unauthorized:
        raise unauthenticated() from None
