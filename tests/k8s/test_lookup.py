"""The service-account lookup over the Kubernetes API (``kubernetes_asyncio``), against the
fake API server: live GET on a cold cache, the watch-fed cache, 404, and no cluster at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.core.errors import Unavailable
from keyless.k8s.inject import ServiceAccount
from keyless.k8s.kubeapi import KubeServiceAccounts, load_configuration
from keyless.k8s.lookup import NoCluster, StaticServiceAccounts
from tests.k8s.fakeapi import FakeKubeApi

CLIENT = "0b4f9a3e-6c1d-4a57-9e8b-2f6d1c7a5e90"


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def no_kube_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))


HANG_GUARD = 10.0  # seconds: a bound on waiting for the watch, never a measure


class ObservedServiceAccounts(KubeServiceAccounts):
    """The real lookup, setting ``cache_changed`` whenever its watch-fed cache takes something
    in: a watch event (``_apply``) or a new list (which replaces ``_cache``)."""

    def __init__(self, configuration: Any = None) -> None:
        self.cache_changed = asyncio.Event()
        super().__init__(configuration)

    @property
    def _cache(self) -> dict[tuple[str, str], ServiceAccount]:
        return self._observed_cache

    @_cache.setter
    def _cache(self, cache: dict[tuple[str, str], ServiceAccount]) -> None:
        self._observed_cache = cache
        self.cache_changed.set()

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        super()._apply(kind, obj)
        self.cache_changed.set()


async def _until(lookup: ObservedServiceAccounts, predicate: Callable[[], bool]) -> None:
    """Until ``predicate()`` holds, looked at again each time the cache takes something in."""
    async with asyncio.timeout(HANG_GUARD):
        while not predicate():
            lookup.cache_changed.clear()
            await lookup.cache_changed.wait()


async def test_get_list_watch(api: FakeKubeApi, tmp_path: Path) -> None:
    api.put("demo", "app", {"azure.workload.identity/client-id": CLIENT})
    configuration = await load_configuration(api.kubeconfig(tmp_path / "kubeconfig"))
    lookup = ObservedServiceAccounts(configuration)
    try:
        sa = await lookup.get("demo", "app")
        assert sa == ServiceAccount("demo", "app", {"azure.workload.identity/client-id": CLIENT})
        assert await lookup.get("demo", "ghost") is None
        await asyncio.wait_for(lookup.synced.wait(), 10)
        api.put("demo", "app", {"azure.workload.identity/client-id": "changed"})
        # The change arrives by a watch event (or by the next list, between two watches).
        await _until(lookup, lambda: lookup._cache[("demo", "app")].annotations != sa.annotations)
        gets = api.gets_of("demo", "app")
        changed = await lookup.get("demo", "app")
        assert changed is not None
        assert changed.annotations["azure.workload.identity/client-id"] == "changed"
        assert api.gets_of("demo", "app") == gets  # served from the watch-fed cache
    finally:
        await lookup.aclose()


async def test_unreachable_api_is_unavailable(api: FakeKubeApi, tmp_path: Path) -> None:
    configuration = await load_configuration(api.kubeconfig(tmp_path / "kubeconfig"))
    api.stop()
    lookup = KubeServiceAccounts(configuration)
    try:
        with pytest.raises(Unavailable, match="unreachable"):
            await lookup.get("demo", "app")
    finally:
        await lookup.aclose()


@pytest.mark.usefixtures("no_kube_env")
async def test_no_cluster_names_the_way_out() -> None:
    lookup = KubeServiceAccounts()
    with pytest.raises(Unavailable) as caught:
        await lookup.get("demo", "app")
    assert "no in-cluster configuration and no kubeconfig" in caught.value.message
    assert "keyless.dev/client-id" in caught.value.message
    await lookup.aclose()


@pytest.mark.usefixtures("no_kube_env")
async def test_broken_kubeconfig_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("apiVersion: v1\nkind: Config\ncurrent-context: none\n")
    monkeypatch.setenv("KUBECONFIG", str(bad))
    lookup = KubeServiceAccounts()
    with pytest.raises(Unavailable, match="cannot load the Kubernetes configuration"):
        await lookup.get("demo", "app")
    await lookup.aclose()


async def test_static_and_no_cluster_implementations() -> None:
    static = StaticServiceAccounts([ServiceAccount("a", "b")])
    assert await static.get("a", "b") == ServiceAccount("a", "b")
    assert await static.get("a", "c") is None
    assert static.calls == [("a", "b"), ("a", "c")]
    with pytest.raises(Unavailable, match="annotate the pod"):
        await NoCluster().get("a", "b")
