"""The store methods behind ``vault delete``, ``identity update`` and ``federation update``,
on SQLite and PostgreSQL alike (the ``store`` fixture runs both legs)."""

from __future__ import annotations

import os

import pytest

from keyless.core import rbac
from keyless.core.access import Principal, admin_principal
from keyless.core.audit import MemoryAuditSink
from keyless.core.clock import ManualClock
from keyless.core.envelope import RootKeys
from keyless.core.errors import Conflict, Forbidden, NotFound
from keyless.core.models import Identity, Tenant
from keyless.core.secrets import PropertyChanges
from keyless.core.trust import new_credential
from keyless.core.vault import Call, VaultService
from keyless.store.sql import SqlStore

ROOT = RootKeys((os.urandom(32),))


class Directory:
    """The identities the refusal may name (the server passes its federation index)."""

    def __init__(self, identities: list[Identity]) -> None:
        self._by_object = {i.object_id: i for i in identities}

    def identity_by_object(self, object_id: str) -> Identity | None:
        return self._by_object.get(object_id)


async def test_delete_vault_takes_its_secrets_and_grants(store: SqlStore) -> None:
    await store.create_tenant(Tenant("t1", "default", 0.0))
    await store.create_tenant(Tenant("t2", "other", 0.0))
    clock, audit = ManualClock(), MemoryAuditSink()
    roles = rbac.RoleAssignments(store, clock)
    await roles.reload()
    ident = Identity("oid-1", "cid-1", "app", "t1", 0.0)
    await store.create_identity(ident)
    service = VaultService(
        store, lambda: roles.index, audit, clock, lambda: ROOT, identities=Directory([ident])
    )
    call = Call(admin_principal("t1"), "r")
    await service.create_vault("t1", "kv1")
    await service.set(call, "kv1", "a", "1", PropertyChanges())
    await service.set(call, "kv1", "b", "2", PropertyChanges())
    await service.delete(call, "kv1", "b")
    await roles.assign("t1", "oid-1", "reader", "/vaults/kv1")
    await roles.assign("t1", "oid-1", "secrets-user", "/vaults/kv1/secrets/a")
    await roles.assign("t1", "oid-1", "reader", "/")
    assert await store.count_secrets("kv1") == 2

    with pytest.raises(Conflict, match="holds 2 secret"):
        await service.delete_vault(call, "kv1")
    with pytest.raises(NotFound):  # another tenant's admin does not see it
        await service.delete_vault(Call(admin_principal("t2"), "r"), "kv1", force=True)

    vault, held = await service.delete_vault(call, "kv1", force=True)
    assert (vault.name, held) == ("kv1", 2)
    assert await store.get_vault("kv1") is None
    assert await store.count_secrets("kv1") == 0
    await roles.reload()
    assert [(a.role, a.scope) for a in await roles.list("t1")] == [("Key Vault Reader", "/")]
    assert [e.action for e in audit.events][-2:] == ["vault/delete", "vault/delete"]
    assert [e.result for e in audit.events][-2:] == ["pending", "success"]

    # Re-created under the same name: empty, and a reader of the old one reads nothing here.
    await service.create_vault("t1", "kv1")
    reader = Call(Principal("t1", "oid-1", "cid-1"), "r")
    await service.set(call, "kv1", "a", "new", PropertyChanges())
    with pytest.raises(Forbidden) as denied:
        await service.get(reader, "kv1", "a")
    assert denied.value.message.endswith(
        "identity 'app' has no role that allows it; the role 'Key Vault Secrets User' "
        "(secrets-user) on /vaults/kv1 would: keyless role assign app secrets-user --scope "
        "/vaults/kv1"
    )
    assert denied.value.message.startswith("Caller is not authorized")  # Azure's words first


async def test_rename_identity_and_update_credential(store: SqlStore) -> None:
    await store.create_tenant(Tenant("t1", "default", 0.0))
    await store.create_identity(Identity("oid-1", "cid-1", "app", "t1", 0.0))
    await store.create_identity(Identity("oid-2", "cid-2", "taken", "t1", 0.0))
    assert await store.rename_identity("oid-1", "renamed")
    found = await store.get_identity("t1", "renamed")
    assert found is not None and (found.object_id, found.client_id) == ("oid-1", "cid-1")
    with pytest.raises(Conflict):
        await store.rename_identity("oid-1", "taken")
    assert not await store.rename_identity("oid-none", "x")

    fc = new_credential(
        id="fc-1", identity_id="oid-1", name="c", issuer="https://i.example", subject="s"
    )
    await store.add_credential(fc, 0.0)
    changed = new_credential(
        id="fc-1",
        identity_id="oid-1",
        name="c",
        issuer="https://i.example",
        subject_pattern="s*",
        audiences=("a", "b"),
        condition="true",
    )
    assert await store.update_credential(changed)
    stored = await store.get_credential("oid-1", "c")
    assert stored == changed
    missing = new_credential(
        id="fc-9", identity_id="oid-1", name="nope", issuer="https://i.example", subject="s"
    )
    assert not await store.update_credential(missing)
