from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import Webhook, start_webhook
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
def webhook(kube: FakeKubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """keyless (--dev) whose kubeconfig points at the fake Kubernetes API, with the webhook on
    its own listener that requires the (test) API server's client certificate."""
    tmp = tmp_path_factory.mktemp("k8s")
    kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
    factory = ServerFactory(tmp)
    try:
        yield start_webhook(factory, tmp, env={"KUBECONFIG": str(kubeconfig), "HOME": str(tmp)})
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def fed(webhook: Webhook, tmp_path_factory: pytest.TempPathFactory) -> Federated:
    """The same keyless, federated: identity ``app`` trusts the dev cluster and a test issuer."""
    return federate(webhook.server, tmp_path_factory.mktemp("fed"))
