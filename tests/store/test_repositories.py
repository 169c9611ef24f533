"""The store contract for the federation store, role assignments, vaults and paging.

Every test runs on SQLite and PostgreSQL (the ``store`` fixture): identities, issuers (all
three key sources), federated credentials (single and bulk), dev clusters, revisions, role
assignments, vaults and secret paging behave the same on both.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from keyless.core.errors import Conflict
from keyless.core.gcppolicy import GoogleSource
from keyless.core.issuers import IssuerRecord
from keyless.core.models import DevCluster, Identity, Tenant
from keyless.core.rbac import Assignment
from keyless.core.secrets import SecretVersion, Vault
from keyless.core.trust import new_credential
from keyless.store.sql import SqlStore

ISS = "https://issuer.example/cluster"
JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "AAAA", "y": "BBBB"}]}


async def _tenant(store: SqlStore, alias: str = "default") -> Tenant:
    return await store.create_tenant(Tenant(str(uuid.uuid4()), alias, 1.0))


def _identity(tenant: Tenant, name: str) -> Identity:
    return Identity(str(uuid.uuid4()), str(uuid.uuid4()), name, tenant.id, 2.0)


def _credential(identity: Identity, name: str, subject: str = "system:serviceaccount:a:b"):  # type: ignore[no-untyped-def]
    return new_credential(
        id=str(uuid.uuid4()), identity_id=identity.object_id, name=name, issuer=ISS, subject=subject
    )


async def test_identities_create_is_idempotent_and_scoped_to_a_tenant(store: SqlStore) -> None:
    a, b = await _tenant(store, "a"), await _tenant(store, "b")
    before = await store.get_revision("federation")
    app = await store.create_identity(_identity(a, "app"))
    assert await store.get_revision("federation") > before
    again = await store.create_identity(_identity(a, "app"))  # another process, same name
    assert again == app
    other = await store.create_identity(_identity(b, "app"))  # same name, other tenant
    assert other.object_id != app.object_id
    assert await store.get_identity(a.id, "app") == app
    assert await store.get_identity(a.id, app.object_id) == app
    assert await store.get_identity(b.id, app.object_id) is None
    assert [i.name for i in await store.list_identities(a.id)] == ["app"]
    assert len(await store.list_identities()) == 2


async def test_deleting_an_identity_removes_its_credentials_and_roles(store: SqlStore) -> None:
    t = await _tenant(store)
    app = await store.create_identity(_identity(t, "app"))
    keep = await store.create_identity(_identity(t, "keep"))
    await store.add_issuer(t.id, IssuerRecord(ISS, JWKS, 1.0))
    await store.add_credential(_credential(app, "c1"), 3.0)
    await store.add_credential(_credential(keep, "c1"), 3.0)
    await store.add_role_assignment(Assignment(t.id, app.object_id, "reader", "/"), 4.0)
    await store.add_role_assignment(Assignment(t.id, keep.object_id, "reader", "/"), 4.0)
    assert await store.delete_identity(app.object_id)
    assert not await store.delete_identity(app.object_id)
    assert await store.get_identity(t.id, "app") is None
    assert [c.identity_id for c in await store.list_credentials()] == [keep.object_id]
    assert [a.identity_id for a in await store.list_role_assignments(t.id)] == [keep.object_id]


@pytest.mark.parametrize(
    ("first", "second", "changed"),
    [
        pytest.param(IssuerRecord(ISS, None, 1.0), IssuerRecord(ISS, None, 2.0), False, id="same"),
        pytest.param(IssuerRecord(ISS, None, 1.0), IssuerRecord(ISS, JWKS, 2.0), True, id="upload"),
        pytest.param(
            IssuerRecord(ISS, JWKS, 1.0),
            IssuerRecord(ISS, None, 2.0, kubernetes_api=True),
            True,
            id="to-kubernetes",
        ),
    ],
)
async def test_issuers_add_replace_and_list(
    store: SqlStore, first: IssuerRecord, second: IssuerRecord, changed: bool
) -> None:
    t = await _tenant(store)
    assert await store.add_issuer(t.id, first)
    assert not await store.add_issuer(t.id, second)  # not new
    [(tenant_id, stored)] = await store.list_issuers(t.id)
    expected = second if changed else first
    assert tenant_id == t.id
    assert (stored.url, stored.jwks, stored.source) == (
        expected.url,
        expected.jwks,
        expected.source,
    )


async def test_an_issuer_named_by_a_credential_cannot_be_removed(store: SqlStore) -> None:
    a, b = await _tenant(store, "a"), await _tenant(store, "b")
    app = await store.create_identity(_identity(a, "app"))
    for tenant in (a, b):
        await store.add_issuer(tenant.id, IssuerRecord(ISS, JWKS, 1.0))
    await store.add_credential(_credential(app, "c1"), 3.0)
    with pytest.raises(Conflict, match="named by 1 federated credential"):
        await store.remove_issuer(a.id, ISS)
    assert await store.remove_issuer(b.id, ISS)  # b's own registration is b's alone
    assert not await store.remove_issuer(b.id, ISS)
    assert await store.remove_credential(app.object_id, "c1")
    assert not await store.remove_credential(app.object_id, "c1")
    assert await store.remove_issuer(a.id, ISS)
    assert await store.list_issuers() == []


async def test_credentials_idempotent_listed_in_order_and_in_bulk(store: SqlStore) -> None:
    t = await _tenant(store)
    app = await store.create_identity(_identity(t, "app"))
    await store.add_issuer(t.id, IssuerRecord(ISS, JWKS, 1.0))
    first = await store.add_credential(_credential(app, "b-cred"), 3.0)
    same_name = await store.add_credential(_credential(app, "b-cred", "system:other"), 4.0)
    assert same_name == first  # the stored one comes back; the caller compares
    assert await store.get_credential(app.object_id, "b-cred") == first
    assert await store.get_credential(app.object_id, "nope") is None
    bulk = [
        _credential(app, f"bulk-{n:04d}", f"system:serviceaccount:ns{n}:sa") for n in range(250)
    ]
    before = await store.get_revision("federation")
    await store.add_credentials_bulk(bulk, 5.0)
    assert await store.get_revision("federation") > before
    names = [c.name for c in await store.list_credentials(app.object_id)]
    assert names == sorted(names) and len(names) == 251
    assert (await store.get_credential(app.object_id, "bulk-0042")) == bulk[42]


async def test_issuer_sets_and_google_sources_are_stored_and_hold_their_issuers(
    store: SqlStore,
) -> None:
    t = await _tenant(store)
    app = await store.create_identity(_identity(t, "app"))
    other = "https://issuer.example/cluster-b"
    for url in (ISS, other):
        await store.add_issuer(t.id, IssuerRecord(url, JWKS, 1.0))
    google = GoogleSource(
        "principalSet://iam.googleapis.com/projects/1/locations/global/"
        "workloadIdentityPools/keyless/attribute.ns/prod",
        (("attribute.ns", "assertion.ns"),),
        "assertion.iss != ''",
    )
    shared = new_credential(
        id=str(uuid.uuid4()),
        identity_id=app.object_id,
        name="shared",
        issuers=[ISS, other],
        subject_pattern="*",
        condition="(claims.ns) == \"prod\" && (claims.iss != '')",
        google=google,
    )
    await store.add_credential(shared, 3.0)
    assert await store.get_credential(app.object_id, "shared") == shared
    assert await store.list_credentials(app.object_id) == [shared]
    # The second issuer of the set is held as the first is.
    with pytest.raises(Conflict, match="named by 1 federated credential"):
        await store.remove_issuer(t.id, other)
    # Back to one issuer and a plain subject: the set and the Google source go.
    plain = replace(shared, issuers=(), google=None, subject="s", subject_pattern=None)
    assert await store.update_credential(plain)
    assert await store.get_credential(app.object_id, "shared") == plain
    assert await store.remove_issuer(t.id, other)
    bulk = replace(shared, id=str(uuid.uuid4()), name="bulk", issuers=(ISS, "https://c.test"))
    await store.add_credentials_bulk([bulk], 4.0)
    assert await store.get_credential(app.object_id, "bulk") == bulk


async def test_dev_clusters_are_made_once(store: SqlStore) -> None:
    one = DevCluster("dev", "kid-1", b"sealed-1", {"kty": "RSA", "kid": "kid-1"}, 1.0)
    two = DevCluster("dev", "kid-2", b"sealed-2", {"kty": "RSA", "kid": "kid-2"}, 2.0)
    assert await store.get_dev_cluster("dev") is None
    assert await store.create_dev_cluster(one) == one
    assert await store.create_dev_cluster(two) == one  # a second process gets the first
    assert await store.get_dev_cluster("dev") == one


async def test_role_assignments_add_once_remove_and_bump_the_revision(store: SqlStore) -> None:
    a, b = await _tenant(store, "a"), await _tenant(store, "b")
    app = await store.create_identity(_identity(a, "app"))
    other = await store.create_identity(_identity(b, "other"))
    start = await store.get_revision("rbac")
    grant = Assignment(a.id, app.object_id, "Key Vault Secrets User", "/vaults/v1")
    assert await store.add_role_assignment(grant, 1.0)
    assert not await store.add_role_assignment(grant, 2.0)
    await store.add_role_assignment(Assignment(a.id, app.object_id, "reader", "/"), 1.0)
    await store.add_role_assignment(Assignment(b.id, other.object_id, "reader", "/"), 1.0)
    assert await store.get_revision("rbac") > start
    assert [x.scope for x in await store.list_role_assignments(a.id)] == ["/", "/vaults/v1"]
    assert len(await store.list_role_assignments()) == 3
    assert await store.remove_role_assignment(grant)
    assert not await store.remove_role_assignment(grant)
    assert [x.scope for x in await store.list_role_assignments(a.id)] == ["/"]


async def test_vaults_are_named_once_across_tenants(store: SqlStore) -> None:
    a, b = await _tenant(store, "a"), await _tenant(store, "b")
    v = await store.create_vault(Vault("kv1", a.id, 1.0))
    assert await store.create_vault(Vault("kv1", a.id, 2.0)) == v  # idempotent
    with pytest.raises(Conflict, match="already taken"):
        await store.create_vault(Vault("kv1", b.id, 2.0))
    await store.create_vault(Vault("kv0", a.id, 3.0))
    assert [x.name for x in await store.list_vaults(a.id)] == ["kv0", "kv1"]
    assert await store.list_vaults(b.id) == []
    assert await store.get_vault("nope") is None


def _version(name: str, version: str, created: float) -> SecretVersion:
    return SecretVersion("kv1", name, version, None, {}, True, None, None, created, created)


async def test_secret_and_version_paging_visits_each_once(store: SqlStore) -> None:
    t = await _tenant(store)
    await store.create_vault(Vault("kv1", t.id, 1.0))
    names = [f"s{n:03d}" for n in range(23)]
    for n, name in enumerate(names):
        await store.put_secret_version(_version(name, f"{n:032x}", float(n)), b"sealed")
    await store.put_secret_version(_version("s000", "f" * 32, 99.0), b"sealed")
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_secrets("kv1", deleted=False, after=after, limit=5)
        seen += [state.name for state, _ in page]
        if len(page) < 5:
            break
        after = page[-1][0].name
    assert seen == names  # in order, each once, current versions only
    first = await store.list_secrets("kv1", deleted=False, after=None, limit=1)
    assert first[0][1].version == "f" * 32
    versions: list[str] = []
    after = None
    while page_v := await store.list_secret_versions("kv1", "s000", after=after, limit=1):
        versions += [v.version for v in page_v]
        after = page_v[-1].version
    assert versions == sorted([f"{0:032x}", "f" * 32])
    assert await store.list_secrets("kv1", deleted=True, after=None, limit=10) == []
