"""core/trust_preview.py: a proposed policy judged against recorded exchanges, with the
exchange's own checks over the claims the audit log kept."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.core.audit import AuditEvent
from keyless.core.trust import new_credential
from keyless.core.trust_preview import claims_of, preview

ISS = "https://k8s.example"
K8S = {"iss": ISS, "sub": "system:serviceaccount:pay:api", "cluster": ISS, "namespace": "pay",
       "service_account": "api", "pod": "api-1"}  # fmt: skip


def _event(workload: dict[str, Any], action: str = "token.exchange.client_credentials") -> Any:
    return AuditEvent(1.0, None, "t", action, "res", "success", workload=workload)


def _policy(**kw: Any) -> Any:
    return new_credential(id="p", identity_id="i", name="p", issuer=ISS, **kw)


def test_claims_rebuilt_from_the_workload_record() -> None:
    assert claims_of(K8S) == {
        "iss": ISS,
        "sub": "system:serviceaccount:pay:api",
        "kubernetes.io": {"namespace": "pay", "serviceaccount": {"name": "api"},
                          "pod": {"name": "api-1"}},
    }  # fmt: skip
    assert claims_of({"iss": ISS, "sub": "repo:x", "verified": False}) == {
        "iss": ISS,
        "sub": "repo:x",
    }


@pytest.mark.parametrize(
    ("policy", "workload", "reason"),
    [
        pytest.param({"subject": K8S["sub"]}, K8S, None, id="exact"),
        pytest.param({"subject_pattern": "system:serviceaccount:pay:*"}, K8S, None, id="glob"),
        pytest.param(
            {"subject_pattern": "system:serviceaccount:ops:*"},
            K8S,
            "subject: subject 'system:serviceaccount:pay:api' does not match the pattern "
            "'system:serviceaccount:ops:*'",
            id="glob-miss",
        ),
        pytest.param(
            {"subject": K8S["sub"], "condition": 'claims["kubernetes.io"].namespace == "pay"'},
            K8S,
            None,
            id="condition-on-recorded-names",
        ),
        pytest.param(
            {"subject": K8S["sub"], "condition": 'spiffe_id.endsWith("/ns/pay/sa/api")'},
            K8S,
            None,
            id="condition-on-spiffe-id",
        ),
        pytest.param(
            {"subject": K8S["sub"], "condition": 'claims.repository == "x"'},
            K8S,
            "condition:",
            id="condition-on-an-unrecorded-claim-fails",
        ),
        pytest.param(
            {"subject": K8S["sub"]},
            {**K8S, "iss": ISS + "/"},
            "issuer:",
            id="other-issuer",
        ),
        pytest.param(
            {"subject": K8S["sub"]},
            {"verified": False, "iss": ISS, "sub": K8S["sub"]},
            "token: the token itself was refused",
            id="unverified-token",
        ),
        pytest.param({"subject": K8S["sub"]}, {}, "token:", id="unparsable-token"),
    ],
)
def test_judged_as_the_exchange_judges(
    policy: dict[str, Any], workload: dict[str, Any], reason: str | None
) -> None:
    (row,) = preview(_policy(**policy), [(7, _event(workload))], "default.keyless")
    assert row.seq == 7
    assert row.match is (reason is None)
    if reason is None:
        assert row.reason is None
    else:
        assert row.reason is not None and row.reason.startswith(reason)
    audience = next(c for c in row.checks if c.name == "audience")
    assert audience.passed and "not recorded" in audience.reason


def test_only_exchanges_are_judged() -> None:
    events = [(1, _event(K8S, "vault.access")), (2, _event(K8S))]
    assert [r.seq for r in preview(_policy(subject=K8S["sub"]), events)] == [2]
