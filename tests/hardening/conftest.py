"""Fixtures of the hardening suites, and their counts in the test summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hardening.tally import COUNTS
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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    labels = {
        "hostile": "hostile token cases",
        "fuzz": "property-test (Hypothesis) examples",
        "crash": "crash rounds (SIGKILL, restart, verify)",
        "isolation": "tenant isolation checks (token endpoint, issuers, vaults, JWKS)",
        "schemathesis": "schemathesis examples (requests from docs/openapi, live server)",
        "schemathesis_2xx": "schemathesis examples answered 2xx",
        "schemathesis_ops": "schemathesis operations exercised",
        "schemathesis_ops_2xx": "schemathesis operations answered 2xx at least once",
    }
    for key, label in labels.items():
        if COUNTS[key]:
            terminalreporter.write_line(f"{label}: {COUNTS[key]}")
