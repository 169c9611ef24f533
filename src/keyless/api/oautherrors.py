"""OAuth 2.0 error bodies in Entra's shape (``error``, ``error_description``, ``error_codes``, ids),
shared by the two token dialects on the same URL: Entra v2 (``api/entra``) and RFC 8693.
"""

from __future__ import annotations

import datetime as dt
import uuid

from keyless.api.responses import JSONResponse
from keyless.core.errors import AuditUnavailable, KeylessError, RateLimited, Unavailable
from keyless.logs import request_id


def entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    trace = request_id.get() or uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Timestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": trace,
        },
        status_code=status,
    )


# InvalidToken.reason -> (status, error, AADSTS code)
TOKEN_ERRORS: dict[str, tuple[int, str, int]] = {
    "malformed": (400, "invalid_request", 50027),
    "alg": (400, "invalid_request", 50027),
    "claims": (400, "invalid_request", 50027),
    "issuer": (401, "invalid_client", 700211),
    "unregistered_issuer": (401, "invalid_client", 700211),
    "unknown_kid": (401, "invalid_client", 7000272),
    "signature": (401, "invalid_client", 700027),
    "expired": (401, "invalid_client", 700024),
    "not_yet_valid": (401, "invalid_client", 700024),
    "lifetime": (401, "invalid_client", 700024),
    "audience": (401, "invalid_client", 700212),
    "subject": (401, "invalid_client", 700213),
    "condition": (401, "invalid_client", 70021),
}


def common_error(exc: KeylessError) -> JSONResponse:
    """What both token dialects answer alike: unavailable parts, throttling, bad requests."""
    if isinstance(exc, AuditUnavailable):
        return entra_error(503, "temporarily_unavailable", 50196, exc.message)
    if isinstance(exc, Unavailable):
        return entra_error(400, "invalid_request", 90061, exc.message)
    if isinstance(exc, RateLimited):
        response = entra_error(429, "temporarily_unavailable", 50196, exc.message)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return entra_error(400, "invalid_request", 900144, exc.message)
