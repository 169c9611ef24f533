"""The vault: versioned, encrypted secrets under role-based access, every decision audited.

Each use case takes the calling ``Principal`` and the request id: it checks the role on the
narrowest scope, does the work, and records one audit event (allowed or denied, with the
workload from the access token's ``fed`` claim). Values are sealed with a fresh data key under
the root key before they reach the store and never appear in events or errors.
"""

from __future__ import annotations

import secrets as random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from keyless.core import rbac
from keyless.core.access import IdentityDirectory, Principal
from keyless.core.audit import AuditEvent, AuditSink
from keyless.core.backup import (
    backup_doc,
    decode_backup,
    open_backup,
    restored_versions,
    seal_backup,
)
from keyless.core.clock import Clock
from keyless.core.envelope import RootKeys
from keyless.core.errors import (
    Conflict,
    Forbidden,
    KeylessError,
    NotFound,
)
from keyless.core.ports import VaultStore
from keyless.core.secretcache import SecretCache
from keyless.core.secrets import (
    PropertyChanges,
    Secret,
    SecretState,
    SecretVersion,
    Vault,
    validate_secret_name,
    validate_value,
    validate_vault_name,
    validate_version,
)

T = TypeVar("T")
# Actions that change the store: audited before the change as well as after it.
CHANGES = frozenset({rbac.SET, rbac.UPDATE, rbac.DELETE, rbac.RECOVER, rbac.PURGE, rbac.RESTORE})


class SecretNotFound(NotFound):
    code = "secret_not_found"


class SecretUnavailable(Forbidden):
    """The version exists but is disabled, destroyed, expired or not yet valid."""

    code = "secret_unavailable"

    def __init__(self, message: str, props: SecretVersion, *, inner: str) -> None:
        super().__init__(message, detail={"inner": inner})
        self.props = props  # the version's properties (Vault shows them with no data)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Secret]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class Call:
    """Who asks, for which request: what every use case needs for RBAC and audit."""

    principal: Principal
    request_id: str | None = None


def not_found(name: str) -> SecretNotFound:
    return SecretNotFound(f"A secret with (name/id) {name} was not found in this key vault.")


class VaultService:
    def __init__(
        self,
        store: VaultStore,
        rbac_index: Callable[[], rbac.RbacIndex],
        audit: AuditSink,
        clock: Clock,
        root: Callable[[], RootKeys],
        *,
        recovery_days: int = 90,
        cache: SecretCache | None = None,
        identities: IdentityDirectory | None = None,
    ) -> None:
        self._store = store
        self._rbac = rbac_index
        self._audit = audit
        self._clock = clock
        self._root = root
        self.recovery_days = recovery_days
        self._vaults: dict[str, Vault] = {}
        self._cache = cache if cache is not None else SecretCache(32 << 20)
        self._identities = identities  # names the caller in a refusal

    # -- plumbing --------------------------------------------------------------------------

    async def _vault(self, call: Call, name: str) -> Vault:
        vault = await self.lookup(name)
        if vault is None or vault.tenant_id != call.principal.tenant_id:
            raise NotFound(f"vault {name!r} not found")
        return vault

    async def _decide(
        self,
        call: Call,
        action: str,
        vault: str,
        secret: str | None,
        work: Callable[[], Awaitable[T]],
    ) -> T:
        p = call.principal
        target = (vault,) if secret is None else (vault, secret)
        where = rbac.format_scope(target)
        if not p.admin and not self._rbac().allowed(p.tenant_id, p.object_id, action, target):
            await self._record(
                call,
                action,
                where,
                "failure",
                f"denied: no role assignment grants {action} on {where}",
            )
            raise Forbidden(
                f"Caller is not authorized to perform action on resource. "
                f"Caller: oid={p.object_id}; Action: '{action}'; "
                f"Resource: '{where}'. {self._remedy(p, action, target)}",
                detail={"inner": "ForbiddenByRbac"},
            )
        if action in CHANGES:
            # The decision is written before the change: a process that dies after the change
            # commits but before its outcome is written still leaves the change in the log
            # (a "pending" event with no outcome after it), and an audit log that cannot be
            # written refuses the change before it is made.
            await self._record(call, action, where, "pending", "allowed; the outcome follows")
        try:
            result = await work()
        except KeylessError as exc:
            await self._record(call, action, where, "failure", f"{exc.code}: {exc.message}")
            raise
        await self._record(call, action, where, "success", "allowed")
        return result

    def _remedy(self, p: Principal, action: str, target: tuple[str, ...]) -> str:
        """The refusal names the identity and the narrowest role that would allow the action
        (the Key Vault SDKs show the message as is; Azure's names only the object id)."""
        identity = self._identities.identity_by_object(p.object_id) if self._identities else None
        who = f"identity {identity.name!r}" if identity is not None else f"oid {p.object_id}"
        grant = rbac.narrowest_role(action)
        if grant is None:
            return f"No built-in role allows {action}."
        scope = rbac.format_scope(target[:1])
        name = identity.name if identity is not None else p.object_id
        return (
            f"{who} has no role that allows it; the role {grant.name!r} ({grant.alias}) on "
            f"{scope} would: keyless role assign {name} {grant.alias} --scope {scope}"
        )

    async def _record(self, call: Call, action: str, target: str, result: str, reason: str) -> None:
        p = call.principal
        await self._audit.record(
            AuditEvent(
                time=self._clock.now(),
                request_id=call.request_id,
                tenant_id=p.tenant_id,
                action=action,
                target=target,
                result=result,
                reason=reason,
                actor=p.object_id,
                workload=dict(p.fed),
            )
        )

    def _seal(self, props: SecretVersion, value: str) -> bytes:
        return self._root().seal(value.encode("utf-8", "surrogatepass"), props.seal_context())

    def _open(self, props: SecretVersion, sealed: bytes) -> str:
        return self._root().open(sealed, props.seal_context()).decode("utf-8", "surrogatepass")

    def _readable(self, props: SecretVersion) -> None:
        now = self._clock.now()
        if props.destroyed:
            raise SecretUnavailable(
                "Operation get is not allowed on a destroyed secret version.",
                props,
                inner="SecretDestroyed",
            )
        if not props.enabled:
            raise SecretUnavailable(
                "Operation get is not allowed on a disabled secret.",
                props,
                inner="SecretDisabled",
            )
        if props.expires is not None and props.expires <= now:
            raise SecretUnavailable(
                "Operation get is not allowed on an expired secret.",
                props,
                inner="SecretExpired",
            )
        if props.not_before is not None and props.not_before > now:
            raise SecretUnavailable(
                "Operation get is not allowed on a secret that is not valid yet.",
                props,
                inner="SecretNotYetValid",
            )

    async def _live(self, vault: str, name: str) -> SecretState:
        state = await self._store.get_secret_state(vault, name)
        if state is None or state.deleted_at is not None:
            raise not_found(name)
        return state

    async def _version(
        self, vault: str, name: str, version: str | None, number: int | None = None
    ) -> tuple[SecretVersion, bytes]:
        """The current version, or one by id or by number, from the cache or else the store
        (then cached)."""
        if version:
            validate_version(version)
        cache = self._cache
        generation = cache.generation
        current = cache.current(vault, name)
        if current is None:
            current = await self._store.get_current_secret(vault, name)
            if current is None:
                raise not_found(name)
            cache.keep_current(generation, current)
        state = current[0]
        if state.deleted_at is not None:
            raise not_found(name)
        if number is not None and number != current[1].number:
            found = await self._store.get_secret_version_by_number(vault, name, number)
            if found is None:
                raise not_found(f"{name} version {number}")
            return found
        if not version:
            return current[1], current[2]
        hit = cache.version(vault, name, version)
        if hit is not None:
            return hit[1]
        found = await self._store.get_secret_version(vault, name, version)
        if found is None:
            raise not_found(f"{name}/{version}")
        cache.keep_version(generation, state, found)
        return found

    async def _write(self, vault: str, name: str, op: Awaitable[T]) -> T:
        """A store write to one name; whatever its outcome, the cache forgets the name."""
        try:
            return await op
        finally:
            self._cache.forget(vault, name)

    async def reload_if_changed(self) -> bool:
        """Forget every cached secret if another process wrote one since the last look."""
        revision = await self._store.get_revision("vault")
        if revision == self._cache.revision:
            return False
        self._cache.clear()
        self._cache.revision = revision
        self._vaults.clear()  # a vault may have been deleted (and its name reused)
        return True

    def forget_all(self) -> None:
        """After a root key rotation (the cached rows were sealed under the old key), or a
        sibling worker's change (a vault it deleted must not be found here)."""
        self._cache.clear()
        self._vaults.clear()

    # -- vaults ----------------------------------------------------------------------------

    async def create_vault(self, tenant_id: str, name: str) -> Vault:
        validate_vault_name(name)
        vault = await self._store.create_vault(Vault(name, tenant_id, self._clock.now()))
        self._vaults[vault.name] = vault
        return vault

    async def lookup(self, name: str) -> Vault | None:
        """The vault named by a request's host or path (vaults are never renamed)."""
        vault = self._vaults.get(name)
        if vault is None and len(name) <= 24:
            vault = await self._store.get_vault(name)
            if vault is not None:
                self._vaults[name] = vault
        return vault

    async def list_vaults(self, tenant_id: str) -> list[Vault]:
        return await self._store.list_vaults(tenant_id)

    def allows(self, principal: Principal, action: str, target: tuple[str, ...]) -> bool:
        """Whether the principal's roles grant ``action`` on ``target`` (no audit: a question
        about the caller's own permissions, Vault's ``capabilities-self``)."""
        return principal.admin or self._rbac().allowed(
            principal.tenant_id, principal.object_id, action, target
        )

    async def visible_vaults(self, principal: Principal) -> list[Vault]:
        """The tenant's vaults on which the principal holds any role (the admin: all)."""
        vaults = await self._store.list_vaults(principal.tenant_id)
        if principal.admin:
            return vaults
        everywhere, named = self._rbac().reach(principal.tenant_id, principal.object_id)
        return [v for v in vaults if everywhere or v.name in named]

    async def count_secrets(self, tenant_id: str, name: str) -> int:
        vault = await self.lookup(name)
        if vault is None or vault.tenant_id != tenant_id:
            raise NotFound(f"vault {name!r} not found")
        return await self._store.count_secrets(vault.name)

    async def delete_vault(
        self, call: Call, name: str, *, force: bool = False
    ) -> tuple[Vault, int]:
        """Delete a vault: refused while it holds secrets (soft-deleted ones too) unless
        ``force``, which deletes them with it. Role assignments on it go too. Audited as
        ``vault/delete``; answers the vault and how many secrets went with it."""
        v = await self._vault(call, name)
        held = await self._store.count_secrets(v.name)
        if held and not force:
            raise Conflict(
                f"vault {v.name!r} holds {held} secret(s) (soft-deleted ones included); "
                "purge them first, or delete it with them: --force"
            )
        where = rbac.format_scope((v.name,))
        await self._record(call, "vault/delete", where, "pending", "the outcome follows")
        try:
            if not await self._store.delete_vault(v.tenant_id, v.name):
                raise NotFound(f"vault {name!r} not found")
        except KeylessError as exc:
            await self._record(call, "vault/delete", where, "failure", f"{exc.code}: {exc.message}")
            raise
        finally:
            self._vaults.pop(v.name, None)
            self._cache.clear()
        await self._record(call, "vault/delete", where, "success", f"{held} secret(s) with it")
        return v, held

    # -- secrets ---------------------------------------------------------------------------

    async def get(
        self,
        call: Call,
        vault: str,
        name: str,
        version: str | None = None,
        *,
        number: int | None = None,
    ) -> Secret:
        """The current version's value, or one version's by id (Key Vault) or by number
        (Vault KV v2). A version that cannot be read (disabled, destroyed, expired, not yet
        valid) is ``SecretUnavailable``, its properties in its ``props``."""
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> Secret:
            props, sealed = await self._version(v.name, name, version, number)
            self._readable(props)
            return Secret(props, self._open(props, sealed))

        return await self._decide(call, rbac.GET_VALUE, v.name, name, work)

    async def set(
        self,
        call: Call,
        vault: str,
        name: str,
        value: str,
        changes: PropertyChanges,
        *,
        expect: int | None = None,
        inherit_tags: bool = False,
        version: str | None = None,
    ) -> Secret:
        """A new current version; ``expect``: check-and-set on the current version's number
        (0: only if the name holds none), refused with Conflict otherwise; ``inherit_tags``:
        the new version keeps the current one's tags (Vault's custom metadata belongs to the
        secret, not to one version); ``version``: the new version's id, when the dialect's
        client names it (Secrets Manager's ClientRequestToken), else a random one."""
        validate_secret_name(name)
        validate_value(value)
        if version is not None:
            validate_version(version)
        v = await self._vault(call, vault)

        async def work() -> Secret:
            now = self._clock.now()
            tags = changes.tags or {}
            if inherit_tags and changes.tags is None:
                current = await self._store.get_current_secret(v.name, name)
                if current is not None and current[0].deleted_at is None:
                    tags = current[1].tags
            props = SecretVersion(
                vault=v.name,
                name=name,
                version=version or random.token_hex(16),
                content_type=changes.content_type,
                tags=tags,
                enabled=True if changes.enabled is None else changes.enabled,
                not_before=changes.not_before,
                expires=changes.expires,
                created=now,
                updated=now,
            )
            sealed = self._seal(props, value)
            stored = await self._write(
                v.name, name, self._store.put_secret_version(props, sealed, expect=expect)
            )
            return Secret(stored, value)

        return await self._decide(call, rbac.SET, v.name, name, work)

    async def history(
        self, call: Call, vault: str, name: str
    ) -> tuple[SecretState, list[SecretVersion]]:
        """The name's state and every version's properties, oldest first (Vault's metadata)."""
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> tuple[SecretState, list[SecretVersion]]:
            state = await self._live(v.name, name)
            rows = await self._store.all_secret_versions(v.name, name)
            return state, [props for props, _ in rows]

        return await self._decide(call, rbac.READ_METADATA, v.name, name, work)

    async def set_enabled(
        self, call: Call, vault: str, name: str, numbers: list[int] | None, enabled: bool
    ) -> int:
        """Disable (Vault's ``delete`` of versions: audited as secrets/delete) or enable again
        (``undelete``: secrets/recover) the versions with these numbers, or the current one
        (None); destroyed ones stay as they are. Answers how many changed."""
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> int:
            await self._live(v.name, name)
            if numbers is None:
                current = await self._store.get_current_secret(v.name, name)
                wanted = [current[1].number] if current is not None else []
            else:
                wanted = sorted(set(numbers))
            changed = 0
            now = self._clock.now()
            for number in wanted:
                found = await self._store.get_secret_version_by_number(v.name, name, number)
                if found is None or found[0].destroyed or found[0].enabled == enabled:
                    continue
                updated = replace(found[0], enabled=enabled, updated=now)
                await self._write(v.name, name, self._store.update_secret_version(updated))
                changed += 1
            return changed

        action = rbac.RECOVER if enabled else rbac.DELETE
        return await self._decide(call, action, v.name, name, work)

    async def destroy(self, call: Call, vault: str, name: str, numbers: list[int]) -> int:
        """Wipe these versions' values for good (Vault's ``destroy``: audited as
        secrets/purge); they stay listed as destroyed. Answers how many were destroyed."""
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> int:
            await self._live(v.name, name)
            wiped = self._store.destroy_secret_versions(v.name, name, sorted(set(numbers)))
            return await self._write(v.name, name, wiped)

        return await self._decide(call, rbac.PURGE, v.name, name, work)

    async def update(
        self, call: Call, vault: str, name: str, version: str | None, changes: PropertyChanges
    ) -> Secret:
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> Secret:
            props, _ = await self._version(v.name, name, version)
            fields = changes.set_fields
            updated = replace(
                props,
                content_type=changes.content_type
                if "content_type" in fields
                else props.content_type,
                tags=changes.tags if changes.tags is not None else props.tags,
                enabled=changes.enabled if changes.enabled is not None else props.enabled,
                not_before=changes.not_before if "not_before" in fields else props.not_before,
                expires=changes.expires if "expires" in fields else props.expires,
                updated=self._clock.now(),
            )
            await self._write(v.name, name, self._store.update_secret_version(updated))
            return Secret(updated)

        return await self._decide(call, rbac.UPDATE, v.name, name, work)

    async def list(
        self, call: Call, vault: str, *, after: str | None, limit: int, deleted: bool = False
    ) -> Page:
        v = await self._vault(call, vault)

        async def work() -> Page:
            rows = await self._store.list_secrets(
                v.name, deleted=deleted, after=after, limit=limit + 1
            )
            items = [Secret(props, None, state) for state, props in rows[:limit]]
            more = len(rows) > limit
            return Page(items, items[-1].props.name if more else None)

        return await self._decide(call, rbac.READ_METADATA, v.name, None, work)

    async def versions(
        self, call: Call, vault: str, name: str, *, after: str | None, limit: int
    ) -> Page:
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> Page:
            state = await self._store.get_secret_state(v.name, name)
            if state is None:
                # Key Vault lists the versions of a name it has never held (or has purged) as
                # an empty page, not a 404: the SDK's samples list such a name's versions.
                return Page([], None)
            if state.deleted_at is not None:
                raise not_found(name)
            rows = await self._store.list_secret_versions(
                v.name, name, after=after, limit=limit + 1
            )
            items = [Secret(props) for props in rows[:limit]]
            more = len(rows) > limit
            return Page(items, items[-1].props.version if more else None)

        return await self._decide(call, rbac.READ_METADATA, v.name, name, work)

    async def delete(
        self, call: Call, vault: str, name: str, *, recovery_days: int | None = None
    ) -> Secret:
        """Soft delete: recoverable until purged, ``recovery_days`` from now (the server's
        window unless the dialect's request names one, as Secrets Manager's does)."""
        validate_secret_name(name)
        v = await self._vault(call, vault)
        days = self.recovery_days if recovery_days is None else recovery_days

        async def work() -> Secret:
            props, _ = await self._version(v.name, name, None)
            now = self._clock.now()
            purge_at = now + days * 86400
            marked = self._store.mark_secret_deleted(v.name, name, now, purge_at)
            if not await self._write(v.name, name, marked):
                raise not_found(name)
            state = SecretState(v.name, name, props.version, now, purge_at)
            return Secret(props, None, state)

        return await self._decide(call, rbac.DELETE, v.name, name, work)

    async def _deleted(self, vault: str, name: str) -> Secret:
        current = await self._store.get_current_secret(vault, name)
        if current is None or current[0].deleted_at is None:
            raise SecretNotFound(f"Deleted Secret not found: {name}")
        state, props, _ = current
        return Secret(props, None, state)

    async def get_deleted(self, call: Call, vault: str, name: str) -> Secret:
        validate_secret_name(name)
        v = await self._vault(call, vault)
        return await self._decide(
            call, rbac.READ_METADATA, v.name, name, lambda: self._deleted(v.name, name)
        )

    async def recover(self, call: Call, vault: str, name: str) -> Secret:
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> Secret:
            deleted = await self._deleted(v.name, name)
            await self._write(v.name, name, self._store.recover_secret(v.name, name))
            return Secret(deleted.props)

        return await self._decide(call, rbac.RECOVER, v.name, name, work)

    async def purge(self, call: Call, vault: str, name: str) -> None:
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> None:
            if not await self._write(v.name, name, self._store.purge_secret(v.name, name)):
                raise SecretNotFound(f"Deleted Secret not found: {name}")

        await self._decide(call, rbac.PURGE, v.name, name, work)

    async def backup(self, call: Call, vault: str, name: str) -> bytes:
        """Every version, sealed as one blob that only this root key can open."""
        validate_secret_name(name)
        v = await self._vault(call, vault)

        async def work() -> bytes:
            state = await self._live(v.name, name)
            versions = await self._store.all_secret_versions(v.name, name)
            opened = [(p, None if p.destroyed else self._open(p, sealed)) for p, sealed in versions]
            return seal_backup(self._root(), backup_doc(name, state.current_version, opened))

        return await self._decide(call, rbac.BACKUP, v.name, name, work)

    async def restore(self, call: Call, vault: str, blob: bytes) -> Secret:
        v = await self._vault(call, vault)
        doc = open_backup(self._root(), blob)
        name = validate_secret_name(str(doc.get("name", "")))

        async def work() -> Secret:
            rows = [
                (props, b"" if value is None else self._seal(props, value))
                for props, value in restored_versions(doc, v.name, name)
            ]
            current = str(doc["current"])
            restored = self._store.restore_secret(v.name, name, rows, current)
            await self._write(v.name, name, restored)
            return Secret(next(p for p, _ in rows if p.version == current))

        return await self._decide(call, rbac.RESTORE, v.name, name, work)


__all__ = [
    "Call",
    "Conflict",
    "Page",
    "SecretNotFound",
    "SecretUnavailable",
    "VaultService",
    "decode_backup",
]
