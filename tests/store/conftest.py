"""The store suite's shared fixtures (each test runs on SQLite and PostgreSQL alike)."""

from __future__ import annotations

import os

import pytest

from keyless.core import rbac
from keyless.core.access import admin_principal
from keyless.core.audit import MemoryAuditSink
from keyless.core.clock import ManualClock
from keyless.core.envelope import RootKeys
from keyless.core.models import Tenant
from keyless.core.vault import Call, VaultService
from keyless.store.sql import SqlStore

ROOT = RootKeys((os.urandom(32),))


@pytest.fixture
async def env(store: SqlStore) -> tuple[VaultService, MemoryAuditSink, ManualClock, Call]:
    """A vault service on the store: tenant t1, vault kv0, the admin calling; the service's
    ``roles`` (its role assignments) for tests that grant and take away."""
    await store.create_tenant(Tenant("t1", "default", 0.0))
    clock = ManualClock()
    audit = MemoryAuditSink()
    roles = rbac.RoleAssignments(store, clock)
    await roles.reload()
    service = VaultService(store, lambda: roles.index, audit, clock, lambda: ROOT, recovery_days=7)
    service.roles = roles  # type: ignore[attr-defined]
    await service.create_vault("t1", "kv0")
    return service, audit, clock, Call(admin_principal("t1"), "req-1")
