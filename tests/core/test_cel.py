"""CEL conditions: compile once, evaluate over a token's claims, fail closed, bounded cost."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.core.cel import MAX_SOURCE_LENGTH, compile_condition, failing_condition
from keyless.core.errors import InvalidRequest

K8S: dict[str, Any] = {
    "iss": "https://oidc.cluster-a.test",
    "sub": "system:serviceaccount:prod:api",
    "aud": ["api://AzureADTokenExchange", "vault"],
    "exp": 1_800_000_600,
    "kubernetes.io": {
        "namespace": "prod",
        "serviceaccount": {"name": "api", "uid": "u-1"},
        "pod": {"name": "api-7d9f", "uid": "u-2"},
    },
    "groups": ["team-a", "team-b"],
    "azp": "vault",
}

TRUE_FALSE = [
    ('claims["kubernetes.io"]["namespace"] == "prod"', True),
    ('claims["kubernetes.io"]["namespace"] == "dev"', False),
    ('claims.sub.startsWith("system:serviceaccount:")', True),
    ('claims.sub.endsWith(":api") && claims.exp > 1700000000', True),
    ('"vault" in claims.aud', True),
    ("claims.azp in claims.aud", True),
    ('claims.groups.exists(g, g.startsWith("team-"))', True),
    ('claims.groups.all(g, g == "team-a")', False),
    ('claims.groups.exists_one(g, g == "team-b")', True),
    ("has(claims.azp) && !has(claims.repository)", True),
    ('claims.sub.matches("^system:serviceaccount:prod:[a-z]+$")', True),
    ("size(claims.groups) == 2 && type(claims.exp) == int", True),
    ('claims["kubernetes.io"].pod.name.startsWith("api-") // a comment', True),
    ("claims.sub == r'system:serviceaccount:prod:api'", True),
    ('claims.sub.contains(".exists(")', False),  # macro names inside strings are just text
]


@pytest.mark.parametrize(("source", "expected"), TRUE_FALSE, ids=[s for s, _ in TRUE_FALSE])
def test_evaluates_over_claims(source: str, expected: bool) -> None:
    condition = compile_condition(source)
    assert condition.evaluate(K8S) is expected
    outcome = condition.check(K8S)
    assert outcome.passed is expected
    assert outcome.reason == ("condition is true" if expected else "condition is false")


FAIL_CLOSED = [
    ("missing-claim", 'claims.repository == "acme/app"', "no such key 'repository'"),
    ("non-bool-string", "claims.sub", "condition returned str, not bool"),
    ("non-bool-int", "claims.exp", "condition returned int, not bool"),
    ("division-by-zero", "claims.exp / 0 == 1", "evaluation failed: division by zero"),
    ("bad-regex-at-runtime", 'claims.sub.matches("(")', "evaluation failed"),
    ("type-mismatch", "claims.sub > 3", "evaluation failed"),
]


@pytest.mark.parametrize(
    ("source", "reason"), [c[1:] for c in FAIL_CLOSED], ids=[c[0] for c in FAIL_CLOSED]
)
def test_errors_and_non_bool_results_fail_closed(source: str, reason: str) -> None:
    outcome = compile_condition(source).check(K8S)
    assert outcome.passed is False
    assert reason in outcome.reason
    assert "\n" not in outcome.reason


REFUSED = [
    ("syntax", "claims.sub ==", "not valid CEL (line 1, column 14): Syntax error"),
    ("syntax-extraneous", "claims.sub claims.aud", "not valid CEL (line 1"),
    ("empty", "   ", "condition is empty"),
    ("too-long", "true && " * (MAX_SOURCE_LENGTH // 8) + "true", "longer than"),
    ("unknown-variable", 'claim.sub == "x"', "unknown variable 'claim'"),
    ("unknown-function", 'claims.sub.lowerAscii() == "x"', "unknown function 'lowerAscii'"),
    ("map", "claims.groups.map(g, g).size() > 0", "uses map()"),
    ("filter", 'size(claims.groups.filter(g, g == "a")) > 0', "uses filter()"),
    ("nested", "claims.groups.exists(g, [1, 2].all(n, n > 0))", "nests one comprehension"),
    ("claims-in-body", "claims.aud.exists(a, a == claims.azp)", "inside a comprehension"),
    ("claims-as-bound-var", "[1].exists(claims, claims == 1)", "inside a comprehension"),
    ("deep-parens", "(" * 1000 + "true" + ")" * 1000, "not valid CEL"),
]


@pytest.mark.parametrize(
    ("source", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused_at_compile_with_one_line(source: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compile_condition(source)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    assert " expecting " not in caught.value.message


ALLOWED = [
    ("field-named-claims", 'claims.groups.exists(g, g == "claims")'),
    ("member-named-claims", "[{'claims': 1}].exists(m, m.claims == 1)"),
    ("two-sequential-comprehensions", 'claims.groups.exists(g, g == "a") || [1].all(n, n == 1)'),
    ("in-list-literal", 'claims["kubernetes.io"].namespace in ["prod", "staging"]'),
]


@pytest.mark.parametrize("source", [c[1] for c in ALLOWED], ids=[c[0] for c in ALLOWED])
def test_allowed_shapes_compile(source: str) -> None:
    compile_condition(source).check(K8S)


def test_compiled_once_and_reused_across_tokens() -> None:
    source = 'claims["kubernetes.io"]["namespace"] == "prod"'
    condition = compile_condition(source)
    assert compile_condition(source) is condition
    for namespace, expected in [("prod", True), ("dev", False), ("prod", True)]:
        claims = {**K8S, "kubernetes.io": {"namespace": namespace}}
        assert condition.evaluate(claims) is expected


def test_failing_condition_never_passes() -> None:
    broken = failing_condition("claims.x.y(", "condition is not valid CEL")
    assert broken.check(K8S).passed is False
    assert broken.check(K8S).reason == "condition is not valid CEL"


def test_large_claims_stay_fast_for_allowed_shapes() -> None:
    # 8000 list items is what a 16 KiB token can carry; allowed shapes are linear in it.
    claims = {**K8S, "groups": [f"g{i}" for i in range(8000)]}
    condition = compile_condition(
        'claims.groups.exists(g, g == "nope") || "g7999" in claims.groups'
    )
    assert condition.evaluate(claims) is True
