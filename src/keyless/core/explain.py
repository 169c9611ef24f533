"""``keyless explain``: the whole story of one token against a tenant's trust policies.

Token checks (format, issuer registered, key, signature, lifetime) come from the same code the
exchange runs; per-policy checks and near-misses from ``trust_explain``. Admin side only.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from keyless.core import assertion, jose
from keyless.core.errors import InvalidToken, KeylessError, NotFound
from keyless.core.exchange import TokenService
from keyless.core.models import Identity, Tenant
from keyless.core.trust_explain import Check, Explanation, explain


async def _token_checks(
    tokens: TokenService, tenant: Tenant, token: str
) -> tuple[list[Check], dict[str, Any]]:
    checks: list[Check] = []
    try:
        jws = jose.parse_compact(token, max_size=tokens.policy.max_assertion_size)
    except InvalidToken as exc:
        return [Check("format", False, f"{exc.reason}: {exc.message}")], {}
    checks.append(Check("format", True, f"compact JWS, alg {jws.alg}"))
    try:
        unverified = assertion.inspect(
            token,
            registered=lambda iss: tokens.federation.is_registered(tenant.id, iss),
            max_size=tokens.policy.max_assertion_size,
        )
    except InvalidToken as exc:
        checks.append(Check("issuer registered", False, exc.message))
        return checks, jws.payload
    checks.append(Check("issuer registered", True, unverified.issuer))
    try:
        source = tokens.federation.key_source(tenant.id, unverified.issuer)
        key = await tokens.federation.keys.key(source, unverified.kid)
    except KeylessError as exc:
        checks.append(Check("signing key", False, exc.message))
        return checks, jws.payload
    checks.append(Check("signing key", True, f"kid {unverified.kid}"))
    try:
        jose.verify_signature(jws, key)
        checks.append(Check("signature", True, "verifies with the issuer's key"))
    except InvalidToken as exc:
        checks.append(Check("signature", False, exc.message))
        return checks, jws.payload
    p = tokens.policy
    try:
        assertion.verify(
            unverified,
            key,
            now=tokens.clock.now(),
            skew=p.skew,
            max_lifetime=p.max_assertion_lifetime,
        )
        checks.append(Check("time and claims", True, "exp/nbf/iat within limits"))
    except InvalidToken as exc:
        checks.append(Check("time and claims", False, f"{exc.reason}: {exc.message}"))
    return checks, jws.payload


def _check_view(check: Check) -> dict[str, Any]:
    return asdict(check)


def _explanation_view(identity: Identity, ex: Explanation) -> dict[str, Any]:
    return {
        "identity": identity.name,
        "client_id": identity.client_id,
        "matched": ex.matched.name if ex.matched else None,
        "nearest": ex.nearest.credential.name if ex.nearest else None,
        "policies": [
            {
                "name": report.credential.name,
                "matched": report.matched,
                "checks": [_check_view(c) for c in report.checks],
                "hints": list(report.hints),
            }
            for report in ex.policies
        ],
    }


async def explain_token(
    tokens: TokenService, tenant: Tenant, token: str, *, identity_name: str | None = None
) -> dict[str, Any]:
    checks, claims = await _token_checks(tokens, tenant, token)
    federation = tokens.federation
    if identity_name is not None:
        identities = [await federation.get_identity(tenant.id, identity_name)]
    else:
        identities = await federation.list_identities(tenant.id)
    results = []
    for identity in identities:
        credentials = federation.snapshot.trust.credentials()
        mine = [c for c in credentials if c.identity_id == identity.object_id]
        if not mine and identity_name is None:
            continue
        results.append(_explanation_view(identity, explain(mine, claims, token_checks=checks)))
    if identity_name is None and not results and not identities:
        raise NotFound("the tenant has no identities")
    aud = claims.get("aud")
    return {
        "issuer": claims.get("iss"),
        "subject": claims.get("sub"),
        "audiences": aud if isinstance(aud, list) else [aud] if aud else [],
        "token_checks": [_check_view(c) for c in checks],
        "identities": results,
        "accepted": all(c.passed for c in checks) and any(r["matched"] for r in results),
    }
