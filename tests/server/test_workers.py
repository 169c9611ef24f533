"""``--workers 2``: two processes on one port, and a client never notices which one answers.

Each SecretClient below opens its own connection, so the kernel spreads them over both
workers; every read must see the write before it, whichever worker took either.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from keyless.localresolve import resolving
from tests.support.federation import Federated, federate
from tests.support.procs import children
from tests.support.server import ServerFactory


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture
def fed(servers: ServerFactory, tmp_path: Path) -> Iterator[Federated]:
    server = servers.start("--workers", "2", "--token-rate-limit", "0", dev=True)
    fed = federate(server, tmp_path)
    server.cli("vault", "create", "kv1")
    server.cli("vault", "create", "kv2")
    server.cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/kv1")
    with resolving("vault.localhost"):
        yield fed


def _credential(fed: Federated, monkeypatch: pytest.MonkeyPatch) -> DefaultAzureCredential:
    for name in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CLIENT_ID", fed.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", fed.tenant_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(fed.token_file(fed.dev_token())))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", fed.server.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fed.server.ca))
    return DefaultAzureCredential()


def test_two_workers_share_the_port_and_see_each_others_writes(
    fed: Federated, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fed.server
    workers = children(server.proc.pid)
    assert len(workers) == 1, workers  # the parent plus one worker process
    before = {pid: _cpu_ticks(pid) for pid in [server.proc.pid, *workers]}
    credential = _credential(fed, monkeypatch)

    def fresh(vault: str = "kv1") -> SecretClient:  # a new connection each time
        return SecretClient(f"https://{vault}.vault.localhost:{server.port}", credential)

    for n in range(12):
        fresh().set_secret("db", f"value-{n}")
        assert fresh().get_secret("db").value == f"value-{n}"
    fresh().begin_delete_secret("db").wait()
    for _ in range(6):
        with pytest.raises(ResourceNotFoundError):
            fresh().get_secret("db")

    # A role assigned through the admin socket (the parent) holds at once in every worker.
    with pytest.raises(HttpResponseError) as denied:
        fresh("kv2").set_secret("x", "1")
    assert denied.value.status_code == 403
    server.cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/kv2")
    for n in range(8):
        fresh("kv2").set_secret("x", str(n))
    server.cli("role", "remove", "app", "secrets-officer", "--scope", "/vaults/kv2")
    for _ in range(6):
        with pytest.raises(HttpResponseError) as denied:
            fresh("kv2").get_secret("x")
        assert denied.value.status_code == 403

    after = {pid: _cpu_ticks(pid) for pid in before}
    assert all(after[pid] > before[pid] for pid in before), (before, after)  # both served
    assert server.cli("audit", "verify").returncode == 0  # one chain from both processes
    assert server.stop(signal.SIGTERM) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_that_dies_is_replaced(servers: ServerFactory) -> None:
    import os
    import time

    server = servers.start("--workers", "2", dev=True)
    (worker,) = children(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    replaced: list[int] = []
    while time.monotonic() < deadline and not replaced:
        time.sleep(0.3)
        replaced = [p for p in children(server.proc.pid) if p != worker]
    assert replaced, server.log
    with server.client() as http:
        for _ in range(5):
            assert http.get("/healthz").status_code == 200
    assert server.stop(signal.SIGTERM) == 0


def test_root_key_rotation_is_refused_with_more_than_one_worker(servers: ServerFactory) -> None:
    server = servers.start("--workers", "2")
    result = server.cli("rotate-root-key", check=False)
    assert result.returncode != 0
    assert "--workers 1" in result.stdout + result.stderr
