"""``k8s/resources.py``: custom resources -> the ``keyless apply`` document, each resource
checked on its own, and deletions of exactly what resources made (pure; the controller against
the fake API server and a real keyless: tests/k8s/test_controller.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.apply import Change, Current, Removals, plan
from keyless.core.applydoc import CredentialSpec, parse_document
from keyless.core.issuers import IssuerRecord
from keyless.core.jose import public_jwk
from keyless.k8s.crds import FINALIZER
from keyless.k8s.resources import (
    Claim,
    Resource,
    audit_action,
    claimed,
    decide,
    entry,
    spec_message,
)

ISS = "https://issuer.example"
JWKS = {"keys": [public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), "k1", "ES256")]}
USER = "Key Vault Secrets User"


def res(kind: str, name: str, spec: dict[str, Any] | None = None, **kw: Any) -> Resource:
    fields: dict[str, Any] = {
        "uid": f"uid-{kind}-{name}",
        "created_at": kw.pop("at", "2026-12-07T10:00:00Z"),
        "spec": spec or {},
        "finalizers": (FINALIZER,),
    }
    fields.update(kw)
    return Resource(kind, name, **fields)


def cred(name: str = "api", subject: str = "sub") -> CredentialSpec:
    return CredentialSpec(name, ISS, subject, None, ("api://AzureADTokenExchange",), None)


def current(**kw: Any) -> Current:
    base: dict[str, Any] = {"issuers": {}, "credentials": {}, "vaults": {}, "assignments": set()}
    base.update(kw)
    return Current(**base)


ISSUER = res("Issuer", "cluster-a", {"url": ISS, "jwks": JWKS})
BILLING = res(
    "Identity",
    "billing",
    {
        "federatedCredentials": [
            {"name": "api", "issuer": ISS, "subject": "sub"},
            {"name": "jobs", "issuer": ISS, "subjectPattern": "system:serviceaccount:*:jobs"},
        ]
    },
)
VAULT = res("Vault", "billing")
ASSIGN = res(
    "RoleAssignment",
    "billing-reads",
    {"identity": "billing", "role": "secrets-user", "scope": "/vaults/billing"},
)
HAVE = current(
    issuers={ISS: IssuerRecord(url=ISS, jwks=JWKS, created_at=0)},
    credentials={"billing": {"api": cred()}, "cli-made": {}},
    vaults={"billing": 0},
    assignments={("billing", USER, "/vaults/billing")},
)


def test_each_kind_is_an_entry_of_the_apply_document() -> None:
    doc = parse_document(
        {
            "issuers": [entry(ISSUER)],
            "identities": [entry(BILLING)],
            "vaults": [entry(VAULT)],
            "role_assignments": [entry(ASSIGN)],
        }
    )
    assert doc.issuers[0].url == ISS and doc.issuers[0].source == "file"
    ident = doc.identities[0]
    assert ident.name == "billing"  # metadata.name when spec.name is absent
    assert [c.subject_pattern for c in ident.credentials] == [None, "system:serviceaccount:*:jobs"]
    assert doc.vaults == ("billing",)
    assert doc.assignments == (("billing", USER, "/vaults/billing"),)  # the alias, canonical
    assert entry(res("Vault", "x", {"name": "other"}))["name"] == "other"
    assert entry(res("Issuer", "k", {"url": ISS, "kubernetesApi": True}))["kubernetes_api"]


def test_a_new_set_of_resources_plans_what_keyless_apply_would() -> None:
    d = decide([ISSUER, BILLING, VAULT, ASSIGN], current(), {})
    assert d.invalid == {} and not d.removals
    changes = [(c.action, c.kind, c.name) for c in plan(d.document, current(), prune=False)]
    assert changes == [
        ("create", "issuer", ISS),
        ("create", "identity", "billing"),
        ("create", "federated_credential", "billing/api"),
        ("create", "federated_credential", "billing/jobs"),
        ("create", "vault", "billing"),
        ("create", "role_assignment", f"billing {USER} /vaults/billing"),
    ]
    origins = {d.origin(c) for c in plan(d.document, current(), prune=False)}
    assert origins == {
        "Issuer/cluster-a",
        "Identity/billing",
        "Vault/billing",
        "RoleAssignment/billing-reads",
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (res("Identity", "UPPER_ok", {"name": "bad name"}), "spec.name: identity name 'bad name'"),
        (
            res("Identity", "x", {"federatedCredentials": [{"name": "a", "issuer": ISS}]}),
            "spec.federatedCredentials[0]: federated credential needs exactly one of subject",
        ),
        (
            res(
                "Identity",
                "y",
                {
                    "federatedCredentials": [
                        {"name": "a", "issuer": ISS, "subject": "s", "colour": 1}
                    ]
                },
            ),
            "spec.federatedCredentials[0]: unknown field 'colour'",
        ),
        (
            res("Vault", "a-name-much-too-long-for-a-vault"),
            "metadata.name (set spec.name to name it otherwise): vault name",
        ),
        (res("Vault", "v", {"name": "sys"}), "spec.name: vault name 'sys' is reserved"),
        (
            res("RoleAssignment", "r", {"identity": "billing", "role": "owner", "scope": "/"}),
            "spec.role: unknown role 'owner'",
        ),
        (
            res("Issuer", "i", {"url": "ftp://x"}),
            "spec.url: issuer URL 'ftp://x' must start with https://",
        ),
    ],
    ids=[
        "identity-name",
        "one-subject-form",
        "unknown-field",
        "vault-name",
        "reserved-vault",
        "role",
        "url",
    ],
)
def test_a_bad_resource_is_invalid_alone_and_the_others_proceed(
    bad: Resource, message: str
) -> None:
    d = decide([ISSUER, BILLING, VAULT, ASSIGN, bad], HAVE, {})
    assert list(d.invalid) == [bad.ref]
    assert d.invalid[bad.ref].startswith(message), d.invalid[bad.ref]
    assert set(d.live) == {ISSUER.ref, BILLING.ref, VAULT.ref, ASSIGN.ref}


def test_references_must_hold_and_an_invalid_identity_takes_its_assignments_with_it() -> None:
    ghost = res("Identity", "ghost", {"name": "bad name"})
    to_ghost = res("RoleAssignment", "g", {"identity": "bad name", "role": "reader", "scope": "/"})
    # "bad name" is not an identity name: refused by the schema's own rule, alone
    to_nobody = res("RoleAssignment", "n", {"identity": "nobody", "role": "reader", "scope": "/"})
    to_no_vault = res(
        "RoleAssignment", "v", {"identity": "cli-made", "role": "reader", "scope": "/vaults/none"}
    )
    stranger = res(
        "Identity",
        "s",
        {"federatedCredentials": [{"name": "a", "issuer": "https://else.example", "subject": "x"}]},
    )
    cli_ok = res("RoleAssignment", "c", {"identity": "cli-made", "role": "reader", "scope": "/"})
    d = decide([ghost, to_ghost, to_nobody, to_no_vault, stranger, cli_ok], HAVE, {})
    assert (
        "identity 'nobody' does not exist in keyless and no Identity declares it"
        in d.invalid[to_nobody.ref]
    )
    assert "vault 'none' does not exist" in d.invalid[to_no_vault.ref]
    assert "https://else.example is not registered in keyless" in d.invalid[stranger.ref]
    assert ghost.ref in d.invalid and to_ghost.ref in d.invalid
    assert list(d.live) == [cli_ok.ref]  # an identity made with the CLI can be referred to

    # An identity that is refused makes the assignments that need it invalid in turn.
    new_ident = res(
        "Identity",
        "fresh",
        {"federatedCredentials": [{"name": "a", "issuer": "https://else.example", "subject": "x"}]},
    )
    needs_it = res("RoleAssignment", "f", {"identity": "fresh", "role": "reader", "scope": "/"})
    d = decide([new_ident, needs_it], HAVE, {})
    assert set(d.invalid) == {new_ident.ref, needs_it.ref}


def test_two_resources_declaring_one_object_the_older_wins() -> None:
    older = res("Vault", "a", {"name": "shared"}, at="2026-12-07T09:00:00Z")
    newer = res("Vault", "b", {"name": "shared"}, at="2026-12-07T09:30:00Z")
    d = decide([newer, older], current(), {})
    assert list(d.live) == [older.ref]
    assert d.invalid == {newer.ref: "'shared' is already declared by Vault/a"}


def test_a_resource_cannot_be_renamed_under_what_it_manages() -> None:
    moved = res("Vault", "v", {"name": "other"})
    d = decide([moved], current(vaults={"billing": 0}), {moved.uid: Claim("billing", True)})
    assert "manages 'billing' and cannot be changed to name 'other'" in d.invalid[moved.ref]


def test_resources_without_the_finalizer_are_not_acted_on() -> None:
    bare = res("Vault", "bare", finalizers=())
    assert decide([bare], current(), {}).document.vaults == ()


def deleting(r: Resource) -> Resource:
    return replace(r, deleting=True)


def test_deletion_removes_exactly_what_the_resource_made() -> None:
    claims = {
        BILLING.uid: Claim("billing", True, frozenset({"api"})),
        VAULT.uid: Claim("billing", True),
        ASSIGN.uid: Claim(f"billing {USER} /vaults/billing", True),
        ISSUER.uid: Claim(ISS, True),
    }
    d = decide(
        [deleting(ISSUER), deleting(BILLING), deleting(VAULT), deleting(ASSIGN)], HAVE, claims
    )
    assert d.removals == Removals(
        issuers=frozenset({ISS}),
        identities=frozenset({"billing"}),
        vaults=frozenset({"billing"}),
        assignments=frozenset({("billing", USER, "/vaults/billing")}),
    )
    changes = plan(d.document, HAVE, prune=False, remove=d.removals)
    # The assignment goes with its identity and vault; the issuer last, once nothing names it.
    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("delete", "identity", "billing"),
        ("delete", "vault", "billing"),
        ("delete", "issuer", ISS),
    ]
    assert {d.origin(c) for c in changes} == {BILLING.ref, VAULT.ref, ISSUER.ref}
    assert {r.ref for r in d.release} == {ISSUER.ref, BILLING.ref, VAULT.ref, ASSIGN.ref}
    assert "cli-made" not in str(changes)  # never pruned


def test_an_adopted_object_stays_only_the_credentials_made_go() -> None:
    have = current(
        issuers={ISS: IssuerRecord(url=ISS, jwks=JWKS, created_at=0)},
        credentials={"billing": {"api": cred(), "by-cli": cred("by-cli")}},
    )
    claims = {BILLING.uid: Claim("billing", False, frozenset({"api"}))}
    d = decide([deleting(BILLING)], have, claims)
    assert d.removals == Removals(credentials=frozenset({("billing", "api")}))
    # Never acted on (no claim): nothing to remove, the finalizer can go.
    d = decide([deleting(VAULT)], current(vaults={"billing": 3}), {})
    assert not d.removals and [r.ref for r in d.release] == [VAULT.ref]


def test_a_vault_holding_secrets_waits_and_says_why() -> None:
    d = decide(
        [deleting(VAULT)], current(vaults={"billing": 2}), {VAULT.uid: Claim("billing", True)}
    )
    assert not d.removals and d.release == []
    assert "vault 'billing' still holds 2 secret(s)" in d.waiting[VAULT.ref]
    assert "keyless vault delete billing --force" in d.waiting[VAULT.ref]


def test_an_issuer_still_trusted_waits() -> None:
    claims = {ISSUER.uid: Claim(ISS, True)}
    d = decide([deleting(ISSUER), BILLING], HAVE, claims)
    assert ISS not in d.removals.issuers
    assert "still trusted by identity 'billing'" in d.waiting[ISSUER.ref]
    assert BILLING.ref in d.live  # the identity is not refused for it


def test_credentials_an_identity_made_and_no_longer_lists_are_removed() -> None:
    have = current(
        issuers={ISS: IssuerRecord(url=ISS, jwks=JWKS, created_at=0)},
        credentials={"billing": {"api": cred(), "old": cred("old"), "by-cli": cred("by-cli")}},
    )
    claims = {BILLING.uid: Claim("billing", True, frozenset({"api", "old"}))}
    d = decide([BILLING], have, claims)
    assert d.removals == Removals(credentials=frozenset({("billing", "old")}))
    changes = plan(d.document, have, prune=False, remove=d.removals)
    assert ("delete", "federated_credential", "billing/old") in [
        (c.action, c.kind, c.name) for c in changes
    ]
    assert "by-cli" not in str(changes)


def test_plan_with_removals_leaves_keyless_apply_untouched() -> None:
    """Without ``remove``, plan is keyless apply's: nothing the document does not name goes."""
    doc = parse_document({"vaults": [{"name": "billing"}]})
    assert plan(doc, HAVE, prune=False) == plan(doc, HAVE, prune=False, remove=Removals())
    # What the document names is never removed, whatever ``remove`` says.
    assert plan(doc, HAVE, prune=False, remove=Removals(vaults=frozenset({"billing"}))) == []


def test_claims_follow_what_was_made_and_changes_are_audited_as_commands() -> None:
    c = claimed(Claim(), Change("create", "identity", "billing"))
    c = claimed(c, Change("create", "federated_credential", "billing/api"))
    assert c == Claim("billing", True, frozenset({"api"}))
    assert (
        claimed(c, Change("delete", "federated_credential", "billing/api")).credentials
        == frozenset()
    )
    assert audit_action(Change("create", "federated_credential", "billing/api")) == (
        "federation add",
        "billing api",
    )
    assert audit_action(Change("create", "role_assignment", f"billing {USER} /")) == (
        "role assign",
        f"billing: {USER} on /",
    )
    assert audit_action(Change("delete", "vault", "billing")) == ("vault delete", "billing")


def test_document_paths_are_said_in_the_resource_terms() -> None:
    assert spec_message("identities[0].federated_credentials[2].subject_pattern: x") == (
        "spec.federatedCredentials[2].subjectPattern: x"
    )
    assert spec_message("issuers[0].allow_unreachable: must be true or false") == (
        "spec.allowUnreachable: must be true or false"
    )


ISS_B = "https://issuer-b.example"
SHARED = res(
    "Identity",
    "shared",
    {
        "federatedCredentials": [
            {
                "name": "gke",
                "issuers": [ISS, ISS_B],
                "member": "principalSet://iam.googleapis.com/projects/1/locations/global/"
                "workloadIdentityPools/keyless/attribute.ns/billing",
                "attributeMapping": {"attribute.ns": "assertion['kubernetes.io'].namespace"},
                "attributeCondition": "assertion.iss.startsWith('https://')",
            }
        ]
    },
)


def test_an_identity_with_an_issuer_set_and_google_terms() -> None:
    spec = entry(SHARED)["federated_credentials"][0]
    assert spec["attribute_mapping"] == {"attribute.ns": "assertion['kubernetes.io'].namespace"}
    assert spec["attribute_condition"] == "assertion.iss.startsWith('https://')"
    issuer_b = res("Issuer", "cluster-b", {"url": ISS_B, "jwks": JWKS})
    d = decide([ISSUER, issuer_b, SHARED], current(), {})
    assert d.invalid == {}
    cred_spec = d.document.identities[0].credentials[0]
    assert cred_spec.trusted_issuers == (ISS, ISS_B) and cred_spec.google is not None
    # Without cluster B's Issuer (and not registered), the identity cannot hold.
    d = decide([ISSUER, SHARED], current(), {})
    assert d.invalid[SHARED.ref] == (
        f"spec.federatedCredentials[0].issuers: {ISS_B} is not registered in keyless and no "
        "Issuer declares it"
    )
    # An Issuer named second in a set waits like one named alone.
    have = current(
        issuers={u: IssuerRecord(url=u, jwks=JWKS, created_at=0) for u in (ISS, ISS_B)},
        credentials={"shared": {"gke": cred_spec}},
    )
    d = decide([deleting(issuer_b), SHARED], have, {issuer_b.uid: Claim(ISS_B, True)})
    assert "still trusted by identity 'shared'" in d.waiting[issuer_b.ref]
