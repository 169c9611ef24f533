"""The demo's workloads on real SVIDs: two ``keyless agent --svid-dir`` processes get X.509-SVIDs
from a real keyless (the pod token decided by the trust policy, the tenant CA signing), and the
``keyless.mtls`` workloads talk mTLS with them, each authorizing the other's SPIFFE ID."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.agent.conftest import AgentProcess
from tests.support.server import free_port
from tests.support.waiting import eventually

SPIFFE_ID = "spiffe://default.keyless/ns/demo/sa/app"  # the dev token's service account


def _workload(role: str, directory: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "keyless.mtls.workload", role, "--svid-dir", str(directory),
        "--port", str(port), "--allow", SPIFFE_ID, *extra,
    ]  # fmt: skip


def test_workloads_talk_mtls_with_svids_from_the_agent(
    agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    dirs = [tmp_path / "server", tmp_path / "client"]
    for directory in dirs:
        agent("--svid-dir", str(directory))
    for directory in dirs:
        assert eventually(lambda d=directory: (d / "svid.pem").exists(), timeout=30)
    port = free_port()
    server = subprocess.Popen(_workload("server", dirs[0], port), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert '"listening"' in server.stdout.readline()
        client = subprocess.run(
            _workload("client", dirs[1], port, "--duration", "2", "--reconnect", "0.5"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    assert client.returncode == 0, client.stdout + client.stderr
    events = [json.loads(line) for line in client.stdout.splitlines()]
    connected = [e for e in events if e["event"] == "connected"]
    assert connected and all(e["peer"] == SPIFFE_ID for e in connected)
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["failures"] == 0 and summary["pings"] > 0
