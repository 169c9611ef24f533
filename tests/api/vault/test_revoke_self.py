"""``revoke-self`` holds everywhere (vault-wire.md): the revoked token is refused by every
endpoint of every dialect (Vault's 403; the Key Vault dialect's own 401 and challenge), on every
worker at once, and on another replica within its propagation delay.

Two replicas sharing one PostgreSQL database, each ``--workers 2``: what only real processes
show. Every request opens a new connection, so the kernel spreads them over the workers.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from tests.api.vault.conftest import MOUNT, PLAIN_NAME, PLAIN_VALUE, VaultKeyless, start
from tests.support.server import ServerFactory, free_port

WORKERS = 2


@dataclass
class Pair:
    a: VaultKeyless
    b: VaultKeyless


@pytest.fixture(scope="module")
def database(pg_server: str) -> Iterator[str]:
    name = f"keyless_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{pg_server.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("replicas")
    factory = ServerFactory(tmp)
    port_a = free_port()
    shared = ("--database", database, "--public-url", f"https://localhost:{port_a}")
    shared += ("--workers", str(WORKERS), "--token-rate-limit", "0")
    try:
        a = start(factory, tmp, *shared, port=port_a)
        # One deployment: the replicas share the root key and the TLS certificate (and its CA,
        # which b also trusts when it fetches the dev cluster's keys from the public URL).
        b_dir = tmp / "replica-b"
        b_dir.mkdir(mode=0o700)
        shutil.copytree(a.server.data_dir / "tls", b_dir / "tls")
        b_server = factory.start(
            *shared,
            data_dir=b_dir,
            dev=True,
            env={"KEYLESS_ROOT_KEY_FILE": str(a.server.data_dir / "root.key")},
        )
        yield Pair(a, VaultKeyless(b_server, tmp, a.secrets_seen))
    finally:
        factory.stop_all()


def vault_read(kl: VaultKeyless, token: str) -> httpx.Response:
    with kl.http() as http:  # a new connection: any worker may take it
        return http.get(f"/v1/{MOUNT}/data/{PLAIN_NAME}", headers={"X-Vault-Token": token})


def lookup(kl: VaultKeyless, token: str) -> httpx.Response:
    with kl.http() as http:
        return http.get("/v1/auth/token/lookup-self", headers={"X-Vault-Token": token})


def key_vault_read(kl: VaultKeyless, token: str) -> httpx.Response:
    """The same token through the Key Vault dialect (it is a keyless access token)."""
    with kl.http() as http:
        return http.get(
            f"/vaults/{MOUNT}/secrets/{PLAIN_NAME}",
            params={"api-version": "7.4"},
            headers={"Authorization": f"Bearer {token}"},
        )


def assert_served(kl: VaultKeyless, token: str) -> None:
    read = vault_read(kl, token)
    assert read.status_code == 200, read.text
    assert read.json()["data"]["data"] == {"value": PLAIN_VALUE}
    kv = key_vault_read(kl, token)
    assert kv.status_code == 200, kv.text
    assert kv.json()["value"] == PLAIN_VALUE


def assert_refused(kl: VaultKeyless, token: str) -> None:
    read = vault_read(kl, token)
    assert read.status_code == 403, read.text
    assert read.json()["errors"][0] == "permission denied"
    assert lookup(kl, token).status_code == 403
    kv = key_vault_read(kl, token)
    assert kv.status_code == 401, kv.text  # Key Vault's own answer: a 401 and its challenge
    assert kv.headers["www-authenticate"].startswith("Bearer ")
    for response in (read, kv):
        assert PLAIN_VALUE not in response.text


def refused_by_every_worker(kl: VaultKeyless, token: str) -> bool:
    return all(
        vault_read(kl, token).status_code == 403 and key_vault_read(kl, token).status_code == 401
        for _ in range(4 * WORKERS)
    )


def revoke(kl: VaultKeyless, token: str) -> None:
    with kl.http() as http:
        response = http.put("/v1/auth/token/revoke-self", headers={"X-Vault-Token": token})
    assert response.status_code == 204, response.text


def test_every_worker_refuses_at_once(pair: Pair) -> None:
    token = pair.a.login("app", "revoke-workers")
    other = pair.a.login("app", "revoke-workers")
    for _ in range(2 * WORKERS):  # remembered as verified by every worker
        assert_served(pair.a, token)
    revoke(pair.a, token)
    for _ in range(4 * WORKERS):  # the very next request, whichever worker takes it
        assert_refused(pair.a, token)
        assert_served(pair.a, other)  # another token of the same identity is untouched


def test_other_replica_refuses_within_its_propagation_delay(pair: Pair) -> None:
    token = pair.a.login("app", "revoke-replicas")
    # A hang guard, not a timing check: b serves what a configured and issued.
    deadline = time.monotonic() + 15
    while vault_read(pair.b, token).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(2 * WORKERS):
        assert_served(pair.b, token)
    revoke(pair.a, token)
    assert_refused(pair.a, token)
    # each worker of b refuses once it has loaded the revocation (documented: ~2 s); the
    # deadline only guards a hang
    deadline = time.monotonic() + 15
    while not refused_by_every_worker(pair.b, token) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(4 * WORKERS):
        assert_refused(pair.b, token)


def test_revoked_on_one_replica_then_login_again_on_the_other(pair: Pair) -> None:
    """A client's answer to a 403 (vault-csi-provider, Agent): log in again, anywhere."""
    token = pair.b.login("app", "relogin")
    revoke(pair.b, token)
    assert_refused(pair.b, token)
    fresh = pair.a.login("app", "relogin")
    assert fresh != token
    assert_served(pair.b, fresh)


def test_no_token_or_value_in_either_server_log(pair: Pair) -> None:
    assert len(pair.a.secrets_seen) > 5
    assert pair.a.leaked() == [] and pair.b.leaked() == []
