"""The database secrets engine's use cases: register databases and roles, issue credentials
as leases, renew and revoke them, reap expired ones, rotate the admin password.

Every issue, renew and revoke (the reaper's too) is one audit event naming the workload that
got the lease; a password (the issued one or the admin's) is never in an event, a log line or
an error. Revocation happens exactly once whatever the number of replicas: a revoker first
claims the lease's row with a compare-and-set (``DatabaseStore.claim_lease``), and a claim
left by a process that died runs out after ``claim_seconds`` so another takes it over.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from keyless.core import dbnames, rbac
from keyless.core.access import IdentityDirectory, Principal
from keyless.core.audit import AuditEvent, AuditSink
from keyless.core.clock import Clock
from keyless.core.databases import (
    ACTIVE,
    REVOKED,
    Database,
    DbRole,
    Lease,
    Part,
    creation_parts,
    expiration,
    new_role,
    parse_url,
    revocation_parts,
)
from keyless.core.envelope import RootKeys
from keyless.core.errors import Forbidden, InvalidRequest, KeylessError, NotFound, Unavailable
from keyless.core.vault import Call

MAX_BACKOFF = 300.0
KEEP_REVOKED = 7 * 86400.0  # seconds a revoked lease stays listed (``lease list --all``)


class TemplateFailed(InvalidRequest):
    """A role's SQL template failed in the database (nothing it made is left behind)."""

    code = "database_template"


class DatabaseUnreachable(Unavailable):
    code = "database_unreachable"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the driver connects, as the admin. ``repr`` hides the password."""

    host: str
    port: int
    dbname: str
    user: str
    password: str
    sslmode: str

    def __repr__(self) -> str:
        return f"Target({self.user}@{self.host}:{self.port}/{self.dbname})"


class Driver(Protocol):
    """The registered database, reached as its admin (``store/dbtarget.py``). Failures are
    ``TemplateFailed`` or ``DatabaseUnreachable``, one line, no value in them."""

    async def ping(self, target: Target) -> None: ...
    async def create(self, target: Target, parts: list[Part], username: str) -> None:
        """Run the creation statements in one transaction; on failure nothing is left (the
        role is dropped if it exists)."""
        ...

    async def revoke(self, target: Target, parts: list[Part], username: str) -> None:
        """Run the revocation statements unless the role is already gone (idempotent)."""
        ...

    async def renew(self, target: Target, username: str, valid_until: str) -> None: ...
    async def set_password(self, target: Target, password: str) -> None:
        """The admin's own password (``rotate-root``)."""
        ...


class DatabaseStore(Protocol):
    async def put_database(self, db: Database, sealed: bytes) -> Database: ...
    async def get_database(self, tenant_id: str, name: str) -> tuple[Database, bytes] | None: ...
    async def list_databases(self, tenant_id: str) -> list[Database]: ...
    async def set_database_password(self, tenant_id: str, name: str, sealed: bytes) -> None: ...
    async def put_db_role(self, role: DbRole) -> DbRole: ...
    async def get_db_role(self, tenant_id: str, database: str, name: str) -> DbRole | None: ...
    async def list_db_roles(self, tenant_id: str, database: str) -> list[DbRole]: ...
    async def insert_lease(self, lease: Lease) -> None: ...
    async def delete_lease(self, suffix: str) -> None: ...
    async def get_lease(self, suffix: str) -> Lease | None: ...
    async def list_leases(self, tenant_id: str, *, include_revoked: bool) -> list[Lease]: ...
    async def extend_lease(self, suffix: str, expires_at: float, now: float) -> bool: ...
    async def due_leases(self, now: float, limit: int) -> list[Lease]: ...
    async def claim_lease(
        self, suffix: str, claimer: str, now: float, until: float, *, due_only: bool
    ) -> bool:
        """Atomically mark the lease ``revoking`` by ``claimer`` until ``until`` if it is
        active (and expired, with ``due_only``) or its revoker's claim or retry time passed."""
        ...

    async def finish_lease(self, suffix: str, claimer: str, now: float) -> bool: ...
    async def retry_lease(self, suffix: str, claimer: str, at: float, attempts: int) -> None: ...
    async def forget_revoked_leases(self, before: float) -> int: ...


@dataclass(frozen=True, slots=True)
class Credentials:
    lease: Lease
    password: str
    database: Database

    def __repr__(self) -> str:
        return f"Credentials({self.lease.lease_id})"


class DatabaseEngine:
    def __init__(
        self,
        store: DatabaseStore,
        driver: Driver,
        rbac_index: Callable[[], rbac.RbacIndex],
        audit: AuditSink,
        clock: Clock,
        root: Callable[[], RootKeys],
        *,
        identities: IdentityDirectory | None = None,
        random: Callable[[int], bytes] = os.urandom,
        claim_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._driver = driver
        self._rbac = rbac_index
        self._audit = audit
        self._clock = clock
        self._root = root
        self._identities = identities
        self._random = random
        self.claim_seconds = claim_seconds
        self.node = random(8).hex()  # this process, as a revoker

    # -- registration (the admin socket) ----------------------------------------------------

    async def add_database(
        self, tenant_id: str, name: str, url: str, password: str | None
    ) -> Database:
        """Register (idempotent for the same URL); the connection is tried first, so an
        unreachable database or a wrong password registers nothing."""
        dbnames.check_name("database", name)
        parsed = parse_url(url)
        secret = password if password is not None else (parsed.password or "")
        db = Database(
            tenant_id,
            name,
            parsed.host,
            parsed.port,
            parsed.dbname,
            parsed.user,
            parsed.sslmode,
            self._clock.now(),
        )
        await self._driver.ping(self._target(db, secret))
        existing = await self._store.get_database(tenant_id, name)
        if existing is not None and existing[0].url == db.url:
            await self._store.set_database_password(tenant_id, name, self._seal(db, secret))
            return existing[0]
        return await self._store.put_database(db, self._seal(db, secret))

    async def list_databases(self, tenant_id: str) -> list[Database]:
        return await self._store.list_databases(tenant_id)

    async def rotate_root(self, call: Call, name: str) -> Database:
        """A new random admin password, set in the database, then sealed in the store."""
        db, target = await self._database(call.principal.tenant_id, name)
        password = self._password()
        await self._driver.set_password(target, password)
        await self._store.set_database_password(db.tenant_id, db.name, self._seal(db, password))
        await self._record(
            call.principal,
            call.request_id,
            "database.rotate-root",
            f"/databases/{name}",
            "success",
            "admin password rotated",
        )
        return db

    async def add_role(
        self,
        tenant_id: str,
        database: str,
        name: str,
        *,
        grants: list[str],
        creation_sql: str | None,
        revocation_sql: str | None,
        ttl: int | None,
        max_ttl: int | None,
    ) -> DbRole:
        if await self._store.get_database(tenant_id, database) is None:
            raise NotFound(f"database {database!r} is not registered")
        role = new_role(
            tenant_id,
            database,
            name,
            grants=grants,
            creation_sql=creation_sql,
            revocation_sql=revocation_sql,
            ttl=ttl,
            max_ttl=max_ttl,
            now=self._clock.now(),
        )
        return await self._store.put_db_role(role)

    async def list_roles(self, tenant_id: str, database: str) -> list[DbRole]:
        if await self._store.get_database(tenant_id, database) is None:
            raise NotFound(f"database {database!r} is not registered")
        return await self._store.list_db_roles(tenant_id, database)

    async def list_leases(self, tenant_id: str, *, include_revoked: bool = False) -> list[Lease]:
        return await self._store.list_leases(tenant_id, include_revoked=include_revoked)

    # -- leases ---------------------------------------------------------------------------

    async def issue(self, call: Call, database: str, role_name: str) -> Credentials:
        p = call.principal
        scope = dbnames.scope(database, role_name)
        await self._authorize(call, database, role_name, "database.creds")
        db, target = await self._database(p.tenant_id, database)
        role = await self._store.get_db_role(p.tenant_id, database, role_name)
        if role is None:
            raise NotFound(f"database {database!r} has no role {role_name!r}")
        now = self._clock.now()
        suffix = self._suffix()
        username = dbnames.username(self._caller_name(p), role_name, self._user_random())
        password = self._password()
        lease = Lease(
            suffix,
            p.tenant_id,
            database,
            role_name,
            username,
            p.object_id,
            dict(p.fed),
            now,
            min(now + role.ttl, now + role.max_ttl),
            now + role.max_ttl,
        )
        # The lease row first: a process that dies after CREATE ROLE still leaves a lease
        # that the reaper revokes at its expiry, never an orphan role.
        await self._store.insert_lease(lease)
        values = {
            "name": username,
            "password": password,
            "expiration": expiration(lease.expires_at),
        }
        try:
            await self._driver.create(target, creation_parts(role, values), username)
        except KeylessError as exc:
            await self._store.delete_lease(suffix)
            await self._record(
                p, call.request_id, "database.creds", scope, "failure", f"{exc.code}: {exc.message}"
            )
            raise
        await self._record(
            p,
            call.request_id,
            "database.creds",
            scope,
            "success",
            f"issued {lease.lease_id} as {username}",
        )
        return Credentials(lease, password, db)

    async def lookup(self, call: Call, lease_id: str) -> Lease:
        return await self._owned(call, lease_id)

    async def renew(self, call: Call, lease_id: str, increment: int | None) -> Lease:
        """Extend the lease (and the role's ``VALID UNTIL``) by ``increment`` seconds from now
        (the role's TTL when 0 or absent), never past its maximum."""
        lease = await self._owned(call, lease_id)
        scope = dbnames.scope(lease.database, lease.role)
        now = self._clock.now()
        if lease.state != ACTIVE or lease.expires_at <= now:
            raise InvalidRequest("lease not found or lease is not renewable (expired or revoked)")
        role = await self._store.get_db_role(lease.tenant_id, lease.database, lease.role)
        ttl = increment if increment else (role.ttl if role else lease.expires_at - lease.issued_at)
        until = min(now + ttl, lease.max_expires_at)
        _, target = await self._database(lease.tenant_id, lease.database)
        try:
            await self._driver.renew(target, lease.username, expiration(until))
            if not await self._store.extend_lease(lease.suffix, until, now):
                raise InvalidRequest("lease not found or lease is not renewable (revoked)")
        except KeylessError as exc:
            await self._record(
                call.principal,
                call.request_id,
                "database.renew",
                scope,
                "failure",
                f"{lease.lease_id}: {exc.code}: {exc.message}",
                lease.workload,
            )
            raise
        await self._record(
            call.principal,
            call.request_id,
            "database.renew",
            scope,
            "success",
            f"{lease.lease_id} valid until {expiration(until)}",
            lease.workload,
        )
        return replace(lease, expires_at=until)

    async def revoke(self, call: Call, lease_id: str) -> bool:
        """Revoke now (idempotent: an unknown or revoked lease is done). False when another
        revoker holds the lease (it will finish); Unavailable when the database cannot be
        reached (the lease stays claimed and is retried by the reaper)."""
        try:
            lease = await self._owned(call, lease_id)
        except NotFound:
            return True
        if lease.state == REVOKED:
            return True
        now = self._clock.now()
        if not await self._store.claim_lease(
            lease.suffix, self.node, now, now + self.claim_seconds, due_only=False
        ):
            return False
        await self._revoke_claimed(lease, call.principal, call.request_id, "revoked on request")
        return True

    async def reap(self, limit: int = 50) -> int:
        """Revoke the leases that expired (or whose revocation is due for a retry); each is
        claimed first, so of several replicas reaping at once exactly one revokes it."""
        now = self._clock.now()
        done = 0
        for lease in await self._store.due_leases(now, limit):
            if not await self._store.claim_lease(
                lease.suffix, self.node, now, now + self.claim_seconds, due_only=True
            ):
                continue
            try:
                await self._revoke_claimed(lease, None, None, "expired; revoked by the reaper")
                done += 1
            except KeylessError:
                continue  # recorded, and retried after its back-off
        await self._store.forget_revoked_leases(now - KEEP_REVOKED)
        return done

    async def _revoke_claimed(
        self, lease: Lease, principal: Principal | None, request_id: str | None, why: str
    ) -> None:
        scope = dbnames.scope(lease.database, lease.role)
        action = "database.revoke"
        try:
            found = await self._store.get_database(lease.tenant_id, lease.database)
            role = await self._store.get_db_role(lease.tenant_id, lease.database, lease.role)
            if found is not None and role is not None:
                db, sealed = found
                target = self._target(db, self._open(db, sealed))
                await self._driver.revoke(
                    target, revocation_parts(role, lease.username), lease.username
                )
        except KeylessError as exc:
            attempts = lease.attempts + 1
            backoff = min(MAX_BACKOFF, 2.0**attempts)
            await self._store.retry_lease(
                lease.suffix, self.node, self._clock.now() + backoff, attempts
            )
            await self._record_lease(
                lease,
                principal,
                request_id,
                action,
                scope,
                "failure",
                f"{lease.lease_id}: {exc.code}: {exc.message}; retried in {backoff:.0f}s",
            )
            raise
        if await self._store.finish_lease(lease.suffix, self.node, self._clock.now()):
            await self._record_lease(
                lease,
                principal,
                request_id,
                action,
                scope,
                "success",
                f"{lease.lease_id} ({lease.username}) {why}",
            )

    # -- plumbing -------------------------------------------------------------------------

    async def _authorize(self, call: Call, database: str, role: str, action: str) -> None:
        p = call.principal
        target = rbac.database_target(database, role)
        if p.admin or self._rbac().allowed(p.tenant_id, p.object_id, rbac.DATABASE_CREDS, target):
            return
        scope = dbnames.scope(database, role)
        await self._record(
            p,
            call.request_id,
            action,
            scope,
            "failure",
            f"denied: no role assignment grants {rbac.DATABASE_CREDS} on {scope}",
        )
        identity = self._identities.identity_by_object(p.object_id) if self._identities else None
        who = identity.name if identity is not None else p.object_id
        raise Forbidden(
            f"identity {who!r} may not get credentials for {database}/{role}; the role "
            f"'Database Credentials User' would allow it: keyless role assign {who} "
            f"database-user --scope {scope}"
        )

    async def _owned(self, call: Call, lease_id: str) -> Lease:
        """The lease, if the caller got it, may get credentials for its role, or is admin."""
        database, role, suffix = dbnames.parse_lease_id(lease_id)
        lease = await self._store.get_lease(suffix)
        p = call.principal
        if (
            lease is None
            or lease.tenant_id != p.tenant_id
            or (lease.database, lease.role)
            != (
                database,
                role,
            )
        ):
            raise NotFound("lease not found")
        if lease.actor != p.object_id:
            await self._authorize(call, database, role, "database.lease")
        return lease

    async def _database(self, tenant_id: str, name: str) -> tuple[Database, Target]:
        found = await self._store.get_database(tenant_id, name)
        if found is None:
            raise NotFound(f"database {name!r} is not registered")
        db, sealed = found
        return db, self._target(db, self._open(db, sealed))

    def _caller_name(self, p: Principal) -> str:
        if p.admin:
            return "admin"
        identity = self._identities.identity_by_object(p.object_id) if self._identities else None
        return identity.name if identity is not None else "id"

    def _target(self, db: Database, password: str) -> Target:
        return Target(db.host, db.port, db.dbname, db.admin_user, password, db.sslmode)

    def _seal(self, db: Database, password: str) -> bytes:
        return self._root().seal(password.encode(), db.seal_context())

    def _open(self, db: Database, sealed: bytes) -> str:
        return self._root().open(sealed, db.seal_context()).decode()

    def _password(self) -> str:
        """32 random bytes (256 bits), URL-safe base64: no quote, no backslash."""
        return "A1-" + base64.urlsafe_b64encode(self._random(32)).rstrip(b"=").decode()

    def _suffix(self) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return "".join(alphabet[b % 62] for b in self._random(24))

    def _user_random(self) -> str:
        return base64.b32encode(self._random(15)).decode().lower()[:20]

    async def _record(
        self,
        principal: Principal,
        request_id: str | None,
        action: str,
        target: str,
        result: str,
        reason: str,
        workload: dict[str, Any] | None = None,
    ) -> None:
        await self._event(
            principal.tenant_id,
            principal.object_id,
            dict(principal.fed) or dict(workload or {}),
            request_id,
            (action, target, result, reason),
        )

    async def _record_lease(
        self,
        lease: Lease,
        principal: Principal | None,
        request_id: str | None,
        action: str,
        target: str,
        result: str,
        reason: str,
    ) -> None:
        """An event about a lease: the workload is the one that got it (the reaper has no
        caller of its own)."""
        actor = principal.object_id if principal is not None else lease.actor
        await self._event(
            lease.tenant_id,
            actor,
            dict(lease.workload),
            request_id,
            (action, target, result, reason),
        )

    async def _event(
        self,
        tenant_id: str,
        actor: str | None,
        workload: dict[str, Any],
        request_id: str | None,
        what: tuple[str, str, str, str],
    ) -> None:
        """One audit event: ``what`` is (action, target, result, reason)."""
        action, target, result, reason = what
        await self._audit.record(
            AuditEvent(
                time=self._clock.now(),
                request_id=request_id,
                tenant_id=tenant_id,
                action=action,
                target=target,
                result=result,
                reason=reason,
                actor=actor,
                workload=workload,
            )
        )
