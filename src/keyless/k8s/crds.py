"""The ``keyless.dev`` custom resources, defined once: what an operator declares in a cluster.

``Issuer``, ``Identity`` (with its federated credentials), ``Vault`` and ``RoleAssignment``,
all cluster-scoped, version ``v1alpha1``, in category ``keyless`` (``kubectl get keyless``).
The controller (``k8s/controller.py``) makes keyless agree with them through the same
reconciliation as ``keyless apply``; ``deploy/kubernetes/base/crds.yaml`` is :func:`crds`
rendered (a test holds the two equal; regenerate with
``python -m keyless.k8s.crds > deploy/kubernetes/base/crds.yaml``).

The schemas repeat the keyless rules that cost nothing to state here (name patterns, the role
set, scope shapes, one issuer form and one subject form), so ``kubectl apply`` refuses most
mistakes at once; the controller still checks every rule itself and says what it refused in
the status. Secret values have no place in any of these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keyless.core import rbac
from keyless.core.cel import MAX_SOURCE_LENGTH
from keyless.core.gcppolicy import MAX_MAPPINGS, MAX_MEMBER
from keyless.core.secrets import RESERVED_VAULT_NAMES
from keyless.core.trust import MAX_AUDIENCES, MAX_ISSUERS, MAX_VALUE

GROUP = "keyless.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "keyless"
FINALIZER = "keyless.dev/cleanup"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    plural: str
    short: str


ISSUER = Kind("Issuer", "issuers", "kli")
IDENTITY = Kind("Identity", "identities", "kid")
VAULT = Kind("Vault", "vaults", "kvault")
ROLE_ASSIGNMENT = Kind("RoleAssignment", "roleassignments", "kra")
KINDS = (ISSUER, IDENTITY, VAULT, ROLE_ASSIGNMENT)

# The keyless rules as schema patterns (core/federation.py, core/secrets.py, core/rbac.py).
IDENTITY_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
VAULT_NAME = r"^[a-z0-9][a-z0-9-]{1,22}[a-z0-9]$"
CREDENTIAL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$"
ISSUER_URL = r"^https?://[^\s?#@]+$"
SCOPE = (
    r"^/(vaults/[0-9a-zA-Z-]{1,127}(/secrets/[0-9a-zA-Z_./-]{1,127})?"
    r"|databases(/[A-Za-z0-9][A-Za-z0-9_-]{0,62}(/roles/[A-Za-z0-9][A-Za-z0-9_-]{0,62})?)?)?$"
)


def _string(pattern: str | None = None, *, max_length: int = MAX_VALUE, **extra: Any) -> Obj:
    out: Obj = {"type": "string", "minLength": 1, "maxLength": max_length}
    if pattern:
        out["pattern"] = pattern
    out.update(extra)
    return out


def _ready(path: str) -> str:
    return f'.status.conditions[?(@.type=="Ready")].{path}'


def _columns(*first: Obj) -> list[Obj]:
    return [
        *first,
        {"name": "Ready", "type": "string", "jsonPath": _ready("status")},
        {"name": "Reason", "type": "string", "jsonPath": _ready("reason")},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def _status(**extra: Obj) -> Obj:
    condition = {
        "type": "object",
        "required": ["type", "status", "reason", "message", "lastTransitionTime"],
        "properties": {
            "type": _string(max_length=316),
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": _string(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024),
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    }
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "name": {"type": "string", "description": "the keyless object this one manages"},
            "created": {
                "type": "boolean",
                "description": "keyless's object was made from this resource, and is deleted "
                "with it (one that existed before is adopted, and left in place)",
            },
            **extra,
        },
    }


def _issuer_spec() -> Obj:
    return {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": _string(ISSUER_URL, max_length=512, description="the tokens' iss, exactly"),
            "kubernetesApi": {
                "type": "boolean",
                "description": "keys from the Kubernetes API server keyless runs in",
            },
            "allowUnreachable": {"type": "boolean"},
            "jwks": {
                "type": "object",
                "description": "the issuer's public keys, for an issuer keyless cannot reach",
                "required": ["keys"],
                "properties": {
                    "keys": {
                        "type": "array",
                        "maxItems": 100,
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    }
                },
            },
        },
        "x-kubernetes-validations": [
            {"rule": "self.url == oldSelf.url", "message": "url cannot change: make a new Issuer"},
            {
                "rule": "!(has(self.jwks) && has(self.kubernetesApi) && self.kubernetesApi)",
                "message": "jwks or kubernetesApi, not both",
            },
        ],
    }


def _credential() -> Obj:
    return {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _string(CREDENTIAL_NAME, max_length=120),
            "issuer": _string(ISSUER_URL, max_length=512),
            "issuers": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ISSUERS,
                "items": _string(ISSUER_URL, max_length=512),
                "description": "an issuer set: the clusters sharing one identity namespace",
            },
            "subject": _string(),
            "subjectPattern": _string(r"[*?]", description="a glob: * any run, ? one character"),
            "member": _string(
                max_length=MAX_MEMBER,
                description="a Google principal: serviceAccount:PROJECT.svc.id.goog[NS/KSA], "
                "principal://.../subject/S, principalSet://.../attribute.NAME/VALUE | "
                "group/G | *",
            ),
            "audiences": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_AUDIENCES,
                "items": _string(),
                "description": "default api://AzureADTokenExchange",
            },
            "condition": _string(description="a CEL expression over the token's claims"),
            "attributeMapping": {
                "type": "object",
                "maxProperties": MAX_MAPPINGS,
                "additionalProperties": _string(max_length=MAX_SOURCE_LENGTH),
                "description": "with member: google.subject, google.groups, attribute.NAME -> "
                "CEL over assertion",
            },
            "attributeCondition": _string(
                max_length=MAX_SOURCE_LENGTH,
                description="with member: CEL over assertion, google and attribute",
            ),
        },
        # Exactly one issuer form and one subject form (``keyless federation add``'s rules).
        "allOf": [
            {"oneOf": [{"required": ["issuer"]}, {"required": ["issuers"]}]},
            {
                "oneOf": [
                    {"required": ["subject"]},
                    {"required": ["subjectPattern"]},
                    {"required": ["member"]},
                ]
            },
        ],
    }


def _name_rule(pattern: str, what: str) -> Obj:
    """metadata.name is the keyless name when spec.name is absent: then it must be one."""
    return {
        "rule": "(has(self.spec) && has(self.spec.name)) || "
        f"self.metadata.name.matches('{pattern}')",
        "message": f"metadata.name is not a {what} name: set spec.name",
    }


def _name_fixed() -> Obj:
    return {
        "rule": "has(self.name) == has(oldSelf.name) && "
        "(!has(self.name) || self.name == oldSelf.name)",
        "message": "name cannot change",
    }


def _identity_spec() -> Obj:
    return {
        "type": "object",
        "properties": {
            "name": _string(IDENTITY_NAME, max_length=128, description="default metadata.name"),
            "federatedCredentials": {
                "type": "array",
                "maxItems": 100,
                "items": _credential(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        },
        "x-kubernetes-validations": [_name_fixed()],
    }


def _vault_spec() -> Obj:
    return {
        "type": "object",
        "properties": {
            "name": _string(
                VAULT_NAME,
                max_length=24,
                description="default metadata.name",
                **{"not": {"enum": sorted(RESERVED_VAULT_NAMES)}},
            )
        },
        "x-kubernetes-validations": [_name_fixed()],
    }


def role_names() -> list[str]:
    """Every spelling of a built-in role keyless takes (its name and its alias)."""
    return [n for r in rbac.ROLES for n in (r.name, r.alias)]


def _assignment_spec() -> Obj:
    return {
        "type": "object",
        "required": ["identity", "role", "scope"],
        "properties": {
            "identity": _string(IDENTITY_NAME, max_length=128, description="the identity's name"),
            "role": {"type": "string", "enum": role_names()},
            "scope": _string(
                SCOPE,
                max_length=300,
                description="/, /vaults/V, /vaults/V/secrets/S, /databases/D/roles/R",
            ),
        },
        "x-kubernetes-validations": [
            {
                "rule": "self == oldSelf",
                "message": "a role assignment cannot change: make a new one",
            }
        ],
    }


def _crd(kind: Kind, spec: Obj, columns: list[Obj], *, spec_required: bool, **more: Any) -> Obj:
    status = more.pop("status", _status())
    schema: Obj = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if spec_required:
        schema["required"] = ["spec"]
    if "validations" in more:
        schema["x-kubernetes-validations"] = more.pop("validations")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "keyless"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crds() -> list[Obj]:
    """The four CustomResourceDefinitions (apiextensions.k8s.io/v1)."""
    name = {"name": "Name", "type": "string", "jsonPath": ".status.name"}
    return [
        _crd(
            ISSUER,
            _issuer_spec(),
            _columns({"name": "URL", "type": "string", "jsonPath": ".spec.url"}),
            spec_required=True,
        ),
        _crd(
            IDENTITY,
            _identity_spec(),
            _columns(
                name,
                {"name": "Client ID", "type": "string", "jsonPath": ".status.clientId"},
                {"name": "Credentials", "type": "integer", "jsonPath": ".status.credentialCount"},
            ),
            spec_required=False,
            status=_status(
                clientId={"type": "string"},
                objectId={"type": "string"},
                credentialCount={"type": "integer"},
                credentials={
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "federated credentials made from this resource",
                },
            ),
            validations=[_name_rule(IDENTITY_NAME, "valid identity")],
        ),
        _crd(
            VAULT,
            _vault_spec(),
            _columns(name),
            spec_required=False,
            validations=[_name_rule(VAULT_NAME, "valid vault")],
        ),
        _crd(
            ROLE_ASSIGNMENT,
            _assignment_spec(),
            _columns(
                {"name": "Identity", "type": "string", "jsonPath": ".spec.identity"},
                {"name": "Role", "type": "string", "jsonPath": ".spec.role"},
                {"name": "Scope", "type": "string", "jsonPath": ".spec.scope"},
            ),
            spec_required=True,
        ),
    ]
