"""Admin API errors: ``{"error": {"code", "message"}}`` with an HTTP status per class."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.api.responses import JSONResponse
from keyless.core import errors

STATUS: dict[type[errors.KeylessError], int] = {
    errors.InvalidRequest: 400,
    errors.ConfigError: 400,
    errors.InvalidToken: 400,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.Unavailable: 503,
    errors.CryptoError: 500,
}


def error_response(exc: errors.KeylessError) -> JSONResponse:
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status)


async def handle_keyless_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.KeylessError)
    return error_response(exc)
