"""Google's wire shapes: the ``google.rpc.Status`` error body of Google's JSON APIs (IAM
Credentials, Secret Manager) and the RFC 6749 error body of STS. keyless's errors map to them
once, here.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from keyless.core import errors

# HTTP status -> google.rpc.Code name, as Google's JSON APIs answer.
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
NO_STORE = {"Cache-Control": "no-store"}


class GoogleError(errors.KeylessError):
    """A refusal with the HTTP status and google.rpc status to answer."""

    code = "google"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        rpc_status: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.rpc_status = rpc_status or STATUS.get(status, "UNKNOWN")
        self.details = details or []


def unauthenticated(message: str = "") -> GoogleError:
    return GoogleError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential." + (f" {message}" if message else ""),
    )


def permission_denied(permission: str, resource: str, domain: str, extra: str = "") -> GoogleError:
    """Google's 403 for a known principal without ``permission`` on ``resource``."""
    return GoogleError(
        403,
        f"Permission '{permission}' denied for resource '{resource}' (or it may not exist)."
        + (f" {extra}" if extra else ""),
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": domain,
                "metadata": {"permission": permission, "resource": resource},
            }
        ],
    )


def error_body(
    status: int, message: str, rpc_status: str, details: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": rpc_status, "details": details}}


def google_error(exc: errors.KeylessError) -> JSONResponse:
    """Any keyless error as Google's JSON API error body."""
    if isinstance(exc, GoogleError):
        status, rpc, details = exc.status, exc.rpc_status, exc.details
    elif isinstance(exc, errors.Unauthorized | errors.InvalidToken):
        return google_error(unauthenticated())
    else:
        status = _status_of(exc)
        rpc, details = STATUS.get(status, "UNKNOWN"), []
    headers = dict(NO_STORE)
    retry = getattr(exc, "retry_after", None)
    if status in (429, 503) and retry:
        headers["Retry-After"] = str(int(retry))
    return JSONResponse(error_body(status, exc.message, rpc, details), status, headers)


def _status_of(exc: errors.KeylessError) -> int:
    for cls, status in (
        (errors.RateLimited, 429),
        (errors.Unavailable, 503),
        (errors.Forbidden, 403),
        (errors.NotFound, 404),
        (errors.Conflict, 409),
        (errors.InvalidRequest, 400),
    ):
        if isinstance(exc, cls):
            return status
    return 500


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """STS's RFC 6749 section 5.2 error body."""
    return JSONResponse({"error": error, "error_description": description}, status, dict(NO_STORE))


def gcp_busy() -> JSONResponse:
    """Admission control's 503 under ``/gcp``: Google's clients retry UNAVAILABLE."""
    response = google_error(GoogleError(503, "The service is currently unavailable."))
    response.headers["Retry-After"] = "1"
    return response
