"""A serving process imports only what serving needs: each module is resident in every worker.

``python -m keyless.server.worker`` is what ``--workers`` starts, and what ``keyless serve``
becomes once the CLI has read its options (``exec_server``); importing it loads the whole
serving path (``server.run``, ``api.app``, every dialect, the store). What is checked here is
not loaded by it: httpx (whose package import pulls rich, pygments and click when installed,
~10 MB per process) is imported at the first JWKS fetch, Alembic only to migrate (in a child
process), the CLI's libraries only by the CLI. The import check runs in a fresh interpreter,
so nothing this test process imported counts; the last test looks at a real server's
processes after they served requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.federation import federate
from tests.support.procs import children
from tests.support.server import ServerFactory

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
    "sqlalchemy.dialects.postgresql",  # with a PostgreSQL URL only (store/schema.py)
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


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_running_server_holds_no_cli_libraries(servers: ServerFactory, tmp_path: Path) -> None:
    """``keyless serve --workers 2``, after token exchanges: the server process is the fresh
    serving interpreter (same pid), and no process of it maps the native parts of the CLI's
    libraries (pydantic_core, which typer imports to coerce options; PyYAML's)."""
    server = servers.start("--workers", "2", dev=True)
    fed = federate(server, tmp_path)
    for _ in range(4):
        assert fed.exchange(fed.test_token()).status_code == 200
    pids = [server.proc.pid, *children(server.proc.pid)]
    assert len(pids) >= 2, pids
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"keyless.server.worker" in cmdline and b"--parent" in cmdline, cmdline
    assert str(server.data_dir).encode() in cmdline  # ps still shows which server it is
    for pid in pids:
        maps = _mapped(pid)
        assert "_pydantic_core" not in maps, f"process {pid} maps pydantic_core"
        assert "/yaml/_yaml" not in maps, f"process {pid} maps PyYAML's extension"
    # The probe sees such a library where it is loaded: this test process has it.
    import pydantic_core  # noqa: F401

    assert "_pydantic_core" in _mapped(os.getpid())
