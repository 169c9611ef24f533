"""``keyless apply``: a declared state (issuers, identities with their federated credentials,
vaults, role assignments) compared with what a tenant has, and the changes that make them agree.

Three steps, kept apart so that ``--dry-run`` is the same code as the real thing minus the last:
``parse_document`` validates the whole document (one line naming the first problem, by its path
in the document); ``plan`` compares it with the tenant's current state and lists the changes,
creations and updates first, then (with ``prune`` only) deletions of what the document does not
name, in an order in which each one can be made; ``Reconciler.execute`` makes them through the
same use cases the admin commands call, so every rule (names, CEL conditions, issuer probes,
audit) is the commands' own. Nothing the document does not name is ever deleted without
``prune``; a vault that still holds secrets is never pruned.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.core import rbac
from keyless.core.errors import InvalidRequest, KeylessError
from keyless.core.federation import Federation, validate_identity_name
from keyless.core.issuers import IssuerRecord, validate_issuer_url, validate_jwks
from keyless.core.rbac import RoleAssignments
from keyless.core.secrets import validate_vault_name
from keyless.core.trust import DEFAULT_AUDIENCE, new_credential
from keyless.core.vault import Call, VaultService

SECTIONS = ("issuers", "identities", "vaults", "role_assignments")
ISSUER_FIELDS = frozenset({"url", "jwks", "jwks_file", "kubernetes_api", "allow_unreachable"})
IDENTITY_FIELDS = frozenset({"name", "federated_credentials"})
CREDENTIAL_FIELDS = frozenset(
    {"name", "issuer", "subject", "subject_pattern", "audiences", "condition"}
)
VAULT_FIELDS = frozenset({"name"})
ASSIGNMENT_FIELDS = frozenset({"identity", "role", "scope"})


# -- the document --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    url: str
    jwks: dict[str, Any] | None = None
    kubernetes_api: bool = False
    allow_unreachable: bool = False

    @property
    def source(self) -> str:
        if self.jwks is not None:
            return "file"
        return "kubernetes" if self.kubernetes_api else "discovery"


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    name: str
    issuer: str
    subject: str | None
    subject_pattern: str | None
    audiences: tuple[str, ...]
    condition: str | None


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    name: str
    credentials: tuple[CredentialSpec, ...]


@dataclass(frozen=True, slots=True)
class Document:
    issuers: tuple[IssuerSpec, ...] = ()
    identities: tuple[IdentitySpec, ...] = ()
    vaults: tuple[str, ...] = ()
    assignments: tuple[tuple[str, str, str], ...] = ()  # identity, canonical role, scope


def _fields(where: str, item: object, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: expected a mapping of {', '.join(sorted(allowed))}")
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )
    return item


def _list(where: str, value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}: expected a list")
    return value


def _str(where: str, item: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = item.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}.{name}: {'a string' if optional else 'required string'}")
    return value


def _bool(where: str, item: dict[str, Any], name: str) -> bool:
    value = item.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where}.{name}: must be true or false")
    return value


def _unique(where: str, names: Sequence[object]) -> None:
    seen: set[object] = set()
    for name in names:
        if name in seen:
            raise InvalidRequest(f"{where}: {name!r} is named twice")
        seen.add(name)


def parse_document(data: object, *, dev: bool = False) -> Document:
    """The document, validated whole before anything is compared or changed.

    ``jwks_file`` must have been replaced by ``jwks`` (the file is the client's, read next to
    the document by ``keyless apply``)."""
    top = _fields("document", data if data is not None else {}, frozenset(SECTIONS))
    issuers: list[IssuerSpec] = []
    for i, raw in enumerate(_list("issuers", top.get("issuers"))):
        where = f"issuers[{i}]"
        item = _fields(where, raw, ISSUER_FIELDS)
        if "jwks_file" in item:
            raise InvalidRequest(f"{where}.jwks_file: read by `keyless apply`, not sent")
        url = str(_str(where, item, "url"))
        try:
            validate_issuer_url(url, dev=dev)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.url: {exc.message}") from None
        jwks = item.get("jwks")
        kubernetes_api = _bool(where, item, "kubernetes_api")
        if jwks is not None:
            if kubernetes_api:
                raise InvalidRequest(f"{where}: jwks_file or kubernetes_api, not both")
            try:
                jwks = validate_jwks(jwks)
            except (InvalidRequest, ValueError) as exc:
                raise InvalidRequest(f"{where}.jwks_file: {_message(exc)}") from None
        issuers.append(
            IssuerSpec(url, jwks, kubernetes_api, _bool(where, item, "allow_unreachable"))
        )
    _unique("issuers", [i.url for i in issuers])

    identities: list[IdentitySpec] = []
    for i, raw in enumerate(_list("identities", top.get("identities"))):
        where = f"identities[{i}]"
        item = _fields(where, raw, IDENTITY_FIELDS)
        name = str(_str(where, item, "name"))
        _checked(f"{where}.name", validate_identity_name, name)
        creds = []
        for j, craw in enumerate(
            _list(f"{where}.federated_credentials", item.get("federated_credentials"))
        ):
            cwhere = f"{where}.federated_credentials[{j}]"
            creds.append(_credential(cwhere, _fields(cwhere, craw, CREDENTIAL_FIELDS)))
        _unique(f"{where}.federated_credentials", [c.name for c in creds])
        identities.append(IdentitySpec(name, tuple(creds)))
    _unique("identities", [i.name for i in identities])

    vaults: list[str] = []
    for i, raw in enumerate(_list("vaults", top.get("vaults"))):
        where = f"vaults[{i}]"
        name = str(_str(where, _fields(where, raw, VAULT_FIELDS), "name"))
        vaults.append(_checked(f"{where}.name", validate_vault_name, name))
    _unique("vaults", vaults)

    assignments: list[tuple[str, str, str]] = []
    for i, raw in enumerate(_list("role_assignments", top.get("role_assignments"))):
        where = f"role_assignments[{i}]"
        item = _fields(where, raw, ASSIGNMENT_FIELDS)
        identity = str(_str(where, item, "identity"))
        role = _checked(
            f"{where}.role", lambda r: rbac.role(r).name, str(_str(where, item, "role"))
        )
        scope = _checked(
            f"{where}.scope",
            lambda s: rbac.format_scope(rbac.parse_scope(s)),
            str(_str(where, item, "scope")),
        )
        assignments.append((identity, role, scope))
    _unique("role_assignments", assignments)
    return Document(tuple(issuers), tuple(identities), tuple(vaults), tuple(assignments))


def _credential(where: str, item: dict[str, Any]) -> CredentialSpec:
    audiences = item.get("audiences")
    if audiences is None:
        audiences = [DEFAULT_AUDIENCE]
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidRequest(f"{where}.audiences: a list of strings")
    spec = CredentialSpec(
        name=str(_str(where, item, "name")),
        issuer=str(_str(where, item, "issuer")),
        subject=_str(where, item, "subject", optional=True),
        subject_pattern=_str(where, item, "subject_pattern", optional=True),
        audiences=tuple(audiences),
        condition=_str(where, item, "condition", optional=True),
    )
    try:  # the same checks `federation add` makes (CEL compiles, one subject form, ...)
        new_credential(id="-", identity_id="-", **_credential_fields(spec))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None
    return spec


def _credential_fields(spec: CredentialSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "issuer": spec.issuer,
        "subject": spec.subject,
        "subject_pattern": spec.subject_pattern,
        "audiences": spec.audiences,
        "condition": spec.condition,
    }


def _checked(where: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, KeylessError) else str(exc)


# -- the current state and the plan --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Current:
    """What the tenant has, in the document's terms."""

    issuers: dict[str, IssuerRecord]
    credentials: dict[str, dict[str, CredentialSpec]]  # identity name -> credential name -> spec
    vaults: dict[str, int]  # name -> secrets it holds
    assignments: set[tuple[str, str, str]]  # identity name, canonical role, scope


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
    fields = ("issuer", "subject", "subject_pattern", "audiences", "condition")
    changed = [f for f in fields if getattr(want, f) != getattr(have, f)]
    return ", ".join(changed)


def plan(doc: Document, current: Current, *, prune: bool) -> list[Change]:
    """The changes, in the order they can be made: creations and updates (issuers,
    identities, credentials, vaults, roles), then with ``prune`` deletions (roles,
    credentials, identities, vaults, issuers). Refuses (one line) a document whose references
    cannot hold: a credential's issuer, an assignment's identity or vault that will not exist.
    """
    changes: list[Change] = []
    issuers_after = set(current.issuers) | {i.url for i in doc.issuers}
    if prune:
        issuers_after = {i.url for i in doc.issuers}
    for spec in doc.issuers:
        have = current.issuers.get(spec.url)
        if have is None:
            changes.append(Change("create", "issuer", spec.url))
        elif why := _issuer_differs(spec, have):
            changes.append(Change("update", "issuer", spec.url, why))

    identities_after = set(current.credentials) | {i.name for i in doc.identities}
    if prune:
        identities_after = {i.name for i in doc.identities}
    for ident in doc.identities:
        have_creds = current.credentials.get(ident.name)
        if have_creds is None:
            changes.append(Change("create", "identity", ident.name))
            have_creds = {}
        for cred in ident.credentials:
            if cred.issuer not in issuers_after:
                raise InvalidRequest(
                    f"federated credential {cred.name!r} of {ident.name!r}: issuer "
                    f"{cred.issuer} is not registered and not in the document"
                )
            label = f"{ident.name}/{cred.name}"
            old = have_creds.get(cred.name)
            if old is None:
                changes.append(Change("create", "federated_credential", label))
            elif why := _credential_differs(cred, old):
                changes.append(Change("update", "federated_credential", label, why))

    vaults_after = set(current.vaults) | set(doc.vaults)
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
        if parts and parts[0] not in vaults_after:
            raise InvalidRequest(
                f"role assignment {role!r} on {scope}: vault {parts[0]!r} does not exist "
                "and is not in the document"
            )
        if (identity, role, scope) not in current.assignments:
            changes.append(
                Change("create", "role_assignment", _assignment_label(identity, role, scope))
            )

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
                fc.name: CredentialSpec(
                    fc.name, fc.issuer, fc.subject, fc.subject_pattern, fc.audiences, fc.condition
                )
                for fc in await fed.list_credentials(tenant_id, ident.name)
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

    async def plan(self, tenant_id: str, doc: Document, *, prune: bool) -> list[Change]:
        return plan(doc, await self.current(tenant_id), prune=prune)

    async def apply(self, call: Call, doc: Document, *, prune: bool) -> list[Change]:
        """Make the planned changes in order; the first failure stops (ApplyFailed)."""
        tenant_id = call.principal.tenant_id
        changes = await self.plan(tenant_id, doc, prune=prune)
        done: list[Change] = []
        for change in changes:
            try:
                await self._make(call, doc, change)
            except KeylessError as exc:
                made = f"{len(done)} change(s) made before it" if done else "nothing changed"
                raise ApplyFailed(
                    f"{change.action} {change.kind} {change.name}: {exc.message} ({made})",
                    done,
                    exc,
                ) from exc
            done.append(change)
        return done

    async def _make(self, call: Call, doc: Document, change: Change) -> None:
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
                await fed.add_credential(tenant_id, ident_name, **_credential_fields(cred))
            else:
                await fed.update_credential(
                    tenant_id,
                    ident_name,
                    cred_name,
                    issuer=cred.issuer,
                    subject=cred.subject,
                    subject_pattern=cred.subject_pattern,
                    audiences=cred.audiences,
                    condition=cred.condition,
                    clear_condition=cred.condition is None,
                )
        elif kind == "vault":
            if action == "delete":
                await self._vaults.delete_vault(call, change.name)
            else:
                await self._vaults.create_vault(tenant_id, change.name)
        elif kind == "role_assignment":
            identity, role, scope = _split_assignment(change.name)
            object_id = (await fed.get_identity(tenant_id, identity)).object_id
            if action == "delete":
                await self._roles.remove(tenant_id, object_id, role, scope)
            else:
                await self._roles.assign(tenant_id, object_id, role, scope)


def _split_assignment(label: str) -> tuple[str, str, str]:
    identity, _, rest = label.partition(" ")
    role, _, scope = rest.rpartition(" ")
    return identity, role, scope
