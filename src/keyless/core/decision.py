"""The decision on a presented platform token, made in one place for every caller.

The token endpoint of every dialect and ``keyless explain`` both call ``check_token`` and then
``decide``: the exchange raises the decision's ``error``, explain prints its ``checks``. So the
two cannot disagree about a token. The checks run in order and stop at the first failure:

    format -> issuer registered -> signing key -> signature -> time and claims -> trust policy

"Is this issuer registered in the tenant?" is asked once, here (``sources``: issuer URL ->
the id its keys are cached under), and answered with one error, ``assertion.unregistered``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyless.core import assertion
from keyless.core.errors import InvalidRequest, InvalidToken, KeylessError
from keyless.core.jose import PublicKey, parse_compact
from keyless.core.models import Identity
from keyless.core.spiffeid import workload_spiffe_id
from keyless.core.trust import FederatedCredential, TrustIndex
from keyless.core.trust_explain import Check


class KeyLookup(Protocol):
    """Where an issuer's signing keys come from (``IssuerKeys``), by cache id and kid."""

    async def key(self, issuer: str, kid: str) -> PublicKey: ...


@dataclass(frozen=True, slots=True)
class AssertionPolicy:
    """The limits a presented token is held to."""

    skew: float = assertion.DEFAULT_SKEW
    max_lifetime: float = assertion.DEFAULT_MAX_LIFETIME
    max_size: int = assertion.DEFAULT_MAX_SIZE


@dataclass(frozen=True, slots=True)
class TokenDecision:
    """The token's own checks (before any trust policy), with their reasons.

    ``claims`` is the token's payload as presented (unverified unless ``verified`` is set;
    empty when it could not be parsed); ``error`` the first failure, None when all passed.
    """

    checks: tuple[Check, ...]
    claims: Mapping[str, Any] = field(repr=False)
    verified: assertion.VerifiedAssertion | None
    error: KeylessError | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A token against one identity's trust policies: accepted with ``credential``, or not."""

    identity: Identity
    token: TokenDecision
    checks: tuple[Check, ...]  # the token's checks, then "trust policy" if they all passed
    credential: FederatedCredential | None
    error: KeylessError | None

    @property
    def accepted(self) -> bool:
        return self.error is None and self.credential is not None


async def check_token(
    token: str,
    *,
    sources: Mapping[str, str],
    keys: KeyLookup,
    now: float,
    policy: AssertionPolicy,
) -> TokenDecision:
    """Every check of ``token`` that does not depend on the identity it is presented for."""
    checks: list[Check] = []
    claims: Mapping[str, Any] = {}

    def failed(name: str, exc: KeylessError, reason: str) -> TokenDecision:
        checks.append(Check(name, False, reason))
        return TokenDecision(tuple(checks), claims, None, exc)

    try:
        jws = parse_compact(token, max_size=policy.max_size)
    except InvalidToken as exc:
        return failed("format", exc, f"{exc.reason}: {exc.message}")
    claims = jws.payload
    checks.append(Check("format", True, f"compact JWS, alg {jws.alg}"))
    try:
        issuer = assertion.issuer_of(jws)
        source = sources.get(issuer)
        if source is None:
            raise assertion.unregistered(issuer)
        unverified = assertion.with_kid(jws, issuer)
    except InvalidToken as exc:
        return failed("issuer registered", exc, exc.message)
    checks.append(Check("issuer registered", True, issuer))
    try:
        key = await keys.key(source, unverified.kid)
    except KeylessError as exc:
        return failed("signing key", exc, exc.message)
    checks.append(Check("signing key", True, f"kid {unverified.kid}"))
    try:
        assertion.check_signature(unverified, key)
    except InvalidToken as exc:
        return failed("signature", exc, exc.message)
    checks.append(Check("signature", True, "verifies with the issuer's key"))
    try:
        verified = assertion.check_claims(
            unverified, now=now, skew=policy.skew, max_lifetime=policy.max_lifetime
        )
    except InvalidToken as exc:
        return failed("time and claims", exc, f"{exc.reason}: {exc.message}")
    checks.append(Check("time and claims", True, "exp/nbf/iat within limits"))
    return TokenDecision(tuple(checks), claims, verified, None)


def decide(
    token: TokenDecision,
    identity: Identity,
    trust: TrustIndex,
    *,
    trust_domain: str | None = None,
) -> Decision:
    """``token`` presented for ``identity``: the credential that trusts it, or why none does.
    ``trust_domain`` (the tenant's, core/spiffenames.py) lets conditions use ``spiffe_id``."""
    if token.verified is None:
        return Decision(identity, token, token.checks, None, token.error)
    sid = None if trust_domain is None else spiffe_id_of(trust_domain, token.verified)
    try:
        credential = trust.match(identity.object_id, token.verified, spiffe_id=sid)
    except InvalidToken as exc:
        check = Check("trust policy", False, f"{exc.reason}: {exc.message}")
        return Decision(identity, token, (*token.checks, check), None, exc)
    check = Check("trust policy", True, f"credential {credential.name}")
    return Decision(identity, token, (*token.checks, check), credential, None)


def spiffe_id_of(trust_domain: str, verified: assertion.VerifiedAssertion) -> str | None:
    """The SPIFFE ID ``verified`` would get (core/spiffeid.py), None when the token's names
    make none (a condition that uses ``spiffe_id`` then fails closed)."""
    try:
        return workload_spiffe_id(trust_domain, verified)
    except InvalidRequest:
        return None
