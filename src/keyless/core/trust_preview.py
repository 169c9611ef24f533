"""A proposed trust policy against the recent token exchanges: which would it have matched?

Before a federated credential is added, the console shows the tenant's recent token-exchange
events (the audit log) judged against it, each "would match" or "would not match" with the
reason. The judgement is ``trust_explain.explain``'s, the checks ``keyless explain`` and the
exchange itself make, over what the audit log kept of each presented token: never the token,
but its issuer and subject and, for a Kubernetes token, the names of its ``kubernetes.io``
claim (namespace, service account, pod, node). From those the claims are rebuilt, so that:

* the issuer, subject and subject pattern checks are exactly the exchange's;
* a condition sees ``iss``, ``sub`` and ``kubernetes.io`` only (and ``spiffe_id``, derived
  from them as the exchange derives it): one on another claim cannot be judged and fails, as
  the exchange would fail it on a token without that claim;
* the audience is not recorded, so it is not checked (``NOTES`` says so);
* a token whose own checks failed (unregistered issuer, signature, lifetime) matches nothing,
  whatever the policy: the ``token`` check says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.core.assertion import VerifiedAssertion
from keyless.core.audit import AuditEvent
from keyless.core.decision import spiffe_id_of
from keyless.core.trust import FederatedCredential
from keyless.core.trust_explain import Check, explain

ACTION_PREFIX = "token.exchange."
RECENT = 50  # exchanges judged
NOTES = (
    "The audit log does not record a token's audiences: they are not checked here.",
    "A condition sees only what the audit log records: iss, sub and the kubernetes.io "
    "namespace, service account, pod and node (and spiffe_id, derived from them).",
)
_NAMES = (("serviceaccount", "service_account"), ("pod", "pod"), ("node", "node"))


@dataclass(frozen=True, slots=True)
class PreviewRow:
    """One recorded exchange judged against the proposed policy."""

    event: AuditEvent
    seq: int
    checks: tuple[Check, ...]

    @property
    def match(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str | None:
        """The first failed check's reason (None when it matches)."""
        failed = next((c for c in self.checks if not c.passed), None)
        return None if failed is None else f"{failed.name}: {failed.reason}"


def claims_of(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The claims an audit event's ``workload`` record says the token had."""
    claims: dict[str, Any] = {}
    for claim in ("iss", "sub"):
        if isinstance(workload.get(claim), str):
            claims[claim] = workload[claim]
    k8s: dict[str, Any] = {}
    if isinstance(workload.get("namespace"), str):
        k8s["namespace"] = workload["namespace"]
    for claim, key in _NAMES:
        if isinstance(workload.get(key), str):
            k8s[claim] = {"name": workload[key]}
    if k8s:
        claims["kubernetes.io"] = k8s
    return claims


def _token_check(workload: Mapping[str, Any]) -> Check:
    if workload.get("verified") is False or not {"iss", "sub"} <= set(workload):
        return Check(
            "token",
            False,
            "the token itself was refused (issuer, signature or lifetime): no policy matches it",
        )
    return Check("token", True, "the token was verified")


def judge(
    cred: FederatedCredential, event: AuditEvent, seq: int, trust_domain: str | None
) -> PreviewRow:
    """``cred``'s checks on the token ``event`` recorded."""
    claims = claims_of(event.workload)
    sid = None
    if trust_domain is not None and "iss" in claims and "sub" in claims:
        verified = VerifiedAssertion(claims["iss"], claims["sub"], (), claims, 0.0)
        sid = spiffe_id_of(trust_domain, verified)
    report = explain([cred], claims, spiffe_id=sid).policies[0]
    checks = [_token_check(event.workload)]
    for check in report.checks:
        if check.name == "audience":
            check = Check("audience", True, "not recorded in the audit log: not checked")
        checks.append(check)
    return PreviewRow(event, seq, tuple(checks))


def preview(
    cred: FederatedCredential,
    events: Sequence[tuple[int, AuditEvent]],
    trust_domain: str | None = None,
) -> list[PreviewRow]:
    """Each (seq, exchange event) judged against ``cred``, in the order given."""
    return [
        judge(cred, event, seq, trust_domain)
        for seq, event in events
        if event.action.startswith(ACTION_PREFIX)
    ]
