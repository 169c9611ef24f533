"""``keyless audit``: a real server's exchanges and admin changes, listed, exported, verified."""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

from tests.support.federation import federate
from tests.support.server import RunningServer, ServerFactory, keyless_cmd


def _events(server: RunningServer, *args: str) -> list[dict[str, object]]:
    out = server.cli("--output", "json", "audit", "list", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def _sql(server: RunningServer, statement: str) -> None:
    db = sqlite3.connect(server.data_dir / "keyless.db")
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


def test_exchanges_and_admin_changes_are_listed_exported_and_verified(
    server: RunningServer, tmp_path: Path
) -> None:
    fed = federate(server, tmp_path)
    token = fed.dev_token()
    assert fed.exchange(token).status_code == 200
    assert fed.exchange("not-a-jwt").status_code == 400

    events = _events(server)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    created = next(e for e in events if e["action"] == "admin.POST /v1/identities")
    assert created["target"] == "/v1/identities" and created["result"] == "success"
    assert created["actor"] == "admin-socket" and created["tenant_id"] == fed.tenant_id
    assert created["request_id"] and created["hash"] and created["prev_hash"]
    added = [e for e in events if e["action"].endswith("/federated-credentials")]
    assert [e["target"] for e in added] == ["/v1/identities/app/federated-credentials"] * 2
    ok, failed = (e for e in events if e["action"] == "token.exchange.client_credentials")
    assert ok["result"] == "success" and ok["actor"] == fed.object_id
    assert ok["workload"]["namespace"] == "demo" and ok["workload"]["pod"] == "app-7d9f"
    assert ok["workload"]["service_account"] == "app"
    assert failed["result"] == "failure" and failed["reason"]
    out = server.cli("--output", "json", "audit", "list").stdout
    assert token.split(".")[2] not in out  # never a token

    text = server.cli("audit", "list").stdout.splitlines()
    assert len(text) == len(events) and "token.exchange.client_credentials" in text[-1]
    assert [e["seq"] for e in _events(server, "--limit", "2")] == [1, 2]
    assert [e["seq"] for e in _events(server, "--after", str(len(events) - 1))] == [len(events)]
    assert _events(server, "--tenant", "default")[0]["tenant_id"] == fed.tenant_id

    verified = server.cli("audit", "verify")
    assert verified.stdout.strip() == f"audit log verified: {len(events)} events"
    export = tmp_path / "audit.jsonl"
    export.write_text(out)
    assert server.cli("audit", "verify", "--file", str(export)).returncode == 0

    _sql(server, "UPDATE audit_events SET reason = 'x' WHERE seq = 2")
    broken = server.cli("audit", "verify", check=False)
    assert broken.returncode == 1
    assert "edited at seq 2" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1
    report = server.cli("--output", "json", "audit", "verify", check=False)
    assert report.returncode == 1
    assert json.loads(report.stdout)["problem"]["seq"] == 2
    # The export made before the edit still verifies; an edited export does not.
    lines = out.splitlines()
    lines[3] = lines[3].replace('"result":"success"', '"result":"failure"')
    export.write_text("\n".join(lines))
    offline = server.cli("audit", "verify", "--file", str(export), check=False)
    assert offline.returncode == 1 and "seq 4" in offline.stderr


def test_follow_prints_new_events_until_sigterm(server: RunningServer) -> None:
    server.cli("identity", "create", "first")
    command = ["--data-dir", str(server.data_dir), "--output", "json", "audit", "list", "-f"]
    proc = subprocess.Popen(
        [*keyless_cmd(), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = json.loads(lines.get(timeout=30))
        assert first["action"] == "admin.POST /v1/identities" and first["seq"] == 1
        server.cli("identity", "delete", "first")
        second = json.loads(lines.get(timeout=30))
        assert second["action"] == "admin.DELETE /v1/identities/{name}"
        assert second["target"] == "/v1/identities/first"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        reader.join(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            pipe.close()
    assert code == 0


def _block_audit(server: RunningServer) -> None:
    _sql(
        server,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit blocked'); END",
    )


def test_fail_closed_refuses_what_cannot_be_audited(servers: ServerFactory) -> None:
    server = servers.start(dev=True)
    _block_audit(server)
    refused = server.cli("identity", "create", "unaudited", check=False)
    assert refused.returncode == 1 and "audit log cannot be written" in refused.stderr
    tenant = json.loads(server.cli("--output", "json", "tenant", "show").stdout)["id"]
    with server.client() as http:
        response = http.post(
            f"/{tenant}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "00000000-0000-0000-0000-000000000000",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": "x.y.z",
                "scope": f"https://vault.localhost:{server.port}/.default",
            },
        )
    assert "access_token" not in response.json()
    assert "audit log cannot be written" in response.json()["error_description"]


def test_fail_open_serves_and_logs(servers: ServerFactory) -> None:
    server = servers.start("--audit-fail-open", dev=True)
    _block_audit(server)
    assert server.cli("identity", "create", "unaudited").returncode == 0
    assert "audit log write failed; request allowed" in server.log
    assert _events(server) == []
