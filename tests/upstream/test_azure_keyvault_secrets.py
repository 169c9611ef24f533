"""The Azure SDK team's own tests of azure-keyvault-secrets, and its samples, live against keyless.

The sdist of the installed azure-keyvault-secrets (tests/upstream/sdist.py) ships ``tests/``
(the client's unit tests and its live tests, which Azure's pipelines run against real vaults or
replay from recordings) and ``samples/``. They run here unmodified, in a pytest of their own,
with a stand-in for the SDK repository's ``devtools_testutils`` harness
(tests/upstream/harness/): every API version the tests parametrize, from 2016-10-01 to the
newest, against one real keyless server over HTTPS, each test class in a vault of its own,
credentials from keyless's token endpoint for a federated (dev cluster) token. The samples run
as ``__main__`` with ``VAULT_URL`` naming a vault of their own.

Not run: ``tests/perfstress_tests`` (benchmarks for the SDK's perfstress runner, not tests).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.keyvault.secrets import ApiVersion

from tests.hardening.tally import count
from tests.support.federation import Federated, federate
from tests.support.server import ServerFactory
from tests.upstream import sdist

HARNESS = Path(__file__).resolve().parent / "harness"
REPO = Path(__file__).resolve().parents[2]
# How many tests (the samples included) pass with each sdist run so far; another version must
# pass at least as many as a floor well below these.
PASSED = {"4.12.0": 1299}
FLOOR = 1000
SAMPLES = 8
WORKERS = 0


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    tmp = tmp_path_factory.mktemp("upstream")
    factory = ServerFactory(tmp)
    try:
        yield federate(factory.start(dev=True), tmp)
    finally:
        factory.stop_all()


def _environment(fed: Federated, report: Path, source: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AZURE_", "KEYVAULT_", "PYTEST_", "MSAL_"))
        and key not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
    }
    server = fed.server
    token = fed.token_file(fed.dev_token())
    env.update(
        {
            # The workload's environment, as the azure-workload-identity webhook would set it.
            "AZURE_AUTHORITY_HOST": server.url,
            "AZURE_TENANT_ID": fed.tenant_id,
            "AZURE_CLIENT_ID": fed.client_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token),
            # keyless's CA: requests (sync clients) and aiohttp (async clients, via OpenSSL).
            "REQUESTS_CA_BUNDLE": str(server.ca),
            "SSL_CERT_FILE": str(server.ca),
            # The stand-in harness: where to make vaults, and the report it writes.
            "KEYLESS_UPSTREAM_DATA_DIR": str(server.data_dir),
            "KEYLESS_UPSTREAM_IDENTITY": "app",
            "KEYLESS_UPSTREAM_VAULT_DOMAIN": "vault.localhost",
            "KEYLESS_UPSTREAM_VAULT_BASE": f"https://{{}}.vault.localhost:{server.port}",
            "KEYLESS_UPSTREAM_SAMPLES": str(source / "samples"),
            "KEYLESS_UPSTREAM_REPORT": str(report),
            "PYTHONPATH": os.pathsep.join([str(HARNESS), str(REPO / "src"), str(REPO)]),
        }
    )
    return env


def test_upstream_tests_and_samples_pass_live(fed: Federated) -> None:
    source = sdist.fetch()
    # The last run's outcomes and output stay beside the sdist (.upstream/, gitignored).
    report, log = sdist.CACHE / "last-run.json", sdist.CACHE / "last-run.log"
    report.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        # The live tests mostly wait (on the server, and the 1 s clock ticks): two workers
        # overlap the waits.
        "-n",
        str(WORKERS),
        "--dist",
        "load",
        "-c",
        str(HARNESS / "pytest.ini"),
        "--rootdir",
        str(source / "tests"),
        str(source / "tests"),
        str(HARNESS / "run_samples.py"),
        *shlex.split(os.environ.get("UPSTREAM_PYTEST_ARGS", "")),
    ]
    run = subprocess.run(
        command,
        cwd=source / "tests",
        env=_environment(fed, report, source),
        capture_output=True,
        text=True,
        timeout=900,
    )
    log.write_text(run.stdout + run.stderr)
    tail = (run.stdout + run.stderr)[-3000:]
    assert report.is_file(), f"the upstream run wrote no report:\n{tail}"
    outcomes: dict[str, dict[str, object]] = json.loads(report.read_text())
    by_outcome = Counter(str(o["outcome"]) for o in outcomes.values())
    count("upstream", by_outcome["passed"])
    failed = {k: v for k, v in outcomes.items() if v["outcome"] in ("failed", "error")}
    assert not failed, (
        f"{by_outcome}; failed (see {report}):\n"
        + "\n\n".join(
            f"{k}:\n{v.get('longrepr', '')[-1500:]}"  # type: ignore[index]
            for k, v in list(failed.items())[:5]
        )
    )
    if os.environ.get("UPSTREAM_PYTEST_ARGS"):
        return  # a selection (e.g. ``-k NAME``) while working on one failure: no totals
    skipped = {k: v.get("longrepr") for k, v in outcomes.items() if v["outcome"] == "skipped"}
    assert not skipped, f"skipped upstream tests: {skipped}"
    assert run.returncode == 0, tail
    assert by_outcome["passed"] >= PASSED.get(sdist.pinned_version(), FLOOR), by_outcome

    # Every API version the client knows ran the live tests, sync and async.
    live = [k for k in outcomes if "test_secrets_client.py" in k or "test_secrets_async.py" in k]
    for version in ApiVersion:
        ran = [k for k in live if k.endswith(f"[{version.value}]")]
        assert len(ran) >= 2 * 9, (version.value, len(ran))
    samples = [k for k in outcomes if "::test_sample[" in k]  # run_samples.py, outside rootdir
    assert len(samples) == SAMPLES and all(outcomes[k]["outcome"] == "passed" for k in samples)

    # They ran against this server: a vault per test class and worker, and per sample, each
    # holding the secrets (live or deleted) its tests left behind.
    vaults = json.loads(fed.server.cli("--output", "json", "vault", "list").stdout)
    names = {v["name"] for v in vaults}
    assert len(names) >= 4 + SAMPLES, names
    for name in names:
        left = [
            json.loads(fed.server.cli("--output", "json", "secret", "list", name, *flag).stdout)
            for flag in ((), ("--deleted",))
        ]
        assert any(left), f"vault {name} holds no secret"
