"""Validation of a presented assertion (a Kubernetes projected service-account token, a CI
job's OIDC token), in one place, in two phases so that key lookup happens in between::

    unverified = inspect(token, registered=issuers.is_registered)   # parse, iss, kid
    key = await issuers.key(unverified.issuer, unverified.kid)      # may refetch the JWKS
    assertion = verify(unverified, key, now=clock.now())            # signature, then claims

Keys come only from the registered issuer's JWKS: the header's ``jku``, ``x5u``, ``jwk`` and
``x5c`` are never read. Matching the audience and subject against trust policies is
``trust.py``'s job. Every failure is an ``InvalidToken`` whose ``reason`` names the check;
messages echo the presented ``iss``/``sub``/``aud`` (clipped), never the token itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyless.core.errors import InvalidToken
from keyless.core.jose import CompactJWS, PublicKey, parse_compact, verify_signature

DEFAULT_MAX_SIZE = 16 * 1024
DEFAULT_SKEW = 300.0
DEFAULT_MAX_LIFETIME = 86400.0
_ECHO_LIMIT = 200


def echo(value: object, limit: int = _ECHO_LIMIT) -> str:
    """A presented value, quoted and clipped, for an error message."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def clip(value: str, limit: int = 512) -> str:
    """A presented value clipped for an error's ``detail``, lone surrogates escaped (JSON
    ``\\ud800`` escapes decode to them, and they cannot be encoded as UTF-8)."""
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if len(value) <= limit else value[:limit] + "..."


@dataclass(frozen=True, slots=True)
class Unverified:
    """A parsed token from a registered issuer, whose signature is not checked yet."""

    jws: CompactJWS
    issuer: str
    kid: str

    @property
    def alg(self) -> str:
        return self.jws.alg


@dataclass(frozen=True, slots=True)
class Workload:
    """Who presented a Kubernetes token, for the audit log. Absent parts are None."""

    cluster: str
    namespace: str | None
    service_account: str | None
    pod: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """A token whose signature, lifetime and required claims have been checked."""

    issuer: str
    subject: str
    audiences: tuple[str, ...]
    claims: Mapping[str, Any] = field(hash=False, repr=False)
    expires_at: float
    issued_at: float | None = None

    @property
    def workload(self) -> Workload | None:
        """The pod behind a Kubernetes token (``kubernetes.io`` claim); None for other tokens."""
        k8s = self.claims.get("kubernetes.io")
        if not isinstance(k8s, Mapping):
            return None
        namespace = k8s.get("namespace")
        return Workload(
            cluster=self.issuer,
            namespace=namespace if isinstance(namespace, str) else None,
            service_account=_name_of(k8s.get("serviceaccount")),
            pod=_name_of(k8s.get("pod")),
            node=_name_of(k8s.get("node")),
        )


def _name_of(value: object) -> str | None:
    if isinstance(value, Mapping):
        name = value.get("name")
        return name if isinstance(name, str) else None
    return None


def inspect(
    token: str, *, registered: Callable[[str], bool], max_size: int = DEFAULT_MAX_SIZE
) -> Unverified:
    """Parse ``token`` strictly and check that its issuer is registered and it names a key."""
    jws = parse_compact(token, max_size=max_size)
    issuer = issuer_of(jws)
    if not registered(issuer):
        raise unregistered(issuer)
    return with_kid(jws, issuer)


def issuer_of(jws: CompactJWS) -> str:
    """The token's ``iss`` claim; InvalidToken (reason ``issuer``) when it has none."""
    issuer = jws.payload.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise InvalidToken("assertion has no issuer (iss) claim", reason="issuer")
    return issuer


def unregistered(issuer: str) -> InvalidToken:
    """The one error for "this issuer is not registered in the tenant"."""
    return InvalidToken(
        f"assertion issuer {echo(issuer)} is not registered",
        reason="issuer",
        detail={"issuer": clip(issuer)},
    )


def with_kid(jws: CompactJWS, issuer: str) -> Unverified:
    """The token of registered ``issuer`` with the key id it names; InvalidToken without one."""
    kid = jws.kid
    if kid is None:
        raise InvalidToken(
            f"assertion from issuer {echo(issuer)} names no signing key (kid)",
            reason="unknown_kid",
            detail={"issuer": clip(issuer)},
        )
    return Unverified(jws=jws, issuer=issuer, kid=kid)


def verify(
    unverified: Unverified,
    key: PublicKey,
    *,
    now: float,
    skew: float = DEFAULT_SKEW,
    max_lifetime: float = DEFAULT_MAX_LIFETIME,
) -> VerifiedAssertion:
    """Check the signature with ``key`` (the issuer's key for ``kid``), then the claims."""
    check_signature(unverified, key)
    return check_claims(unverified, now=now, skew=skew, max_lifetime=max_lifetime)


def _where(unverified: Unverified) -> dict[str, str]:
    return {"issuer": clip(unverified.issuer), "kid": clip(unverified.kid)}


def check_signature(unverified: Unverified, key: PublicKey) -> None:
    """The signature, with ``key`` (the issuer's key for ``kid``); InvalidToken if it fails."""
    try:
        verify_signature(unverified.jws, key)
    except InvalidToken as exc:
        raise InvalidToken(
            f"assertion from issuer {echo(unverified.issuer)} (kid {echo(unverified.kid)}): "
            f"{exc.message}",
            reason="signature",
            detail=_where(unverified),
        ) from exc


def check_claims(
    unverified: Unverified,
    *,
    now: float,
    skew: float = DEFAULT_SKEW,
    max_lifetime: float = DEFAULT_MAX_LIFETIME,
) -> VerifiedAssertion:
    """Times and required claims of a token whose signature ``check_signature`` accepted."""
    issuer = unverified.issuer
    where = _where(unverified)
    claims = unverified.jws.payload

    def fail(message: str, reason: str) -> InvalidToken:
        return InvalidToken(
            f"assertion from issuer {echo(issuer)}: {message}", reason=reason, detail=where
        )

    try:
        exp, nbf, iat = (_time_claim(claims, name) for name in ("exp", "nbf", "iat"))
    except ValueError as exc:
        raise fail(str(exc), "claims") from exc
    if exp is None:
        raise fail("the expiry (exp) claim is missing", "claims")
    if exp + skew <= now:
        raise fail(f"expired at {exp:.0f} (now {now:.0f})", "expired")
    if nbf is not None and nbf - skew > now:
        raise fail(f"not valid before {nbf:.0f} (now {now:.0f})", "not_yet_valid")
    if iat is not None and iat - skew > now:
        raise fail(f"issued in the future at {iat:.0f} (now {now:.0f})", "not_yet_valid")
    start = iat if iat is not None else nbf if nbf is not None else now
    if exp - start > max_lifetime:
        raise fail(
            f"lifetime of {exp - start:.0f} s exceeds the maximum of {max_lifetime:.0f} s",
            "lifetime",
        )
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise fail("the subject (sub) claim is missing or not a non-empty string", "claims")
    audiences = _audiences(claims.get("aud"))
    if audiences is None:
        raise fail(
            f"the audience (aud) claim {echo(claims.get('aud'))} is not a non-empty string "
            "or list of them",
            "claims",
        )
    return VerifiedAssertion(
        issuer=issuer,
        subject=subject,
        audiences=audiences,
        claims=claims,
        expires_at=exp,
        issued_at=iat,
    )


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 2), or None if absent; ValueError for anything else."""
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int in Python; json.loads accepts NaN, Infinity and 400-digit integers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"the {name} claim is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"the {name} claim is not a finite number")
    return number


def _audiences(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,) if value else None
    if isinstance(value, list) and value and all(isinstance(a, str) and a for a in value):
        return tuple(value)
    return None
