"""AD FS discovery: ``GET /adfs/.well-known/openid-configuration`` and ``/adfs/discovery/keys``.

The Azure SDK for Go (azidentity) turns MSAL instance discovery off only for tenant ``adfs``;
MSAL Go then treats ``https://HOST[:PORT]/adfs`` as an AD FS authority. What it does with
this document (microsoft-authentication-library-for-go, ``apps/internal/oauth``):

- ``resolvers.go`` ``openIDConfigurationEndpoint``: it GETs
  ``https://{Host}/adfs/.well-known/openid-configuration`` (Host keeps the port; the query is
  empty, so the URL ends in ``?``);
- ``ops/authority/authority.go`` ``TenantDiscoveryResponse.Validate``: ``authorization_endpoint``,
  ``token_endpoint`` and ``issuer`` must be non-empty (keyless has no authorize endpoint; the
  URL is named only to satisfy this);
- ``ValidateIssuerMatchesAuthority``: the issuer's scheme and host:port must be the authority's,
  so the operator configures keyless's public URL as the authority host;
- ``{tenant}`` in the endpoints is replaced by ``adfs``; none is written here.

The tenant is the default tenant (``api/tenancy.py``): its issuer, its key ring. Unauthenticated,
so rate-limited per client IP like the Entra discovery routes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import edge_of
from keyless.api.oautherrors import common_error
from keyless.api.oidcmeta import provider_metadata
from keyless.api.responses import JSONResponse
from keyless.api.tenancy import ADFS, ADFS_TOKEN_PATH
from keyless.api.throttle import discovery_refusal

CACHE = "public, max-age=3600"
JWKS_PATH = f"/{ADFS}/discovery/keys"


async def openid_configuration(request: Request) -> Response:
    refused = discovery_refusal(request)
    if refused is not None:
        return common_error(refused)
    edge = edge_of(request)
    base = edge.broker.public_url
    doc = provider_metadata(
        # The `iss` of the tokens the token endpoint below issues (the default tenant's).
        issuer=edge.broker.issuer(edge.default_tenant),
        authorization=f"{base}/{ADFS}/oauth2/authorize",
        token=f"{base}{ADFS_TOKEN_PATH}",
        jwks=f"{base}{JWKS_PATH}",
        claims=["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "azp"],
    )
    return JSONResponse(doc, headers={"Cache-Control": CACHE})


async def jwks(request: Request) -> Response:
    refused = discovery_refusal(request)
    if refused is not None:
        return common_error(refused)
    edge = edge_of(request)
    ring = edge.broker.signing_keys(edge.default_tenant.id)
    return JSONResponse(ring.jwks(), headers={"Cache-Control": CACHE})


routes = [
    Route(f"/{ADFS}/.well-known/openid-configuration", openid_configuration),
    Route(JWKS_PATH, jwks),
]
