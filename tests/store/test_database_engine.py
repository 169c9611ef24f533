"""The database secrets engine (core/dbengine.py) over both stores and the real PostgreSQL
driver (store/dbtarget.py): issued credentials log in, renewal moves ``VALID UNTIL``,
revocation and the reaper drop the role exactly once, failures leave nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from keyless.core import rbac
from keyless.core.access import Principal, admin_principal
from keyless.core.audit import MemoryAuditSink
from keyless.core.clock import ManualClock
from keyless.core.databases import Part
from keyless.core.dbengine import DatabaseEngine, DatabaseUnreachable, Target, TemplateFailed
from keyless.core.envelope import RootKeys
from keyless.core.errors import Forbidden, InvalidRequest
from keyless.core.vault import Call
from keyless.store.dbtarget import PostgresDriver
from keyless.store.sql import SqlStore
from tests.support.dbtarget import TargetDb, target_database

TENANT = "00000000-0000-0000-0000-000000000001"
WORKLOAD = {"namespace": "shop", "service_account": "orders", "pod": "orders-7f9"}
APP = Principal(TENANT, "oid-app", "cid-app", fed=WORKLOAD)
NOBODY = Principal(TENANT, "oid-nobody", "cid-nobody", fed={"pod": "nobody-1"})


@pytest.fixture(scope="module")
def target(pg_server: str) -> Iterator[TargetDb]:
    """One managed database for the module (each test has its own store and leases)."""
    with target_database(pg_server) as t:
        yield t


class FlakyDriver(PostgresDriver):
    """The real driver, but the next ``fail_revokes`` revocations find the database down."""

    fail_revokes = 0
    fail_creates = 0

    async def create(self, target: Target, parts: list[Part], username: str) -> None:
        if self.fail_creates:
            self.fail_creates -= 1
            raise DatabaseUnreachable("database 127.0.0.1:1/x cannot be reached: refused")
        await super().create(target, parts, username)

    async def revoke(self, target: Target, parts: list[Part], username: str) -> None:
        if self.fail_revokes:
            self.fail_revokes -= 1
            raise DatabaseUnreachable("database 127.0.0.1:1/x cannot be reached: refused")
        await super().revoke(target, parts, username)


class Rig:
    def __init__(self, store: SqlStore, target: TargetDb) -> None:
        self.store, self.target = store, target
        self.clock = ManualClock(datetime.now(UTC).timestamp())
        self.audit = MemoryAuditSink()
        self.root = RootKeys((b"k" * 32,))
        self.role = f"r{target.tag}"
        self.driver = FlakyDriver()
        index = rbac.RbacIndex(
            [rbac.Assignment(TENANT, APP.object_id, rbac.role("database-user").name,
                             f"/databases/orders/roles/{self.role}")]
        )  # fmt: skip
        self.index = index

    def engine(self) -> DatabaseEngine:
        return DatabaseEngine(
            self.store, self.driver, lambda: self.index, self.audit, self.clock, lambda: self.root
        )

    def actions(self, action: str, result: str = "success") -> list[str]:
        return [e.reason for e in self.audit.events if (e.action, e.result) == (action, result)]


@pytest_asyncio.fixture
async def rig(store: SqlStore, target: TargetDb) -> AsyncIterator[Rig]:
    r = Rig(store, target)
    engine = r.engine()
    await engine.add_database(TENANT, "orders", target.url, target.admin_password)
    await engine.add_role(
        TENANT, "orders", r.role, grants=[target.group], creation_sql=None,
        revocation_sql=None, ttl=600, max_ttl=1800,
    )  # fmt: skip
    yield r


async def test_issued_credentials_log_in_and_revocation_drops_the_role(rig: Rig) -> None:
    engine = rig.engine()
    creds = await engine.issue(Call(APP, "req-1"), "orders", rig.role)
    user, password = creds.lease.username, creds.password
    assert user.startswith(f"v-id-{rig.role}-") and len(password) >= 43
    assert await asyncio.to_thread(rig.target.logs_in, user, password)
    assert not await asyncio.to_thread(rig.target.password_matches, user, password + "x")
    row = rig.target.role(user)
    assert row is not None and row["rolvaliduntil"].timestamp() == int(creds.lease.expires_at)
    # The --grant group is granted.
    with rig.target.connect_as(user, password) as conn:
        assert conn.execute(
            "SELECT pg_has_role(current_user, %s, 'MEMBER')", (rig.target.group,)
        ).fetchone() == (True,)
    issued = rig.audit.events[-1]
    assert (issued.action, issued.result, issued.workload) == (
        "database.creds",
        "success",
        WORKLOAD,
    )
    assert await engine.revoke(Call(APP, "req-2"), creds.lease.lease_id)
    assert rig.target.role(user) is None
    assert not await asyncio.to_thread(rig.target.logs_in, user, password)
    assert await engine.revoke(Call(APP, "req-3"), creds.lease.lease_id)  # idempotent
    assert len(rig.actions("database.revoke")) == 1
    assert all(password not in repr(e.as_dict()) for e in rig.audit.events)
    assert all(rig.target.admin_password not in repr(e.as_dict()) for e in rig.audit.events)


async def test_renew_moves_valid_until_up_to_the_maximum(rig: Rig) -> None:
    engine = rig.engine()
    creds = await engine.issue(Call(APP), "orders", rig.role)
    rig.clock.advance(100)
    renewed = await engine.renew(Call(APP), creds.lease.lease_id, 900)
    assert renewed.expires_at == rig.clock.now() + 900
    row = rig.target.role(creds.lease.username)
    assert row is not None and row["rolvaliduntil"].timestamp() == int(renewed.expires_at)
    capped = await engine.renew(Call(APP), creds.lease.lease_id, 10**6)
    assert capped.expires_at == creds.lease.max_expires_at == creds.lease.issued_at + 1800
    assert len(rig.actions("database.renew")) == 2
    rig.clock.advance(2000)
    with pytest.raises(InvalidRequest, match="not renewable"):
        await engine.renew(Call(APP), creds.lease.lease_id, 60)


async def test_two_reapers_revoke_an_expired_lease_exactly_once(rig: Rig) -> None:
    first, second = rig.engine(), rig.engine()  # two replicas on one store
    leases = [await first.issue(Call(APP), "orders", rig.role) for _ in range(3)]
    assert await first.reap() + await second.reap() == 0  # nothing expired yet
    rig.clock.advance(601)
    done = await asyncio.gather(first.reap(), second.reap(), first.reap(), second.reap())
    assert sum(done) == 3
    for creds in leases:
        assert rig.target.role(creds.lease.username) is None
    reaped = rig.actions("database.revoke")
    assert sorted(reaped) == sorted(
        f"{c.lease.lease_id} ({c.lease.username}) expired; revoked by the reaper" for c in leases
    )
    assert all(e.workload == WORKLOAD for e in rig.audit.events if e.action == "database.revoke")
    rig.clock.advance(3600)
    assert await first.reap() + await second.reap() == 0


async def test_revocation_is_retried_with_back_off_while_the_database_is_down(rig: Rig) -> None:
    engine = rig.engine()
    creds = await engine.issue(Call(APP), "orders", rig.role)
    rig.driver.fail_revokes = 2
    rig.clock.advance(601)
    assert await engine.reap() == 0
    assert rig.target.role(creds.lease.username) is not None
    rig.clock.advance(1)  # back-off 2 s: not yet
    assert await engine.reap() == 0 and len(rig.actions("database.revoke", "failure")) == 1
    rig.clock.advance(2)
    assert await engine.reap() == 0  # second failure: back-off 4 s
    rig.clock.advance(5)
    assert await engine.reap() == 1
    assert rig.target.role(creds.lease.username) is None
    failures = rig.actions("database.revoke", "failure")
    assert len(failures) == 2 and all("database_unreachable" in f for f in failures)


async def test_a_failing_template_leaves_no_role_and_no_lease(rig: Rig) -> None:
    engine = rig.engine()
    bad = f"b{rig.target.tag}"
    await engine.add_role(
        TENANT, "orders", bad, grants=[],
        creation_sql="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'; "
        "GRANT SELECT ON no_such_table TO \"{{name}}\"",
        revocation_sql=None, ttl=60, max_ttl=60,
    )  # fmt: skip
    with pytest.raises(TemplateFailed, match=r"no_such_table.*no role was left behind") as info:
        await engine.issue(Call(admin_principal(TENANT)), "orders", bad)
    assert "\n" not in str(info.value)
    assert rig.target.roles_like(f"v-admin-{bad}") == []
    assert await engine.list_leases(TENANT, include_revoked=True) == []
    assert rig.actions("database.creds", "failure")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE ROLE {{user}}", "{{user}}"),
        ("CREATE ROLE x", "does not use {{name}}"),
        ('CREATE ROLE "{{name}}"', "does not use {{password}}"),
    ],
)
async def test_bad_templates_are_refused_when_the_role_is_added(
    rig: Rig, sql: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("{", r"\{").replace("}", r"\}")):
        await rig.engine().add_role(
            TENANT, "orders", "other", grants=[], creation_sql=sql, revocation_sql=None,
            ttl=None, max_ttl=None,
        )  # fmt: skip


async def test_an_unreachable_database_at_issue_leaves_no_lease(rig: Rig) -> None:
    engine = rig.engine()
    rig.driver.fail_creates = 1
    before = rig.target.roles_like(f"v-id-{rig.role}")
    with pytest.raises(DatabaseUnreachable):
        await engine.issue(Call(APP), "orders", rig.role)
    assert await engine.list_leases(TENANT, include_revoked=True) == []
    assert rig.target.roles_like(f"v-id-{rig.role}") == before
    assert "database_unreachable" in rig.actions("database.creds", "failure")[0]


async def test_revoked_leases_are_forgotten_after_a_week(rig: Rig) -> None:
    engine = rig.engine()
    creds = await engine.issue(Call(APP), "orders", rig.role)
    await engine.revoke(Call(APP), creds.lease.lease_id)
    await engine.reap()
    assert len(await engine.list_leases(TENANT, include_revoked=True)) == 1
    rig.clock.advance(8 * 86400)
    await engine.reap()
    assert await engine.list_leases(TENANT, include_revoked=True) == []


async def test_an_unreachable_database_is_not_registered(rig: Rig) -> None:
    engine = rig.engine()
    with pytest.raises(DatabaseUnreachable, match=r"127\.0\.0\.1:1/x cannot be reached") as info:
        await engine.add_database(TENANT, "down", "postgresql://a:pw-visible@127.0.0.1:1/x", None)
    assert "pw-visible" not in str(info.value) and "\n" not in str(info.value)
    assert [d.name for d in await engine.list_databases(TENANT)] == ["orders"]


async def test_rbac_refusals_are_audited(rig: Rig) -> None:
    before = rig.target.roles_like("v-")
    with pytest.raises(Forbidden, match="database-user --scope /databases/orders/roles/"):
        await rig.engine().issue(Call(NOBODY, "req-9"), "orders", rig.role)
    refused = rig.audit.events[-1]
    assert (refused.action, refused.result, refused.actor) == (
        "database.creds",
        "failure",
        "oid-nobody",
    )
    assert refused.workload == {"pod": "nobody-1"}
    assert rig.target.roles_like("v-") == before
    assert await rig.engine().list_leases(TENANT, include_revoked=True) == []


async def test_rotate_root_sets_a_new_admin_password_and_the_engine_goes_on(rig: Rig) -> None:
    engine = rig.engine()
    admin = rig.target.admin
    before = rig.target.verifier(admin)
    await engine.rotate_root(Call(admin_principal(TENANT)), "orders")
    assert rig.target.verifier(admin) not in (None, before)
    assert not rig.target.password_matches(admin, rig.target.admin_password)
    assert rig.actions("database.rotate-root") == ["admin password rotated"]
    creds = await engine.issue(Call(APP), "orders", rig.role)
    assert await asyncio.to_thread(rig.target.logs_in, creds.lease.username, creds.password)
    await engine.revoke(Call(APP), creds.lease.lease_id)
    assert all(rig.target.admin_password not in repr(e.as_dict()) for e in rig.audit.events)
