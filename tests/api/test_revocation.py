"""Deleting an identity, or removing its role, cuts its tokens off at once (issue 11, part 2).

Real servers over HTTPS; the access tokens are genuine and unexpired throughout. Variants: one
process, deletion and re-creation under the same name, role removal, ``--workers 2`` (every
worker refuses the next request), and two replicas sharing PostgreSQL (the other replica
refuses within its propagation delay, 2 s, checked with a margin).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.federation import Federated, federate
from tests.support.server import RunningServer, ServerFactory, free_port

SECRET_PATH = "/vaults/kv1/secrets/db?api-version=7.4"


def _setup(server: RunningServer, tmp: Path) -> Federated:
    fed = federate(server, tmp)
    server.cli("vault", "create", "kv1")
    server.cli("secret", "set", "kv1", "db", "--value", "v-revocation-1")
    server.cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/kv1")
    return fed


def _access_token(fed: Federated, client_id: str | None = None) -> str:
    response = fed.exchange(fed.dev_token(), client_id=client_id)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _read(server: RunningServer, token: str) -> httpx.Response:
    # A new connection each time: with --workers the kernel spreads them over the workers.
    with server.client(headers={"Authorization": f"Bearer {token}"}) as http:
        return http.get(SECRET_PATH)


def _audit(server: RunningServer) -> list[dict[str, object]]:
    out = server.cli("--output", "json", "audit", "list").stdout
    return [json.loads(line) for line in out.splitlines()]


def _delete(server: RunningServer, fed: Federated) -> None:
    server.cli("identity", "delete", "app")


def _recreate(server: RunningServer, fed: Federated) -> None:
    server.cli("identity", "delete", "app")
    server.cli("identity", "create", "app")
    server.cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/kv1")


def _unassign(server: RunningServer, fed: Federated) -> None:
    server.cli("role", "remove", "app", "secrets-user", "--scope", "/vaults/kv1")


CUTS: dict[str, tuple[Callable[[RunningServer, Federated], None], int]] = {
    "identity-deleted": (_delete, 401),
    "deleted-and-recreated-same-name": (_recreate, 401),
    "role-removed": (_unassign, 403),
}


@pytest.mark.parametrize("cut", sorted(CUTS))
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_cut_off_at_once(servers: ServerFactory, tmp_path: Path, cut: str, workers: int) -> None:
    server = servers.start("--workers", str(workers), "--token-rate-limit", "0", dev=True)
    fed = _setup(server, tmp_path)
    token = _access_token(fed)
    for _ in range(2 * workers):  # remembered as verified by every worker
        response = _read(server, token)
        assert response.status_code == 200 and response.json()["value"] == "v-revocation-1"
    action, status = CUTS[cut]
    action(server, fed)
    for _ in range(4 * workers):  # the very next request, whichever worker takes it
        response = _read(server, token)
        assert response.status_code == status, response.text
        assert "v-revocation-1" not in response.text
    if status == 401:
        assert "no longer exists" in response.json()["error"]["message"]
        assert response.headers["www-authenticate"].startswith("Bearer ")
        refused = [e for e in _audit(server) if e["action"] == "vault.access"]
        assert refused and all(e["result"] == "failure" for e in refused)
        assert refused[-1]["actor"] == fed.object_id
        assert "identity_gone" in str(refused[-1]["reason"])
        assert (refused[-1]["workload"] or {}).get("pod") == "app-7d9f"  # type: ignore[union-attr]
    if cut == "deleted-and-recreated-same-name":
        new = json.loads(server.cli("--output", "json", "identity", "show", "app").stdout)
        assert new["object_id"] != fed.object_id
        server.cli(
            "federation",
            "add",
            "app",
            "--name",
            "dev",
            "--issuer",
            fed.dev_issuer,
            "--subject",
            "system:serviceaccount:demo:app",
        )
        fresh = _access_token(fed, client_id=new["client_id"])
        assert _read(server, fresh).status_code == 200  # the new identity, its own token
        assert _read(server, token).status_code == 401  # never the old one's


def test_other_replica_cuts_off_within_its_propagation_delay(
    servers: ServerFactory,
    make_pg_database,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    db = make_pg_database()
    port_a = free_port()
    public = ("--public-url", f"https://localhost:{port_a}")
    a = servers.start("--database", db, *public, port=port_a, dev=True)
    b = servers.start(
        "--database",
        db,
        *public,
        dev=True,
        env={"KEYLESS_ROOT_KEY_FILE": str(a.data_dir / "root.key")},
    )
    fed = _setup(a, tmp_path)
    token = _access_token(fed)
    deadline = time.monotonic() + 15
    while _read(b, token).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.3)  # b picks up the configuration made through a
    assert _read(b, token).status_code == 200
    a.cli("identity", "delete", "app")
    cut_at = time.monotonic()
    assert _read(a, token).status_code == 401
    while _read(b, token).status_code == 200:
        assert time.monotonic() - cut_at < 2 + 3, "replica b still serves a deleted identity"
        time.sleep(0.1)
    assert _read(b, token).status_code == 401
