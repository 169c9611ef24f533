"""Fixtures of the hardening suites (their counts are summed in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.federation import Federated, federate
from tests.support.server import ServerFactory


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    """One federated keyless per test module (starting servers costs seconds)."""
    tmp = tmp_path_factory.mktemp("fed")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True)
        yield federate(server, tmp)
    finally:
        factory.stop_all()
