"""``POST /{tenant}/oauth2/v2.0/token``: Entra v2 client credentials with a client assertion.

The same URL also serves RFC 8693 token exchange (``api/rfc8693``), chosen by grant_type.

SDK quirks pinned here:
- azure-identity's Key Vault token request carries ``claims`` (CAE, ``xms_cc``); ignored.
- azure-identity needs ``expires_in`` as a number; ``refresh_in`` is never sent.
- Status codes are irrelevant to azure-identity, but ``error`` must be present; no
  ``Retry-After`` on errors (it makes azure-core retry), except on the 429 of the per-client
  rate limit, where waiting and retrying is exactly what the client should do.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.entra.errors import TOKEN_ERRORS, common_error, entra_error
from keyless.api.forms import read_form, required
from keyless.api.rfc8693 import exchange as rfc8693
from keyless.core import errors
from keyless.core.exchange import ExchangeRequest
from keyless.core.ratelimit import client_key
from keyless.logs import request_id
from keyless.server.services import Services

CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def render_error(exc: errors.KeylessError) -> Response:
    if isinstance(exc, errors.InvalidToken):
        status, error, code = TOKEN_ERRORS.get(exc.reason, (400, "invalid_request", 50027))
        return entra_error(status, error, code, exc.message)
    if isinstance(exc, errors.UnknownClient):
        return entra_error(400, "unauthorized_client", 700016, exc.message)
    if isinstance(exc, errors.InvalidTarget):
        return entra_error(400, "invalid_resource", 500011, exc.message)
    if isinstance(exc, errors.NotFound):
        return entra_error(400, "invalid_tenant", 90002, exc.message)
    return common_error(exc)


async def token(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        if services.token_limiter is not None:
            # Before the body is read or the tenant looked up: a flood costs one dict lookup.
            services.token_limiter.take(client_key(request.client.host if request.client else None))
        tenant = await services.tenants.get(request.path_params["tenant"])
        fields = await read_form(request)
        grant = required(fields, "grant_type")
        if grant == rfc8693.GRANT:
            return await rfc8693.handle(services, tenant, fields)
        if grant != CLIENT_CREDENTIALS:
            return entra_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        if required(fields, "client_assertion_type") != JWT_BEARER:
            raise errors.InvalidRequest(
                f"client_assertion_type must be '{JWT_BEARER}' (keyless accepts only "
                "federated client assertions, never client secrets)"
            )
        req = ExchangeRequest(
            tenant=tenant,
            client_id=required(fields, "client_id"),
            # Token files written with `echo` end in a newline that SDKs send verbatim.
            assertion=required(fields, "client_assertion").strip(),
            resource=services.resources.from_scope(required(fields, "scope")),
            grant=CLIENT_CREDENTIALS,
            request_id=request_id.get(),
        )
        issued = await services.tokens.exchange(req)
    except errors.KeylessError as exc:
        if isinstance(exc, errors.NotFound) and not isinstance(exc, errors.UnknownClient):
            return entra_error(400, "invalid_tenant", 90002, exc.message)
        return render_error(exc)
    return JSONResponse(
        {
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.access_token,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


routes = [Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"])]
