from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.fakeapi import FakeKubeApi
from tests.support.federation import Federated, federate
from tests.support.server import ServerFactory


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi().start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def fed(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    """A federated keyless (--dev) whose kubeconfig points at the fake Kubernetes API."""
    tmp = tmp_path_factory.mktemp("k8s")
    kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True, env={"KUBECONFIG": str(kubeconfig), "HOME": str(tmp)})
        yield federate(server, tmp)
    finally:
        factory.stop_all()
