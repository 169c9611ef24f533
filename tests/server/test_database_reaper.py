"""The database engine's reaper survives restarts and replicas: two servers on one PostgreSQL
store, a lease issued, both stopped before it expires and started again after: the role is
dropped, and exactly one revocation is recorded (docs/databases.md, "Revocation")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dbtarget import TargetDb, target_database
from tests.support.server import RunningServer, ServerFactory

REAP = {"KEYLESS_DATABASE_REAP_INTERVAL": "1"}


@pytest.fixture
def target(pg_server: str) -> Iterator[TargetDb]:
    with target_database(pg_server) as t:
        yield t


def _replicas(servers: ServerFactory, store: str, root: Path | None, dirs: list[Path]
              ) -> list[RunningServer]:  # fmt: skip
    started = []
    for i, data_dir in enumerate(dirs):
        env = dict(REAP)
        if root is not None or i:
            env["KEYLESS_ROOT_KEY_FILE"] = str(root or dirs[0] / "root.key")
        started.append(servers.start("--database", store, data_dir=data_dir, env=env))
    return started


def test_an_expired_lease_is_revoked_once_after_both_replicas_restart(
    servers: ServerFactory,
    make_pg_database,  # type: ignore[no-untyped-def]
    target: TargetDb,
    tmp_path: Path,
) -> None:
    store = make_pg_database()
    dirs = [tmp_path / "a", tmp_path / "b"]
    a, b = _replicas(servers, store, None, dirs)
    secret = tmp_path / "pw"
    secret.write_text(target.admin_password)
    a.cli("database", "add", "orders", "--url", target.url, "--password-file", str(secret))
    role = f"r{target.tag}"
    a.cli("database", "role", "add", "orders", role, "--ttl", "4s", "--max-ttl", "1m")
    issued = json.loads(b.cli("--output", "json", "database", "creds", "orders", role).stdout)
    user = issued["username"]
    assert target.logs_in(user, issued["password"])
    for server in (a, b):
        assert server.stop() == 0
    time.sleep(max(0.0, issued["expires_at"] - time.time()) + 0.5)  # expires while all are down
    assert target.role(user) is not None
    a, b = _replicas(servers, store, dirs[0] / "root.key", dirs)
    deadline = time.monotonic() + 20
    while target.role(user) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.role(user) is None, "no replica revoked the expired lease"
    time.sleep(2.5)  # both replicas have swept again since
    listed = a.cli("--output", "json", "audit", "list").stdout
    events = [json.loads(line) for line in listed.splitlines() if line]
    revocations = [
        e for e in events if e["action"] == "database.revoke" and issued["lease_id"] in e["reason"]
    ]
    assert [(e["result"], "reaper" in e["reason"]) for e in revocations] == [("success", True)]
    leases = json.loads(b.cli("--output", "json", "database", "lease", "list", "--all").stdout)
    assert [lease["state"] for lease in leases if lease["lease_id"] == issued["lease_id"]] == [
        "revoked"
    ]
    assert a.cli("audit", "verify").returncode == 0
