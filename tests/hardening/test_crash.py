"""Crash safety: SIGKILL under concurrent writes, restart on the same data, nothing lost.

On SQLite and on PostgreSQL: writer threads set secrets and create identities through the admin
socket (and rotate the signing keys) while access tokens are being issued; the server is killed
with SIGKILL at a random moment, restarted on the same data directory and database, and then:

- every write that was acknowledged (200) is there, byte for byte, under its version;
- the latest version of every secret is a value that was written (no half-written version);
- every access token issued before the crash still verifies (PyJWT against the JWKS);
- ``keyless audit verify`` passes (the hash chain survived).
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest

from tests.hardening.tally import count
from tests.support.federation import Federated, federate
from tests.support.server import RunningServer, ServerFactory

ROUNDS = 3
WRITERS = 3
BUDGET = 60.0  # seconds per backend


@dataclass
class Ledger:
    attempted: dict[str, list[str]] = field(default_factory=dict)  # secret -> values tried
    acked: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (version, value)
    identities_acked: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _secret_writer(
    server: RunningServer, name: str, round_: int, ledger: Ledger, stop: threading.Event
) -> None:
    with server.admin() as admin:
        for i in range(10_000):
            if stop.is_set():
                return
            value = f"{name}-round{round_}-write{i}-" + "v" * random.randint(1, 2000)
            with ledger.lock:
                ledger.attempted.setdefault(name, []).append(value)
            try:
                response = admin.put(f"/v1/vaults/kvc/secrets/{name}", json={"value": value})
            except httpx.HTTPError:
                return
            if response.status_code != 200:
                return
            with ledger.lock:
                ledger.acked.setdefault(name, []).append((response.json()["version"], value))


def _admin_changer(
    server: RunningServer, round_: int, ledger: Ledger, stop: threading.Event
) -> None:
    with server.admin() as admin:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                if i % 7 == 3:
                    admin.post("/v1/tenants/default/keys/rotate")
                    continue
                name = f"crash-r{round_}-{i}"
                response = admin.post("/v1/identities?tenant=default", json={"name": name})
            except httpx.HTTPError:
                return
            if response.status_code in (200, 201):
                ledger.identities_acked.append(name)


def _token_minter(fed: Federated, ledger: Ledger, stop: threading.Event) -> None:
    for _ in range(10_000):
        if stop.is_set():
            return
        try:
            response = fed.exchange(fed.test_token())
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            ledger.tokens.append(response.json()["access_token"])
        time.sleep(0.05)


def _verify(fed: Federated, ledger: Ledger) -> None:
    server = fed.server
    with server.admin() as admin:
        for name, acked in ledger.acked.items():
            for version, value in acked:
                got = admin.get(f"/v1/vaults/kvc/secrets/{name}", params={"version": version})
                assert got.status_code == 200, (name, version, got.text)
                assert got.json()["value"] == value, (name, version)
        for name, tried in ledger.attempted.items():
            latest = admin.get(f"/v1/vaults/kvc/secrets/{name}")
            if latest.status_code == 404:
                assert not ledger.acked.get(name)
                continue
            assert latest.status_code == 200, latest.text
            assert latest.json()["value"] in tried
            if ledger.acked.get(name):
                acked_values = [v for _, v in ledger.acked[name]]
                # The latest is the last acknowledged write or one that was in flight.
                later = tried[tried.index(acked_values[-1]) :]
                assert latest.json()["value"] in later
        identities = {i["name"] for i in admin.get("/v1/identities?tenant=default").json()}
        assert set(ledger.identities_acked) <= identities
    jwks = jwt.PyJWKSet.from_dict(fed.jwks())
    by_kid = {k.key_id: k for k in jwks.keys}
    for token in ledger.tokens:
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid in by_kid, f"kid {kid} of a pre-crash token is no longer published"
        jwt.decode(
            token,
            by_kid[kid].key,
            algorithms=["ES256"],  # the default signing algorithm
            audience=fed.vault_scope[: -len("/.default")],
            issuer=f"{server.url}/{fed.tenant_id}/v2.0",
        )
    assert server.cli("audit", "verify").returncode == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_under_writes_loses_nothing_acknowledged(
    backend: str, servers: ServerFactory, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    args: list[str] = ["--token-rate-limit", "0"]
    if backend == "postgresql":
        args += ["--database", request.getfixturevalue("make_pg_database")()]
    data_dir = tmp_path / "data"
    server = servers.start(*args, dev=True, data_dir=data_dir)
    port = server.port
    fed = federate(server, tmp_path)
    server.cli("vault", "create", "kvc")
    ledger = Ledger()
    rng = random.Random()
    for round_ in range(ROUNDS):
        stop = threading.Event()
        threads = [
            threading.Thread(target=_secret_writer, args=(server, f"s{w}", round_, ledger, stop))
            for w in range(WRITERS)
        ]
        threads.append(threading.Thread(target=_admin_changer, args=(server, round_, ledger, stop)))
        threads.append(threading.Thread(target=_token_minter, args=(fed, ledger, stop)))
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 2.0))
        server.stop(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        server = servers.start(*args, dev=True, data_dir=data_dir, port=port)
        fed.server = server
        _verify(fed, ledger)
        count("crash")
        assert time.monotonic() - started < BUDGET * 2
    assert sum(len(v) for v in ledger.acked.values()) > 0 and ledger.tokens
    assert "Traceback" not in server.log, server.log
    print(
        json.dumps(
            {
                "backend": backend,
                "acked_writes": sum(len(v) for v in ledger.acked.values()),
                "identities": len(ledger.identities_acked),
                "tokens": len(ledger.tokens),
            }
        )
    )
