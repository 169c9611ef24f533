"""The keyless.dev custom resources as a ``keyless apply`` document, and what to delete.

Pure: no Kubernetes client here (``k8s/controller.py`` reads and writes the objects). Each
round the controller hands :func:`decide` every resource it listed, what the tenant has
(``core/apply.Current``) and what each resource made before (:class:`Claim`, kept in its
status); :func:`decide` answers

- the document of the valid live resources, for ``parse_document`` + ``Reconciler``: the one
  reconciliation ``keyless apply`` uses;
- which resources are invalid and why, one line each: a resource is checked on its own (the
  document's own rules, then its references), so one bad resource never holds up the others;
- :class:`~keyless.core.apply.Removals`: exactly the keyless objects that resources being
  deleted made themselves (an object that existed before its resource is adopted, never
  deleted; nothing is ever pruned), and the credentials an Identity no longer lists that it
  made;
- which deleted resources must wait (a vault that still holds secrets, an issuer still named
  by credentials), with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from keyless.core import rbac
from keyless.core.apply import Change, Current, Removals
from keyless.core.applydoc import Document, parse_document
from keyless.core.errors import InvalidRequest
from keyless.k8s.crds import FINALIZER, IDENTITY, ISSUER, ROLE_ASSIGNMENT, VAULT

SECTIONS = {
    ISSUER.kind: "issuers",
    IDENTITY.kind: "identities",
    VAULT.kind: "vaults",
    ROLE_ASSIGNMENT.kind: "role_assignments",
}
# A change's kind (core/apply.Change) -> the resource kind it comes from.
CHANGE_KINDS = {
    "issuer": ISSUER.kind,
    "identity": IDENTITY.kind,
    "federated_credential": IDENTITY.kind,
    "vault": VAULT.kind,
    "role_assignment": ROLE_ASSIGNMENT.kind,
}
_CAMEL = {
    "kubernetesApi": "kubernetes_api",
    "allowUnreachable": "allow_unreachable",
    "federatedCredentials": "federated_credentials",
    "subjectPattern": "subject_pattern",
    "attributeMapping": "attribute_mapping",
    "attributeCondition": "attribute_condition",
}
_SNAKE = {v: k for k, v in _CAMEL.items()}


@dataclass(frozen=True, slots=True)
class Claim:
    """What a resource made in keyless: the name it manages, whether it created that object
    (only then is it deleted with the resource), and the federated credentials it created."""

    name: str | None = None
    created: bool = False
    credentials: frozenset[str] = frozenset()

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Claim:
        name = status.get("name")
        creds = status.get("credentials")
        return cls(
            name if isinstance(name, str) and name else None,
            status.get("created") is True,
            frozenset(c for c in creds if isinstance(c, str))
            if isinstance(creds, list)
            else frozenset(),
        )


@dataclass(frozen=True, slots=True)
class Resource:
    """One custom resource, as listed."""

    kind: str
    name: str
    uid: str
    generation: int = 1
    resource_version: str = ""
    created_at: str = ""  # metadata.creationTimestamp (RFC 3339: sorts as text)
    spec: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    deleting: bool = False

    @classmethod
    def from_object(cls, kind: str, obj: Mapping[str, Any]) -> Resource:
        meta = obj.get("metadata") or {}
        spec, status = obj.get("spec"), obj.get("status")
        return cls(
            kind=kind,
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 1),
            resource_version=str(meta.get("resourceVersion", "")),
            created_at=str(meta.get("creationTimestamp") or ""),
            spec=spec if isinstance(spec, dict) else {},
            status=status if isinstance(status, dict) else {},
            finalizers=tuple(str(f) for f in meta.get("finalizers") or ()),
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def ref(self) -> str:
        """How the audit log and messages name it: ``Identity/billing``."""
        return f"{self.kind}/{self.name}"

    @property
    def managed(self) -> bool:
        return FINALIZER in self.finalizers


@dataclass(frozen=True, slots=True)
class Parsed:
    """A live resource that passed its own checks: its keyless key and document entry."""

    resource: Resource
    key: str  # issuer URL, identity or vault name, role assignment label
    entry: dict[str, Any]
    parsed: Document


@dataclass
class Decision:
    document: Document
    removals: Removals
    invalid: dict[str, str] = field(default_factory=dict)  # ref -> why
    waiting: dict[str, str] = field(default_factory=dict)  # deleted ref -> why it stays
    release: list[Resource] = field(default_factory=list)  # deleted: finalizer off once done
    live: dict[str, Parsed] = field(default_factory=dict)  # ref -> the valid live resources
    _declared: dict[tuple[str, str], str] = field(default_factory=dict)
    _removing: dict[tuple[str, str], str] = field(default_factory=dict)

    def origin(self, change: Change) -> str | None:
        """The resource (``Kind/name``) a planned change comes from."""
        key = _change_key(change)
        table = self._removing if change.action == "delete" else self._declared
        return table.get(key) or self._declared.get(key) or self._removing.get(key)


def _change_key(change: Change) -> tuple[str, str]:
    kind = CHANGE_KINDS[change.kind]
    name = change.name
    if change.kind == "federated_credential":
        name = name.partition("/")[0]
    return kind, name


def assignment_label(identity: str, role: str, scope: str) -> str:
    """A role assignment's key, as ``core/apply.Change`` names it."""
    return f"{identity} {role} {scope}"


# -- one resource on its own ---------------------------------------------------------------


def _snake(value: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's fields in the document's spelling (unknown ones kept, to be refused)."""
    return {_CAMEL.get(k, k): v for k, v in value.items()}


def entry(resource: Resource) -> dict[str, Any]:
    """The resource as an entry of its section of a ``keyless apply`` document."""
    spec = _snake(resource.spec)
    if resource.kind in (IDENTITY.kind, VAULT.kind) and "name" not in spec:
        spec["name"] = resource.name
    creds = spec.get("federated_credentials")
    if isinstance(creds, list):
        spec["federated_credentials"] = [_snake(c) if isinstance(c, dict) else c for c in creds]
    return spec


_PATH = re.compile(r"\A(issuers|identities|vaults|role_assignments)\[0\]")


def spec_message(message: str) -> str:
    """A document refusal said in the resource's terms: ``identities[0].federated_credentials[1]:
    ...`` -> ``spec.federatedCredentials[1]: ...``."""
    path, sep, rest = message.partition(": ")
    if not sep or not _PATH.match(path):
        return message
    path = _PATH.sub("spec", path)
    path = re.sub(r"[a-z]+(?:_[a-z]+)+", lambda m: _SNAKE.get(m.group(0), m.group(0)), path)
    return f"{path}: {rest}"


def parse_one(resource: Resource, *, dev: bool) -> Parsed:
    """The resource checked on its own with the document's rules; InvalidRequest if not."""
    section = SECTIONS[resource.kind]
    item = entry(resource)
    try:
        doc = parse_document({section: [item]}, dev=dev)
    except InvalidRequest as exc:
        message = spec_message(exc.message)
        if message.startswith("spec.name: ") and "name" not in resource.spec:
            message = "metadata.name (set spec.name to name it otherwise): " + message[11:]
        raise InvalidRequest(message) from None
    if doc.issuers:
        key = doc.issuers[0].url
    elif doc.identities:
        key = doc.identities[0].name
    elif doc.vaults:
        key = doc.vaults[0]
    else:
        key = assignment_label(*doc.assignments[0])
    return Parsed(resource, key, item, doc)


# -- every resource together ---------------------------------------------------------------


def _order(resource: Resource) -> tuple[str, str]:
    return resource.created_at, resource.name


def decide(
    resources: Iterable[Resource],
    current: Current,
    claims: Mapping[str, Claim],
    *,
    dev: bool = False,
) -> Decision:
    """See the module's docstring. ``claims``: by resource uid (status, or fresher memory)."""
    everything = sorted(resources, key=_order)
    invalid: dict[str, str] = {}
    live: dict[str, Parsed] = {}
    winners: dict[tuple[str, str], Parsed] = {}
    for r in everything:
        if r.deleting or not r.managed:
            continue
        try:
            parsed = parse_one(r, dev=dev)
        except InvalidRequest as exc:
            invalid[r.ref] = exc.message
            continue
        claim = claims.get(r.uid, Claim())
        if claim.name is not None and claim.name != parsed.key:
            invalid[r.ref] = (
                f"this {r.kind} manages {claim.name!r} and cannot be changed to name "
                f"{parsed.key!r}: make a new {r.kind}"
            )
            continue
        first = winners.get((r.kind, parsed.key))
        if first is not None:
            invalid[r.ref] = f"{parsed.key!r} is already declared by {first.resource.ref}"
            continue
        winners[(r.kind, parsed.key)] = parsed
        live[r.ref] = parsed

    removals, waiting, release, removing = _deletions(everything, current, claims, winners)
    _dropped_credentials(live, current, claims, removals, removing)
    _check_references(live, invalid, current, removals)
    removed = _freeze(removals)
    doc = parse_document(_document(live.values()), dev=dev)
    declared = {(p.resource.kind, p.key): ref for ref, p in live.items()}
    return Decision(doc, removed, invalid, waiting, release, live, declared, removing)


@dataclass
class _Removing:
    issuers: set[str] = field(default_factory=set)
    identities: set[str] = field(default_factory=set)
    credentials: set[tuple[str, str]] = field(default_factory=set)
    vaults: set[str] = field(default_factory=set)
    assignments: set[tuple[str, str, str]] = field(default_factory=set)


def _freeze(r: _Removing) -> Removals:
    return Removals(
        frozenset(r.issuers),
        frozenset(r.identities),
        frozenset(r.credentials),
        frozenset(r.vaults),
        frozenset(r.assignments),
    )


def _deletions(
    everything: list[Resource],
    current: Current,
    claims: Mapping[str, Claim],
    winners: Mapping[tuple[str, str], Parsed],
) -> tuple[_Removing, dict[str, str], list[Resource], dict[tuple[str, str], str]]:
    out = _Removing()
    waiting: dict[str, str] = {}
    release: list[Resource] = []
    removing: dict[tuple[str, str], str] = {}
    issuers: list[tuple[Resource, str]] = []
    for r in everything:
        if not (r.deleting and r.managed):
            continue
        claim = claims.get(r.uid, Claim())
        key = claim.name
        # Nothing made, or what it made is still declared by another resource: leave it.
        if key is None or (r.kind, key) in winners:
            release.append(r)
            continue
        removing[(r.kind, key)] = r.ref
        if r.kind == ISSUER.kind:
            if claim.created and key in current.issuers:
                issuers.append((r, key))
                continue
        elif r.kind == IDENTITY.kind:
            if claim.created and key in current.credentials:
                out.identities.add(key)
            else:
                have = current.credentials.get(key, {})
                out.credentials |= {(key, c) for c in claim.credentials if c in have}
        elif r.kind == VAULT.kind:
            if claim.created and key in current.vaults:
                if held := current.vaults[key]:
                    waiting[r.ref] = (
                        f"vault {key!r} still holds {held} secret(s), so it is kept: delete "
                        f"them, or the vault with them (`keyless vault delete {key} --force`)"
                    )
                    continue
                out.vaults.add(key)
        elif r.kind == ROLE_ASSIGNMENT.kind:
            triple = _split(key)
            if claim.created and triple in current.assignments:
                out.assignments.add(triple)
        release.append(r)
    # An issuer goes only when no credential that stays names it (keyless refuses otherwise).
    for r, url in issuers:
        users = sorted(
            {
                ident
                for ident, creds in current.credentials.items()
                if ident not in out.identities
                for cred in creds.values()
                if url in cred.trusted_issuers and (ident, cred.name) not in out.credentials
            }
            | {
                p.key
                for p in winners.values()
                if p.resource.kind == IDENTITY.kind
                for c in p.parsed.identities[0].credentials
                if url in c.trusted_issuers
            }
        )
        if users:
            waiting[r.ref] = (
                f"issuer {url} is still trusted by identity {', '.join(map(repr, users))}: "
                "remove those federated credentials first"
            )
            continue
        out.issuers.add(url)
        release.append(r)
    return out, waiting, release, removing


def _split(label: str) -> tuple[str, str, str]:
    identity, _, rest = label.partition(" ")
    role, _, scope = rest.rpartition(" ")
    return identity, role, scope


def _dropped_credentials(
    live: Mapping[str, Parsed],
    current: Current,
    claims: Mapping[str, Claim],
    out: _Removing,
    removing: dict[tuple[str, str], str],
) -> None:
    """Credentials an Identity made and no longer lists are removed (those it did not make
    stay, wherever they came from)."""
    for ref, p in live.items():
        if p.resource.kind != IDENTITY.kind:
            continue
        listed = {c.name for c in p.parsed.identities[0].credentials}
        have = current.credentials.get(p.key, {})
        gone = {c for c in claims.get(p.resource.uid, Claim()).credentials if c not in listed}
        dropped = {(p.key, c) for c in gone if c in have}
        if dropped:
            out.credentials |= dropped
            removing.setdefault((IDENTITY.kind, p.key), ref)


def _check_references(
    live: dict[str, Parsed], invalid: dict[str, str], current: Current, out: _Removing
) -> None:
    """Each resource's references must hold after this round, or it is invalid (and so is
    what refers to it, in turn): a credential's issuer, an assignment's identity and vault."""
    while True:
        kinds: dict[str, set[str]] = {ISSUER.kind: set(), IDENTITY.kind: set(), VAULT.kind: set()}
        for p in live.values():
            kinds.setdefault(p.resource.kind, set()).add(p.key)
        issuers = set(current.issuers) - out.issuers | kinds[ISSUER.kind]
        identities = set(current.credentials) - out.identities | kinds[IDENTITY.kind]
        vaults = set(current.vaults) - out.vaults | kinds[VAULT.kind]
        bad: dict[str, str] = {}
        for ref, p in live.items():
            if p.resource.kind == IDENTITY.kind:
                for i, cred in enumerate(p.parsed.identities[0].credentials):
                    missing = [url for url in cred.trusted_issuers if url not in issuers]
                    if missing:
                        field = "issuers" if cred.issuers else "issuer"
                        bad[ref] = (
                            f"spec.federatedCredentials[{i}].{field}: {missing[0]} is not "
                            "registered in keyless and no Issuer declares it"
                        )
                        break
            elif p.resource.kind == ROLE_ASSIGNMENT.kind:
                identity, _, scope = p.parsed.assignments[0]
                parts = rbac.parse_scope(scope)
                if identity not in identities:
                    bad[ref] = (
                        f"spec.identity: identity {identity!r} does not exist in keyless and "
                        "no Identity declares it"
                    )
                elif parts and parts[0] != rbac.DATABASES and parts[0] not in vaults:
                    bad[ref] = (
                        f"spec.scope: vault {parts[0]!r} does not exist in keyless and no "
                        "Vault declares it"
                    )
        if not bad:
            return
        for ref, why in bad.items():
            invalid[ref] = why
            del live[ref]


def _document(parsed: Iterable[Parsed]) -> dict[str, list[dict[str, Any]]]:
    doc: dict[str, list[dict[str, Any]]] = {}
    for p in parsed:
        doc.setdefault(SECTIONS[p.resource.kind], []).append(p.entry)
    return doc


# -- what a change made --------------------------------------------------------------------


def claimed(claim: Claim, change: Change) -> Claim:
    """The claim after ``change`` was made for its resource."""
    if change.kind == "federated_credential":
        cred = change.name.partition("/")[2]
        if change.action == "create":
            return replace(claim, credentials=claim.credentials | {cred})
        if change.action == "delete":
            return replace(claim, credentials=claim.credentials - {cred})
        return claim
    if change.action == "create":
        return replace(claim, name=change.name, created=True)
    if change.action == "delete":
        return replace(claim, created=False, credentials=frozenset())
    return claim


# The audit log names a controller's change as the admin command that makes it.
_ACTIONS = {
    ("issuer", "create"): "issuer add",
    ("issuer", "update"): "issuer add",
    ("issuer", "delete"): "issuer remove",
    ("identity", "create"): "identity create",
    ("identity", "delete"): "identity delete",
    ("federated_credential", "create"): "federation add",
    ("federated_credential", "update"): "federation update",
    ("federated_credential", "delete"): "federation remove",
    ("vault", "create"): "vault create",
    ("vault", "delete"): "vault delete",
    ("role_assignment", "create"): "role assign",
    ("role_assignment", "delete"): "role remove",
}


def audit_action(change: Change) -> tuple[str, str]:
    """(action, target) as the admin socket's events read: ``federation add billing api``."""
    action = _ACTIONS[(change.kind, change.action)]
    if change.kind == "federated_credential":
        return action, change.name.replace("/", " ", 1)
    if change.kind == "role_assignment":
        identity, role, scope = _split(change.name)
        return action, f"{identity}: {role} on {scope}"
    return action, change.name
