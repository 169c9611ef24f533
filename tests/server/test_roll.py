"""Two replicas on PostgreSQL behind a load balancer, rolled one after the other under load.

The balancer (tests/support/loadbalancer.py) does what a Kubernetes Service does with readiness
gating: it sends new connections only to replicas whose ``/readyz`` answered 2xx at the last
probe (every 0.2 s), and never retries a connection on another replica. Clients exchange tokens,
read a secret and write new versions of secrets through it, each on its own kept-alive
connection, retrying a request only when its connection was refused or reset before any answer
came (and counting that). Each replica in turn gets SIGTERM (as the kubelet sends it), exits,
and starts again on the same database. Then: no request failed, both replicas served before and
after, every acknowledged write reads back with its value, and the audit chain verifies and
holds an event for every acknowledged request.
"""

from __future__ import annotations

import re
import signal
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from keyless.localresolve import resolving
from tests.support.federation import Federated, federate
from tests.support.loadbalancer import LoadBalancer
from tests.support.server import RunningServer, ServerFactory, free_port

SHUTDOWN_DELAY = 2  # seconds, --shutdown-delay of the replicas (the manifests set 5)
SETTLE = 1.5  # seconds of load on both replicas before and after each roll
VAULT = "kv1"
# Refused, reset, or closed before any byte of an answer: a request that never reached keyless
# or whose connection died under it. Everything else (a timeout, a 5xx) is a failure.
RETRIED = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
SERVED_ROUTES = ("/oauth2/v2.0/token", "/secrets/")


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)  # by exception type
    failures: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # request ids answered 2xx
    writes: list[tuple[str, str, str]] = field(default_factory=list)  # (name, version, value)

    def retry(self, exc: Exception) -> None:
        with self.lock:
            self.retries[type(exc).__name__] += 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


class Clients:
    """Threads sending requests through the balancer until told to stop."""

    def __init__(self, fed: Federated, lb_port: int, tls: ssl.SSLContext) -> None:
        self.fed, self.tls = fed, tls
        self.base = f"https://localhost:{lb_port}"  # the public URL: the Service's
        self.vault = f"https://{VAULT}.vault.localhost:{lb_port}"
        self.scope = f"https://vault.localhost:{lb_port}/.default"
        self.tally = Tally()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.token = ""

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.tls, timeout=20)

    def call(
        self, http: httpx.Client, kind: str, method: str, url: str, **kw: Any
    ) -> httpx.Response | None:
        """One request, sent again only after a refused/reset connection; None if it failed."""
        rid = uuid.uuid4().hex
        headers = {"x-request-id": rid, **kw.pop("headers", {})}
        for _ in range(50):
            try:
                response = http.request(method, url, headers=headers, **kw)
            except httpx.RemoteProtocolError as exc:
                if "without sending a response" not in str(exc):
                    self.tally.fail(f"{kind}: {exc!r}")  # an answer cut off midway
                    return None
                self.tally.retry(exc)
                continue
            except RETRIED as exc:
                self.tally.retry(exc)
                time.sleep(0.02)
                continue
            except Exception as exc:
                self.tally.fail(f"{kind}: {exc!r}")
                return None
            if response.status_code != 200:
                self.tally.fail(f"{kind}: {response.status_code} {response.text[:200]}")
                return None
            with self.tally.lock:
                self.tally.ok[kind] += 1
                self.tally.acknowledged.append(rid)
            return response
        self.tally.fail(f"{kind}: still refused after 50 tries")
        return None

    def exchange(self, http: httpx.Client) -> str | None:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": self.fed.client_id,
            "client_assertion": self.fed.test_token(),
            "scope": self.scope,
        }
        url = f"{self.base}/{self.fed.tenant_id}/oauth2/v2.0/token"
        response = self.call(http, "exchange", "POST", url, data=form)
        return None if response is None else str(response.json()["access_token"])

    def secret_url(self, name: str, version: str = "") -> str:
        return f"{self.vault}/secrets/{name}{'/' + version if version else ''}?api-version=7.5"

    def write(self, http: httpx.Client, name: str, value: str, record: bool = True) -> bool:
        response = self.call(
            http,
            "write",
            "PUT",
            self.secret_url(name),
            json={"value": value},
            headers={"authorization": f"Bearer {self.token}"},
        )
        if response is None:
            return False
        version = response.json()["id"].rsplit("/", 1)[1]
        if record:
            with self.tally.lock:
                self.tally.writes.append((name, version, value))
        return True

    def read(self, http: httpx.Client, name: str, version: str = "") -> str | None:
        response = self.call(
            http,
            "read",
            "GET",
            self.secret_url(name, version),
            headers={"authorization": f"Bearer {self.token}"},
        )
        return None if response is None else str(response.json()["value"])

    # -- the load ------------------------------------------------------------------------------

    def _loop(self, body: Callable[[httpx.Client, int], None], keep_alive: bool) -> None:
        """``keep_alive``: one connection for as long as it lasts (an SDK client in a running
        workload); else a new connection each time (workloads starting up). A kept connection
        stays with its replica, as a Service's do, so only new ones reach a replica that came
        back."""
        n = 0
        while not self.stop.is_set():
            with self.client() as http:
                while not self.stop.is_set():
                    body(http, n)
                    n += 1
                    if not keep_alive:
                        break

    def _exchanger(self, http: httpx.Client, n: int) -> None:
        self.exchange(http)

    def _reader(self, http: httpx.Client, n: int) -> None:
        value = self.read(http, "seed")
        if value is not None and value != "seed-value":
            self.tally.fail(f"read: seed is {value!r}")

    def _writer(self, index: int) -> Callable[[httpx.Client, int], None]:
        def write(http: httpx.Client, n: int) -> None:
            self.write(http, f"roll-{index}", f"w{index}-{n}-{uuid.uuid4().hex[:8]}")

        return write

    def start(self) -> None:
        bodies = [(self._exchanger, False), (self._exchanger, True)]
        bodies += [(self._reader, False), (self._reader, True)]
        bodies += [(self._writer(0), True), (self._writer(1), False)]
        for i, (body, keep_alive) in enumerate(bodies):
            thread = threading.Thread(target=self._loop, args=(body, keep_alive), name=f"load-{i}")
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def setup(clients: Clients) -> None:
    """A token and a secret to read, once both replicas have picked up the trust and the role
    given through replica A (each follows the database every 2 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        clients.tally = Tally()
        with clients.client() as http:  # a new connection each round: both replicas
            token = clients.exchange(http)
            clients.token = token or ""
            if token and clients.write(http, "seed", "seed-value", record=False):
                with clients.client() as again:
                    if all(clients.read(again, "seed") == "seed-value" for _ in range(4)):
                        clients.tally = Tally()  # count from here
                        return
        time.sleep(0.3)
    raise AssertionError(f"setup through the balancer failed: {clients.tally.failures[:3]}")


_ROUTE = re.compile(r'^keyless_http_requests_total\{[^}]*route="([^"]*)"[^}]*\} (\S+)$')


def served(server: RunningServer, tls: ssl.SSLContext) -> int:
    """Token and secret requests this replica's process answered (its /metrics, direct)."""
    with httpx.Client(base_url=server.url, verify=tls, timeout=20) as http:
        text = http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = _ROUTE.match(line)
        if match and any(r in match.group(1) for r in SERVED_ROUTES):
            total += float(match.group(2))
    return int(total)


@dataclass
class Replicas:
    servers: ServerFactory
    db: str
    lb_port: int
    running: dict[str, RunningServer] = field(default_factory=dict)

    def start(self, name: str, like: RunningServer | None = None) -> RunningServer:
        args = [
            "--database",
            self.db,
            "--public-url",
            f"https://localhost:{self.lb_port}",
            "--token-rate-limit",
            "0",
            "--shutdown-delay",
            f"{SHUTDOWN_DELAY}s",
        ]
        env: dict[str, str] = {}
        first = self.running.get("a")
        if name != "a":
            assert first is not None
            tls = first.data_dir / "tls"  # one certificate for the Service, as a Secret would be
            args += [
                "--tls-cert",
                str(tls / "server.pem"),
                "--tls-key",
                str(tls / "server-key.pem"),
            ]
            env["KEYLESS_ROOT_KEY_FILE"] = str(first.data_dir / "root.key")
        server = self.servers.start(
            *args,
            env=env,
            data_dir=like.data_dir if like else None,
            port=like.port if like else None,
        )
        self.running[name] = server
        return server


@pytest.fixture
def replicas(servers: ServerFactory, make_pg_database) -> Replicas:  # type: ignore[no-untyped-def]
    r = Replicas(servers, make_pg_database(), free_port())
    r.start("a")
    r.start("b")
    return r


@pytest.fixture
def balancer(replicas: Replicas) -> Iterator[LoadBalancer]:
    backends = [("127.0.0.1", s.port) for s in replicas.running.values()]
    lb = LoadBalancer(backends, period=0.2, port=replicas.lb_port)
    lb.start()
    try:
        for server in replicas.running.values():
            lb.wait_ready(server.port, timeout=30)
        yield lb
    finally:
        lb.stop()


def audited_request_ids(db: str) -> set[str]:
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT request_id FROM audit_events").fetchall()
    return {row[0] for row in rows if row[0]}


def test_rolling_each_replica_under_load_loses_nothing(
    replicas: Replicas, balancer: LoadBalancer, tmp_path: Path
) -> None:
    started = time.monotonic()
    a = replicas.running["a"]
    fed = federate(a, tmp_path, dev_cluster=False)
    a.cli("vault", "create", VAULT)
    a.cli("role", "assign", "app", "secrets-officer", "--scope", f"/vaults/{VAULT}")
    clients = Clients(fed, replicas.lb_port, a.ssl_context())

    with resolving("vault.localhost"), clients.client() as http:
        setup(clients)

        clients.start()
        try:
            time.sleep(SETTLE)
            lives: dict[str, list[int]] = {}
            timings: dict[str, tuple[float, float, float]] = {}
            for name in ("a", "b"):
                old = replicas.running[name]
                lives[name] = [served(old, clients.tls)]
                signalled = time.monotonic()
                old.proc.send_signal(signal.SIGTERM)  # the kubelet, the pod being deleted
                out = balancer.wait_ready(old.port, ready=False, timeout=30)
                code = old.proc.wait(timeout=60)
                exited = time.monotonic() - signalled
                old.stop()  # its output reader
                assert code == 0, old.log[-2000:]
                new = replicas.start(name, like=old)
                back = balancer.wait_ready(new.port, timeout=30)
                timings[name] = (out, exited, back)
                time.sleep(SETTLE)
        finally:
            clients.finish()
        for name, server in replicas.running.items():
            lives[name].append(served(server, clients.tls))

        tally = clients.tally
        assert tally.failures == [], tally.failures[:10]
        # Each replica served in its first life and in its second.
        assert all(before > 0 and after > 0 for before, after in lives.values()), lives
        for name, (out, exited, _back) in timings.items():
            # Out of the rotation well before it stopped accepting, and it did serve on.
            assert out < SHUTDOWN_DELAY - 0.5, (name, timings)
            assert exited >= SHUTDOWN_DELAY, (name, timings)
        # Nothing was ever sent to a replica that was not listening.
        assert balancer.rejected == 0
        assert all(b.refused == 0 for b in balancer.backends), balancer.backends
        assert tally.ok["exchange"] > 0 and tally.ok["read"] > 0 and len(tally.writes) > 0

        # Every acknowledged write reads back, by its version and as the latest.
        latest: dict[str, str] = {}
        for name, version, value in tally.writes:
            assert clients.read(http, name, version) == value, (name, version)
            latest[name] = value
        for name, value in latest.items():
            assert clients.read(http, name) == value, name
        assert clients.tally.failures == []

    verify = replicas.running["a"].cli("audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    missing = set(tally.acknowledged) - audited_request_ids(replicas.db)
    assert not missing, f"{len(missing)} acknowledged requests without an audit event"

    for server in replicas.running.values():
        assert server.stop(signal.SIGINT) == 0  # SIGINT: no --shutdown-delay
    elapsed = time.monotonic() - started
    print(
        f"\nroll: {sum(tally.ok.values())} requests acknowledged ({dict(tally.ok)}), "
        f"{len(tally.writes)} writes, retries {dict(tally.retries) or 0}, "
        f"failures {len(tally.failures)}, served per replica (first life, second) {lives}, "
        f"(out of rotation s, exited s, back s) {timings}, "
        f"probes {dict(balancer.probes)}, {elapsed:.1f} s"
    )
