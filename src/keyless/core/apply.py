"""``keyless apply``: a declared state (issuers, identities with their federated credentials,
vaults, role assignments) compared with what a tenant has, and the changes that make them agree.

Three steps, kept apart so that ``--dry-run`` is the same code as the real thing minus the
last: ``parse_document`` (``core/applydoc.py``) validates the whole document (one line naming
the first problem, by its path in the document); ``plan`` compares it with the tenant's current
state and lists the changes, creations and updates first, then (with ``prune`` only) deletions
of what the document does not name, in an order in which each one can be made;
``Reconciler.apply`` makes them through the same use cases the admin commands call, so every
rule (names, CEL conditions, issuer probes) is the commands' own. Nothing the document does not
name is ever deleted without ``prune``; a vault that still holds secrets is never pruned.

The Kubernetes controller (``k8s/controller.py``) plans with the same code: its document is
the live custom resources, and instead of ``prune`` it names exactly what to delete
(:class:`Removals`: the objects of the resources being deleted, which it made itself).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keyless.core import rbac
from keyless.core.applydoc import (
    CredentialSpec,
    Document,
    IssuerSpec,
    credential_fields,
    parse_document,
)
from keyless.core.errors import InvalidRequest, KeylessError
from keyless.core.federation import Federation
from keyless.core.issuers import IssuerRecord
from keyless.core.rbac import RoleAssignments
from keyless.core.trust import FederatedCredential
from keyless.core.vault import Call, VaultService

__all__ = [
    "ApplyFailed",
    "Change",
    "Current",
    "Document",
    "Reconciler",
    "Removals",
    "parse_document",
    "plan",
]


# -- the current state and the plan --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Current:
    """What the tenant has, in the document's terms."""

    issuers: dict[str, IssuerRecord]
    credentials: dict[str, dict[str, CredentialSpec]]  # identity name -> credential name -> spec
    vaults: dict[str, int]  # name -> secrets it holds
    assignments: set[tuple[str, str, str]]  # identity name, canonical role, scope


@dataclass(frozen=True, slots=True)
class Removals:
    """Exactly these objects are to be deleted (those that exist and the document does not
    name); everything else is left alone, as without ``prune``."""

    issuers: frozenset[str] = frozenset()
    identities: frozenset[str] = frozenset()
    credentials: frozenset[tuple[str, str]] = frozenset()  # identity name, credential name
    vaults: frozenset[str] = frozenset()
    assignments: frozenset[tuple[str, str, str]] = frozenset()  # identity, canonical role, scope

    def __bool__(self) -> bool:
        return bool(
            self.issuers or self.identities or self.credentials or self.vaults or self.assignments
        )


@dataclass(frozen=True, slots=True)
class Change:
    action: str  # create | update | delete
    kind: str  # issuer | identity | federated_credential | vault | role_assignment
    name: str
    detail: str = ""

    def view(self) -> dict[str, str]:
        out = {"action": self.action, "kind": self.kind, "name": self.name}
        if self.detail:
            out["detail"] = self.detail
        return out


def _issuer_differs(want: IssuerSpec, have: IssuerRecord) -> str:
    if want.source != have.source:
        return f"keys from {want.source}, not {have.source}"
    if want.jwks is not None and _canonical(want.jwks) != _canonical(have.jwks):
        return "new JWKS"
    return ""


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _credential_differs(want: CredentialSpec, have: CredentialSpec) -> str:
    fields = ("issuer", "issuers", "subject", "subject_pattern", "audiences", "condition")
    changed = [f for f in fields if getattr(want, f) != getattr(have, f)]
    old, new = have.google, want.google
    for field in ("member", "attribute_mapping", "attribute_condition"):
        if (getattr(new, field) if new else None) != (getattr(old, field) if old else None):
            changed.append(field)
    return ", ".join(changed)


def plan(
    doc: Document, current: Current, *, prune: bool, remove: Removals | None = None
) -> list[Change]:
    """The changes, in the order they can be made: creations and updates (issuers,
    identities, credentials, vaults, roles), then with ``prune`` (or for what ``remove``
    names) deletions (roles, credentials, identities, vaults, issuers). Refuses (one line) a
    document whose references cannot hold: a credential's issuer, an assignment's identity or
    vault that will not exist.
    """
    remove = _removable(doc, current, remove) if remove and not prune else Removals()
    changes: list[Change] = []
    issuers_after = set(current.issuers) - remove.issuers | {i.url for i in doc.issuers}
    if prune:
        issuers_after = {i.url for i in doc.issuers}
    for spec in doc.issuers:
        have = current.issuers.get(spec.url)
        if have is None:
            changes.append(Change("create", "issuer", spec.url))
        elif why := _issuer_differs(spec, have):
            changes.append(Change("update", "issuer", spec.url, why))

    identities_after = set(current.credentials) - remove.identities | {
        i.name for i in doc.identities
    }
    if prune:
        identities_after = {i.name for i in doc.identities}
    for ident in doc.identities:
        have_creds = current.credentials.get(ident.name)
        if have_creds is None:
            changes.append(Change("create", "identity", ident.name))
            have_creds = {}
        for cred in ident.credentials:
            for url in cred.trusted_issuers:
                if url not in issuers_after:
                    raise InvalidRequest(
                        f"federated credential {cred.name!r} of {ident.name!r}: issuer "
                        f"{url} is not registered and not in the document"
                    )
            label = f"{ident.name}/{cred.name}"
            old = have_creds.get(cred.name)
            if old is None:
                changes.append(Change("create", "federated_credential", label))
            elif why := _credential_differs(cred, old):
                changes.append(Change("update", "federated_credential", label, why))

    vaults_after = set(current.vaults) - remove.vaults | set(doc.vaults)
    if prune:
        vaults_after = set(doc.vaults)
    for name in doc.vaults:
        if name not in current.vaults:
            changes.append(Change("create", "vault", name))

    for identity, role, scope in doc.assignments:
        if identity not in identities_after:
            raise InvalidRequest(
                f"role assignment {role!r} on {scope}: identity {identity!r} does not exist "
                "and is not in the document"
            )
        parts = rbac.parse_scope(scope)
        if parts and parts[0] != rbac.DATABASES and parts[0] not in vaults_after:
            raise InvalidRequest(
                f"role assignment {role!r} on {scope}: vault {parts[0]!r} does not exist "
                "and is not in the document"
            )
        if (identity, role, scope) not in current.assignments:
            changes.append(
                Change("create", "role_assignment", _assignment_label(identity, role, scope))
            )

    if remove:
        return changes + _removals(remove, current)
    if not prune:
        return changes
    wanted_assignments = set(doc.assignments)
    for a in sorted(current.assignments - wanted_assignments):
        changes.append(Change("delete", "role_assignment", _assignment_label(*a)))
    named = {i.name: i for i in doc.identities}
    for ident_name, creds in sorted(current.credentials.items()):
        if ident_name not in named:
            continue
        keep = {c.name for c in named[ident_name].credentials}
        for cred_name in sorted(set(creds) - keep):
            changes.append(Change("delete", "federated_credential", f"{ident_name}/{cred_name}"))
    for ident_name in sorted(set(current.credentials) - set(named)):
        changes.append(Change("delete", "identity", ident_name))
    for name in sorted(set(current.vaults) - set(doc.vaults)):
        held = current.vaults[name]
        if held:
            raise InvalidRequest(
                f"--prune would delete vault {name!r}, which holds {held} secret(s): name it in "
                f"the document, or delete it yourself (`keyless vault delete {name} --force`)"
            )
        changes.append(Change("delete", "vault", name))
    for url in sorted(set(current.issuers) - issuers_after):
        changes.append(Change("delete", "issuer", url))
    return changes


def _removable(doc: Document, current: Current, remove: Removals) -> Removals:
    """What of ``remove`` exists and is not named by the document."""
    named_creds = {(i.name, c.name) for i in doc.identities for c in i.credentials}
    identities = remove.identities & set(current.credentials) - {i.name for i in doc.identities}
    return Removals(
        issuers=remove.issuers & set(current.issuers) - {i.url for i in doc.issuers},
        identities=identities,
        credentials=frozenset(
            (ident, cred)
            for ident, cred in remove.credentials - named_creds
            if ident not in identities and cred in current.credentials.get(ident, {})
        ),
        vaults=remove.vaults & set(current.vaults) - set(doc.vaults),
        assignments=remove.assignments & current.assignments - set(doc.assignments),
    )


def _removals(remove: Removals, current: Current) -> list[Change]:
    """Deletions of exactly what ``remove`` names, in an order in which each can be made
    (an identity's credentials and role assignments go with it, as ``identity delete``)."""
    changes = [
        Change("delete", "role_assignment", _assignment_label(*a))
        for a in sorted(remove.assignments)
        if a[0] not in remove.identities and not _on_vault(a[2], remove.vaults)
    ]
    changes += [
        Change("delete", "federated_credential", f"{ident}/{cred}")
        for ident, cred in sorted(remove.credentials)
    ]
    changes += [Change("delete", "identity", name) for name in sorted(remove.identities)]
    for name in sorted(remove.vaults):
        if held := current.vaults[name]:
            raise InvalidRequest(
                f"vault {name!r} holds {held} secret(s): delete them, or the vault with them "
                f"(`keyless vault delete {name} --force`)"
            )
        changes.append(Change("delete", "vault", name))
    changes += [Change("delete", "issuer", url) for url in sorted(remove.issuers)]
    return changes


def _on_vault(scope: str, vaults: frozenset[str]) -> bool:
    """Whether an assignment's scope is in one of ``vaults`` (it goes with the vault)."""
    parts = rbac.parse_scope(scope)
    return bool(parts) and parts[0] != rbac.DATABASES and parts[0] in vaults


def _assignment_label(identity: str, role: str, scope: str) -> str:
    return f"{identity} {role} {scope}"


# -- doing it ------------------------------------------------------------------------------


class ApplyFailed(KeylessError):
    """A change failed part way: those before it were made (the message says which)."""

    code = "apply_failed"

    def __init__(self, message: str, done: list[Change], cause: KeylessError) -> None:
        super().__init__(message)
        self.done = done
        self.cause = cause


IssuerHook = Callable[[str], Awaitable[None]]


class Reconciler:
    """Reads a tenant's state and makes a document's changes through the core use cases."""

    def __init__(
        self,
        federation: Federation,
        vaults: VaultService,
        roles: RoleAssignments,
        *,
        before_issuer: IssuerHook | None = None,
    ) -> None:
        self._federation = federation
        self._vaults = vaults
        self._roles = roles
        self._before_issuer = before_issuer

    async def current(self, tenant_id: str) -> Current:
        fed = self._federation
        issuers = {r.url: r for r in await fed.issuer_records(tenant_id)}
        identities = await fed.list_identities(tenant_id)
        creds: dict[str, dict[str, CredentialSpec]] = {}
        for ident in identities:
            creds[ident.name] = {
                fc.name: _as_written(fc) for fc in await fed.list_credentials(tenant_id, ident.name)
            }
        vaults = {
            v.name: await self._vaults.count_secrets(tenant_id, v.name)
            for v in await self._vaults.list_vaults(tenant_id)
        }
        names = {i.object_id: i.name for i in identities}
        assignments = {
            (names[a.identity_id], a.role, a.scope)
            for a in await self._roles.list(tenant_id)
            if a.identity_id in names
        }
        return Current(issuers, creds, vaults, assignments)

    async def plan(
        self, tenant_id: str, doc: Document, *, prune: bool, remove: Removals | None = None
    ) -> list[Change]:
        return plan(doc, await self.current(tenant_id), prune=prune, remove=remove)

    async def apply(self, call: Call, doc: Document, *, prune: bool) -> list[Change]:
        """Make the planned changes in order; the first failure stops (ApplyFailed)."""
        tenant_id = call.principal.tenant_id
        changes = await self.plan(tenant_id, doc, prune=prune)
        done: list[Change] = []
        for change in changes:
            try:
                await self.make(call, doc, change)
            except KeylessError as exc:
                made = f"{len(done)} change(s) made before it" if done else "nothing changed"
                raise ApplyFailed(
                    f"{change.action} {change.kind} {change.name}: {exc.message} ({made})",
                    done,
                    exc,
                ) from exc
            done.append(change)
        return done

    async def make(self, call: Call, doc: Document, change: Change) -> None:
        """Make one planned change (``doc`` is the document it was planned from)."""
        tenant_id = call.principal.tenant_id
        fed = self._federation
        kind, action = change.kind, change.action
        if kind == "issuer":
            if action == "delete":
                await fed.remove_issuer(tenant_id, change.name)
                return
            spec = next(i for i in doc.issuers if i.url == change.name)
            if self._before_issuer is not None and spec.jwks is None and not spec.kubernetes_api:
                await self._before_issuer(spec.url)
            await fed.add_issuer(
                tenant_id,
                spec.url,
                spec.jwks,
                kubernetes_api=spec.kubernetes_api,
                allow_unreachable=spec.allow_unreachable,
            )
        elif kind == "identity":
            if action == "delete":
                await fed.delete_identity(tenant_id, change.name)
            else:
                await fed.create_identity(tenant_id, change.name)
        elif kind == "federated_credential":
            ident_name, _, cred_name = change.name.partition("/")
            if action == "delete":
                await fed.remove_credential(tenant_id, ident_name, cred_name)
                return
            ident = next(i for i in doc.identities if i.name == ident_name)
            cred = next(c for c in ident.credentials if c.name == cred_name)
            if action == "create":
                await fed.add_credential(tenant_id, ident_name, **credential_fields(cred))
            else:
                fields = credential_fields(cred)
                del fields["name"]
                await fed.update_credential(
                    tenant_id,
                    ident_name,
                    cred_name,
                    **fields,
                    clear_condition=cred.condition is None,
                )
        elif kind == "vault":
            if action == "delete":
                await self._vaults.delete_vault(call, change.name)
                await self._roles.reload()  # its assignments went with it
            else:
                await self._vaults.create_vault(tenant_id, change.name)
        elif kind == "role_assignment":
            identity, role, scope = _split_assignment(change.name)
            object_id = (await fed.get_identity(tenant_id, identity)).object_id
            if action == "delete":
                await self._roles.remove(tenant_id, object_id, role, scope)
            else:
                await self._roles.assign(tenant_id, object_id, role, scope)


def _as_written(fc: FederatedCredential) -> CredentialSpec:
    """A stored credential as a document writes it: a Google-form one by its Google source
    (its subject form and condition are the translation, not what was written)."""
    google = fc.google is not None
    return CredentialSpec(
        fc.name,
        fc.issuer,
        None if google else fc.subject,
        None if google else fc.subject_pattern,
        fc.audiences,
        None if google else fc.condition,
        fc.issuers,
        fc.google,
    )


def _split_assignment(label: str) -> tuple[str, str, str]:
    identity, _, rest = label.partition(" ")
    role, _, scope = rest.rpartition(" ")
    return identity, role, scope
