"""The keyless.dev CRDs (``k8s/crds.py``): the generated YAML is current, every example is valid
under its CRD's schema (and keyless's own rules), and the schemas refuse what keyless would.

kubernetes_validate does not know CRDs, so each openAPIV3Schema is checked with ``jsonschema``
after the step the API server adds itself: an unknown field is an error (``kubectl apply``'s
default strict field validation; a structural schema may not say ``additionalProperties:
false``). The ``x-kubernetes-validations`` CEL rules are evaluated with the CEL engine keyless
uses for trust conditions.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cel
import jsonschema
import pytest
import yaml

from keyless.k8s import crds
from keyless.k8s.resources import Resource, parse_one

ROOT = Path(__file__).resolve().parents[2]
CRDS_YAML = ROOT / "deploy" / "kubernetes" / "base" / "crds.yaml"
EXAMPLES = ROOT / "deploy" / "kubernetes" / "examples"
BY_KIND = {c["spec"]["names"]["kind"]: c for c in crds.crds()}


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server would refuse them."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _rules(schema: Any, obj: Any, old: Any = None) -> list[str]:
    """The messages of the CEL rules ``obj`` breaks (transition rules only with ``old``)."""
    broken: list[str] = []
    if not isinstance(schema, dict) or obj is None:
        return broken
    for rule in schema.get("x-kubernetes-validations", ()):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        if not cel.evaluate(rule["rule"], {"self": obj, "oldSelf": old}):
            broken.append(rule["message"])
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(obj, dict) and name in obj:
            broken += _rules(sub, obj[name], old.get(name) if isinstance(old, dict) else None)
    items = schema.get("items")
    if items and isinstance(obj, list):
        for element in obj:
            broken += _rules(items, element)
    return broken


def problems(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    schema = _schema(obj["kind"])
    found = [e.message for e in jsonschema.Draft4Validator(_strict(schema)).iter_errors(obj)]
    return found + _rules(schema, obj, old)


def examples() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_the_yaml_is_generated_from_crds() -> None:
    """The file holds crds()'s objects (render() carries them; regenerate.py writes it)."""
    assert list(yaml.safe_load_all(CRDS_YAML.read_text())) == crds.crds(), (
        "deploy/kubernetes/base/crds.yaml is stale: python deploy/kubernetes/regenerate.py"
    )


def test_the_crds_are_what_kubectl_and_the_controller_expect() -> None:
    assert [c["spec"]["names"]["shortNames"] for c in crds.crds()] == [
        ["kli"],
        ["kid"],
        ["kvault"],
        ["kra"],
    ]
    for crd in crds.crds():
        spec = crd["spec"]
        assert spec["scope"] == "Cluster" and spec["names"]["categories"] == ["keyless"]
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.keyless.dev"
        version = spec["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[-3:] == ["Ready", "Reason", "Age"]
        jsonschema.Draft4Validator.check_schema(version["schema"]["openAPIV3Schema"])


def test_every_example_is_valid_and_there_is_one_of_each() -> None:
    docs = examples()
    assert sorted({d["kind"] for d in docs}) == ["Identity", "Issuer", "RoleAssignment", "Vault"]
    assert len([d for d in docs if d["kind"] == "RoleAssignment"]) == 2
    identity = next(d for d in docs if d["kind"] == "Identity")
    assert len(identity["spec"]["federatedCredentials"]) == 2
    for doc in docs:
        assert doc["apiVersion"] == crds.API_VERSION
        assert problems(doc) == [], doc["metadata"]["name"]
        # ... and keyless's own rules take it as it is (the controller's first check).
        parse_one(Resource.from_object(doc["kind"], doc), dev=False)


def _example(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for d in examples() if d["kind"] == kind))


def _bad(kind: str, change: Any) -> dict[str, Any]:
    obj = _example(kind)
    change(obj)
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_bad("RoleAssignment", lambda o: o["spec"].pop("identity")), "'identity' is a required"),
        (_bad("RoleAssignment", lambda o: o["spec"].update(role="Owner")), "is not one of"),
        (_bad("RoleAssignment", lambda o: o["spec"].update(scope="/vault/x")), "does not match"),
        (_bad("Vault", lambda o: o.update(spec={"name": "Billing_Vault"})), "does not match"),
        (_bad("Vault", lambda o: o.update(spec={"name": "sys"})), "should not be valid"),
        (_bad("Vault", lambda o: o.update(spec={"size": 3})), "Additional properties"),
        (
            _bad("Vault", lambda o: o["metadata"].update(name="a.vault.name")),
            "metadata.name is not a valid vault name: set spec.name",
        ),
        (_bad("Issuer", lambda o: o["spec"].update(colour="blue")), "Additional properties"),
        (_bad("Issuer", lambda o: o["spec"].update(url="ftp://x.example")), "does not match"),
        (
            _bad("Issuer", lambda o: o["spec"].update(jwks={"keys": []})),
            "jwks or kubernetesApi, not both",
        ),
        (
            _bad(
                "Identity",
                lambda o: o["spec"]["federatedCredentials"][0].update(subjectPattern="a*"),
            ),
            "is valid under each of",
        ),
        (
            _bad("Identity", lambda o: o["spec"]["federatedCredentials"][0].pop("subject")),
            "is not valid under any of the given schemas",
        ),
        (_bad("Identity", lambda o: o["spec"].update(name="bad name")), "does not match"),
        (
            _bad("Identity", lambda o: o["spec"]["federatedCredentials"][1].update(audiences=[])),
            "should be non-empty",
        ),
    ],
    ids=[
        "assignment-without-identity",
        "unknown-role",
        "bad-scope",
        "bad-vault-name",
        "reserved-vault-name",
        "unknown-field",
        "metadata-name-not-a-vault-name",
        "issuer-unknown-field",
        "issuer-url-scheme",
        "jwks-and-kubernetes-api",
        "both-subject-forms",
        "no-subject",
        "bad-identity-name",
        "no-audience",
    ],
)
def test_the_schema_refuses(obj: dict[str, Any], expected: str) -> None:
    found = problems(obj)
    assert any(expected in p for p in found), found


def test_what_a_resource_manages_cannot_change_under_it() -> None:
    old = _example("RoleAssignment")
    new = _bad("RoleAssignment", lambda o: o["spec"].update(scope="/"))
    assert "a role assignment cannot change: make a new one" in problems(new, old)
    renamed = _bad("Identity", lambda o: o["spec"].update(name="other"))
    assert "name cannot change" in problems(renamed, _example("Identity"))
    moved = _bad("Issuer", lambda o: o["spec"].update(url="https://other.example"))
    assert "url cannot change: make a new Issuer" in problems(moved, _example("Issuer"))
    # An unchanged update (or any other change) passes the transition rules.
    more = _bad("Identity", lambda o: o["spec"]["federatedCredentials"].pop())
    assert problems(more, _example("Identity")) == []


def test_roles_are_keyless_own() -> None:
    """The schema's role enum is the built-in roles, by name and alias (core/rbac.py)."""
    enum = _schema("RoleAssignment")["properties"]["spec"]["properties"]["role"]["enum"]
    assert (
        "Key Vault Secrets User" in enum
        and "secrets-user" in enum
        and "database-user" in enum
        and len(enum) == 10
    )


def test_issuer_sets_and_google_members_in_an_identity() -> None:
    shared = _bad(
        "Identity",
        lambda o: o["spec"].update(
            federatedCredentials=[
                {
                    "name": "gke",
                    "issuers": ["https://a.example", "https://b.example"],
                    "member": "serviceAccount:acme.svc.id.goog[billing/api]",
                    "attributeMapping": {"google.subject": "assertion.sub"},
                    "attributeCondition": "assertion.iss != ''",
                }
            ]
        ),
    )
    assert problems(shared) == []
    parse_one(Resource.from_object("Identity", shared), dev=False)
    creds = shared["spec"]["federatedCredentials"]
    creds[0]["issuer"] = "https://a.example"
    assert any("is valid under each of" in p for p in problems(shared))
    creds[0].pop("issuer")
    creds[0]["subject"] = "x"
    assert any("is valid under each of" in p for p in problems(shared))
