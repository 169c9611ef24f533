"""RFC 8693 token exchange: ``subject_token`` (a JWT) for a keyless access token.

Errors follow RFC 8693 section 2.2.2 (``invalid_request`` for any unacceptable subject token,
``invalid_target`` for an unknown audience/resource) in the RFC 6749 JSON body; the Entra
fields (``error_codes``, ``trace_id``) are kept so the cause is just as clear.
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

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
REQUESTABLE = frozenset({ACCESS_TOKEN, "urn:ietf:params:oauth:token-type:jwt"})


def _render(exc: errors.KeylessError) -> Response:
    if isinstance(exc, errors.InvalidToken):
        _, _, code = TOKEN_ERRORS.get(exc.reason, (400, "invalid_request", 50027))
        return entra_error(400, "invalid_request", code, exc.message)
    if isinstance(exc, errors.InvalidTarget):
        return entra_error(400, "invalid_target", 500011, exc.message)
    if isinstance(exc, errors.UnknownClient):
        return entra_error(401, "invalid_client", 700016, exc.message)
    return common_error(exc)


def _resource(broker: Broker, fields: dict[str, str]) -> str:
    given = [n for n in ("audience", "resource", "scope") if fields.get(n)]
    if not given:
        raise errors.InvalidRequest("one of 'audience', 'resource' or 'scope' is required")
    if "scope" in given and len(given) == 1:
        return broker.resources.from_scope(fields["scope"])
    targets = {broker.resources.resolve(fields[n]) for n in given if n != "scope"}
    if len(targets) != 1:
        raise errors.InvalidTarget("'audience' and 'resource' name different resources")
    return targets.pop()


async def handle(broker: Broker, tenant: Tenant, fields: dict[str, str]) -> Response:
    try:
        token_type = required(fields, "subject_token_type")
        if token_type not in JWT_TYPES:
            raise errors.InvalidRequest(
                f"subject_token_type {token_type!r} is not supported; "
                "use urn:ietf:params:oauth:token-type:jwt"
            )
        wanted = fields.get("requested_token_type") or ACCESS_TOKEN
        if wanted not in REQUESTABLE:
            raise errors.InvalidRequest(f"requested_token_type {wanted!r} is not supported")
        if fields.get("actor_token"):
            raise errors.InvalidRequest("delegation (actor_token) is not supported")
        req = ExchangeRequest(
            tenant=tenant,
            client_id=required(fields, "client_id"),
            assertion=required(fields, "subject_token").strip(),
            resource=_resource(broker, fields),
            grant="token-exchange",
            request_id=request_id.get(),
        )
        issued = await broker.exchange(req)
    except errors.KeylessError as exc:
        return _render(exc)
    return JSONResponse(
        {
            "access_token": issued.access_token,
            "issued_token_type": wanted,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
