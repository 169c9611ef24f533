"""Google's Security Token Service at ``PUBLIC_URL/gcp/sts/v1/token`` (the credential
configuration's ``token_url``): RFC 8693 token exchange with Google's parameters, as
google-auth's ``external_account`` credentials send it (form body; a JSON body is accepted too).

The ``audience`` names a workload identity pool provider of a tenant (``gcpnames``: the project
number selects the tenant); the subject token is decided by ``core/gcpsts.py`` over the
tenant's trust policies. Answers and errors are Google's: ``access_token``,
``issued_token_type``, ``token_type``, ``expires_in``; ``invalid_request``, ``invalid_grant``,
``invalid_target``, ``unauthorized_client``, ``unsupported_grant_type``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.context import edge_of
from keyless.api.forms import read_body
from keyless.api.gcp.wire import NO_STORE, oauth_error
from keyless.api.throttle import spend_token_request
from keyless.core import errors, gcpnames, strictjson
from keyless.core.gcpsts import Rejected
from keyless.core.models import Tenant
from keyless.logs import request_id

MAX_BODY = 64 * 1024
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
_FIELDS = (
    "grant_type",
    "audience",
    "scope",
    "requested_token_type",
    "subject_token",
    "subject_token_type",
    "options",
    "resource",
    "actor_token",
    "actor_token_type",
)


class InvalidTarget(errors.InvalidRequest):
    code = "invalid_target"


class UnsupportedGrant(errors.InvalidRequest):
    code = "unsupported_grant_type"


async def _fields(request: Request) -> dict[str, str]:
    body = await read_body(request, MAX_BODY)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/json":
        try:
            raw: Any = strictjson.loads_object(body)
        except errors.InvalidRequest as exc:
            raise errors.InvalidRequest(f"The request body is not a JSON object: {exc}") from None
        fields: dict[str, str] = {}
        for key, value in raw.items():
            if key in ("options",) and isinstance(value, dict):
                fields[key] = json.dumps(value)
            elif isinstance(value, str):
                fields[key] = value
            elif value is not None:
                raise errors.InvalidRequest(f"Invalid value for {key[:64]!r}: must be a string")
        return fields
    if ctype != "application/x-www-form-urlencoded":
        raise errors.InvalidRequest(
            "The request body must be application/x-www-form-urlencoded or application/json"
        )
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise errors.InvalidRequest("The request body is not urlencoded UTF-8") from None
    fields = {}
    for key, value in pairs:
        if key in fields:
            raise errors.InvalidRequest(f"Parameter {key[:64]!r} is given more than once")
        fields[key] = value
    return fields


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "")
    if not value:
        raise errors.InvalidRequest(f'Missing required parameter: "{name}".')
    return value


def _options(raw: str) -> dict[str, Any]:
    """``options``: JSON, which google-auth URL-quotes before form-encoding (so unquote once
    more when it is not JSON as it stands)."""
    for text in (raw, unquote(raw)):
        try:
            value = strictjson.loads(text)
        except errors.InvalidRequest:
            continue
        if isinstance(value, dict):
            return value
    raise errors.InvalidRequest('Invalid value for "options": must be a JSON object')


async def _tenant_of(request: Request, number: str) -> Tenant:
    """The tenant whose project number ``number`` is (the default tenant's first)."""
    edge = edge_of(request)
    if gcpnames.project_number(edge.default_tenant.id) == number:
        return edge.default_tenant
    for tenant in await edge.broker.tenants():
        if gcpnames.project_number(tenant.id) == number:
            return tenant
    raise InvalidTarget(
        'The target service indicated by the "audience" parameters is invalid. This might '
        "either be because the pool or provider is disabled or deleted or because it doesn't "
        "exist."
    )


async def token(request: Request) -> Response:
    try:
        spend_token_request(request)
        fields = await _fields(request)
        grant = _required(fields, "grant_type")
        if grant != GRANT_TYPE:
            raise UnsupportedGrant(f"Unsupported grant type {grant[:128]!r}.")
        for unsupported in ("actor_token", "actor_token_type", "resource"):
            if fields.get(unsupported):
                raise errors.InvalidRequest(f'"{unsupported}" is not supported.')
        audience = _required(fields, "audience")
        subject_token = _required(fields, "subject_token").strip()
        subject_type = _required(fields, "subject_token_type")
        requested = _required(fields, "requested_token_type")
        if subject_type not in SUBJECT_TOKEN_TYPES:
            raise errors.InvalidRequest(
                f'Invalid value for "subject_token_type": {subject_type[:128]!r} is not '
                "supported; keyless takes urn:ietf:params:oauth:token-type:jwt or :id_token."
            )
        if requested != ACCESS_TOKEN_TYPE:
            raise errors.InvalidRequest(
                f'Invalid value for "requested_token_type": {requested[:128]!r}. Expected '
                f"{ACCESS_TOKEN_TYPE}."
            )
        if "options" in fields:
            _options(fields["options"])  # userProject and the like: checked, nothing to do
        try:
            provider = gcpnames.parse_provider(audience)
        except errors.InvalidRequest as exc:
            raise InvalidTarget(exc.message) from None
        tenant = await _tenant_of(request, provider.project_number)
        issued = await edge_of(request).broker.gcp.exchange(
            tenant, subject_token, provider, request_id=request_id.get()
        )
    except UnsupportedGrant as exc:
        return oauth_error(400, "unsupported_grant_type", exc.message)
    except InvalidTarget as exc:
        return oauth_error(400, "invalid_target", exc.message)
    except Rejected as exc:
        return oauth_error(400, "unauthorized_client", exc.message)
    except errors.InvalidToken as exc:
        return oauth_error(400, "invalid_grant", exc.message)
    except errors.InvalidRequest as exc:
        return oauth_error(400, "invalid_request", exc.message)
    except errors.RateLimited as exc:
        response = oauth_error(429, "rate_limit_exceeded", exc.message)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except errors.Unavailable as exc:
        return oauth_error(503, "temporarily_unavailable", exc.message)
    except errors.NotFound as exc:
        return oauth_error(400, "invalid_request", exc.message)
    return JSONResponse(
        {
            "access_token": issued.access_token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        },
        headers=NO_STORE,
    )


routes = [
    Route(gcpnames.STS_PATH.removeprefix(gcpnames.GCP_PATH) + "/v1/token", token, methods=["POST"])
]
