"""Access tokens presented to keyless's own APIs: verified offline with the key ring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from keyless.core.errors import InvalidToken, Unauthorized
from keyless.core.keyring import KeyRing
from keyless.core.models import Identity


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the identity the access token was issued to, and the workload behind it."""

    tenant_id: str
    object_id: str
    client_id: str
    fed: dict[str, Any] = field(default_factory=dict)
    admin: bool = False  # the local admin socket: every action allowed, still audited
    # From the access token (empty for the admin socket): its id (``jti``), times, and the
    # login it came from (``via``, e.g. ``auth/kubernetes/login`` for the Vault dialect).
    token_id: str = ""
    issued_at: float = 0.0
    expires_at: float = 0.0
    via: str = ""


class IdentityDirectory(Protocol):
    """The identities that exist now, from memory (the federation index)."""

    def identity_by_object(self, object_id: str) -> Identity | None: ...


class Refused(Unauthorized):
    """A genuine token refused for what happened since it was issued: an access decision on
    a named principal, so it is audited before it is refused."""

    def __init__(self, message: str, principal: Principal) -> None:
        super().__init__(message)
        self.principal = principal


class IdentityGone(Refused):
    """The token is genuine, but the identity it was issued to was deleted since."""

    code = "identity_gone"


class TokenRevoked(Refused):
    """The token is genuine, but it was revoked (Vault's ``revoke-self``)."""

    code = "token_revoked"


class RevokedTokens(Protocol):
    def revoked(self, token_id: str) -> bool: ...


def require_identity(principal: Principal, identities: IdentityDirectory) -> Principal:
    """Refuse a token whose identity no longer exists, checked on every use, from memory.

    A deleted identity is cut off at once, even while tokens issued to it are unexpired; one
    deleted and re-created under the same name is a new identity (new object and client ids),
    so the old one's tokens stay refused.
    """
    identity = identities.identity_by_object(principal.object_id)
    if (
        identity is None
        or identity.tenant_id != principal.tenant_id
        or identity.client_id != principal.client_id
    ):
        raise IdentityGone(
            "access token was issued to an identity that no longer exists", principal
        )
    return principal


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
    return _verify(token, ring, issuer, tenant_id, audiences, now, skew)[0]


def _verify(
    token: str,
    ring: KeyRing,
    issuer: str,
    tenant_id: str,
    audiences: frozenset[str],
    now: float,
    skew: int,
) -> tuple[Principal, float, float]:
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
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise Unauthorized("access token has expired")
    if not isinstance(nbf, int | float):
        raise Unauthorized("access token is not valid yet")
    _check_times(exp, nbf, now, skew)
    oid, azp = claims.get("oid"), claims.get("azp")
    if not isinstance(oid, str) or not isinstance(azp, str):
        raise Unauthorized("access token names no identity")
    fed, jti, iat, via = claims.get("fed"), claims.get("jti"), claims.get("iat"), claims.get("via")
    principal = Principal(
        tenant_id,
        oid,
        azp,
        fed if isinstance(fed, dict) else {},
        token_id=jti if isinstance(jti, str) else "",
        issued_at=float(iat) if isinstance(iat, int | float) else float(nbf),
        expires_at=float(exp),
        via=via if isinstance(via, str) else "",
    )
    return principal, exp, nbf


def _check_times(exp: float, nbf: float, now: float, skew: int) -> None:
    if exp + skew <= now:
        raise Unauthorized("access token has expired")
    if nbf - skew > now:
        raise Unauthorized("access token is not valid yet")


_Verified = tuple[KeyRing, tuple[str, str, frozenset[str]], Principal, float, float]


class VerifiedTokens:
    """Access tokens this process has already verified, so a client that reuses its token
    (every SDK does, until it nears expiry) costs a dictionary lookup, not a signature check.

    An entry holds only what verification concluded, for one key ring snapshot and one
    expected issuer/tenant/audience set; the times are checked again on every use. A rotated
    key ring is a new snapshot, so every entry made under the old one is verified afresh.
    Failures are never cached. Bounded: the oldest entry goes first.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, _Verified] = {}

    def verify(
        self,
        token: str,
        ring: KeyRing,
        *,
        issuer: str,
        tenant_id: str,
        audiences: frozenset[str],
        now: float,
        identities: IdentityDirectory,
        revoked: RevokedTokens | None = None,
        skew: int = 60,
    ) -> Principal:
        """Verify (or recall) the token, then check that it was not revoked and that its
        identity still exists."""
        expected = (issuer, tenant_id, audiences)
        hit = self._entries.get(token)
        if hit is not None and hit[0] is ring and hit[1] == expected:
            _check_times(hit[3], hit[4], now, skew)
            principal = hit[2]
        else:
            principal, exp, nbf = _verify(token, ring, issuer, tenant_id, audiences, now, skew)
            if self.max_entries > 0:
                if len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]
                self._entries[token] = (ring, expected, principal, exp, nbf)
        if revoked is not None and revoked.revoked(principal.token_id):
            raise TokenRevoked("access token was revoked", principal)
        return require_identity(principal, identities)
