"""Per-client-IP rate limits shared by unauthenticated routes of several dialects."""

from __future__ import annotations

from starlette.requests import Request

from keyless.api.context import edge_of
from keyless.core.errors import RateLimited
from keyless.core.ratelimit import client_key


def spend_token_request(request: Request) -> None:
    """Spend one of the client's token-request tokens (``--token-rate-limit``): the Entra /
    RFC 8693 token endpoint and the Vault login share the bucket. RateLimited when empty;
    called before the body is read, so a flood costs one dict lookup."""
    limiter = edge_of(request).token_limiter
    if limiter is not None:
        limiter.take(client_key(request.client.host if request.client else None))


def discovery_refusal(request: Request) -> RateLimited | None:
    """Spend one of the client's discovery tokens (``--discovery-rate-limit``); the refusal,
    for the caller to render in its dialect, when it has none left."""
    limiter = request.app.state.services.discovery_limiter
    if limiter is None:
        return None
    try:
        limiter.take(client_key(request.client.host if request.client else None))
    except RateLimited as exc:
        return exc
    return None
