"""Role-based access: four built-in roles, scopes that cover everything below them, deny by
default. Decisions are served from an in-memory index rebuilt when assignments change.

The docs' role table is generated from ``ROLES`` (``keyless role list-roles``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from keyless.core.clock import Clock
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.secrets import NAME

GET_VALUE = "secrets/getSecret"
READ_METADATA = "secrets/readMetadata"
SET = "secrets/setSecret"
UPDATE = "secrets/update"
DELETE = "secrets/delete"
RECOVER = "secrets/recover"
PURGE = "secrets/purge"
BACKUP = "secrets/backup"
RESTORE = "secrets/restore"
ASSIGN_ROLES = "roleAssignments/write"
# Get credentials for a database role (docs/databases.md), at /databases/D/roles/R.
DATABASE_CREDS = "databases/getCredentials"
# The first scope part of a database scope: never a vault name (those hold no '/').
DATABASES = "/databases"

SECRET_ACTIONS = frozenset(
    {GET_VALUE, READ_METADATA, SET, UPDATE, DELETE, RECOVER, PURGE, BACKUP, RESTORE}
)


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    alias: str
    actions: frozenset[str]
    description: str


ROLES: tuple[Role, ...] = (
    Role(
        "Key Vault Secrets User",
        "secrets-user",
        frozenset({GET_VALUE, READ_METADATA}),
        "read secret values (and their metadata)",
    ),
    Role(
        "Key Vault Reader",
        "reader",
        frozenset({READ_METADATA}),
        "list secrets and read their metadata, never their values",
    ),
    Role(
        "Key Vault Secrets Officer",
        "secrets-officer",
        SECRET_ACTIONS | {DATABASE_CREDS},
        "every secret operation, purge included (and database credentials)",
    ),
    Role(
        "Key Vault Administrator",
        "administrator",
        SECRET_ACTIONS | {ASSIGN_ROLES, DATABASE_CREDS},
        "every operation, including role assignments on its scope",
    ),
    Role(
        "Database Credentials User",
        "database-user",
        frozenset({DATABASE_CREDS}),
        "get (renew, revoke) dynamic credentials for a database role",
    ),
)
_BY_NAME = {r.name.lower(): r for r in ROLES} | {r.alias: r for r in ROLES}

_SEGMENT = r"[0-9a-zA-Z-]{1,127}"
# A secret's name may hold '/' (a Vault KV path): the rest of the scope is the name.
_SCOPE = re.compile(rf"/(?:vaults/({_SEGMENT})(?:/secrets/([0-9a-zA-Z_./-]{{1,127}}))?)?")
_DB_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
_DB_SCOPE = re.compile(rf"/databases(?:/({_DB_NAME})(?:/roles/({_DB_NAME}))?)?")


def database_target(database: str, role: str) -> tuple[str, ...]:
    """The scope parts of ``/databases/D/roles/R``."""
    return (DATABASES, database, role)


def role(name: str) -> Role:
    found = _BY_NAME.get(name.strip().lower())
    if found is None:
        known = ", ".join(f"{r.name} ({r.alias})" for r in ROLES)
        raise InvalidRequest(f"unknown role {name!r}; built-in roles: {known}")
    return found


def narrowest_role(action: str) -> Role | None:
    """The built-in role allowing ``action`` with the fewest other actions (least privilege)."""
    allowing = [r for r in ROLES if action in r.actions]
    return min(allowing, key=lambda r: len(r.actions)) if allowing else None


def parse_scope(scope: str) -> tuple[str, ...]:
    """``/`` -> (), ``/vaults/V`` -> ("V",), ``/vaults/V/secrets/S`` -> ("V", "S");
    ``/databases[/D[/roles/R]]`` -> ("/databases"[, D[, R]])."""
    db = _DB_SCOPE.fullmatch(scope)
    if db:
        return (DATABASES, *(part for part in db.groups() if part is not None))
    match = _SCOPE.fullmatch(scope)
    if not match or (match.group(2) is not None and not NAME.fullmatch(match.group(2))):
        raise InvalidRequest(
            f"scope {scope!r} is not /, /vaults/VAULT, /vaults/VAULT/secrets/SECRET or "
            "/databases/DATABASE/roles/ROLE"
        )
    return tuple(
        part.lower() if i == 0 else part
        for i, part in enumerate(match.groups())
        if part is not None
    )


def format_scope(parts: tuple[str, ...]) -> str:
    if not parts:
        return "/"
    if parts[0] == DATABASES:
        return DATABASES + "".join(
            f"/{p}" if i == 0 else f"/roles/{p}" for i, p in enumerate(parts[1:])
        )
    return f"/vaults/{parts[0]}" + (f"/secrets/{parts[1]}" if len(parts) > 1 else "")


def enclosing_scopes(scope: str) -> frozenset[str]:
    """``scope`` and every scope that holds it: a role assigned on any of them reaches it
    (``/vaults/V/secrets/S`` -> itself, ``/vaults/V`` and ``/``)."""
    parts = parse_scope(scope)
    return frozenset(format_scope(parts[:n]) for n in range(len(parts) + 1))


@dataclass(frozen=True, slots=True)
class Assignment:
    tenant_id: str
    identity_id: str
    role: str  # canonical role name
    scope: str  # canonical scope

    @property
    def parts(self) -> tuple[str, ...]:
        return parse_scope(self.scope)


class RbacIndex:
    """identity -> [(scope parts, actions)]; a lookup is a dict get and a short scan."""

    def __init__(self, assignments: Iterable[Assignment] = ()) -> None:
        self._grants: dict[tuple[str, str], list[tuple[tuple[str, ...], frozenset[str]]]] = {}
        self._named: dict[tuple[str, str], list[tuple[tuple[str, ...], frozenset[str], str]]] = {}
        for a in assignments:
            r = role(a.role)
            self._grants.setdefault((a.tenant_id, a.identity_id), []).append((a.parts, r.actions))
            self._named.setdefault((a.tenant_id, a.identity_id), []).append(
                (a.parts, r.actions, r.name)
            )

    def allowed(
        self, tenant_id: str, identity_id: str, action: str, target: tuple[str, ...]
    ) -> bool:
        """True if an assignment on ``target`` or any scope above it grants ``action``."""
        for parts, actions in self._grants.get((tenant_id, identity_id), ()):
            if action in actions and target[: len(parts)] == parts:
                return True
        return False

    def reach(self, tenant_id: str, identity_id: str) -> tuple[bool, frozenset[str]]:
        """Where the identity holds any role: (on the whole tenant, the vaults named in its
        scopes). What the Vault dialect's mount listing shows it, as Vault lists the mounts
        a token's policies reach."""
        grants = self._grants.get((tenant_id, identity_id), ())
        return (
            any(not parts for parts, _ in grants),
            frozenset(parts[0] for parts, _ in grants if parts and parts[0] != DATABASES),
        )

    def granting(
        self, tenant_id: str, identity_id: str, action: str, target: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        """The (role, scope) assignments that grant ``action`` on ``target`` (``explain``)."""
        return [
            (name, format_scope(parts))
            for parts, actions, name in self._named.get((tenant_id, identity_id), ())
            if action in actions and target[: len(parts)] == parts
        ]


def explain_read(
    index: RbacIndex, tenant_id: str, identity_id: str, target: tuple[str, ...]
) -> dict[str, object]:
    """Whether the identity may read the value of ``target`` (a vault: any secret in it), the
    assignments that allow it, or else the narrowest role that would (``keyless explain``)."""
    grants = index.granting(tenant_id, identity_id, GET_VALUE, target)
    view: dict[str, object] = {
        "action": GET_VALUE,
        "resource": format_scope(target),
        "allowed": bool(grants),
        "granted_by": [{"role": r, "scope": s} for r, s in grants],
    }
    if not grants:
        needed = narrowest_role(GET_VALUE)
        assert needed is not None
        view["would_allow"] = {
            "role": needed.name,
            "alias": needed.alias,
            "scope": format_scope(target[:1]),
        }
    return view


class RoleStore(Protocol):
    async def add_role_assignment(self, a: Assignment, now: float) -> bool: ...
    async def remove_role_assignment(self, a: Assignment) -> bool: ...
    async def list_role_assignments(self, tenant_id: str | None = None) -> list[Assignment]: ...
    async def get_revision(self, name: str) -> int: ...


class RoleAssignments:
    """Assignments in the store, served from an ``RbacIndex`` rebuilt on every change."""

    def __init__(self, store: RoleStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self.index = RbacIndex()
        self.revision = -1

    async def reload(self) -> None:
        revision = await self._store.get_revision("rbac")
        self.index = RbacIndex(await self._store.list_role_assignments())
        self.revision = revision

    async def reload_if_changed(self) -> bool:
        if await self._store.get_revision("rbac") != self.revision:
            await self.reload()
            return True
        return False

    async def assign(
        self, tenant_id: str, identity_id: str, role_name: str, scope: str
    ) -> Assignment:
        a = Assignment(
            tenant_id, identity_id, role(role_name).name, format_scope(parse_scope(scope))
        )
        await self._store.add_role_assignment(a, self._clock.now())
        await self.reload()
        return a

    async def remove(self, tenant_id: str, identity_id: str, role_name: str, scope: str) -> None:
        a = Assignment(
            tenant_id, identity_id, role(role_name).name, format_scope(parse_scope(scope))
        )
        if not await self._store.remove_role_assignment(a):
            raise NotFound(f"no assignment of {a.role!r} on {a.scope} to that identity")
        await self.reload()

    async def list(self, tenant_id: str) -> list[Assignment]:
        return await self._store.list_role_assignments(tenant_id)
