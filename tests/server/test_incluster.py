"""``--k8s-trust-cluster`` in process (server/incluster.py): the server's own Services, the fake
Kubernetes API behind a kubeconfig. While the API cannot be read, one warning line and retries
in the background; then the cluster's issuer is registered once, in ``--k8s-tenant``'s tenant,
keys from the Kubernetes API, audited. The same with a real
server and the real Azure SDK is tests/k8s/test_vaultdns.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keyless.k8s.trust import TRUST_CLUSTER_ACTOR, trust_own_cluster
from keyless.server import incluster
from tests.k8s.fakeapi import FakeKubeApi
from tests.support.inprocess import in_process
from tests.support.oidc import jwks_of, new_key

HANG_GUARD = 15.0  # seconds: a bound on waiting, never a measure


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi(issuer="https://oidc.cluster.test").start()
    fake.jwks = jwks_of((new_key(), "k1"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setattr(incluster, "TRUST_RETRY_FIRST", 0.05)
    yield fake
    fake.stop()


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_trusted_in_its_tenant_once_the_api_answers(
    kube: FakeKubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kube.outage = 503
    async with in_process(tmp_path, k8s_trust_cluster=True, k8s_tenant="contoso") as kl:
        services = kl.services
        await kl.call("POST", "/v1/tenants", {"alias": "contoso"})
        stop = asyncio.Event()
        with caplog.at_level(logging.INFO, "keyless.k8s"):
            (task,) = incluster.start(services, stop)
            await until(lambda: len(kube.requests) >= 3)  # three tries at least
            assert not task.done()
            kube.outage = None
            async with asyncio.timeout(HANG_GUARD):
                await task
        warned = [r for r in caplog.records if "not trusted yet" in r.getMessage()]
        assert len(warned) == 1  # however many tries
        assert "503" in str(getattr(warned[0], "error", ""))

        contoso = await services.tenants.get("contoso")
        issuers = await services.federation.issuer_records(contoso.id)
        assert [(i.url, i.source) for i in issuers] == [(kube.issuer, "kubernetes")]
        assert not services.federation.is_registered(services.default_tenant.id, kube.issuer)
        events = [
            row.event
            for row in await services.store.list_audit(limit=1000)
            if row.event.action == "issuer add"
        ]
        assert [(e.tenant_id, e.target, e.actor) for e in events] == [
            (contoso.id, kube.issuer, TRUST_CLUSTER_ACTOR)
        ]
        # Again (a second start, another replica): nothing added, nothing audited.
        again = await trust_own_cluster(
            services.federation, contoso.id, services.audit, services.clock
        )
        assert again == (kube.issuer, False)
        assert len(await services.federation.issuer_records(contoso.id)) == 1


async def test_an_issuer_registered_otherwise_is_left_as_it_is(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    """An admin who uploaded the cluster's JWKS keeps that choice."""
    async with in_process(tmp_path) as kl:
        services = kl.services
        await kl.call("POST", "/v1/issuers", {"url": kube.issuer, "jwks": kube.jwks})
        tenant = services.default_tenant.id
        found = await trust_own_cluster(services.federation, tenant, services.audit, services.clock)
        assert found == (kube.issuer, False)
        (record,) = await services.federation.issuer_records(tenant)
        assert record.source == "file"
