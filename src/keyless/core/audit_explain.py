"""Why a recorded token exchange was refused, from its audit event alone.

The audit log never keeps the presented token, only what the exchange recorded about it: the
issuer and subject (verified, or marked unverified when the token was refused before its
signature was checked), the workload (cluster, namespace, service account, pod), the identity
asked for (the actor) and the reason. This runs the trust-policy checks of ``keyless explain``
(``trust_explain.explain``) on those recorded claims, against today's policies. Checks the record
cannot answer (audience, a condition on other claims, signature, lifetime) are reported as not
checked, never as passed: only the token itself answers them (paste it into ``explain``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keyless.core.auditchain import AuditRow
from keyless.core.auditsearch import EXCHANGE_PREFIX, dialect_of
from keyless.core.errors import InvalidRequest
from keyless.core.models import Identity
from keyless.core.trust import FederatedCredential
from keyless.core.trust_explain import Check, explain

NOTE = "from the audit record, the token itself is not kept"
NOT_RECORDED = "not checked: the audit record does not keep the token's audience"
CONDITION_UNKNOWN = "not checked: the audit record keeps only iss, sub and the workload"


def recorded_claims(row: AuditRow) -> dict[str, Any]:
    """What the event says the token claimed (``iss``, ``sub``), and the workload it named."""
    workload = row.event.workload
    return {k: workload[k] for k in ("iss", "sub") if isinstance(workload.get(k), str)}


def _check(check: Check, has_condition: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": check.name,
        "passed": check.passed,
        "reason": check.reason,
        "hint": check.hint,
    }
    if check.name == "audience":
        view |= {"passed": None, "reason": NOT_RECORDED, "hint": None}
    elif check.name == "condition" and has_condition:
        view |= {"passed": None, "reason": CONDITION_UNKNOWN, "hint": None}
    return view


def _identity_report(
    identity: Identity, credentials: Sequence[FederatedCredential], claims: dict[str, Any]
) -> dict[str, Any]:
    report = explain(credentials, claims)
    policies = []
    for policy in report.policies:
        checks = [_check(c, policy.credential.condition is not None) for c in policy.checks]
        failed = any(c["passed"] is False for c in checks)
        policies.append(
            {
                "name": policy.credential.name,
                "issuers": list(policy.credential.trusted_issuers),
                # True: every check the record can answer passed; the rest need the token.
                "matched": not failed,
                "checks": checks,
                "hints": list(policy.hints),
            }
        )
    matched = next((p["name"] for p in policies if p["matched"]), None)
    return {
        "identity": identity.name,
        "client_id": identity.client_id,
        "matched": matched,
        "nearest": report.nearest.credential.name if report.nearest and not matched else None,
        "policies": policies,
    }


def explain_recorded(
    row: AuditRow,
    identities: Sequence[Identity],
    credentials: Sequence[FederatedCredential],
    *,
    issuer_registered: bool,
    actor: Identity | None,
) -> dict[str, Any]:
    """The trust-policy checks on what ``row`` (a token exchange) recorded. ``actor`` is the
    identity the exchange asked for (None: unknown or deleted since); then ``identities`` are
    tried (the caller passes those with a policy for the recorded issuer)."""
    event = row.event
    if not event.action.startswith(EXCHANGE_PREFIX):
        raise InvalidRequest(f"audit event {row.seq} is not a token exchange ({event.action})")
    claims = recorded_claims(row)
    tried = [actor] if actor is not None else list(identities)
    mine: dict[str, list[FederatedCredential]] = {}
    for cred in credentials:
        mine.setdefault(cred.identity_id, []).append(cred)
    return {
        "seq": row.seq,
        "note": NOTE,
        "action": event.action,
        "dialect": dialect_of(event.action),
        "result": event.result,
        "reason": event.reason,
        "issuer": claims.get("iss"),
        "subject": claims.get("sub"),
        "verified": event.workload.get("verified", True) is not False and bool(claims),
        "workload": dict(event.workload),
        "issuer_registered": issuer_registered,
        "identity": actor.name if actor is not None else None,
        "identities": [_identity_report(i, mine.get(i.object_id, []), claims) for i in tried],
    }
