"""Entra v2 client credentials with a client assertion, on ``POST /{tenant}/oauth2/v2.0/token``.

The same URL also serves RFC 8693 token exchange (``api/rfc8693``); ``api/token.py`` reads the
form and picks the dialect by grant_type.

SDK quirks pinned here:
- azure-identity's Key Vault token request carries ``claims`` (CAE, ``xms_cc``); ignored.
- azure-identity needs ``expires_in`` as a number; ``refresh_in`` is never sent.
- Status codes are irrelevant to azure-identity, but ``error`` must be present; no
  ``Retry-After`` on errors (it makes azure-core retry), except on the 429 of the per-client
  rate limit, where waiting and retrying is exactly what the client should do.
"""

from __future__ import annotations

from starlette.responses import Response

from keyless.api.forms import required
from keyless.api.oautherrors import TOKEN_ERRORS, common_error, entra_error
from keyless.api.responses import JSONResponse
from keyless.core import errors
from keyless.core.broker import Broker
from keyless.core.exchange import ExchangeRequest
from keyless.core.models import Tenant
from keyless.logs import request_id

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


async def client_credentials(broker: Broker, tenant: Tenant, fields: dict[str, str]) -> Response:
    """The ``client_credentials`` grant; raises KeylessError for ``render_error``."""
    grant = fields["grant_type"]
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
        resource=broker.resources.from_scope(required(fields, "scope")),
        grant=CLIENT_CREDENTIALS,
        request_id=request_id.get(),
    )
    issued = await broker.exchange(req)
    return JSONResponse(
        {
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.access_token,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
