"""The agent against a real keyless (tests/support/server.py, federated by
tests/support/federation.py): vault ``billing`` readable by identity ``app`` (Key Vault Secrets
User), vault ``sealed`` that ``app`` may not read. The agent runs as a real process
(``keyless agent ...``) configured by environment only, as the webhook would configure it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.federation import Federated, federate
from tests.support.server import RunningServer, ServerFactory, keyless_cmd

VAULT = "billing"
SEALED = "sealed"


@dataclass
class Vaults:
    fed: Federated

    @property
    def server(self) -> RunningServer:
        return self.fed.server

    def set(self, name: str, value: str, vault: str = VAULT) -> None:
        self.server.cli("secret", "set", vault, name, "--value-from-stdin", input=value)

    def agent_env(self) -> dict[str, str]:
        """What the webhook injects: the Azure workload variables, a projected token."""
        fed = self.fed
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KEYLESS_"))}
        env.update(
            AZURE_AUTHORITY_HOST=fed.server.url,
            AZURE_TENANT_ID=fed.tenant_id,
            AZURE_CLIENT_ID=fed.client_id,
            AZURE_FEDERATED_TOKEN_FILE=str(fed.token_file(fed.dev_token())),
            REQUESTS_CA_BUNDLE=str(fed.server.ca),
        )
        return env


def prepare(server: RunningServer, tmp: Path) -> Vaults:
    fed = federate(server, tmp)
    for vault in (VAULT, SEALED):
        server.cli("vault", "create", vault)
    server.cli("role", "assign", "app", "secrets-user", "--scope", f"/vaults/{VAULT}")
    return Vaults(fed)


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vaults]:
    tmp = tmp_path_factory.mktemp("agent")
    factory = ServerFactory(tmp)
    try:
        yield prepare(factory.start(dev=True), tmp)
    finally:
        factory.stop_all()


@dataclass
class AgentProcess:
    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    _seen: threading.Condition = field(default_factory=threading.Condition)
    _readers: list[threading.Thread] = field(default_factory=list)

    def _read(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._seen:
                into.append(line)
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 30, stream: str = "err") -> bool:
        lines = self.out if stream == "out" else self.err
        with self._seen:
            return self._seen.wait_for(lambda: any(text in ln for ln in lines), timeout)

    @property
    def log(self) -> str:
        return "".join(self.err)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def start_agent(args: tuple[str, ...], env: dict[str, str]) -> AgentProcess:
    """``keyless agent ARGS`` in the background, its output read by threads."""
    proc = subprocess.Popen(
        [*keyless_cmd(), "agent", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = AgentProcess(proc)
    for stream, into in ((proc.stdout, running.out), (proc.stderr, running.err)):
        reader = threading.Thread(target=running._read, args=(stream, into), daemon=True)
        reader.start()
        running._readers.append(reader)
    return running


@pytest.fixture
def agent(kv: Vaults) -> Iterator[Callable[..., AgentProcess]]:
    """Start ``keyless agent ARGS`` (with ``env``: another keyless's variables) in the
    background; every one is stopped (SIGTERM) after the test."""
    started: list[AgentProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> AgentProcess:
        running = start_agent(args, env or kv.agent_env())
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def run_agent(
    kv: Vaults, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``keyless agent ARGS`` to its end (``--once``, ``exec``)."""
    return subprocess.run(
        [*keyless_cmd(), "agent", *args],
        env=env or kv.agent_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def content(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
