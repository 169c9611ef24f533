"""AWS's wire shapes for the STS query protocol: XML answers and ``ErrorResponse`` bodies.

botocore's query parser strips XML namespaces and reads ``<Action>Result``, so the envelope is
AWS's own: ``<ActionResponse xmlns=...><ActionResult>...</ActionResult><ResponseMetadata>``.
Errors are ``<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`` with AWS's
codes and statuses; keyless's errors map to them once, here (``sts_error``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from starlette.responses import Response

from keyless.core import errors
from keyless.core.sigv4 import SigV4Error
from keyless.logs import request_id

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
XML = "text/xml"


class AwsAuthError(errors.Unauthorized):
    """A signed request refused, with the AWS code and status to answer (the JSON protocols'
    names, e.g. ``InvalidSignatureException``; ``sts_error`` renders STS's own names)."""

    code = "aws_auth"

    def __init__(self, aws_code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.status = status


# The JSON services' code -> STS's query-protocol code for the same refusal.
_STS_AUTH_CODES = {
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidClientTokenId",
    "ExpiredTokenException": "ExpiredToken",
}


def rid() -> str:
    return request_id.get() or str(uuid.uuid4())


def timestamp(seconds: float) -> str:
    """ISO 8601 in UTC with a ``Z``, as STS writes ``Expiration``."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def element(name: str, value: str) -> str:
    return f"<{name}>{escape(value)}</{name}>"


def xml_response(action: str, result: str, headers: dict[str, str] | None = None) -> Response:
    body = (
        f'<{action}Response xmlns="{STS_NAMESPACE}">\n'
        f"  <{action}Result>\n{result}  </{action}Result>\n"
        f"  <ResponseMetadata>\n    <RequestId>{escape(rid())}</RequestId>\n"
        f"  </ResponseMetadata>\n</{action}Response>\n"
    )
    return Response(body, media_type=XML, headers={"x-amzn-RequestId": rid(), **(headers or {})})


def error_response(status: int, code: str, message: str, *, sender: bool = True) -> Response:
    body = (
        f'<ErrorResponse xmlns="{STS_NAMESPACE}">\n'
        f"  <Error>\n    <Type>{'Sender' if sender else 'Receiver'}</Type>\n"
        f"    {element('Code', code)}\n    {element('Message', message)}\n  </Error>\n"
        f"  {element('RequestId', rid())}\n</ErrorResponse>\n"
    )
    return Response(body, status_code=status, media_type=XML, headers={"x-amzn-RequestId": rid()})


ACCESS_DENIED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"

# InvalidToken.reason (a presented web identity token) -> (status, STS code)
_TOKEN_CODES: dict[str, tuple[int, str]] = {
    "expired": (400, "ExpiredTokenException"),
    "subject": (403, "AccessDenied"),
    "condition": (403, "AccessDenied"),
}


def auth_error(exc: SigV4Error) -> AwsAuthError:
    """A SigV4 refusal as the JSON protocols name it (STS renames it in ``sts_error``)."""
    if exc.reason == "missing":
        return AwsAuthError(
            "MissingAuthenticationTokenException", "Missing Authentication Token", 403
        )
    if exc.reason == "incomplete":
        return AwsAuthError("IncompleteSignatureException", exc.message, 400)
    return AwsAuthError("InvalidSignatureException", exc.message, 403)


def sts_error(exc: errors.KeylessError) -> Response:
    """keyless's error as STS answers it."""
    if isinstance(exc, AwsAuthError):
        return error_response(
            exc.status, _STS_AUTH_CODES.get(exc.aws_code, exc.aws_code), exc.message
        )
    if isinstance(exc, SigV4Error):
        return sts_error(auth_error(exc))
    if isinstance(exc, errors.InvalidToken):
        status, code = _TOKEN_CODES.get(exc.reason, (400, "InvalidIdentityToken"))
        if code == "AccessDenied":
            return error_response(status, code, f"{ACCESS_DENIED}: {exc.message}")
        if exc.reason == "audience":
            return error_response(status, code, f"Incorrect token audience: {exc.message}")
        return error_response(status, code, exc.message)
    if isinstance(exc, errors.UnknownClient):
        # What STS says for a role that does not exist: the same as for a trust mismatch.
        return error_response(403, "AccessDenied", ACCESS_DENIED)
    if isinstance(exc, errors.RateLimited):
        response = error_response(400, "Throttling", "Rate exceeded")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, errors.AuditUnavailable):
        return error_response(503, "ServiceUnavailable", exc.message, sender=False)
    if isinstance(exc, errors.Unavailable):
        # The issuer's keys could not be fetched: botocore retries this one.
        return error_response(400, "IDPCommunicationError", exc.message)
    if isinstance(exc, errors.Unauthorized):
        return error_response(403, "InvalidClientTokenId", exc.message)
    if isinstance(exc, errors.Forbidden):
        return error_response(403, "AccessDenied", exc.message)
    if isinstance(exc, errors.InvalidRequest | errors.NotFound | errors.Conflict):
        return error_response(400, "ValidationError", exc.message)
    return error_response(500, "InternalFailure", "internal error", sender=False)


def sts_busy() -> Response:
    """Admission control's 503 on the STS path: botocore retries ServiceUnavailable."""
    response = error_response(
        503, "ServiceUnavailable", "the server is busy; retry after 1 second", sender=False
    )
    response.headers["Retry-After"] = "1"
    return response
