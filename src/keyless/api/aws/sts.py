"""STS at ``PUBLIC_URL/aws/sts`` (``AWS_ENDPOINT_URL_STS``): the query protocol, version
2011-06-15, form POST or GET.

- ``AssumeRoleWithWebIdentity`` (unsigned, as botocore sends it): ``RoleArn``
  ``arn:aws:iam::ACCOUNT:role/NAME`` names identity NAME of the tenant whose account ACCOUNT is
  (``awsnames.account_id``); the web identity token (stripped: botocore sends the token file's
  trailing newline) is decided by the same exchange as every dialect (``token.exchange.aws-sts``
  in the audit log, with ``RoleSessionName`` as the workload's ``session``). The answer is
  session credentials (``core/awssession.py``). ``DurationSeconds`` is 900..43200 like AWS and
  at most keyless's token lifetime, which plays the role's ``MaxSessionDuration``
  (``--token-lifetime``, 3600 s by default, also the default duration).
- ``GetCallerIdentity`` (SigV4, service ``sts``): the assumed role's account, ARN and user id.

Session policies (``Policy``, ``PolicyArns``) would narrow the session; keyless has none, so it
refuses them rather than grant more than asked.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.aws.auth import VIA, authenticate_session
from keyless.api.aws.wire import element, error_response, sts_error, timestamp, xml_response
from keyless.api.context import edge_of
from keyless.api.forms import read_body
from keyless.api.throttle import spend_token_request
from keyless.core import awsnames, errors, jose
from keyless.core.exchange import ExchangeRequest
from keyless.core.models import Tenant
from keyless.logs import request_id

VERSION = "2011-06-15"
MAX_BODY = 64 * 1024
MIN_DURATION, MAX_DURATION = 900, 43200
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


class InvalidAction(errors.InvalidRequest):
    code = "invalid_action"


def _validation(field: str, value: str, constraint: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"1 validation error detected: Value '{value[:64]}' at '{field}' failed to satisfy "
        f"constraint: {constraint}"
    )


async def _params(request: Request) -> tuple[dict[str, str], bytes]:
    """The query's and the form body's parameters (each name once) and the raw body."""
    body = await read_body(request, MAX_BODY)
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=64)
    except ValueError as exc:
        raise errors.InvalidRequest("the query string has too many parameters") from exc
    if body:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise errors.InvalidRequest("the body must be application/x-www-form-urlencoded")
        try:
            pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError) as exc:
            raise errors.InvalidRequest(
                "the body is not urlencoded UTF-8 of at most 64 parameters"
            ) from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise errors.InvalidRequest(f"parameter {key[:64]!r} is given more than once")
        params[key] = value
    return params, body


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        field = name[0].lower() + name[1:]
        raise _validation(field, "null", "Member must not be null")
    return value


async def _tenant_of_account(request: Request, account: str) -> Tenant:
    """The tenant whose AWS account ``account`` is: the default tenant's first (no lookup),
    else any other's. None owns it: refused as a role that does not exist."""
    edge = edge_of(request)
    if awsnames.account_id(edge.default_tenant.id) == account:
        return edge.default_tenant
    for tenant in await edge.broker.tenants():
        if awsnames.account_id(tenant.id) == account:
            return tenant
    raise errors.UnknownClient(f"no keyless tenant has the AWS account {account}")


def _duration(request: Request, params: dict[str, str]) -> int:
    lifetime = edge_of(request).settings.token_lifetime
    raw = params.get("DurationSeconds")
    if raw is None:
        return lifetime
    if not raw.isdigit() or len(raw) > 9:
        raise _validation("durationSeconds", raw, "Member must be a number")
    value = int(raw)
    if value < MIN_DURATION:
        raise _validation(
            "durationSeconds",
            raw,
            f"Member must have value greater than or equal to {MIN_DURATION}",
        )
    if value > MAX_DURATION:
        raise _validation(
            "durationSeconds", raw, f"Member must have value less than or equal to {MAX_DURATION}"
        )
    if value > lifetime:
        raise errors.InvalidRequest(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role "
            f"(keyless's token lifetime, {lifetime} s)."
        )
    return value


def _audience(token: str) -> str:
    """The token's audience as STS reports it (the AWS one when the token has several)."""
    aud: Any = jose.parse_compact(token).payload.get("aud")
    if isinstance(aud, list):
        strings = [a for a in aud if isinstance(a, str)]
        return (
            awsnames.STS_AUDIENCE if awsnames.STS_AUDIENCE in strings else next(iter(strings), "")
        )
    return aud if isinstance(aud, str) else ""


async def assume_role_with_web_identity(request: Request, params: dict[str, str]) -> Response:
    edge = edge_of(request)
    role_arn = _required(params, "RoleArn")
    session_name = _required(params, "RoleSessionName")
    token = _required(params, "WebIdentityToken").strip()
    if not 20 <= len(role_arn) <= 2048:
        raise _validation("roleArn", role_arn, "Member must have length between 20 and 2048")
    if not _SESSION_NAME.fullmatch(session_name):
        raise _validation(
            "roleSessionName",
            session_name,
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
        )
    if not 4 <= len(token) <= 20000:
        raise _validation("webIdentityToken", "***", "Member must have length between 4 and 20000")
    for unsupported in ("Policy", "PolicyArns.member.1.arn", "ProviderId"):
        if params.get(unsupported):
            raise errors.InvalidRequest(
                f"{unsupported.split('.', 1)[0]} is not supported by keyless: a keyless session "
                "has exactly its identity's role assignments"
            )
    lifetime = _duration(request, params)
    try:
        account, name = awsnames.parse_role_arn(role_arn)
    except errors.InvalidRequest:
        raise errors.InvalidRequest("Request ARN is invalid") from None
    tenant = await _tenant_of_account(request, account)
    issued = await edge.broker.exchange(
        ExchangeRequest(
            tenant=tenant,
            client_id="",
            assertion=token,
            resource=awsnames.SESSION_AUDIENCE,
            grant="aws-sts",
            request_id=request_id.get(),
            identity_name=name,
            via=VIA,
            session=session_name,
            lifetime=lifetime,
        )
    )
    creds = edge.aws_sessions.issue(issued.access_token, issued.token_id)
    workload = issued.workload or {}
    expires = edge.broker.now() + issued.expires_in
    assumed = f"arn:aws:sts::{account}:assumed-role/{issued.identity.name}/{session_name}"
    assumed_id = f"{awsnames.role_id(issued.identity.object_id)}:{session_name}"
    result = (
        f"    {element('SubjectFromWebIdentityToken', str(workload.get('sub', '')))}\n"
        f"    {element('Audience', _audience(token))}\n"
        "    <AssumedRoleUser>\n"
        f"      {element('Arn', assumed)}\n"
        f"      {element('AssumedRoleId', assumed_id)}\n"
        "    </AssumedRoleUser>\n"
        "    <Credentials>\n"
        f"      {element('AccessKeyId', creds.access_key_id)}\n"
        f"      {element('SecretAccessKey', creds.secret_access_key)}\n"
        f"      {element('SessionToken', creds.session_token)}\n"
        f"      {element('Expiration', timestamp(expires))}\n"
        "    </Credentials>\n"
        f"    {element('Provider', str(workload.get('iss', '')))}\n"
    )
    return xml_response("AssumeRoleWithWebIdentity", result, {"Cache-Control": "no-store"})


async def get_caller_identity(request: Request, body: bytes) -> Response:
    session = await authenticate_session(request, body, "sts")
    result = (
        f"    {element('Arn', session.assumed_role_arn)}\n"
        f"    {element('UserId', session.user_id)}\n"
        f"    {element('Account', session.account)}\n"
    )
    return xml_response("GetCallerIdentity", result)


async def endpoint(request: Request) -> Response:
    try:
        # Every STS call spends from the token endpoint's per-client bucket (shared with the
        # Entra and RFC 8693 token endpoints and the Vault login), before the body is read.
        spend_token_request(request)
        params, body = await _params(request)
        action = params.get("Action", "")
        version = params.get("Version", "")
        if action not in ("AssumeRoleWithWebIdentity", "GetCallerIdentity") or version != VERSION:
            raise InvalidAction(
                f"Could not find operation {action[:64]} for version {version[:32]}"
            )
        if action == "GetCallerIdentity":
            return await get_caller_identity(request, body)
        return await assume_role_with_web_identity(request, params)
    except InvalidAction as exc:
        return error_response(400, "InvalidAction", exc.message)
    except errors.KeylessError as exc:
        return sts_error(exc)


routes = [
    Route(awsnames.STS_PATH.removeprefix("/aws"), endpoint, methods=["GET", "POST"]),
    Route(awsnames.STS_PATH.removeprefix("/aws") + "/", endpoint, methods=["GET", "POST"]),
]
