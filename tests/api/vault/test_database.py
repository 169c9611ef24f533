"""The database secrets engine through the real server: the Vault dialect with hvac (what
Vault Agent and ESO's VaultDynamicSecret call) and the ``keyless database`` CLI, against the
machine's PostgreSQL (docs/databases.md)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidRequest

from tests.api.vault.conftest import VaultKeyless, bao_binary, start
from tests.support.dbtarget import TargetDb, target_database
from tests.support.server import ServerFactory

DATABASE = "orders"


@pytest.fixture(scope="module")
def target(pg_server: str) -> Iterator[TargetDb]:
    with target_database(pg_server) as t:
        yield t


@pytest.fixture(scope="module")
def dkl(tmp_path_factory: pytest.TempPathFactory, target: TargetDb) -> Iterator[VaultKeyless]:
    """keyless set up for Vault clients (tests/api/vault/conftest.py), its reaper sweeping
    every second, ``orders`` registered through the CLI with two roles: ``r`` + tag (TTL 1m)
    and ``s`` + tag (TTL 2s, for expiry), ``app`` a Database Credentials User of the first."""
    tmp = tmp_path_factory.mktemp("dbengine")
    factory = ServerFactory(tmp)
    try:
        kl = start(factory, tmp, env={"KEYLESS_DATABASE_REAP_INTERVAL": "1"})
        kl.remember(target.admin_password)
        password_file = tmp / "admin-password"
        password_file.write_text(target.admin_password + "\n")
        cli = kl.server.cli
        cli("database", "add", DATABASE, "--url", target.url, "--password-file", str(password_file))
        for role, ttl in ((f"r{target.tag}", "1m"), (f"s{target.tag}", "2s")):
            cli("database", "role", "add", DATABASE, role, "--grant", target.group,
                "--ttl", ttl, "--max-ttl", "5m")  # fmt: skip
            cli("role", "assign", "app", "database-user", "--scope",
                f"/databases/{DATABASE}/roles/{role}")  # fmt: skip
        yield kl
    finally:
        factory.stop_all()


def hvac_client(kl: VaultKeyless, role: str = "app") -> hvac.Client:
    c = hvac.Client(url=kl.addr, verify=kl.ca)
    response = c.auth.jwt.jwt_login(role=role, jwt=kl.jwt("shop", role), path="jwt")
    kl.secrets_seen.append(response["auth"]["client_token"])
    return c


def vault_role(target: TargetDb, prefix: str = "r") -> str:
    return f"{DATABASE}.{prefix}{target.tag}"


def wait_until_gone(target: TargetDb, user: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.role(user) is None:
            return True
        time.sleep(0.2)
    return False


def test_hvac_generate_renew_lookup_revoke(dkl: VaultKeyless, target: TargetDb) -> None:
    c = hvac_client(dkl)
    issued = c.secrets.database.generate_credentials(name=vault_role(target))
    user, password = issued["data"]["username"], issued["data"]["password"]
    dkl.remember(password)
    lease_id = issued["lease_id"]
    assert lease_id.startswith(f"database/creds/{vault_role(target)}/")
    assert issued["renewable"] is True and 55 <= issued["lease_duration"] <= 60
    extension = issued["keyless"]
    assert extension["database"] == DATABASE and extension["role"] == f"r{target.tag}"
    assert (extension["host"], extension["port"], extension["dbname"]) == (
        target.host,
        target.port,
        target.dbname,
    )
    assert extension["sslmode"] == "disable" and extension["expires_at"] > time.time()
    assert target.admin_password not in json.dumps(issued)
    assert target.logs_in(user, password)
    before = target.role(user)
    assert before is not None
    renewed = c.sys.renew_lease(lease_id=lease_id, increment=240)
    assert renewed["lease_id"] == lease_id and 235 <= renewed["lease_duration"] <= 240
    after = target.role(user)
    assert after is not None and after["rolvaliduntil"] > before["rolvaliduntil"]
    looked = c.sys.read_lease(lease_id=lease_id)["data"]
    assert looked["id"] == lease_id and looked["renewable"] is True and looked["ttl"] > 200
    assert c.sys.revoke_lease(lease_id=lease_id).status_code == 204
    assert target.role(user) is None and not target.logs_in(user, password)
    with pytest.raises(InvalidRequest, match="not renewable"):
        c.sys.renew_lease(lease_id=lease_id)
    events = [e for e in dkl.audit() if e["action"].startswith("database.")]
    mine = [e for e in events if lease_id in e["reason"]]
    assert [(e["action"], e["result"]) for e in mine] == [
        ("database.creds", "success"),
        ("database.renew", "success"),
        ("database.revoke", "success"),
    ]
    assert all(e["workload"].get("namespace") == "shop" for e in mine)


def test_vault_agent_sees_a_database_mount(dkl: VaultKeyless, target: TargetDb) -> None:
    """consul-template (Vault Agent's templates) asks sys/internal/ui/mounts/PATH before it
    reads PATH and gives up on a 403; a database mount is read as it is (not KV v2)."""
    token = dkl.login("app", "shop")
    with dkl.http(headers={"X-Vault-Token": token}) as http:
        answer = http.get(f"/v1/sys/internal/ui/mounts/database/creds/{vault_role(target)}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["type"] == "database" and answer.json()["data"]["options"] is None


def test_openbao_agent_renders_and_renews_a_database_template(
    dkl: VaultKeyless, target: TargetDb, tmp_path: Path
) -> None:
    """The real OpenBao Agent (Vault Agent's code): JWT auto-auth, then a template that reads
    database/creds/DATABASE.ROLE renders credentials that log in, and the agent renews their
    lease (role ``s``: TTL 2 s) through sys/leases/renew."""
    jwt_file = dkl.jwt_file(dkl.jwt("shop", "app"))
    out = tmp_path / "db.txt"
    config = tmp_path / "agent.hcl"
    template = (
        '{{ with secret "database/creds/' + vault_role(target, "s") + '" }}'
        "{{ .Data.username }} {{ .Data.password }}{{ end }}"
    )
    config.write_text(
        f'vault {{\n  address = "{dkl.addr}"\n  ca_cert = "{dkl.ca}"\n}}\n'
        'auto_auth {\n  method "jwt" {\n    mount_path = "auth/jwt"\n'
        f'    config = {{\n      path = "{jwt_file}"\n      role = "app"\n'
        "      remove_jwt_after_reading = false\n    }\n  }\n}\n"
        f"template {{\n  contents = {json.dumps(template)}\n"
        f'  destination = "{out}"\n}}\n'
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    agent = subprocess.Popen(
        [str(bao_binary()), "agent", f"-config={config}"],
        env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
            assert agent.poll() is None, agent.communicate()[0][-2000:]
            time.sleep(0.2)
        assert out.exists(), "the agent rendered nothing"
        user, password = out.read_text().split()
        dkl.remember(password)
        assert target.logs_in(user, password)
        renewed: list[dict[str, object]] = []
        while not renewed and time.monotonic() < deadline + 15:
            time.sleep(0.5)
            renewed = [
                e
                for e in dkl.audit()
                if e["action"] == "database.renew" and f".s{target.tag}/" in str(e["reason"])
            ]
        assert renewed and renewed[0]["result"] == "success"
    finally:
        agent.terminate()
        logs = agent.communicate(timeout=30)[0]
    assert password not in logs


def test_the_reaper_revokes_at_expiry(dkl: VaultKeyless, target: TargetDb) -> None:
    c = hvac_client(dkl)
    role = vault_role(target, "s")
    dkl.server.cli("role", "assign", "app", "database-user", "--scope",
                   f"/databases/{DATABASE}/roles/s{target.tag}")  # fmt: skip
    issued = c.secrets.database.generate_credentials(name=role)
    user, password = issued["data"]["username"], dkl.remember(issued["data"]["password"])
    assert target.logs_in(user, password)
    assert wait_until_gone(target, user), "the reaper did not drop the expired role"
    assert not target.logs_in(user, password)
    reaped = [
        e
        for e in dkl.audit()
        if e["action"] == "database.revoke" and issued["lease_id"] in e["reason"]
    ]
    assert len(reaped) == 1 and "revoked by the reaper" in reaped[0]["reason"]
    assert reaped[0]["workload"].get("service_account") == "app"


def test_refusals_are_403_and_audited(dkl: VaultKeyless, target: TargetDb) -> None:
    c = hvac_client(dkl, "reader")
    with pytest.raises(Forbidden):
        c.secrets.database.generate_credentials(name=vault_role(target))
    refused = [
        e for e in dkl.audit() if e["action"] == "database.creds" and e["result"] == "failure"
    ]
    assert refused and refused[-1]["workload"].get("service_account") == "reader"
    assert "database-user" in refused[-1]["reason"] or "denied" in refused[-1]["reason"]
    # A lease of another identity is not the reader's to revoke or renew.
    lease_id = hvac_client(dkl).secrets.database.generate_credentials(name=vault_role(target))[
        "lease_id"
    ]
    with pytest.raises(Forbidden):
        c.sys.revoke_lease(lease_id=lease_id)
    with pytest.raises(InvalidRequest):
        c.secrets.database.generate_credentials(name="no-dot-here")


def test_cli_creds_leases_and_rotate_root(dkl: VaultKeyless, target: TargetDb) -> None:
    cli = dkl.server.cli
    creds = json.loads(cli("--output", "json", "database", "creds", DATABASE,
                           f"r{target.tag}").stdout)  # fmt: skip
    assert set(creds) >= {"username", "password", "lease_id", "expires_at"}
    dkl.remember(creds["password"])
    assert target.logs_in(creds["username"], creds["password"])
    leases = json.loads(cli("--output", "json", "database", "lease", "list").stdout)
    assert creds["lease_id"] in [lease["lease_id"] for lease in leases]
    renewed = json.loads(cli("--output", "json", "database", "lease", "renew", creds["lease_id"],
                             "--increment", "3m").stdout)  # fmt: skip
    assert renewed["expires_at"] > creds["expires_at"]
    cli("database", "lease", "revoke", creds["lease_id"])
    assert target.role(creds["username"]) is None
    listed = cli("database", "list").stdout + cli("--output", "json", "database", "list").stdout
    assert DATABASE in listed and target.url.split("?")[0] in listed
    roles = json.loads(cli("--output", "json", "database", "role", "list", DATABASE).stdout)
    assert {r["name"] for r in roles} == {f"r{target.tag}", f"s{target.tag}"}
    rotated = cli("--output", "json", "database", "rotate-root", DATABASE).stdout
    assert not target.password_matches(target.admin, target.admin_password)
    again = json.loads(cli("--output", "json", "database", "creds", DATABASE,
                           f"r{target.tag}").stdout)  # fmt: skip
    dkl.remember(again["password"])
    assert target.logs_in(again["username"], again["password"])
    cli("database", "lease", "revoke", again["lease_id"])
    assert target.admin_password not in listed + rotated
    audit = json.dumps(dkl.audit())
    assert target.admin_password not in audit
    assert not [p for p in (target.admin_password,) if p in dkl.server.log]


def test_cli_errors_are_one_line(dkl: VaultKeyless, target: TargetDb, tmp_path: Path) -> None:
    cli = dkl.server.cli
    down = cli("database", "add", "down", "--url", "postgresql://a:pw-secret-xyz@127.0.0.1:1/x",
               check=False)  # fmt: skip
    assert down.returncode != 0 and "cannot be reached" in down.stderr
    assert "pw-secret-xyz" not in down.stderr + down.stdout + dkl.server.log
    assert len(down.stderr.strip().splitlines()) == 1
    bad = cli("database", "role", "add", DATABASE, "bad", "--creation-sql",
              "CREATE ROLE {{user}}", check=False)  # fmt: skip
    assert bad.returncode != 0 and "{{user}}" in bad.stderr
    failing = f"f{target.tag}"
    sql = "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}'; SELECT * FROM nowhere"
    cli("database", "role", "add", DATABASE, failing, "--creation-sql", sql)
    made = cli("database", "creds", DATABASE, failing, check=False)
    assert made.returncode != 0 and "nowhere" in made.stderr
    assert len(made.stderr.strip().splitlines()) == 1
    assert target.roles_like(f"v-admin-{failing}") == []
    assert dkl.leaked() == []
