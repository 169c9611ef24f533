"""Secrets Manager's wire (awsJson1_1): the request's target and body, the error body.

What botocore reads (``BaseJSONParser._do_error_parse``): the code from ``__type`` (any
``prefix#`` dropped), the message from ``message``; a 2xx body is the output shape as JSON
with ``Content-Type: application/x-amz-json-1.1``. Every refusal of a request that reached
the service is a 400 on AWS's JSON services (AccessDeniedException included), a server fault a
500 (botocore retries it).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from keyless.api.aws.smops import SmError
from keyless.api.responses import JSONResponse
from keyless.core import errors, strictjson
from keyless.core.vault import SecretNotFound, SecretUnavailable

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "secretsmanager."


def error_code(exc: errors.KeylessError) -> tuple[str, int]:
    """Secrets Manager's ``__type`` and HTTP status for a keyless error (by class only)."""
    if isinstance(exc, SmError):
        return exc.aws_code, exc.status
    if isinstance(exc, SecretNotFound | SecretUnavailable | errors.NotFound):
        return "ResourceNotFoundException", 400
    if isinstance(exc, errors.Forbidden):
        return "AccessDeniedException", 400
    if isinstance(exc, errors.Unauthorized):
        return "UnrecognizedClientException", 400
    if isinstance(exc, errors.Conflict):
        return "InvalidRequestException", 400
    if isinstance(exc, errors.RateLimited):
        return "ThrottlingException", 400
    if isinstance(exc, errors.InvalidRequest):
        return "InvalidParameterException", 400
    return "InternalServiceError", 500


class AwsJsonResponse(JSONResponse):
    media_type = CONTENT_TYPE


def aws_json(body: dict[str, Any], status: int = 200, request_id: str | None = None) -> Response:
    return AwsJsonResponse(
        body, status_code=status, headers={"x-amzn-RequestId": request_id or str(uuid.uuid4())}
    )


def aws_error(
    code: str, message: str, status: int = 400, request_id: str | None = None
) -> Response:
    return aws_json({"__type": code, "message": message}, status, request_id)


def operation(target: str | None) -> str | None:
    """``secretsmanager.GetSecretValue`` -> ``GetSecretValue``."""
    if target is None or not target.startswith(TARGET_PREFIX):
        return None
    return target[len(TARGET_PREFIX) :]


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        return strictjson.loads_object(raw)
    except strictjson.InvalidJson as exc:
        raise SmError(
            "SerializationException", f"The request body is refused: {exc.message}"
        ) from exc


def sm_busy() -> Response:
    """Admission control's 503 on the Secrets Manager path: botocore retries a 503."""
    response = aws_error("ServiceUnavailable", "the server is busy; retry after 1 second", 503)
    response.headers["Retry-After"] = "1"
    return response
