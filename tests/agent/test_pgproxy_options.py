"""``--pg-proxy`` and ``--database-creds`` parsed at start: the listener forms, and the
one-line errors (exit 2, before keyless is asked anything) for what cannot work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from keyless.agent import config as cfg
from keyless.agent.dbrefs import DbRef
from keyless.agent.pgproxy_config import parse_proxies
from keyless.core.errors import ConfigError
from tests.support.server import keyless_cmd


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text("local-secret\n")
    return path


def test_listener_forms(password: Path) -> None:
    tcp, v6, sock = parse_proxies(
        ["127.0.0.1:6432=shop/rw", "[::1]:6433=shop/ro", "/run/pg/.s.PGSQL.5432=shop/rw"],
        user="app",
        password_file=password,
    )
    assert (tcp.host, tcp.port, tcp.path, tcp.ref) == ("127.0.0.1", 6432, None, DbRef("shop", "rw"))
    assert (v6.host, v6.port) == ("::1", 6433)
    assert sock.path == Path("/run/pg/.s.PGSQL.5432") and sock.host is None
    assert tcp.user == "app" and tcp.secret is not None
    assert "local-secret" not in repr(tcp)  # only SCRAM keys kept, never shown
    (trusted,) = parse_proxies(["/run/pg/.s.PGSQL.5432=shop/rw"])
    assert trusted.secret is None


@pytest.mark.parametrize(
    ("declarations", "message"),
    [
        (["127.0.0.1:6432"], "expected HOST:PORT=DATABASE/ROLE"),
        (["127.0.0.1=shop/rw"], "expected HOST:PORT"),
        (["127.0.0.1:70000=shop/rw"], "expected HOST:PORT"),
        (["127.0.0.1:6432=shop"], "must be DATABASE/ROLE"),
        (["127.0.0.1:6432=shop/r.w"], "role name"),
        (["127.0.0.1:6432=shop/rw", "127.0.0.1:6432=shop/ro"], "declared twice"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_declarations(declarations: list[str], message: str, password: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_proxies(declarations, password_file=password)


def test_tcp_needs_a_password_and_the_options_need_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --pg-proxy-password-file"):
        parse_proxies(["127.0.0.1:6432=shop/rw"])
    with pytest.raises(ConfigError, match="go with --pg-proxy"):
        parse_proxies([], user="app")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="one line"):
        parse_proxies(["/s=shop/rw"], password_file=empty)


def test_database_creds_declarations() -> None:
    (out,) = cfg.parse_outputs([], [], database_creds=["shop/rw=/run/db.json,mode=0440"])
    assert (out.source, out.path, out.mode) == (DbRef("shop", "rw"), Path("/run/db.json"), 0o440)
    config = cfg.AgentConfig(outputs=(out,), proxies=parse_proxies(["/s=shop/ro"]))
    assert config.databases == {DbRef("shop", "rw"), DbRef("shop", "ro")}
    with pytest.raises(ConfigError, match="must be DATABASE/ROLE"):
        cfg.parse_outputs([], [], database_creds=["shop=/run/db.json"])


def agent(*args: str, identity: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KEYLESS_"))}
    env |= {
        "AZURE_AUTHORITY_HOST": "https://127.0.0.1:1",
        "AZURE_TENANT_ID": "t",
        "AZURE_CLIENT_ID": "c",
        "AZURE_FEDERATED_TOKEN_FILE": "/nonexistent",
        **({"KEYLESS_IDENTITY": "app"} if identity else {}),
    }
    return subprocess.run(
        [*keyless_cmd(), "agent", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "identity", "message"),
    [
        (("--pg-proxy", "127.0.0.1:6432=shop/rw"), True, "needs --pg-proxy-password-file"),
        (("--once", "--pg-proxy", "/tmp/s=shop/rw"), True, "not with --once"),
        (("--database-creds", "shop/rw=/tmp/x"), False, "needs KEYLESS_IDENTITY"),
    ],
    ids=["tcp-without-password", "proxy-with-once", "no-identity"],
)
def test_cli_errors_are_one_line(args: tuple[str, ...], identity: bool, message: str) -> None:
    done = agent(*args, identity=identity)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
