"""Nothing a caller sends reaches the operator's terminal unescaped (issue 11, part 1).

A real server; hostile subjects, pod names and namespaces arrive through the token endpoint
(refused and accepted assertions) and the vault; every human-readable output of the commands
that show them (`audit list`, `audit list --follow`, `explain`, `identity list`, `federation
list`, error messages) is checked for raw control, format and bidi characters, while JSON
output carries the exact values.
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
import unicodedata
from pathlib import Path

import pytest

from tests.support.federation import SUBJECT, Federated, federate
from tests.support.server import RunningServer, keyless_cmd

# What an attacker puts in a field: a forged audit line, terminal control, reordered text.
HOSTILE = {
    "forged-line": "x\n     9 2026-12-07T00:00:00.000Z  success  secret.get  /vaults/v  actor=root",
    "crlf": "x\r\n     9 forged",
    "ansi-clear": "x\x1b[2J\x1b[H\x1b[31mred",
    "osc-title": "x\x1b]0;owned\x07",
    "c1-csi": "x\x9b2J",
    "bidi-override": "x\u202egnp.exe",
    "bidi-isolate": "x\u2067y\u2069",
    "zero-width": "a\u200bdmin",
    "line-separator": "x\u2028forged",
    "backspace": "root\x08\x08\x08\x08evil",
    "markup": "[bold red]x[/] [link=https://evil]click[/link]",
}
DANGEROUS = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _raw_controls(text: str) -> list[str]:
    """Characters of ``text`` that drive a terminal (line breaks between lines excepted)."""
    return [
        repr(c) for line in text.split("\n") for c in line if unicodedata.category(c) in DANGEROUS
    ]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunningServer, Federated]:
    from tests.support.server import ServerFactory

    tmp = tmp_path_factory.mktemp("escaping")
    factory = ServerFactory(tmp)
    server = factory.start(dev=True)
    fed = federate(server, tmp)
    for name, text in HOSTILE.items():
        # Refused: the subject matches no trust policy (audited as presented, unverified).
        assert fed.exchange(fed.test_token(sub=f"{SUBJECT}{text}")).status_code in (400, 401)
        # Accepted: the subject matches, the pod, namespace and node names are the attacker's.
        k8s = {
            "namespace": f"demo{text}",
            "pod": {"name": f"pod-{name}{text}", "uid": "1"},
            "serviceaccount": {"name": "app", "uid": "2"},
            "node": {"name": text, "uid": "3"},
        }
        assert fed.exchange(fed.test_token(**{"kubernetes.io": k8s})).status_code == 200
    yield server, fed
    factory.stop_all()


def _events(server: RunningServer) -> list[dict[str, object]]:
    out = server.cli("--output", "json", "audit", "list").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_audit_list_escapes_every_field(hostile: tuple[RunningServer, Federated]) -> None:
    server, _ = hostile
    events = _events(server)
    text = server.cli("audit", "list").stdout
    assert _raw_controls(text) == []
    lines = text.splitlines()
    assert len(lines) == len(events)  # no forged line
    for line, event in zip(lines, events, strict=True):
        assert line.split()[0] == str(event["seq"])
    for name, value in HOSTILE.items():
        pods = [e for e in events if (e.get("workload") or {}).get("pod") == f"pod-{name}{value}"]
        assert len(pods) == 1, name  # JSON keeps the exact value
        subjects = [e for e in events if (e.get("workload") or {}).get("sub") == SUBJECT + value]
        assert subjects, name
    assert "\\x1b[2J" in text and "\\u202e" in text and "[bold red]x[/]" in text


def test_audit_list_follow_escapes(hostile: tuple[RunningServer, Federated]) -> None:
    server, fed = hostile
    count = len(_events(server))
    proc = subprocess.Popen(
        [*keyless_cmd(), "--data-dir", str(server.data_dir), "audit", "list", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    shown: list[str] = []
    try:
        # Events, not sleeps: the backlog first, then the event made while following.
        while len(shown) < count:
            shown.append(lines.get(timeout=30))
        fed.exchange(fed.test_token(sub="late\x1b[2J\nforged"))
        shown.append(lines.get(timeout=30))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert lines.empty()  # one line per event: nothing forged a second line
    assert "late\\x1b[2J\\nforged" in shown[-1]
    assert _raw_controls("".join(shown)) == []


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_explain_escapes_the_presented_token(
    hostile: tuple[RunningServer, Federated], name: str, tmp_path: Path
) -> None:
    server, fed = hostile
    k8s = {"namespace": HOSTILE[name], "pod": {"name": HOSTILE[name], "uid": "1"}}
    token = fed.token_file(
        fed.test_token(sub=f"{SUBJECT}{HOSTILE[name]}", iss=fed.dev_issuer + HOSTILE[name])
    )
    token2 = fed.token_file(fed.test_token(sub=SUBJECT + HOSTILE[name], **{"kubernetes.io": k8s}))
    for path in (token, token2):
        result = server.cli("explain", "--token", str(path), check=False)
        assert result.stdout.strip() or result.stderr.strip()
        assert _raw_controls(result.stdout) == []
        assert _raw_controls(result.stderr) == []


def test_explain_command_end_to_end(hostile: tuple[RunningServer, Federated]) -> None:
    """The command itself (token file, --identity, text and JSON output) against a real server;
    what explain reports is tested in process (tests/api/test_explain.py)."""
    server, fed = hostile
    path = str(fed.token_file(fed.test_token()))
    out = server.cli("explain", "--token", path, "--identity", "app").stdout
    assert "matched by 'test-demo'" in out and "ACCEPTED" in out
    report = json.loads(
        server.cli("--output", "json", "explain", "--token", path, "--identity", "app").stdout
    )
    assert report["accepted"] is True and report["identities"][0]["matched"] == "test-demo"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["identity", "show", "nobody\x1b[2J"], id="identity-show"),
        pytest.param(["vault", "create", "v\u202ex"], id="vault-create"),
        pytest.param(["secret", "get", "nope", "x\nforged"], id="secret-get"),
        pytest.param(["federation", "list", "ghost\r\nforged"], id="federation-list"),
        pytest.param(["issuer", "remove", "https://x\x1b]0;t\x07"], id="issuer-remove"),
        pytest.param(["role", "assign", "app\x9b", "reader", "--scope", "/"], id="role-assign"),
    ],
)
def test_error_messages_are_escaped(
    hostile: tuple[RunningServer, Federated], args: list[str]
) -> None:
    server, _ = hostile
    result = server.cli(*args, check=False, process=True)  # what reaches a real terminal
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1  # one line
    assert _raw_controls(result.stderr) == []
    assert _raw_controls(result.stdout) == []


def test_lists_for_people_escape(hostile: tuple[RunningServer, Federated]) -> None:
    server, _ = hostile
    for args in (["identity", "list"], ["federation", "list", "app"], ["issuer", "list"]):
        out = server.cli(*args).stdout
        assert out.strip()
        assert _raw_controls(out) == []


def test_server_log_lines_carry_no_raw_controls(hostile: tuple[RunningServer, Federated]) -> None:
    server, fed = hostile
    with server.client() as http:
        http.get("/x%1b%5b2J%E2%80%AE%0a%0d")
        http.post(f"/{fed.tenant_id}/oauth2/v2.0/token", data={"client_id": "\x1b[31m\n"})
    raw = (
        b"GET /\x1b[2J\xe2\x80\xae HTTP/1.1\r\nHost: localhost\r\n"
        b"x-request-id: a\xd9\xa3b\r\nx-ms-client-request-id: \x1b]0;t\x07\r\n"
        b"Connection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with server.ssl_context().wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(raw)
        while tls.recv(65536):
            pass
    with server.client() as http:  # the access log line of this request ends the others'
        http.get("/healthz", headers={"x-request-id": "escaping-last"})
    assert server.wait_for_log("escaping-last")
    assert _raw_controls(server.log) == []
