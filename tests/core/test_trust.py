"""Trust policies: validation, glob subjects, matching without scanning, failure reasons."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.core.assertion import VerifiedAssertion
from keyless.core.errors import InvalidRequest, InvalidToken
from keyless.core.trust import (
    DEFAULT_AUDIENCE,
    FederatedCredential,
    TrustIndex,
    glob_match,
    new_credential,
    validate_credential,
)

ISS = "https://oidc.cluster-a.test"
GH = "https://token.actions.githubusercontent.com"
SUB = "system:serviceaccount:prod:api"
IDENTITY = "id-api"


def cred(
    cid: str,
    *,
    identity: str = IDENTITY,
    issuer: str = ISS,
    subject: str | None = None,
    pattern: str | None = None,
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,),
    condition: str | None = None,
) -> FederatedCredential:
    if subject is None and pattern is None:
        subject = SUB
    return FederatedCredential(
        cid, identity, f"fc-{cid}", issuer, subject, pattern, audiences, condition
    )


def token(
    *,
    issuer: str = ISS,
    subject: str = SUB,
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,),
    **extra: Any,
) -> VerifiedAssertion:
    claims = {"iss": issuer, "sub": subject, "aud": list(audiences), "exp": 2e9, **extra}
    return VerifiedAssertion(issuer, subject, audiences, claims, 2e9)


def failure(index: TrustIndex, assertion: VerifiedAssertion, identity: str = IDENTITY) -> str:
    with pytest.raises(InvalidToken) as caught:
        index.match(identity, assertion)
    return caught.value.reason


# --- globs ----------------------------------------------------------------------------------

GLOBS = [
    ("system:serviceaccount:prod:*", "system:serviceaccount:prod:api", True),
    ("system:serviceaccount:prod:*", "system:serviceaccount:prod:", True),
    ("system:serviceaccount:prod:*", "system:serviceaccount:prodx:api", False),
    ("system:serviceaccount:*:api", "system:serviceaccount:a:b:api", True),  # * crosses ':'
    ("repo:acme/*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/main", True),
    ("repo:acme/*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/dev", False),
    ("repo:acme/app:environment:prod-?", "repo:acme/app:environment:prod-1", True),
    ("repo:acme/app:environment:prod-?", "repo:acme/app:environment:prod-12", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "axxbyyc", True),
    ("a*b*c", "axxcyyb", False),
    ("a*a*a", "aa", False),
    ("*x*y*", "yx", False),
    ("a?c*", "abc", True),
    ("a?c*", "ac", False),
    ("*-?-*", "x-y-z", True),
    ("ns:*", "NS:prod", False),  # case-sensitive
    ("[ab]*", "a1", False),  # no character classes: '[' is literal
    ("[ab]*", "[ab]1", True),
    ("ab", "ab", True),
    ("a" + "*a" * 20 + "b", "a" * 200, False),  # no exponential backtracking
]


@pytest.mark.parametrize(
    ("pattern", "text", "expected"), GLOBS, ids=[f"{p}~{t}" for p, t, _ in GLOBS]
)
def test_glob(pattern: str, text: str, expected: bool) -> None:
    assert glob_match(pattern, text) is expected


def _regex(pattern: str) -> str:
    return "".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in pattern)


@given(st.text("ab:*?", max_size=10), st.text("ab:", max_size=12))
def test_glob_agrees_with_a_regex(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) is bool(re.fullmatch(_regex(pattern), text, re.DOTALL))


# --- validation -----------------------------------------------------------------------------

GOOD: dict[str, Any] = dict(id="c1", identity_id=IDENTITY, name="fc-1", issuer=ISS, subject=SUB)

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("subject-and-pattern", {"subject_pattern": "a:*"}, "exactly one of"),
    ("neither", {"subject": None}, "exactly one of"),
    ("empty-audiences", {"audiences": ()}, "audiences"),
    ("empty-audience", {"audiences": ("",)}, "audience must be"),
    ("too-many-audiences", {"audiences": tuple(f"a{i}" for i in range(17))}, "audiences"),
    ("pattern-without-wildcard", {"subject": None, "subject_pattern": SUB}, "no wildcard"),
    ("pattern-only-wildcards", {"subject": None, "subject_pattern": "*"}, "only with a condition"),
    ("pattern-only-wildcards-2", {"subject": None, "subject_pattern": "?*?"}, "every subject"),
    ("bad-cel", {"condition": "claims.sub =="}, "not valid CEL"),
    ("cel-unknown-var", {"condition": "sub == 'x'"}, "unknown variable"),
    ("issuer-trailing-space", {"issuer": ISS + " "}, "surrounding spaces"),
    ("subject-newline", {"subject": SUB + "\n"}, "control characters"),
    ("empty-issuer", {"issuer": ""}, "issuer must be"),
    ("empty-name", {"name": ""}, "name"),
    ("name-with-space", {"name": "my cred"}, "name"),
    ("long-subject", {"subject": "s" * 1025}, "longer than"),
    ("no-id", {"id": ""}, "needs an id"),
    ("issuer-and-issuers", {"issuers": [ISS, GH]}, "exactly one of issuer, issuers"),
    ("no-issuer", {"issuer": None}, "exactly one of issuer, issuers"),
    ("issuers-twice", {"issuer": None, "issuers": [ISS, GH, ISS]}, "twice"),
    ("issuers-not-a-list", {"issuer": None, "issuers": ISS}, "must be a list"),
    ("issuers-too-many", {"issuer": None, "issuers": [f"{ISS}/{i}" for i in range(17)]}, "1-16"),
    ("issuers-bad-one", {"issuer": None, "issuers": [ISS, GH + "\n"]}, "control characters"),
]


@pytest.mark.parametrize("changes,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_credentials(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        new_credential(**{**GOOD, **changes})
    assert message in caught.value.message


def test_valid_credentials() -> None:
    made = new_credential(**GOOD)
    assert made.audiences == (DEFAULT_AUDIENCE,)
    assert new_credential(**{**GOOD, "audiences": "aud-1"}).audiences == ("aud-1",)
    pattern = new_credential(
        **{**GOOD, "subject": None, "subject_pattern": "system:*", "condition": 'claims.sub != ""'}
    )
    assert pattern.is_pattern
    assert validate_credential(made) is made


def test_issuer_sets_and_conditioned_wildcards_are_valid() -> None:
    both = new_credential(**{**GOOD, "issuer": None, "issuers": [ISS, GH]})
    assert (both.issuer, both.issuers, both.trusted_issuers) == (ISS, (ISS, GH), (ISS, GH))
    one = new_credential(**{**GOOD, "issuer": None, "issuers": [GH]})  # a list of one: issuer
    assert (one.issuer, one.issuers, one.trusted_issuers) == (GH, (), (GH,))
    assert new_credential(**{**GOOD, "issuer": ISS, "issuers": ()}).trusted_issuers == (ISS,)
    every = new_credential(
        **{**GOOD, "subject": None, "subject_pattern": "*", "condition": "claims.team == 'a'"}
    )
    assert every.subject_pattern == "*"
    with pytest.raises(InvalidRequest, match="first as issuer"):
        validate_credential(FederatedCredential("c", IDENTITY, "n", GH, SUB, issuers=(ISS, GH)))


# --- matching -------------------------------------------------------------------------------


def test_exact_match() -> None:
    index = TrustIndex([cred("c1")])
    assert index.match(IDENTITY, token()).id == "c1"


def test_pattern_match() -> None:
    index = TrustIndex([cred("p1", pattern="system:serviceaccount:prod:*")])
    assert index.match(IDENTITY, token()).id == "p1"
    assert failure(index, token(subject="system:serviceaccount:dev:api")) == "subject"


MISSES: list[tuple[str, FederatedCredential, VerifiedAssertion, str]] = [
    ("subject-case", cred("c1"), token(subject=SUB.upper()), "subject"),
    ("subject-prefix-only", cred("c1"), token(subject=SUB + "x"), "subject"),
    ("other-identity", cred("c1", identity="id-other"), token(), "subject"),
    ("issuer-trailing-slash", cred("c1"), token(issuer=ISS + "/"), "subject"),
    ("issuer-case", cred("c1"), token(issuer=ISS.upper()), "subject"),
    ("pattern-case", cred("p1", pattern="system:serviceaccount:PROD:*"), token(), "subject"),
    ("audience", cred("c1"), token(audiences=("api://other",)), "audience"),
    ("audience-case", cred("c1"), token(audiences=(DEFAULT_AUDIENCE.lower(),)), "audience"),
    ("pattern-audience", cred("p1", pattern="system:*", audiences=("x",)), token(), "audience"),
    ("condition", cred("c1", condition='claims.repository == "acme/app"'), token(), "condition"),
    ("condition-false", cred("c1", condition="claims.exp < 0"), token(), "condition"),
]


@pytest.mark.parametrize(
    ("policy", "assertion", "reason"), [c[1:] for c in MISSES], ids=[c[0] for c in MISSES]
)
def test_misses(policy: FederatedCredential, assertion: VerifiedAssertion, reason: str) -> None:
    assert failure(TrustIndex([policy]), assertion) == reason


def test_empty_index_says_subject() -> None:
    assert failure(TrustIndex(), token()) == "subject"


def test_any_token_audience_in_any_policy_audience() -> None:
    index = TrustIndex([cred("c1", audiences=("vault", "api://keyless"))])
    assert index.match(IDENTITY, token(audiences=("other", "api://keyless"))).id == "c1"
    assert failure(index, token(audiences=("other", "third"))) == "audience"


def test_condition_over_claims() -> None:
    index = TrustIndex([cred("c1", condition='claims["kubernetes.io"].namespace == "prod"')])
    prod: dict[str, Any] = {"kubernetes.io": {"namespace": "prod"}}
    dev: dict[str, Any] = {"kubernetes.io": {"namespace": "dev"}}
    assert index.match(IDENTITY, token(**prod)).id == "c1"
    assert failure(index, token(**dev)) == "condition"


def test_the_most_specific_failure_wins() -> None:
    # One policy fails on audience, another gets further and fails on its condition.
    index = TrustIndex(
        [
            cred("c1", audiences=("other",)),
            cred("p1", pattern="system:*", condition="claims.exp < 0"),
        ]
    )
    assert failure(index, token()) == "condition"


def test_messages_echo_presented_values_and_never_other_policies() -> None:
    secret_aud = "api://policy-only-audience"
    index = TrustIndex([cred("c1", audiences=(secret_aud,), condition='claims.sub == "zz"')])
    for assertion in (token(subject="system:serviceaccount:x:y"), token(audiences=("mine",))):
        with pytest.raises(InvalidToken) as caught:
            index.match(IDENTITY, assertion)
        message = caught.value.message
        assert ISS in message and assertion.subject in message
        assert assertion.audiences[0] in message
        assert secret_aud not in message and "zz" not in message and "fc-c1" not in message
        assert caught.value.detail["subject"] == assertion.subject
    idx2 = TrustIndex([cred("c1", condition='claims.sub == "zz"')])
    with pytest.raises(InvalidToken) as caught:
        idx2.match(IDENTITY, token())
    assert caught.value.reason == "condition" and "zz" not in caught.value.message


def test_precedence_exact_then_longest_prefix_then_id() -> None:
    index = TrustIndex(
        [
            cred("p-short", pattern="system:*"),
            cred("p-long", pattern="system:serviceaccount:prod:*"),
            cred("b-exact"),
            cred("a-exact"),
        ]
    )
    assert index.match(IDENTITY, token()).id == "a-exact"
    assert [c.id for c in index.candidates(IDENTITY, ISS, SUB)] == [
        "a-exact",
        "b-exact",
        "p-long",
        "p-short",
    ]
    assert index.without("a-exact", "b-exact").match(IDENTITY, token()).id == "p-long"


def test_a_failing_condition_falls_through_to_the_next_candidate() -> None:
    index = TrustIndex([cred("a", condition="claims.exp < 0"), cred("b", pattern="system:*")])
    assert index.match(IDENTITY, token()).id == "b"


def test_copy_on_write_updates() -> None:
    base = TrustIndex([cred("c1")])
    added = base.with_added(cred("p1", pattern="repo:acme/*", issuer=GH))
    gh = token(issuer=GH, subject="repo:acme/app:ref:refs/heads/main")
    assert failure(base, gh) == "subject"  # the old snapshot is unchanged
    assert added.match(IDENTITY, gh).id == "p1"
    moved = added.with_added(cred("c1", subject="system:serviceaccount:prod:web"))
    assert failure(moved, token()) == "subject"
    assert moved.match(IDENTITY, token(subject="system:serviceaccount:prod:web")).id == "c1"
    assert added.match(IDENTITY, token()).id == "c1"
    removed = moved.without("c1", "p1", "missing")
    assert len(removed) == 0 and len(moved) == 2
    assert failure(removed, gh) == "subject"
    assert moved.get("p1") is not None and removed.get("p1") is None


CLUSTER_B = "https://oidc.cluster-b.test"


def test_an_issuer_set_matches_each_of_its_issuers_and_no_other() -> None:
    shared = FederatedCredential(
        "set", IDENTITY, "fc-set", ISS, SUB, None, (DEFAULT_AUDIENCE,), None, (ISS, CLUSTER_B)
    )
    index = TrustIndex([shared, cred("gh", issuer=GH, identity="other", pattern="repo:*")])
    assert index.match(IDENTITY, token()).id == "set"
    assert index.match(IDENTITY, token(issuer=CLUSTER_B)).id == "set"
    assert failure(index, token(issuer=GH)) == "subject"
    assert [c.id for c in index.candidates(IDENTITY, CLUSTER_B, SUB)] == ["set"]
    assert index.identities_trusting(ISS) == (IDENTITY,)
    assert index.identities_trusting(CLUSTER_B) == (IDENTITY,)
    assert index.identities_trusting(GH) == ("other",)


def test_issuer_set_patterns_and_copy_on_write() -> None:
    every = FederatedCredential(
        "every", IDENTITY, "fc-every", ISS, None, "*", (DEFAULT_AUDIENCE,),
        'claims.team == "blue"', (ISS, CLUSTER_B),
    )  # fmt: skip
    index = TrustIndex().with_added(every)
    assert index.match(IDENTITY, token(issuer=CLUSTER_B, subject="x", team="blue")).id == "every"
    assert failure(index, token(issuer=CLUSTER_B, subject="x", team="red")) == "condition"
    assert index.identities_trusting(CLUSTER_B) == (IDENTITY,)
    # The set shrinks to one issuer: cluster B's entries go, the snapshot before keeps them.
    shrunk = index.with_added(cred("every", pattern="*", condition='claims.team == "blue"'))
    assert failure(shrunk, token(issuer=CLUSTER_B, subject="x", team="blue")) == "subject"
    assert shrunk.identities_trusting(CLUSTER_B) == ()
    assert index.match(IDENTITY, token(issuer=CLUSTER_B, subject="x", team="blue")).id == "every"
    gone = index.without("every")
    assert gone.identities_trusting(ISS) == () and failure(gone, token()) == "subject"


def test_a_stored_condition_that_no_longer_compiles_never_matches() -> None:
    index = TrustIndex([cred("c1", condition="claims.sub.lowerAscii() == 'x'")])
    assert failure(index, token()) == "condition"


# --- scale ----------------------------------------------------------------------------------


def test_scale_100k_exact_and_10k_patterns() -> None:
    exact = [
        cred(f"e{i}", identity=f"id{i % 1000}", subject=f"system:serviceaccount:ns{i}:sa")
        for i in range(100_000)
    ]
    patterns = [
        cred(
            f"p{i}", identity=f"id{i % 1000}", issuer=GH, pattern=f"repo:org{i}/*:ref:refs/heads/*"
        )
        for i in range(10_000)
    ]
    # 2000 patterns share one bucket (identity, issuer) to exercise the prefix probe.
    crowded = [
        cred(f"q{i}", identity="id-crowded", issuer=GH, pattern=f"repo:team{i}/app-{i}*")
        for i in range(2000)
    ]
    index = TrustIndex(exact + patterns + crowded)
    assert len(index) == 112_000
    for i in (0, 4242, 99_999):
        found = index.match(f"id{i % 1000}", token(subject=f"system:serviceaccount:ns{i}:sa"))
        assert found.id == f"e{i}"
        assert (
            failure(
                index,
                token(subject=f"system:serviceaccount:ns{i}:sa"),
                identity=f"id{(i + 1) % 1000}",
            )
            == "subject"
        )
    for i in (0, 777, 9_999):
        gh = token(issuer=GH, subject=f"repo:org{i}/svc:ref:refs/heads/main")
        assert index.match(f"id{i % 1000}", gh).id == f"p{i}"
        assert (
            failure(
                index,
                token(issuer=GH, subject=f"repo:org{i}/svc:ref:refs/tags/v1"),
                identity=f"id{i % 1000}",
            )
            == "subject"
        )
    assert index.match("id-crowded", token(issuer=GH, subject="repo:team17/app-17x")).id == "q17"
    assert (
        failure(index, token(issuer=GH, subject="repo:team17/app-18"), identity="id-crowded")
        == "subject"
    )
    assert index.with_added(cred("e-new", identity="id5")).match("id5", token()).id == "e-new"
