"""``keyless explain``: per-policy checks and near-miss hints."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.core.assertion import VerifiedAssertion
from keyless.core.errors import InvalidToken
from keyless.core.trust import DEFAULT_AUDIENCE, FederatedCredential, TrustIndex
from keyless.core.trust_explain import Check, explain, token_check

ISS = "https://oidc.cluster-a.test"
SUB = "system:serviceaccount:prod:api"


def cred(
    cid: str,
    *,
    issuer: str = ISS,
    subject: str | None = SUB,
    pattern: str | None = None,
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,),
    condition: str | None = None,
) -> FederatedCredential:
    return FederatedCredential(
        cid,
        "id-api",
        f"fc-{cid}",
        issuer,
        None if pattern else subject,
        pattern,
        audiences,
        condition,
    )


def claims(**changes: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": SUB, "aud": DEFAULT_AUDIENCE, "exp": 2e9, **changes}


def by_name(checks: tuple[Check, ...]) -> dict[str, Check]:
    return {c.name: c for c in checks}


HINTS: list[tuple[str, FederatedCredential, dict[str, Any], str, str]] = [
    (
        "issuer-trailing-slash",
        cred("c", issuer=ISS + "/"),
        claims(),
        "issuer",
        "issuer differs only by a trailing slash",
    ),
    (
        "issuer-case",
        cred("c", issuer="https://OIDC.cluster-a.test"),
        claims(),
        "issuer",
        "issuer differs only in letter case",
    ),
    (
        "issuer-scheme",
        cred("c", issuer="http://oidc.cluster-a.test"),
        claims(),
        "issuer",
        "issuer differs only in the URL scheme",
    ),
    (
        "subject-case",
        cred("c", subject="system:serviceaccount:prod:API"),
        claims(),
        "subject",
        "subject differs only in letter case (subjects are compared exactly)",
    ),
    (
        "subject-k8s-prefix-missing",
        cred("c", subject="prod:api"),
        claims(),
        "subject",
        "the token's subject ends with the policy's",
    ),
    (
        "pattern-case",
        cred("c", pattern="SYSTEM:serviceaccount:prod:*"),
        claims(),
        "subject",
        "subject matches the pattern only when letter case is ignored",
    ),
    (
        "swapped",
        cred("c", issuer=SUB, subject=ISS),
        claims(),
        "issuer",
        "the policy's issuer and subject look swapped",
    ),
    (
        "audience-case",
        cred("c"),
        claims(aud=["API://AzureADTokenExchange"]),
        "audience",
        "audience 'API://AzureADTokenExchange' differs only in letter case",
    ),
    (
        "audience-trailing-slash",
        cred("c", audiences=("api://keyless",)),
        claims(aud="api://keyless/"),
        "audience",
        "differs only by a trailing slash",
    ),
]


@pytest.mark.parametrize(
    ("policy", "token", "check", "hint"), [h[1:] for h in HINTS], ids=[h[0] for h in HINTS]
)
def test_near_miss_hints(
    policy: FederatedCredential, token: dict[str, Any], check: str, hint: str
) -> None:
    result = explain([policy], token)
    assert result.matched is None and not result.ok
    failed = by_name(result.policies[0].checks)[check]
    assert failed.passed is False
    assert failed.hint is not None and hint in failed.hint
    assert result.nearest is result.policies[0]
    assert hint in " ".join(result.nearest.hints)


def test_wrong_audience_without_near_miss_names_both() -> None:
    result = explain([cred("c", audiences=("api://keyless",))], claims(aud=["vault"]))
    aud = by_name(result.policies[0].checks)["audience"]
    assert not aud.passed and aud.hint is None
    assert "'vault'" in aud.reason and "'api://keyless'" in aud.reason


def test_all_checks_pass_and_match_agrees_with_the_index() -> None:
    policies = [cred("z-pattern", pattern="system:serviceaccount:prod:*"), cred("b"), cred("a")]
    result = explain(policies, claims())
    assert result.matched is not None and result.matched.id == "a"
    assert [p.credential.id for p in result.policies] == ["a", "b", "z-pattern"]
    assert all(c.passed for p in result.policies for c in p.checks)
    assert result.nearest is None and result.ok
    token = VerifiedAssertion(ISS, SUB, (DEFAULT_AUDIENCE,), claims(), 2e9)
    assert TrustIndex(policies).match("id-api", token).id == result.matched.id


def test_condition_reasons() -> None:
    result = explain(
        [
            cred("a", condition='claims.repository == "acme"'),
            cred("b", condition="claims.sub"),
            cred("c", condition="claims.exp > 0"),
            cred("d", condition="nope("),
        ],
        claims(),
    )
    reasons = {p.credential.id: by_name(p.checks)["condition"] for p in result.policies}
    assert "no such key 'repository'" in reasons["a"].reason and not reasons["a"].passed
    assert "returned str, not bool" in reasons["b"].reason
    assert reasons["c"].passed and reasons["c"].reason == "condition is true"
    assert "not valid CEL" in reasons["d"].reason and not reasons["d"].passed
    assert result.matched is not None and result.matched.id == "c"


def test_token_checks_from_verify_are_carried() -> None:
    expired = InvalidToken("assertion expired at 1 (now 2)", reason="expired")
    checks = [token_check("signature", None), token_check("lifetime", expired)]
    result = explain([cred("a")], claims(), token_checks=checks)
    assert result.matched is not None and not result.ok
    assert result.token_checks[0] == Check("signature", True, "ok")
    assert result.token_checks[1].reason == "expired: assertion expired at 1 (now 2)"


def test_nearest_is_the_policy_with_most_passing_checks() -> None:
    result = explain(
        [
            cred("far", issuer="https://elsewhere.test", subject="x"),
            cred("near", audiences=("other",)),
        ],
        claims(),
    )
    assert result.matched is None
    assert result.nearest is not None and result.nearest.credential.id == "near"
    assert result.nearest.passed == 3


def test_garbage_claims_do_not_crash() -> None:
    result = explain([cred("a")], {"iss": 1, "sub": None, "aud": [1, "x"]})
    assert (result.issuer, result.subject, result.audiences) == (None, None, ("x",))
    checks = by_name(result.policies[0].checks)
    assert checks["issuer"].reason == "token has no iss claim"
    assert checks["subject"].reason == "token has no sub claim"
    assert not checks["audience"].passed
    assert explain([], claims()).nearest is None


def test_an_issuer_set_says_which_of_its_issuers_the_token_came_from() -> None:
    other = "https://oidc.cluster-b.test"
    shared = FederatedCredential(
        "s", "id-api", "fc-s", ISS, SUB, None, (DEFAULT_AUDIENCE,), None, (ISS, other)
    )
    ex = explain([shared], claims(iss=other))
    assert ex.matched == shared
    check = by_name(ex.policies[0].checks)["issuer"]
    assert check.passed
    assert check.reason == f"issuer is '{other}', issuer 2 of the policy's issuer set of 2"
    missed = by_name(explain([shared], claims(iss=other + "/")).policies[0].checks)["issuer"]
    assert not missed.passed
    assert "none of the policy's issuer set" in missed.reason
    assert missed.hint == "issuer differs only by a trailing slash"
