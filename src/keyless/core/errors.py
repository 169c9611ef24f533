"""The one error hierarchy of keyless.

Each class carries a stable ``code``; dialects in ``keyless.api`` map classes (never messages)
to their own protocol bodies. Messages say what failed and what was presented, never a secret.
"""

from __future__ import annotations


class KeylessError(Exception):
    """Base of every expected failure."""

    code = "error"

    def __init__(self, message: str, *, detail: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, str] = dict(detail or {})

    def __str__(self) -> str:
        return self.message


class ConfigError(KeylessError):
    """Bad or conflicting configuration; raised at start."""

    code = "config"


class InvalidRequest(KeylessError):
    """The request is malformed (missing or bad parameter)."""

    code = "invalid_request"


class NotFound(KeylessError):
    code = "not_found"


class Conflict(KeylessError):
    code = "conflict"


class Unauthorized(KeylessError):
    """No or bad credentials presented."""

    code = "unauthorized"


class Forbidden(KeylessError):
    """Authenticated, but no role allows the action."""

    code = "forbidden"


class Unavailable(KeylessError):
    """A dependency (store, issuer) cannot be reached right now."""

    code = "unavailable"


class AuditUnavailable(Unavailable):
    """The audit event cannot be written, so the request it records is refused."""

    code = "audit_unavailable"


class CryptoError(KeylessError):
    """Decryption or integrity failure (wrong root key, tampered ciphertext)."""

    code = "crypto"


class InvalidToken(KeylessError):
    """A JWT failed a check. ``reason`` names which check, for dialect error mapping."""

    code = "invalid_token"

    def __init__(
        self, message: str, *, reason: str = "malformed", detail: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, detail=detail)
        self.reason = reason


class UnknownClient(NotFound):
    """No identity has the presented client id."""

    code = "unknown_client"


class InvalidTarget(InvalidRequest):
    """The requested resource, audience or scope is not one keyless issues tokens for."""

    code = "invalid_target"


class RateLimited(KeylessError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AddressRefused(Unavailable):
    """A fetch refused by the server's network policy (a private, loopback, link-local or
    metadata address, ...) before any connection was opened.

    An ``Unavailable`` so that a refused refresh is recorded like any failed fetch (the issuer
    keeps its last good keys); ``issuer add`` tells it apart, since retrying cannot help.
    """

    code = "address_refused"


class IssuerUnreachable(InvalidRequest):
    """``issuer add``: the first fetch of an issuer's keys failed, so it was not added
    (an issuer that cannot be verified is refused like a bad request, not as a server fault)."""

    code = "issuer_unreachable"
