"""core/svidauth.py: a verified client certificate acts as the identity its X.509-SVID was
issued for, and only the exact certificate keyless recorded does; expiry by the injected
clock, another tenant's SVID, a deleted identity and an unparsable certificate are refused.

The store is a dict behind the ``SvidStore`` port (the real SQL store is tests/store's)."""

from __future__ import annotations

import asyncio
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.access import IdentityGone
from keyless.core.envelope import RootKeys
from keyless.core.models import Identity
from keyless.core.spiffeca import SpiffeCA, generate_ca, issue_x509_svid
from keyless.core.svidauth import (
    SvidDirectory,
    SvidOfAnotherTenant,
    SvidRecord,
    UnknownSvid,
    record_of,
    svid_principal,
)

NOW = 1_800_000_000.0
SPIFFE_ID = "spiffe://default.keyless/ns/demo/sa/app"
APP = Identity("oid-app", "cid-app", "app", "t-1", 0.0)


class DictStore:
    def __init__(self) -> None:
        self.rows: dict[str, SvidRecord] = {}
        self.reads = 0
        self.batches: list[int] = []

    async def record_svids(self, records: list[SvidRecord]) -> None:
        self.batches.append(len(records))
        for record in records:
            self.rows[record.serial] = record

    async def record_svid(self, record: SvidRecord) -> None:
        await self.record_svids([record])

    async def find_svid(self, serial: str) -> SvidRecord | None:
        self.reads += 1
        return self.rows.get(serial)

    async def prune_svids(self, expired_before: float) -> int:
        gone = [s for s, r in self.rows.items() if r.not_after < expired_before]
        for serial in gone:
            del self.rows[serial]
        return len(gone)


class Identities:
    def __init__(self, *identities: Identity) -> None:
        self.by_object = {i.object_id: i for i in identities}

    def identity_by_object(self, object_id: str) -> Identity | None:
        return self.by_object.get(object_id)


def ca() -> SpiffeCA:
    root = RootKeys((os.urandom(32),))
    record = generate_ca("t-1", "default.keyless", root, NOW, "current", lifetime=86400)
    return SpiffeCA.open(record, root)


def leaf(authority: SpiffeCA, ttl: int = 3600) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return issue_x509_svid(authority, SPIFFE_ID, key.public_key(), NOW, ttl)[0]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


async def issued(store: DictStore, cert: x509.Certificate, tenant: str = "t-1") -> None:
    await store.record_svid(
        record_of(
            cert,
            tenant_id=tenant,
            object_id=APP.object_id,
            client_id=APP.client_id,
            spiffe_id=SPIFFE_ID,
            workload={"namespace": "demo", "pod": "app-1"},
        )
    )


async def test_an_issued_svid_acts_as_its_identity_and_is_cached() -> None:
    store, cert = DictStore(), leaf(ca())
    await issued(store, cert)
    directory = SvidDirectory(store)
    for _ in range(3):
        principal = await svid_principal(
            directory, Identities(APP), der(cert), tenant_id="t-1", now=NOW + 10
        )
    assert (principal.tenant_id, principal.object_id, principal.client_id) == (
        "t-1",
        "oid-app",
        "cid-app",
    )
    assert principal.fed == {
        "namespace": "demo",
        "pod": "app-1",
        "spiffe_id": SPIFFE_ID,
        "auth": "x509-svid",
    }
    assert principal.via == "x509-svid" and principal.token_id == ""
    assert principal.expires_at == cert.not_valid_after_utc.timestamp()
    assert store.reads == 1  # records never change: found once, then from memory


async def test_only_the_recorded_certificate_maps_not_another_with_its_serial() -> None:
    """Two certificates with one serial (a CA could sign both): the digest tells them apart."""
    authority = ca()
    store, cert = DictStore(), leaf(authority)
    await issued(store, cert)
    key = ec.generate_private_key(ec.SECP256R1())
    twin = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE_ID)]), True
        )
        .sign(key, cert.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    with pytest.raises(UnknownSvid, match=r"not an X\.509-SVID issued by this keyless"):
        await svid_principal(
            SvidDirectory(store), Identities(APP), der(twin), tenant_id="t-1", now=NOW
        )


@pytest.mark.parametrize(
    ("offset", "refused"),
    [
        pytest.param(3599, False, id="just-valid"),
        pytest.param(3600, True, id="at-not-after"),
        pytest.param(-400, True, id="before-not-before"),
    ],
)
async def test_validity_is_checked_with_the_injected_clock(offset: int, refused: bool) -> None:
    store, cert = DictStore(), leaf(ca(), ttl=3600)
    await issued(store, cert)
    check = svid_principal(
        SvidDirectory(store), Identities(APP), der(cert), tenant_id="t-1", now=NOW + offset
    )
    if refused:
        with pytest.raises(UnknownSvid, match="expired or not yet valid"):
            await check
    else:
        assert (await check).object_id == APP.object_id


async def test_an_unknown_or_unparsable_certificate_is_unknown() -> None:
    directory = SvidDirectory(DictStore())
    with pytest.raises(UnknownSvid, match=r"not an X\.509-SVID issued"):
        await svid_principal(directory, Identities(APP), der(leaf(ca())), tenant_id="t-1", now=NOW)
    with pytest.raises(UnknownSvid, match="cannot be parsed"):
        await svid_principal(directory, Identities(APP), b"\x30\x03junk", tenant_id="t-1", now=NOW)


async def test_another_tenants_svid_is_refused_naming_its_identity() -> None:
    store, cert = DictStore(), leaf(ca())
    await issued(store, cert, tenant="t-2")
    other = Identity("oid-app", "cid-app", "app", "t-2", 0.0)
    with pytest.raises(SvidOfAnotherTenant) as caught:
        await svid_principal(
            SvidDirectory(store), Identities(other), der(cert), tenant_id="t-1", now=NOW
        )
    assert caught.value.principal.object_id == "oid-app"
    assert caught.value.principal.fed["spiffe_id"] == SPIFFE_ID


@pytest.mark.parametrize(
    "identities",
    [
        pytest.param(Identities(), id="deleted"),
        pytest.param(
            Identities(Identity("oid-app", "cid-new", "app", "t-1", 5.0)), id="re-created"
        ),
    ],
)
async def test_a_deleted_identitys_svid_is_refused(identities: Identities) -> None:
    store, cert = DictStore(), leaf(ca())
    await issued(store, cert)
    with pytest.raises(
        IdentityGone, match=r"\(X\.509-SVID\) was issued to an identity that no longer exists"
    ):
        await svid_principal(SvidDirectory(store), identities, der(cert), tenant_id="t-1", now=NOW)


async def test_prune_drops_expired_records_and_their_cached_copies() -> None:
    store, cert = DictStore(), leaf(ca(), ttl=600)
    await issued(store, cert)
    directory = SvidDirectory(store)
    await svid_principal(directory, Identities(APP), der(cert), tenant_id="t-1", now=NOW)
    assert await directory.prune(NOW + 600) == 0  # a minute of skew first
    assert await directory.prune(NOW + 661) == 1
    with pytest.raises(UnknownSvid):
        await svid_principal(directory, Identities(APP), der(cert), tenant_id="t-1", now=NOW)


async def test_concurrent_issues_share_one_commit_and_all_wait_for_it() -> None:
    """Group commit: records made while a batch commits go into the next one; each
    ``record`` returns only once its own record is in the store."""
    store = DictStore()
    directory = SvidDirectory(store)
    authority = ca()
    records = [
        record_of(
            leaf(authority),
            tenant_id="t-1",
            object_id=APP.object_id,
            client_id=APP.client_id,
            spiffe_id=SPIFFE_ID,
            workload={},
        )
        for _ in range(20)
    ]

    async def one(r: SvidRecord) -> bool:
        await directory.record(r)
        return r.serial in store.rows

    assert all(await asyncio.gather(*(one(r) for r in records)))
    assert sum(store.batches) == 20 and len(store.batches) < 20
