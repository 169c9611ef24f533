"""``keyless audit``: a real server's exchanges and admin changes, listed, exported, verified."""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    created = next(e for e in events if e["action"] == "identity create")
    assert created["target"] == "app" and created["result"] == "success"
    assert created["actor"] == "admin-socket" and created["tenant_id"] == fed.tenant_id
    assert created["request_id"] and created["hash"] and created["prev_hash"]
    added = [e for e in events if e["action"] == "federation add"]
    assert [e["target"] for e in added] == ["app dev-demo", "app test-demo"]
    ok, failed = (e for e in events if e["action"] == "token.exchange.client_credentials")
    assert ok["result"] == "success" and ok["actor"] == fed.object_id
    assert ok["workload"]["namespace"] == "demo" and ok["workload"]["pod"] == "app-7d9f"
    assert ok["workload"]["service_account"] == "app"
    assert failed["result"] == "failure" and failed["reason"]
    out = server.cli("--output", "json", "audit", "list").stdout
    assert token.split(".")[2] not in out  # never a token

    text = server.cli("audit", "list").stdout.splitlines()
    assert len(text) == len(events) and "token.exchange.client_credentials" in text[-1]
    # For people: the identity by name, admin changes as the commands that made them.
    assert any("client_credentials" in line and "identity=app" in line for line in text)
    assert any("identity create app  by admin-socket" in line for line in text)
    assert [e["seq"] for e in _events(server, "--limit", "2")] == [1, 2]
    assert [e["seq"] for e in _events(server, "--after", str(len(events) - 1))] == [len(events)]
    assert _events(server, "--tenant", "default")[0]["tenant_id"] == fed.tenant_id

    verified = server.cli("audit", "verify")
    assert verified.stdout.strip() == (
        f"audit log verified: {len(events)} events, keyed MACs checked, "
        "0 signed checkpoints matched"
    )
    assert all(e["mac"] and len(str(e["mac"])) == 64 for e in events)
    export = tmp_path / "audit.jsonl"
    export.write_text(out)
    assert server.cli("audit", "verify", "--file", str(export)).returncode == 0

    _sql(server, "UPDATE audit_events SET reason = 'x' WHERE seq = 2")
    broken = server.cli("audit", "verify", check=False)
    assert broken.returncode == 1
    assert "chain check, edited at seq 2" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    report = server.cli("--output", "json", "audit", "verify", check=False)
    assert report.returncode == 1
    assert json.loads(report.stdout)["problem"] == {
        "check": "chain",
        "kind": "edited",
        "seq": 2,
        "message": "seq 2 was edited: its content does not match its hash",
    }
    # The export made before the edit still verifies; an edited export does not.
    lines = out.splitlines()
    lines[3] = lines[3].replace('"result":"success"', '"result":"failure"')
    export.write_text("\n".join(lines))
    offline = server.cli("audit", "verify", "--file", str(export), check=False)
    assert offline.returncode == 1 and "seq 4" in offline.stderr


def _rewrite(path: Path, edit: Callable[[list[str]], list[str]]) -> Path:
    out = path.with_name(f"edited-{path.name}")
    out.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))
    return out


@dataclass
class Exported:
    server: RunningServer
    e1: Path  # after 3 events: the events, then a checkpoint at seq 3
    e2: Path  # after the first export (seq 4): events 1..4, checkpoints 3 and 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """One server for the export tests: each only reads its log or edits a copy of a file."""
    tmp = tmp_path_factory.mktemp("export")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True)
        for name in ("a", "b", "c"):
            server.cli("identity", "create", name)
        e1, e2 = tmp / "e1.jsonl", tmp / "e2.jsonl"
        made = server.cli("audit", "export", "--file", str(e1))
        assert made.stdout == "" and made.stderr.strip() == (
            f"exported 3 events and 1 signed checkpoints up to seq 3 to {e1}"
        )
        e2.write_text(server.cli("audit", "export").stdout)  # to stdout
        yield Exported(server, e1, e2)
    finally:
        factory.stop_all()


def test_export_writes_events_then_checkpoints_and_verifies(exported: Exported) -> None:
    server, e1, e2 = exported.server, exported.e1, exported.e2
    assert e1.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in e1.read_text().splitlines()]
    assert [e["seq"] for e in lines[:3]] == [1, 2, 3] and all(e["mac"] for e in lines[:3])
    cp = lines[3]["checkpoint"]
    assert (cp["seq"], cp["hash"]) == (3, lines[2]["hash"]) and cp["jwk"]["kid"] == cp["kid"]
    assert "d" not in cp["jwk"] and "mac" not in cp and len(lines) == 4
    # The first export is itself audited (seq 4); the second ends with a checkpoint of it.
    second = [json.loads(line) for line in e2.read_text().splitlines()]
    assert [e.get("seq") for e in second[:4]] == [1, 2, 3, 4]
    assert [c["checkpoint"]["seq"] for c in second[4:]] == [3, 4]

    offline = server.cli("audit", "verify", "--file", str(e2))
    assert offline.stdout.strip() == (
        "export verified: 4 events, hash chain intact, 2 signed checkpoints matched (keyed MACs "
        "are checked by the server only: `keyless audit verify`)"
    )
    against = server.cli("--output", "json", "audit", "verify", "--against", str(e1))
    report = json.loads(against.stdout)
    assert report["ok"] and report["macs"] and report["checkpoints"] >= 2 + 1, report
    assert (report["keyed_from"], report["unkeyed"]) == (1, 0)
    text = server.cli("audit", "verify", "--checkpoint", str(e2)).stdout
    assert text.startswith("audit log verified: ") and ", keyed MACs checked, " in text


def _edit_checkpoint(lines: list[str], **changes: object) -> list[str]:
    data = json.loads(lines[-1])
    data["checkpoint"].update(changes)
    return [*lines[:-1], json.dumps(data)]


def _jws_of_another_checkpoint(lines: list[str]) -> list[str]:
    earlier = json.loads(lines[-2])["checkpoint"]
    return _edit_checkpoint(lines, jws=earlier["jws"])


@pytest.mark.parametrize(
    "edit, failure",
    [
        (
            lambda lines: _edit_checkpoint(lines, hash="0" * 64),
            "checkpoint check, signature at seq 4: the exported checkpoint at seq 4: its signed "
            "payload",
        ),
        (_jws_of_another_checkpoint, "checkpoint check, signature at seq 4"),
        (
            lambda lines: _edit_checkpoint(lines, jwk={"kty": "EC"}),
            "checkpoint check, signature at seq 4: the exported checkpoint at seq 4: its key ids",
        ),
        (
            lambda lines: [*lines[:3], *lines[4:]],
            "checkpoint check, rolled-back at seq 4: the exported checkpoint of",
        ),
        (
            lambda lines: [
                lines[0].replace('"result":"success"', '"result":"failure"'),
                *lines[1:],
            ],
            "chain check, edited at seq 1",
        ),
        (
            lambda lines: [lines[1], lines[0], *lines[2:]],
            "chain check, removed at seq 1: seq 1 is missing (the log jumps to seq 2)",
        ),
        (lambda lines: [*lines[:2], "{not json", *lines[2:]], "edited-e2.jsonl:3: not an audit"),
        (
            lambda lines: [*lines[:-1], '{"checkpoint": {"seq": 4}}'],
            "edited-e2.jsonl:6: a checkpoint's 'time' must be a number",
        ),
    ],
    ids=[
        "checkpoint-hash",
        "checkpoint-jws",
        "checkpoint-jwk",
        "cut-short",
        "event",
        "swapped",
        "not-json",
        "bad-checkpoint",
    ],
)
def test_an_edited_export_fails_offline(
    exported: Exported, edit: Callable[[list[str]], list[str]], failure: str
) -> None:
    path = _rewrite(exported.e2, edit)
    broken = exported.server.cli("audit", "verify", "--file", str(path), check=False)
    assert broken.returncode == 1 and failure in broken.stderr, broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_verify_options_are_checked(exported: Exported, tmp_path: Path) -> None:
    server = exported.server
    listed = tmp_path / "list.jsonl"
    listed.write_text(server.cli("--output", "json", "audit", "list").stdout)
    assert server.cli("audit", "verify", "--file", str(listed)).returncode == 0
    both = server.cli(
        "audit", "verify", "--file", str(listed), "--checkpoint", str(listed), check=False
    )
    assert both.returncode == 1 and "exclude each other" in both.stderr
    none = server.cli("audit", "verify", "--checkpoint", str(listed), check=False)
    assert none.returncode == 1 and "holds no checkpoint" in none.stderr
    missing = server.cli("audit", "verify", "--file", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


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
        assert first["action"] == "identity create" and first["seq"] == 1
        server.cli("identity", "delete", "first")
        second = json.loads(lines.get(timeout=30))
        assert second["action"] == "identity delete"
        assert second["target"] == "first"
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
    assert server.wait_for_log("audit log write failed; request allowed")
    assert _events(server) == []
