"""Two keyless processes sharing one PostgreSQL: one key ring, one chain, changes seen by both."""

from __future__ import annotations

import json
import time

from tests.support.federation import federate
from tests.support.server import ServerFactory


def test_two_replicas_share_config_keys_and_audit(
    servers: ServerFactory,
    make_pg_database,  # type: ignore[no-untyped-def]
    tmp_path,
) -> None:
    db = make_pg_database()
    a = servers.start("--database", db, dev=True)
    b = servers.start(
        "--database", db, dev=True, env={"KEYLESS_ROOT_KEY_FILE": str(a.data_dir / "root.key")}
    )
    with a.client() as http_a, b.client() as http_b:
        assert (
            http_a.get("/default/discovery/v2.0/keys").json()
            == http_b.get("/default/discovery/v2.0/keys").json()
        )
    fed = federate(a, tmp_path)  # configured through replica A only
    fed_b = type(fed)(
        b, fed.tenant_id, fed.client_id, fed.object_id, fed.dev_issuer, fed.key, tmp_path
    )
    deadline = time.monotonic() + 15
    response = fed_b.exchange(fed_b.test_token())
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        response = fed_b.exchange(fed_b.test_token())
    assert response.status_code == 200, response.text
    assert fed.exchange(fed.test_token()).status_code == 200
    # Every event from both replicas is in one chain that verifies.
    result = a.cli("audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    events = [
        json.loads(ln) for ln in b.cli("--output", "json", "audit", "list").stdout.split("\n") if ln
    ]
    exchanges = [e for e in events if e["action"].startswith("token.exchange")]
    assert len([e for e in exchanges if e["result"] == "success"]) >= 2
