"""``keyless explain``: the whole story of one token against a tenant's trust policies.

The verdict is the exchange's own: the token's checks and each identity's decision come from
``decision.check_token`` and ``decision.decide``, which the token endpoint runs. Per-policy
checks and near-miss hints (``trust_explain``) only say why. Admin side only.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from keyless.core.decision import Decision, decide, spiffe_id_of
from keyless.core.errors import NotFound
from keyless.core.exchange import TokenService
from keyless.core.models import Tenant
from keyless.core.spiffenames import trust_domain
from keyless.core.trust_explain import Check, Explanation, PolicyReport, explain


def _check_view(check: Check) -> dict[str, Any]:
    return asdict(check)


def _explanation_view(decision: Decision, ex: Explanation) -> dict[str, Any]:
    identity = decision.identity
    # A verified token matches what the exchange matched; for a rejected token, the policy its
    # claims would match (the property test holds ``explain`` to ``TrustIndex.match``).
    matched = decision.credential if decision.token.verified is not None else ex.matched
    return {
        "identity": identity.name,
        "client_id": identity.client_id,
        "accepted": decision.accepted,
        "decision": [_check_view(c) for c in decision.checks],
        "matched": matched.name if matched else None,
        # Which issuer (cluster) of the matched policy's issuer set the token came from: the
        # workload's cluster, as the audit event names it.
        "matched_issuer": ex.issuer if matched else None,
        "nearest": ex.nearest.credential.name if ex.nearest else None,
        "policies": [_policy_view(report) for report in ex.policies],
    }


def _policy_view(report: PolicyReport) -> dict[str, Any]:
    cred = report.credential
    view: dict[str, Any] = {
        "name": cred.name,
        "matched": report.matched,
        "issuers": list(cred.trusted_issuers),
        "checks": [_check_view(c) for c in report.checks],
        "hints": list(report.hints),
    }
    if cred.google is not None:
        view["member"] = cred.google.member
    return view


async def explain_token(
    tokens: TokenService, tenant: Tenant, token: str, *, identity_name: str | None = None
) -> dict[str, Any]:
    checked = await tokens.check_token(tenant.id, token)
    claims = checked.claims
    federation = tokens.federation
    if identity_name is not None:
        identities = [await federation.get_identity(tenant.id, identity_name)]
    else:
        identities = await federation.list_identities(tenant.id)
    trust = federation.snapshot.trust
    credentials = trust.credentials()
    domain = trust_domain(tenant.alias)
    sid = None if checked.verified is None else spiffe_id_of(domain, checked.verified)
    results = []
    for identity in identities:
        mine = [c for c in credentials if c.identity_id == identity.object_id]
        if not mine and identity_name is None:
            continue
        decision = decide(checked, identity, trust, trust_domain=domain)
        report = explain(mine, claims, token_checks=checked.checks, spiffe_id=sid)
        results.append(_explanation_view(decision, report))
    if identity_name is None and not results and not identities:
        raise NotFound("the tenant has no identities")
    aud = claims.get("aud")
    return {
        "issuer": claims.get("iss"),
        "subject": claims.get("sub"),
        "audiences": aud if isinstance(aud, list) else [aud] if aud else [],
        "token_checks": [_check_view(c) for c in checked.checks],
        "identities": results,
        "accepted": any(r["accepted"] for r in results),
    }
