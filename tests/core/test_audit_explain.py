"""A recorded token exchange judged by today's trust policies from what its audit event kept:
checks the record answers pass or fail, the others are "not checked", never passed."""

from __future__ import annotations

import pytest

from keyless.core.audit import AuditEvent
from keyless.core.audit_explain import NOTE, explain_recorded
from keyless.core.auditchain import AuditRow
from keyless.core.errors import InvalidRequest
from keyless.core.models import Identity
from keyless.core.trust import FederatedCredential

ISS = "https://oidc.cluster-a.example"
API = Identity("oid-api", "cid-api", "billing-api", "t1", 0.0)
CREDS = [
    FederatedCredential("c1", "oid-api", "api", ISS, subject="system:serviceaccount:billing:api"),
    FederatedCredential(
        "c2",
        "oid-api",
        "guarded",
        ISS,
        subject_pattern="system:serviceaccount:billing:*",
        condition='claims["kubernetes.io"]["namespace"] == "billing"',
    ),
]


def _row(action: str, **workload: object) -> AuditRow:
    event = AuditEvent(1.0, None, "t1", action, "res", "failure", "why", "oid-api", workload)
    return AuditRow(9, "0" * 64, "1" * 64, event)


def _checks(policy: dict[str, object]) -> dict[str, object]:
    return {c["name"]: c["passed"] for c in policy["checks"]}  # type: ignore[attr-defined, index]


def test_refused_subject_and_what_the_record_cannot_say() -> None:
    row = _row("token.exchange.aws-sts", iss=ISS, sub="system:serviceaccount:billing:intruder")
    report = explain_recorded(row, [], CREDS, issuer_registered=True, actor=API)
    assert report["note"] == NOTE and report["dialect"] == "aws" and report["verified"] is True
    (entry,) = report["identities"]
    api, guarded = sorted(entry["policies"], key=lambda p: p["name"])
    assert _checks(api) == {"issuer": True, "subject": False, "audience": None, "condition": True}
    assert api["matched"] is False
    # the pattern matches; the condition needs claims the record does not keep
    assert _checks(guarded) == {
        "issuer": True,
        "subject": True,
        "audience": None,
        "condition": None,
    }
    assert guarded["matched"] is True and entry["matched"] == "guarded"
    assert entry["nearest"] is None


def test_unverified_record_and_unknown_actor() -> None:
    row = _row("token.exchange.client_credentials", verified=False, iss=ISS + "/", sub="x")
    report = explain_recorded(row, [API], CREDS, issuer_registered=False, actor=None)
    assert report["verified"] is False and report["identity"] is None
    (entry,) = report["identities"]
    api = next(p for p in entry["policies"] if p["name"] == "api")
    assert _checks(api)["issuer"] is False
    assert "trailing slash" in " ".join(api["hints"])
    assert entry["matched"] is None and entry["nearest"] is not None


def test_only_token_exchanges() -> None:
    with pytest.raises(InvalidRequest, match="not a token exchange"):
        explain_recorded(_row("secrets/getSecret"), [], CREDS, issuer_registered=True, actor=API)
