"""Google's principal identifiers, attribute mapping and condition, translated into keyless's
own subject, pattern and CEL condition (core/gcppolicy.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyless.core import gcppolicy
from keyless.core.cel import compile_condition
from keyless.core.errors import InvalidRequest
from keyless.core.gcppolicy import GoogleSource, Project, Translated, literal, source, translate
from keyless.core.trust import new_credential

PROJECT = Project("acme", "123456789012")
POOL = "iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/keyless/"
SET = "principalSet://" + POOL
K8S = {
    "iss": "https://oidc.cluster-a.test",
    "sub": "system:serviceaccount:billing:api",
    "email": "api@billing.test",
    "groups": ["admins", "devs"],
    "kubernetes.io": {"namespace": "billing", "serviceaccount": {"name": "api"}},
}


def t(member: str, mapping: dict[str, str] | None = None, cond: str | None = None) -> Translated:
    return translate(source(member, mapping, cond), PROJECT)


def accepts(found: Translated, claims: dict[str, Any]) -> bool:
    assert found.condition is not None
    return compile_condition(found.condition).evaluate(claims)


TABLE: list[tuple[str, str, dict[str, str] | None, str | None, Translated]] = [
    (
        "identity-namespace",
        "serviceAccount:acme.svc.id.goog[billing/api]",
        None,
        None,
        Translated("system:serviceaccount:billing:api", None, None),
    ),
    (
        "principal",
        "principal://" + POOL + "subject/system:serviceaccount:billing:api",
        None,
        None,
        Translated("system:serviceaccount:billing:api", None, None),
    ),
    (
        "principal-default-mapping-spelled-out",
        "principal://" + POOL + "subject/repo:acme/app:ref:refs/heads/main",
        {"google.subject": "assertion.sub"},
        None,
        Translated("repo:acme/app:ref:refs/heads/main", None, None),
    ),
    (
        "principal-mapped-subject",
        "principal://" + POOL + "subject/api@billing.test",
        {"google.subject": "assertion.email"},
        None,
        Translated(None, "*", '(claims.email) == "api@billing.test"'),
    ),
    (
        "attribute",
        SET + "attribute.namespace/billing",
        {"attribute.namespace": "assertion['kubernetes.io'].namespace"},
        None,
        Translated(None, "*", "(claims['kubernetes.io'].namespace) == \"billing\""),
    ),
    (
        "group",
        SET + "group/admins",
        {"google.groups": "assertion.groups"},
        None,
        Translated(None, "*", '"admins" in (claims.groups)'),
    ),
    (
        "everyone-with-condition",
        SET + "*",
        {"attribute.ns": "assertion['kubernetes.io'].namespace"},
        "attribute.ns == 'billing' && google.subject.endsWith(':api')",
        Translated(
            None,
            "*",
            "((claims['kubernetes.io'].namespace) == 'billing' && claims.sub.endsWith(':api'))",
        ),
    ),
    (
        "namespace-member-and-condition",
        "serviceAccount:acme.svc.id.goog[billing/api]",
        None,
        "assertion.iss.startsWith('https://oidc.')",
        Translated(
            "system:serviceaccount:billing:api", None, "(claims.iss.startsWith('https://oidc.'))"
        ),
    ),
]


@pytest.mark.parametrize(
    "member,mapping,cond,expected", [c[1:] for c in TABLE], ids=[c[0] for c in TABLE]
)
def test_translation(
    member: str, mapping: dict[str, str] | None, cond: str | None, expected: Translated
) -> None:
    found = t(member, mapping, cond)
    assert found == expected
    # What it says is true of the token it was written for, through keyless's own decision.
    if found.condition is not None:
        assert accepts(found, K8S)
    new_credential(
        id="c",
        identity_id="i",
        name="n",
        issuer="https://oidc.cluster-a.test",
        subject=found.subject,
        subject_pattern=found.subject_pattern,
        condition=found.condition,
    )


def test_translated_conditions_refuse_other_tokens() -> None:
    other = {**K8S, "email": "x@y", "groups": ["devs"], "kubernetes.io": {"namespace": "prod"}}
    for member, mapping in (
        ("principal://" + POOL + "subject/api@billing.test", {"google.subject": "assertion.email"}),
        (SET + "group/admins", {"google.groups": "assertion.groups"}),
        (
            SET + "attribute.namespace/billing",
            {"attribute.namespace": "assertion['kubernetes.io'].namespace"},
        ),
    ):
        assert not accepts(t(member, mapping), other)


REFUSED: list[tuple[str, str, dict[str, str] | None, str | None, str]] = [
    ("other-project", "serviceAccount:other.svc.id.goog[a/b]", None, None, "not this tenant"),
    ("namespace-form", "serviceAccount:acme.svc.id.goog[a]", None, None, "identity-namespace"),
    (
        "other-number",
        "principal://" + POOL.replace("123456789012", "999") + "subject/s",
        None,
        None,
        "project number 999",
    ),
    ("principal-no-subject", "principal://" + POOL + "subject/", None, None, "is not like"),
    (
        "principal-pool",
        "principal://iam.googleapis.com/projects/1/x/subject/s",
        None,
        None,
        "not like",
    ),
    ("set-tail", SET + "subject/x", None, None, "ends in none of"),
    ("unknown-scheme", "user:someone@example.com", None, None, "none of serviceAccount"),
    ("group-unmapped", SET + "group/admins", None, None, "google.groups, which attribute_mapping"),
    ("attribute-unmapped", SET + "attribute.x/y", None, None, "attribute.x, which"),
    (
        "mapping-key",
        SET + "*",
        {"google.email": "assertion.email"},
        "true",
        "attribute_mapping key 'google.email' is none of",
    ),
    (
        "mapping-cel",
        "serviceAccount:acme.svc.id.goog[a/b]",
        {"google.subject": "assertion.sub +"},
        None,
        "attribute_mapping['google.subject'] is not valid CEL",
    ),
    (
        "mapping-claims",
        "serviceAccount:acme.svc.id.goog[a/b]",
        {"attribute.x": "claims.sub"},
        None,
        "attribute_mapping['attribute.x'] refers to unknown variable 'claims'",
    ),
    (
        "mapping-uses-attribute",
        "serviceAccount:acme.svc.id.goog[a/b]",
        {"attribute.x": "attribute.y"},
        None,
        "unknown variable 'attribute'",
    ),
    (
        "condition-cel",
        "serviceAccount:acme.svc.id.goog[a/b]",
        None,
        "assertion.sub ==",
        "attribute_condition is not valid CEL",
    ),
    (
        "condition-unmapped",
        "serviceAccount:acme.svc.id.goog[a/b]",
        None,
        "attribute.team == 'x'",
        "attribute_condition uses attribute.team, which attribute_mapping does not map",
    ),
    (
        "condition-bare-google",
        "serviceAccount:acme.svc.id.goog[a/b]",
        None,
        "google == {}",
        "attribute_condition uses `google` other than as google.NAME",
    ),
    (
        "condition-function",
        "serviceAccount:acme.svc.id.goog[a/b]",
        None,
        "assertion.sub.lowerAscii() == 'x'",
        "attribute_condition calls unknown function 'lowerAscii'",
    ),
    (
        "condition-list-macro",
        "serviceAccount:acme.svc.id.goog[a/b]",
        None,
        "assertion.groups.map(g, g).size() > 0",
        "attribute_condition uses map()",
    ),
    (
        "substituted-too-long",
        SET + "*",
        {"attribute.x": "assertion.sub + '" + "x" * 2000 + "'"},
        "attribute.x == 'a' && attribute.x == 'b' && attribute.x == 'c'",
        "attribute_condition, with attribute_mapping substituted: condition is longer than",
    ),
    ("value-control", SET + "attribute.x/a\nb", {"attribute.x": "assertion.x"}, None, "control"),
]


@pytest.mark.parametrize(
    "member,mapping,cond,message", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refusals_are_one_line_naming_the_field(
    member: str, mapping: dict[str, str] | None, cond: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        t(member, mapping, cond)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_a_condition_stays_one_operand() -> None:
    """Comments go, and a condition that does not compile alone is refused, so nothing a
    condition says can escape the parentheses around it and undo the member's own test."""
    found = t(
        SET + "group/admins",
        {"google.groups": "assertion.groups // the groups claim"},
        "true // always",
    )
    assert found.condition == '"admins" in (claims.groups ) && (true )'
    assert not accepts(found, {**K8S, "groups": []})
    with pytest.raises(InvalidRequest, match="attribute_condition is not valid CEL"):
        t(SET + "group/admins", {"google.groups": "assertion.groups"}, "true) || (true")


def test_every_subject_needs_an_attribute_condition() -> None:
    found = t(SET + "*")
    assert found == Translated(None, "*", None)
    with pytest.raises(InvalidRequest, match=r"only with a condition .*attribute_condition"):
        new_credential(
            id="c", identity_id="i", name="n", issuer="https://i.test", subject_pattern="*"
        )


def test_without_a_project_only_the_form_is_checked() -> None:
    assert translate(source("serviceAccount:anyone.svc.id.goog[a/b]"), None).subject == (
        "system:serviceaccount:a:b"
    )
    other = "principal://" + POOL.replace("123456789012", "42") + "subject/s"
    assert translate(source(other), None).subject == "s"


def test_source_types_and_merge() -> None:
    for args, message in (
        ((None,), "member must be"),
        (("m", ["x"]), "attribute_mapping must map"),
        (("m", {"google.subject": 1}), "attribute_mapping must map"),
        (("m", None, 3), "attribute_condition must be"),
        (("m", {f"attribute.a{i}": "assertion.sub" for i in range(51)}), "more than 50"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            source(*args)
    old = source("serviceAccount:acme.svc.id.goog[a/b]", {"attribute.x": "assertion.x"}, "true")
    assert gcppolicy.merged(old, attribute_condition="false") == GoogleSource(
        old.member, old.attribute_mapping, "false"
    )
    assert gcppolicy.merged(old, clear_condition=True, clear_mapping=True) == GoogleSource(
        old.member
    )
    assert old.view() == {
        "member": old.member,
        "attribute_mapping": {"attribute.x": "assertion.x"},
        "attribute_condition": "true",
    }
    with pytest.raises(InvalidRequest, match="need a member"):
        gcppolicy.merged(None, attribute_condition="true")


# --- hostile input ------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(value=TEXT)
def test_literal_is_the_value_in_cel(value: str) -> None:
    condition = compile_condition(f"claims.v == {literal(value)}")
    assert condition.evaluate({"v": value})
    assert not condition.evaluate({"v": value + "x"})
    assert all(0x20 <= ord(c) < 0x7F for c in literal(value))  # nothing shown raw


def test_literal_refuses_a_lone_surrogate() -> None:
    with pytest.raises(InvalidRequest, match="surrogate"):
        literal("a\ud800")


@given(
    value=TEXT.filter(
        lambda v: v == v.strip() and v and all(ord(c) >= 0x20 and c != "\x7f" for c in v)
    )
)
def test_an_attribute_value_means_exactly_itself(value: str) -> None:
    found = t(SET + "attribute.team/" + value, {"attribute.team": "assertion.team"})
    assert accepts(found, {"team": value})
    assert not accepts(found, {"team": value + "!"})


MEMBERS = st.one_of(
    TEXT,
    st.builds(lambda tail: SET + tail, TEXT),
    st.builds(lambda tail: "principal://" + POOL + "subject/" + tail, TEXT),
    st.builds(lambda a, b: f"serviceAccount:acme.svc.id.goog[{a}/{b}]", TEXT, TEXT),
)
EXPRESSIONS = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "assertion.sub",
            "assertion['kubernetes.io'].namespace",
            "google.subject",
            "attribute.x == 'a'",
            "assertion.groups.exists(g, g == 'a')",
            "assertion",
            "attribute",
            "attribute.",
            "google.groups.exists(g, google.subject == g)",
            "assertion.sub /* */ ",
            '"\\"',
            "a.assertion",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    member=MEMBERS,
    mapping=st.one_of(
        st.none(),
        st.dictionaries(
            st.one_of(TEXT, st.sampled_from(["google.subject", "google.groups", "attribute.x"])),
            EXPRESSIONS,
            max_size=3,
        ),
    ),
    cond=st.one_of(st.none(), EXPRESSIONS),
)
def test_any_input_is_translated_or_refused_in_one_line(
    member: str, mapping: dict[str, str] | None, cond: str | None
) -> None:
    try:
        found = translate(source(member, mapping, cond), PROJECT)
    except InvalidRequest as exc:
        assert "\n" not in exc.message
        return
    assert (found.subject is None) != (found.subject_pattern is None)
    if found.condition is not None:
        compile_condition(found.condition)  # what is stored compiles as keyless CEL
