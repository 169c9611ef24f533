"""AWS Secrets Manager at ``PUBLIC_URL/aws/secretsmanager`` (``AWS_ENDPOINT_URL_SECRETS_MANAGER``).

One POST route (botocore sends every operation to the endpoint's path plus ``/``), the
operation named by ``X-Amz-Target: secretsmanager.OP``. The request is authenticated by its
SigV4 signature and session token (``api/aws/auth.py``) before its body is parsed; the
operations are ``api/aws/smops.py``'s; refusals are AWS's JSON error bodies (``smwire.py``).

SDK behaviour pinned here (botocore 1.3x, the AWS CLI v1):
- the endpoint's path prefix is kept and the operation goes to ``PREFIX/``, so both
  ``/aws/secretsmanager`` and ``/aws/secretsmanager/`` are the endpoint;
- the region the client signed with (its credential scope) is the region in the ARNs answered,
  as AWS's regional endpoints answer theirs;
- ``AccessDeniedException`` is a 400 with the caller and the action in its message, as AWS's.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.aws.auth import Session, authenticate_session
from keyless.api.aws.smops import OPERATIONS, Context
from keyless.api.aws.smwire import aws_error, aws_json, error_code, operation, parse_body
from keyless.api.aws.wire import AwsAuthError
from keyless.api.context import broker_of
from keyless.api.forms import read_body
from keyless.core import awsnames, errors
from keyless.core.vault import Call
from keyless.logs import request_id

SERVICE = "secretsmanager"
MAX_BODY = 256 * 1024  # a 25 KiB value as JSON text, tags and a description fit many times
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]{1,32})/")


def _region(request: Request) -> str:
    match = _SCOPE.search(request.headers.get("authorization", ""))
    return match.group(1) if match else awsnames.DEFAULT_REGION


def _refusal(session: Session, op: str, body: dict[str, Any], exc: errors.KeylessError) -> Response:
    code, status = error_code(exc)
    message = exc.message if status < 500 else "An internal error occurred."
    if code == "AccessDeniedException":
        resource = body.get("SecretId") or body.get("Name") or "*"
        message = (
            f"User: {session.assumed_role_arn} is not authorized to perform: "
            f"secretsmanager:{op} on resource: {str(resource)[:2048]} because no keyless role "
            f"allows it. {exc.message}"
        )
    return aws_error(code, message, status, request_id.get())


async def endpoint(request: Request) -> Response:
    rid = request_id.get()
    try:
        raw = await read_body(request, MAX_BODY)
    except errors.InvalidRequest as exc:
        return aws_error("InvalidRequestException", exc.message, 400, rid)
    try:
        session = await authenticate_session(request, raw, SERVICE)
    except AwsAuthError as exc:  # JSON services answer every authentication failure with 400
        return aws_error(exc.aws_code, exc.message, 400, rid)
    name = operation(request.headers.get("x-amz-target"))
    op = OPERATIONS.get(name or "")
    if name is None or op is None:
        return aws_error(
            "UnknownOperationException",
            f"keyless's Secrets Manager has no operation {str(name)[:64]!r}",
            400,
            rid,
        )
    body: dict[str, Any] = {}
    ctx = Context(broker_of(request).vaults, Call(session.principal, rid), _region(request))
    try:
        body = parse_body(raw)
        return aws_json(await op(ctx, body), 200, rid)
    except errors.KeylessError as exc:
        return _refusal(session, name, body, exc)


# Mounted under ``/aws`` with STS (api/app.py).
_PATH = awsnames.SECRETS_MANAGER_PATH.removeprefix("/aws")
routes = [
    Route(_PATH, endpoint, methods=["POST"]),
    Route(_PATH + "/", endpoint, methods=["POST"]),
]
