"""Entra-shaped error bodies: ``error``, ``error_description``, ``error_codes`` and ids."""

from __future__ import annotations

import datetime as dt
import uuid

from starlette.responses import JSONResponse

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
