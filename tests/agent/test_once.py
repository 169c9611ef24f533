"""``keyless agent --once`` (an init container, a Job's step): every file written with its
content and mode, exit 0; a secret that is missing or not readable is one line and exit 1."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.agent.conftest import SEALED, Vaults, run_agent
from tests.support.server import free_port


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_once_writes_every_file_with_its_mode_and_exits_zero(kv: Vaults, tmp_path: Path) -> None:
    kv.set("db-password", "pa55-once-7f")
    kv.set("api-key", "key-once-19")
    template = tmp_path / "db.env.j2"
    template.write_text('DB_PASSWORD={{ secret("billing/db-password") | shell_quote }}\n')
    out = tmp_path / "out"
    done = run_agent(
        kv,
        "--once",
        "--secret",
        f"billing/db-password={out}/db-password,mode=0400",
        "--secret",
        f"billing/api-key={out}/api-key",
        "--template",
        f"{template}={out}/db.env,mode=0440",
    )
    assert done.returncode == 0, done.stderr
    assert (out / "db-password").read_text() == "pa55-once-7f"
    assert (out / "api-key").read_text() == "key-once-19"
    assert (out / "db.env").read_text() == "DB_PASSWORD='pa55-once-7f'\n"
    assert mode_of(out / "db-password") == 0o400
    assert mode_of(out / "api-key") == 0o600  # the default
    assert mode_of(out / "db.env") == 0o440
    assert "ready" in done.stdout
    assert "pa55-once-7f" not in done.stderr + done.stdout
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_global_mode_applies_where_a_declaration_names_none(kv: Vaults, tmp_path: Path) -> None:
    kv.set("api-key", "key-mode-2")
    done = run_agent(
        kv, "--once", "--mode", "0444", "--secret", f"billing/api-key={tmp_path / 'k'}"
    )
    assert done.returncode == 0, done.stderr
    assert mode_of(tmp_path / "k") == 0o444


def test_missing_secret_is_one_line_and_a_failure(kv: Vaults, tmp_path: Path) -> None:
    done = run_agent(kv, "--once", "--secret", f"billing/no-such-secret={tmp_path / 'x'}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "billing/no-such-secret" in lines[0] and "no such" in lines[0]
    assert not (tmp_path / "x").exists()


def test_secret_without_permission_is_one_line_and_a_failure(kv: Vaults, tmp_path: Path) -> None:
    kv.set("root-password", "not-for-app-3", vault=SEALED)
    done = run_agent(kv, "--once", "--secret", f"{SEALED}/root-password={tmp_path / 'x'}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{SEALED}/root-password" in lines[0]
    assert "refused to read it" in lines[0] and "not-for-app-3" not in done.stderr


def test_a_missing_vault_and_a_bad_declaration_are_one_line(kv: Vaults, tmp_path: Path) -> None:
    done = run_agent(kv, "--once", "--secret", f"nosuchvault/x={tmp_path / 'x'}")
    assert done.returncode == 1 and "no such vault" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    bad = run_agent(kv, "--once", "--secret", "billing-no-path")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "expected SOURCE=PATH" in bad.stderr


def test_without_the_workload_variables_it_says_which_are_missing(
    kv: Vaults, tmp_path: Path
) -> None:
    env = {k: v for k, v in kv.agent_env().items() if k != "AZURE_FEDERATED_TOKEN_FILE"}
    done = run_agent(kv, "--once", "--secret", f"billing/x={tmp_path / 'x'}", env=env)
    assert done.returncode == 2 and "AZURE_FEDERATED_TOKEN_FILE" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_owner_as_root(kv: Vaults, tmp_path: Path) -> None:
    kv.set("api-key", "key-owner-5")
    done = run_agent(
        kv,
        "--once",
        "--owner",
        "1234:5678",
        "--secret",
        f"billing/api-key={tmp_path / 'a'}",
        "--secret",
        f"billing/api-key={tmp_path / 'b'},owner=4321:8765,mode=0440",
    )
    assert done.returncode == 0, done.stderr
    a, b = (tmp_path / "a").stat(), (tmp_path / "b").stat()
    assert (a.st_uid, a.st_gid, stat.S_IMODE(a.st_mode)) == (1234, 5678, 0o600)
    assert (b.st_uid, b.st_gid, stat.S_IMODE(b.st_mode)) == (4321, 8765, 0o440)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may give files away")
def test_owner_without_root_is_refused_at_start(kv: Vaults, tmp_path: Path) -> None:
    other = os.geteuid() + 1
    done = run_agent(kv, "--once", "--owner", f"{other}:0", "--secret", f"billing/x={tmp_path}/x")
    assert done.returncode == 2 and "needs the agent to run as root" in done.stderr


def test_endpoint_options_need_credentials(kv: Vaults, tmp_path: Path) -> None:
    done = run_agent(
        kv, "--secret", f"billing/x={tmp_path}/x", "--credentials-env-file", str(tmp_path / "e")
    )
    assert done.returncode == 2 and "go with --credentials" in done.stderr
    done = run_agent(kv, "--once", "--credentials", "azure", "--credentials-env-file", "e")
    assert done.returncode == 2 and "not with --once" in done.stderr


def test_unreachable_keyless_and_a_refused_exchange_are_one_line(
    kv: Vaults, tmp_path: Path
) -> None:
    down = {**kv.agent_env(), "AZURE_AUTHORITY_HOST": f"https://localhost:{free_port()}"}
    done = run_agent(kv, "--once", "--secret", f"billing/x={tmp_path / 'x'}", env=down)
    assert done.returncode == 1 and "keyless is unreachable" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    kv.server.cli("identity", "create", "untrusted")
    client_id = json.loads(
        kv.server.cli("--output", "json", "identity", "show", "untrusted").stdout
    )["client_id"]
    refused = {**kv.agent_env(), "AZURE_CLIENT_ID": client_id}
    done = run_agent(kv, "--once", "--secret", f"billing/x={tmp_path / 'x'}", env=refused)
    assert done.returncode == 1 and "token exchange was refused" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
