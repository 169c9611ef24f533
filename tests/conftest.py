"""Shared fixtures: databases (SQLite always, PostgreSQL when reachable) and live servers."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import pytest_asyncio

from keyless.store.sql import SqlStore
from tests.hardening.tally import COUNTS
from tests.support.inprocess import InProcessFederated, federate, in_process
from tests.support.server import ServerFactory

PG_ADMIN_URL = os.environ.get(
    "KEYLESS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True):
            return None
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL; CI must have one, elsewhere it may skip."""
    problem = _pg_reachable()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(
                f"PostgreSQL leg required in CI but {PG_ADMIN_URL} is unreachable: {problem}"
            )
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    return PG_ADMIN_URL


@pytest.fixture
def make_pg_database(pg_server: str) -> Iterator[callable]:  # type: ignore[valid-type]
    """Create throwaway databases on demand; every one is dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"keyless_test_{secrets.token_hex(6)}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        base = pg_server.rsplit("/", 1)[0]
        return f"{base}/{name}"

    yield make
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Every store test runs against SQLite and PostgreSQL alike."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keyless.db'}"
    return request.getfixturevalue("make_pg_database")()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = await SqlStore.open(database_url)
    yield s
    await s.close()


@pytest.fixture
def servers(tmp_path) -> Iterator[ServerFactory]:  # type: ignore[no-untyped-def]
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def server(servers: ServerFactory):  # type: ignore[no-untyped-def]
    """One running keyless (SQLite, HTTPS, --dev) on a free port."""
    return servers.start(dev=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ifed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessFederated]:
    """One federated keyless in process per test module (tests/support/inprocess.py), on the
    module's event loop: a module using it marks its tests
    ``pytest.mark.asyncio(loop_scope="module")``. Its clock only moves when a test moves it."""
    async with in_process(tmp_path_factory.mktemp("inproc"), dev=True) as kl:
        yield await federate(kl)


SUMMARY = {
    "hostile": "hostile token cases",
    "fuzz": "property-test (Hypothesis) examples",
    "crash": "crash rounds (SIGKILL, restart, verify)",
    "isolation": "tenant isolation checks (token endpoint, issuers, vaults, JWKS)",
    "schemathesis": "schemathesis examples (requests from docs/openapi, keyless in process)",
    "schemathesis_2xx": "schemathesis examples answered 2xx",
    "schemathesis_ops": "schemathesis operations exercised",
    "schemathesis_ops_2xx": "schemathesis operations answered 2xx at least once",
    "upstream": "azure-keyvault-secrets' own tests and samples passed live (tests/upstream)",
}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its counts to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["keyless_counts"] = dict(COUNTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """The controller sums the counts of every worker (pytest-xdist hook)."""
    COUNTS.update(getattr(node, "workeroutput", {}).get("keyless_counts", {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for key, label in SUMMARY.items():
        if COUNTS[key]:
            terminalreporter.write_line(f"{label}: {COUNTS[key]}")


# The longest modules start first: pytest-xdist (--dist loadfile) hands modules out in
# collection order, so one of these collected last would run alone at the end of `make test`.
SLOW_FIRST = (
    "tests/upstream/",
    "tests/hardening/test_schemathesis.py",
    "tests/hardening/test_crash.py",
    "tests/hardening/test_replicas_kill.py",
    "tests/hardening/test_audit_tamper.py",
    "tests/hardening/test_properties.py",
    "tests/hardening/test_webhook_hostile.py",
    "tests/cli/test_errors.py",
    "tests/test_readme.py",
    "tests/api/test_revocation.py",
    "tests/api/test_keyvault.py",
    "tests/cli/test_audit.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next(
            (i for i, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST)
        )

    items.sort(key=rank)  # stable: the order within a module and among the rest is kept
