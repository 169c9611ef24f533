"""``core/apply.py``'s plan and ``core/applydoc.py``'s parser, as pure functions: what changes,
in which order, and which documents are refused (the real server: tests/cli/test_apply.py)."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.core.apply import Current, plan
from keyless.core.applydoc import CredentialSpec, parse_document
from keyless.core.errors import InvalidRequest
from keyless.core.gcppolicy import source
from keyless.core.issuers import IssuerRecord

ISS = "https://issuer.example"
JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "x", "y": "y"}]}


def cred(name: str = "api", subject: str = "sub", **kw: Any) -> CredentialSpec:
    fields: dict[str, Any] = {
        "issuer": ISS,
        "subject": subject,
        "subject_pattern": None,
        "audiences": ("api://AzureADTokenExchange",),
        "condition": None,
    }
    fields.update(kw)
    return CredentialSpec(name=name, **fields)


def current(**kw: Any) -> Current:
    base: dict[str, Any] = {"issuers": {}, "credentials": {}, "vaults": {}, "assignments": set()}
    base.update(kw)
    return Current(**base)


FULL = {
    "issuers": [{"url": ISS}],
    "identities": [
        {
            "name": "billing",
            "federated_credentials": [{"name": "api", "issuer": ISS, "subject": "sub"}],
        }
    ],
    "vaults": [{"name": "billing"}],
    "role_assignments": [
        {"identity": "billing", "role": "secrets-user", "scope": "/vaults/billing"}
    ],
}
HAVE = current(
    issuers={ISS: IssuerRecord(url=ISS, jwks=None, created_at=0)},
    credentials={"billing": {"api": cred()}},
    vaults={"billing": 0},
    assignments={("billing", "Key Vault Secrets User", "/vaults/billing")},
)


def views(doc: object, have: Current, *, prune: bool = False) -> list[tuple[str, str, str]]:
    return [(c.action, c.kind, c.name) for c in plan(parse_document(doc), have, prune=prune)]


def test_everything_new_in_dependency_order() -> None:
    assert views(FULL, current()) == [
        ("create", "issuer", ISS),
        ("create", "identity", "billing"),
        ("create", "federated_credential", "billing/api"),
        ("create", "vault", "billing"),
        ("create", "role_assignment", "billing Key Vault Secrets User /vaults/billing"),
    ]


def test_what_exists_is_no_change_and_aliases_are_canonical() -> None:
    assert views(FULL, HAVE) == []
    assert views(FULL, HAVE, prune=True) == []


def test_differences_are_updates_with_what_differs() -> None:
    have = current(
        issuers={ISS: IssuerRecord(url=ISS, jwks=JWKS, created_at=0)},
        credentials={"billing": {"api": cred(subject="old", condition="true")}},
        vaults={"billing": 0},
        assignments=HAVE.assignments,
    )
    changes = plan(parse_document(FULL), have, prune=False)
    assert [(c.action, c.kind, c.detail) for c in changes] == [
        ("update", "issuer", "keys from discovery, not file"),
        ("update", "federated_credential", "subject, condition"),
    ]


def test_nothing_is_deleted_without_prune_and_prune_deletes_in_reverse_order() -> None:
    have = current(
        issuers={
            **HAVE.issuers,
            "https://old.example": IssuerRecord("https://old.example", None, 0),
        },
        credentials={"billing": {"api": cred(), "old": cred("old")}, "gone": {}},
        vaults={"billing": 0, "empty": 0},
        assignments={*HAVE.assignments, ("gone", "Key Vault Reader", "/")},
    )
    assert views(FULL, have) == []
    assert views(FULL, have, prune=True) == [
        ("delete", "role_assignment", "gone Key Vault Reader /"),
        ("delete", "federated_credential", "billing/old"),
        ("delete", "identity", "gone"),
        ("delete", "vault", "empty"),
        ("delete", "issuer", "https://old.example"),
    ]


def test_prune_refuses_a_vault_holding_secrets() -> None:
    have = current(vaults={"full": 3})
    with pytest.raises(InvalidRequest, match="vault 'full', which holds 3 secret"):
        plan(parse_document({}), have, prune=True)


@pytest.mark.parametrize(
    ("doc", "have", "prune", "message"),
    [
        (
            {
                "identities": [
                    {
                        "name": "a",
                        "federated_credentials": [{"name": "c", "issuer": ISS, "subject": "s"}],
                    }
                ]
            },
            current(),
            False,
            "is not registered and not in the document",
        ),
        (
            {"role_assignments": [{"identity": "a", "role": "reader", "scope": "/"}]},
            current(),
            False,
            "identity 'a' does not exist",
        ),
        (
            {
                "identities": [{"name": "a"}],
                "role_assignments": [{"identity": "a", "role": "reader", "scope": "/vaults/nope"}],
            },
            current(),
            False,
            "vault 'nope' does not exist",
        ),
        (
            {"role_assignments": [{"identity": "a", "role": "reader", "scope": "/"}]},
            current(credentials={"a": {}}),
            True,
            "identity 'a' does not exist",  # pruned by this very apply
        ),
    ],
    ids=["credential-issuer", "assignment-identity", "assignment-vault", "pruned-identity"],
)
def test_references_that_cannot_hold(doc: object, have: Current, prune: bool, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan(parse_document(doc), have, prune=prune)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"extra": []}, "document: unknown field 'extra'"),
        ({"vaults": {"name": "x"}}, "vaults: expected a list"),
        ({"vaults": [{"name": "abc"}, {"name": "abc"}]}, "vaults: 'abc' is named twice"),
        ({"identities": [{"name": ""}]}, r"identities\[0\]\.name: required string"),
        ({"identities": [{"name": "a b"}]}, r"identities\[0\]\.name: identity name"),
        ({"issuers": [{"url": "http://plain.example"}]}, r"issuers\[0\]\.url: "),
        ({"issuers": [{"url": ISS, "jwks_file": "x.json"}]}, "read by `keyless apply`"),
        ({"issuers": [{"url": ISS, "jwks": JWKS, "kubernetes_api": True}]}, "not both"),
        ({"issuers": [{"url": ISS, "allow_unreachable": "yes"}]}, "must be true or false"),
        (
            {
                "identities": [
                    {"name": "a", "federated_credentials": [{"name": "c", "issuer": ISS}]}
                ]
            },
            r"federated_credentials\[0\]: ",
        ),
        (
            {
                "identities": [
                    {
                        "name": "a",
                        "federated_credentials": [
                            {"name": "c", "issuer": ISS, "subject": "s", "audiences": [1]}
                        ],
                    }
                ]
            },
            "audiences: a list of strings",
        ),
        (
            {"role_assignments": [{"identity": "a", "role": "reader", "scope": "/x"}]},
            r"\.scope: scope",
        ),
    ],
    ids=[
        "unknown-section",
        "not-a-list",
        "twice",
        "empty-name",
        "bad-identity-name",
        "plain-http-issuer",
        "jwks-file-not-inlined",
        "jwks-and-kubernetes",
        "bool",
        "no-subject",
        "audience-type",
        "bad-scope",
    ],
)
def test_parse_refusals_name_the_place(doc: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_document(doc)


def test_an_empty_document_is_nothing_to_do() -> None:
    assert plan(parse_document(None), current(), prune=False) == []


# -- issuer sets and Google's terms --------------------------------------------------------

ISS_B = "https://issuer-b.example"
MEMBER = "serviceAccount:acme.svc.id.goog[billing/api]"
EVERYONE = (
    "principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/"
    "keyless/*"
)


def one_credential(**fields: Any) -> dict[str, Any]:
    return {
        "identities": [{"name": "billing", "federated_credentials": [{"name": "api", **fields}]}]
    }


def test_issuer_sets_and_members_parse_to_what_is_written() -> None:
    doc = parse_document(one_credential(issuers=[ISS, ISS_B], member=MEMBER))
    spec = doc.identities[0].credentials[0]
    assert (spec.issuer, spec.issuers, spec.trusted_issuers) == (ISS, (ISS, ISS_B), (ISS, ISS_B))
    assert spec.google is not None and spec.google.member == MEMBER
    assert (spec.subject, spec.subject_pattern, spec.condition) == (None, None, None)
    single = parse_document(one_credential(issuers=[ISS], subject="sub")).identities[0]
    assert single.credentials[0] == cred()  # a set of one is the single-issuer form


def test_issuer_sets_and_google_sources_are_compared_field_by_field() -> None:
    have = current(
        issuers={u: IssuerRecord(url=u, jwks=None, created_at=0) for u in (ISS, ISS_B)},
        credentials={"billing": {"api": cred(subject=None, google=source(MEMBER))}},
    )
    assert views(one_credential(issuer=ISS, member=MEMBER), have) == []
    changes = plan(
        parse_document(
            one_credential(
                issuers=[ISS, ISS_B],
                member=EVERYONE,
                attribute_mapping={"attribute.ns": "assertion.ns"},
                attribute_condition="attribute.ns == 'billing'",
            )
        ),
        have,
        prune=False,
    )
    assert [(c.action, c.name, c.detail) for c in changes] == [
        ("update", "billing/api", "issuers, member, attribute_mapping, attribute_condition")
    ]
    with pytest.raises(InvalidRequest, match=f"issuer {ISS_B} is not registered"):
        plan(
            parse_document(one_credential(issuers=[ISS, ISS_B], subject="s")),
            current(issuers={ISS: IssuerRecord(url=ISS, jwks=None, created_at=0)}),
            prune=False,
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"issuer": ISS, "issuers": [ISS_B], "subject": "s"}, "exactly one of issuer, issuers"),
        ({"subject": "s"}, "exactly one of issuer, issuers"),
        ({"issuers": ISS, "subject": "s"}, r"\.issuers: a list of issuer URLs"),
        ({"issuers": [ISS, ISS], "subject": "s"}, "twice"),
        ({"issuer": ISS, "member": MEMBER, "subject": "s"}, "member, or subject"),
        ({"issuer": ISS, "member": MEMBER, "condition": "true"}, "attribute_condition"),
        ({"issuer": ISS, "subject": "s", "attribute_condition": "true"}, "need a member"),
        ({"issuer": ISS, "member": EVERYONE}, "only with a condition"),
        (
            {"issuer": ISS, "member": MEMBER, "attribute_mapping": {"google.subject": "x +"}},
            r"attribute_mapping\['google.subject'\] is not valid CEL",
        ),
        ({"issuer": ISS, "member": "user:x@y"}, "none of serviceAccount"),
    ],
    ids=[
        "issuer-and-issuers",
        "no-issuer",
        "issuers-string",
        "issuers-twice",
        "member-and-subject",
        "member-and-condition",
        "attribute-condition-alone",
        "everyone-unconditioned",
        "mapping-cel",
        "member-form",
    ],
)
def test_credential_refusals_name_the_place(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=r"identities\[0\]\.federated_credentials\[0\]"):
        parse_document(one_credential(**fields))
    with pytest.raises(InvalidRequest, match=message):
        parse_document(one_credential(**fields))
