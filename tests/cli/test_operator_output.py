"""What an operator reads and stores: exact secret values, one audit event per operation,
times and tables for people, against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.cli.output import iso, relative, when
from tests.support.server import RunningServer, ServerFactory, keyless_cmd


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module (each test uses names of its own)."""
    factory = ServerFactory(tmp_path_factory.mktemp("output"))
    try:
        yield factory.start(dev=True)
    finally:
        factory.stop_all()


def _json(server: RunningServer, *args: str) -> Any:
    return json.loads(server.cli("--output", "json", *args).stdout)


def _events_after(server: RunningServer, seq: int) -> list[dict[str, Any]]:
    out = server.cli("--output", "json", "audit", "list", "--after", str(seq)).stdout
    return [json.loads(line) for line in out.splitlines()]


def _last_seq(server: RunningServer) -> int:
    out = server.cli("--output", "json", "audit", "list").stdout.splitlines()
    return int(json.loads(out[-1])["seq"]) if out else 0


def _process(server: RunningServer, *argv: str, stdin: bytes | None = None, columns: int = 200):  # type: ignore[no-untyped-def]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": str(columns)}
    return subprocess.run(
        [*keyless_cmd(), "--data-dir", str(server.data_dir), *argv],
        capture_output=True,
        input=stdin,
        env=env,
        timeout=120,
    )


VALUES = {
    "crlf-and-trailing-newlines": b"line1\r\nline2\n\n",
    "no-trailing-newline": b"s3cr3t",
    "only-newline": b"\n",
    "unicode-and-tab": "p\u00e4ss\tw\u00f6rd \u2603\r".encode(),
}


def test_file_and_stdin_are_stored_byte_for_byte(server: RunningServer, tmp_path: Path) -> None:
    server.cli("vault", "create", "exact")
    for name, raw in VALUES.items():
        file = tmp_path / name
        file.write_bytes(raw)
        server.cli("secret", "set", "exact", name, "--file", str(file))
        assert _json(server, "secret", "get", "exact", name)["value"].encode() == raw
        # Piped, `secret get` writes the value and nothing else (no newline added).
        assert server.cli("secret", "get", "exact", name).stdout.encode() == raw

        text = raw.decode()
        server.cli("secret", "set", "exact", name, "--value-from-stdin", input=text + "1")
        assert _json(server, "secret", "get", "exact", name)["value"] == text + "1"
    server.cli("secret", "set", "exact", "dash", "--file", "-", input=text + "2")
    assert _json(server, "secret", "get", "exact", "dash")["value"] == text + "2"

    # The same through real pipes, as a shell script would do it.
    raw = VALUES["crlf-and-trailing-newlines"]
    stdin = _process(server, "secret", "set", "exact", "piped", "--value-from-stdin", stdin=raw)
    assert stdin.returncode == 0, stdin.stderr
    assert _process(server, "secret", "get", "exact", "piped").stdout == raw

    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    refused = server.cli("secret", "set", "exact", "bin", "--file", str(binary), check=False)
    assert refused.returncode == 1 and "not UTF-8 text" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    both = server.cli(
        "secret", "set", "exact", "x", "--value", "v", "--value-from-stdin", check=False
    )
    assert "exactly one of --value, --file or --value-from-stdin" in both.stderr


def test_one_operation_is_one_record(server: RunningServer) -> None:
    """`secret set` was logged twice (the vault's pending/outcome pair and a route event);
    now the vault's pair is the record, and admin changes read as the commands that made them."""
    server.cli("identity", "create", "billing")
    seq = _last_seq(server)
    server.cli("vault", "create", "billing")
    [created] = _events_after(server, seq)
    assert (created["action"], created["target"], created["result"]) == (
        "vault create",
        "billing",
        "success",
    )

    seq = _last_seq(server)
    server.cli("secret", "set", "billing", "db", "--value", "v1")
    events = _events_after(server, seq)
    assert [(e["action"], e["result"]) for e in events] == [
        ("secrets/setSecret", "pending"),
        ("secrets/setSecret", "success"),
    ]
    assert {e["request_id"] for e in events} == {events[0]["request_id"]}
    assert all(e["target"] == "/vaults/billing/secrets/db" for e in events)

    # Refused before the vault runs (no such vault): the admin socket's event is the record.
    seq = _last_seq(server)
    assert server.cli("secret", "set", "nope", "db", "--value", "v", check=False).returncode
    [failed] = _events_after(server, seq)
    assert (failed["action"], failed["target"], failed["result"]) == (
        "secret set",
        "nope db",
        "failure",
    )
    assert failed["reason"] == "status 404"

    seq = _last_seq(server)
    server.cli("role", "assign", "billing", "secrets-user", "--scope", "/vaults/billing")
    server.cli("secret", "delete", "billing", "db")
    events = _events_after(server, seq)
    assert [(e["action"], e["target"], e["result"]) for e in events] == [
        ("role assign", "billing: secrets-user on /vaults/billing", "success"),
        ("secrets/delete", "/vaults/billing/secrets/db", "pending"),
        ("secrets/delete", "/vaults/billing/secrets/db", "success"),
    ]

    text = server.cli("audit", "list").stdout
    assert "  vault create billing  by admin-socket" in text
    assert "role assign billing: secrets-user on /vaults/billing" in text
    assert "admin.POST" not in text and "admin.PUT" not in text


def test_tables_never_cut_an_identifier(server: RunningServer) -> None:
    """A narrow terminal: ids, kids and URLs stay whole (the table wraps other text, or is
    printed wider than the terminal), never an ellipsis."""
    ident = _json(server, "identity", "create", "a-rather-long-identity-name-for-a-table")
    server.cli("keys", "rotate")
    keys = _json(server, "keys", "list")["keys"]
    for argv, whole in (
        (["keys", "list"], [k["kid"] for k in keys]),
        (["identity", "list"], [ident["client_id"], ident["object_id"], ident["name"]]),
    ):
        result = _process(server, *argv, columns=60)
        out = result.stdout.decode()
        assert result.returncode == 0 and "\u2026" not in out
        for value in whole:
            assert value in out, (value, out)


def test_times_read_as_iso_and_relative(server: RunningServer) -> None:
    server.cli("vault", "create", "times")
    shown = server.cli("secret", "set", "times", "s", "--value", "v").stdout
    [created] = [line for line in shown.splitlines() if line.startswith("created")]
    stamp = created.split()[1]
    assert stamp.endswith("Z") and "T" in stamp and created.endswith(("just now)", "s ago)"))
    keys = server.cli("keys", "list").stdout
    assert re.search(r"T\d\d:\d\d:\d\dZ \((just now|\d+ s ago)\)", keys), keys
    raw = _json(server, "secret", "list", "times")  # JSON keeps the API's epoch seconds
    assert isinstance(raw[0]["updated"], float)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (0.2, "just now"),
        (-3, "3 s ago"),
        (-89, "89 s ago"),
        (-180, "3 min ago"),
        (7200, "in 2 h"),
        (-35 * 3600, "35 h ago"),
        (3 * 86400, "in 3 d"),
    ],
)
def test_relative(delta: float, text: str) -> None:
    assert relative(1_800_000_000 + delta, 1_800_000_000) == text


def test_when() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert when(1_800_000_000.5, now=1_800_000_120) == "2027-01-15T08:00:00Z (2 min ago)"
    assert when(None) == "" and when("not a time") == "not a time"
    assert when(1e300) == "1e+300"  # out of range: the number, not a traceback


def test_every_admin_change_reads_as_a_command() -> None:
    """A mutating admin route added later gets its entry in ACTIONS (or is read-only): its
    audit events then read as the command that made it, not as the route."""
    from keyless.api.admin import apply, audit, dev, federation, system, vault
    from keyless.api.admin.auditing import ACTIONS, MUTATING, READ_ONLY

    changes = {
        (method, route.path)
        for module in (system, federation, dev, vault, audit, apply)
        for route in module.routes
        for method in getattr(route, "methods", None) or ()
        if method in MUTATING and route.path not in READ_ONLY
    }
    assert changes and changes <= set(ACTIONS), changes - set(ACTIONS)
