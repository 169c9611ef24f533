"""Access tokens presented to keyless's own APIs: verified offline with the key ring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keyless.core.errors import InvalidToken, Unauthorized
from keyless.core.keyring import KeyRing


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the identity the access token was issued to, and the workload behind it."""

    tenant_id: str
    object_id: str
    client_id: str
    fed: dict[str, Any] = field(default_factory=dict)
    admin: bool = False  # the local admin socket: every action allowed, still audited


def admin_principal(tenant_id: str) -> Principal:
    return Principal(tenant_id, "admin-socket", "admin-socket", {}, admin=True)


def verify_access_token(
    token: str,
    ring: KeyRing,
    *,
    issuer: str,
    tenant_id: str,
    audiences: frozenset[str],
    now: float,
    skew: int = 60,
) -> Principal:
    """Signature by this tenant's key ring, then iss, tid, aud, exp/nbf. Any failure is 401."""
    try:
        jws = ring.verify(token)
    except InvalidToken as exc:
        raise Unauthorized(f"access token rejected: {exc.message}") from exc
    claims = jws.payload
    if claims.get("iss") != issuer or claims.get("tid") != tenant_id:
        raise Unauthorized("access token was issued for another tenant")
    if claims.get("aud") not in audiences:
        raise Unauthorized("access token audience is not this resource")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp + skew <= now:
        raise Unauthorized("access token has expired")
    if not isinstance(nbf, int | float) or nbf - skew > now:
        raise Unauthorized("access token is not valid yet")
    oid, azp = claims.get("oid"), claims.get("azp")
    if not isinstance(oid, str) or not isinstance(azp, str):
        raise Unauthorized("access token names no identity")
    fed = claims.get("fed")
    return Principal(tenant_id, oid, azp, fed if isinstance(fed, dict) else {})
