"""A serving process imports only what serving needs: each module is resident in every worker.

``python -m keyless.server.worker`` is what ``--workers`` starts; importing it loads the whole
serving path (``server.run``, ``api.app``, every dialect, the store). What is checked here is
not loaded by it: httpx (whose package import pulls rich, pygments and click when installed,
~10 MB per process) is imported at the first JWKS fetch, Alembic only to migrate, the CLI's
libraries only by the CLI. The check runs in a fresh interpreter, so nothing this test process
imported counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Each one, if imported by the serving path, costs every process its resident memory.
NOT_SERVING = (
    "httpx",  # issuer key fetches only (net/fetch.py, k8s/jwks.py)
    "httpcore",
    "rich",  # via httpx._main
    "pygments",  # via httpx._main
    "alembic",  # migrations (store/migrate.py), in the process that migrates
    "mako",
    "typer",  # the CLI
    "yaml",  # `keyless apply`
    "kubernetes_asyncio",  # the webhook's service-account lookups, once it first needs one
    "keyless.cli",
)


def _modules(code: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    env["PYTHONPATH"] = str(SRC)
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.fixture(scope="module")
def serving() -> set[str]:
    return _modules("import keyless.server.worker")


@pytest.mark.parametrize("name", NOT_SERVING)
def test_serving_worker_does_not_import(serving: set[str], name: str) -> None:
    loaded = sorted(m for m in serving if m == name or m.startswith(name + "."))
    assert not loaded, f"the serving path imports {loaded[:5]}: import it where it is used"


def test_the_check_sees_imports() -> None:
    """The same probe does see a module the code imports (the check can fail)."""
    assert {"httpx", "rich"} <= _modules("import keyless.server.worker, keyless.net.connect")
    assert "sqlalchemy" in _modules("import keyless.server.worker")
