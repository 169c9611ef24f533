"""Two replicas on one PostgreSQL under load; one is SIGKILLed and restarted.

The replicas run as the PostgreSQL deployment runs them (deploy/kubernetes/overlays/postgresql):
the same database, the same root key (``KEYLESS_ROOT_KEY_FILE``), the same TLS certificate
(``--tls-cert``/``--tls-key``) and the same ``--public-url`` (the load balancer's), each with
its own data directory (its admin socket) and port. So an access token minted by one replica
is good at the other.

Load: worker threads exchange workload tokens for access tokens, write secrets (Key Vault PUT)
and read them back, against both replicas. Mid-run replica A is SIGKILLed; after a while it is
restarted on the same port and data directory, and load goes back to it.

Client-side retry, which is what "clients retry to the survivor" means here: each worker
prefers one replica; a request that fails on a replica with a transport error or a 5xx is sent
again to the other one (a write with the same value; up to ``ATTEMPTS`` tries, alternating),
and a replica that failed is avoided for ``AVOID_SECONDS`` before it is tried again. A 4xx is
an answer, never retried. Every failed attempt is recorded with its time and replica.

At the end:

- every failure was against the killed replica, between the kill and its restart (none from
  the survivor, none after the restart), and every answer was a 200;
- every acknowledged write is readable at both replicas under its version with its value, and
  each secret's current value is its last acknowledged write (or a write that was in flight
  after it, unacknowledged because of the kill);
- every read returned a value that was written to that name, and a replica read its own
  acknowledged write back;
- ``keyless audit verify`` exits 0 on both replicas' admin sockets, and the audit log holds a
  successful ``secrets/setSecret`` event for each acknowledged write and a successful exchange
  event for each acknowledged exchange, matched by the request id the client sent.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.hardening.tally import count
from tests.support.oidc import jwks_of, new_key, sign
from tests.support.server import RunningServer, ServerFactory, free_port
from tests.support.tenants import Admin, token_form

WORKERS = 4
NAMES_PER_WORKER = 3
ATTEMPTS = 6
AVOID_SECONDS = 1.0
WARM_SECONDS = 3.0  # load on both replicas before the kill
DOWN_SECONDS = 1.5  # the survivor alone
AFTER_SECONDS = 3.0  # load on both again after the restart
RESTART_GRACE = 0.5  # the ready line is read by a thread: allow this much after it
BUDGET = 90.0  # a bound for the whole test; ~25-45 s on a 2-core machine under other load
ISSUER = "https://issuer.test/clusters/replicas"
KID = "replicas-1"
VAULT = "kvr"
IDENTITY = "loader"


@dataclass
class Ack:
    version: str
    value: str
    request_id: str
    replica: str
    at: float


@dataclass
class Failure:
    at: float
    replica: str
    what: str
    detail: str


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict[str, list[str]] = field(default_factory=dict)  # name -> values, in order
    acked: dict[str, list[Ack]] = field(default_factory=dict)
    exchanges: list[tuple[str, str, float]] = field(default_factory=list)  # (rid, replica, at)
    failures: list[Failure] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # answers that must never happen
    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (replica, op) -> 200s
    served_after: Counter[str] = field(default_factory=Counter)  # replica -> 200s after restart
    restarted_at: float | None = None

    def ok(self, replica: str, op: str, at: float) -> None:
        with self.lock:
            self.served[(replica, op)] += 1
            if self.restarted_at is not None and at > self.restarted_at:
                self.served_after[replica] += 1


@dataclass
class Replicas:
    """The two servers, their shared settings, and how a client reaches each."""

    servers: dict[str, RunningServer]
    ports: dict[str, int]
    public_url: str
    ca: Path
    tenant_id: str
    client_id: str
    key: Any

    @property
    def scope(self) -> str:
        port = self.public_url.rsplit(":", 1)[1]
        return f"https://vault.localhost:{port}/.default"

    def client(self, replica: str) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(
            base_url=f"https://localhost:{self.ports[replica]}", verify=context, timeout=15
        )


class Worker:
    """One client: prefers a replica, fails over to the other, records what it was told."""

    def __init__(
        self, k: int, replicas: Replicas, ledger: Ledger, stop: threading.Event, deadline: float
    ) -> None:
        self.k = k
        self.replicas = replicas
        self.ledger = ledger
        self.stop = stop
        self.deadline = deadline  # a bound in case the test's thread never sets ``stop``
        self.order = ["a", "b"] if k % 2 == 0 else ["b", "a"]
        self.avoid: dict[str, float] = {"a": 0.0, "b": 0.0}
        self.http = {name: replicas.client(name) for name in ("a", "b")}
        self.token: str | None = None
        self.rng = random.Random(k)

    def close(self) -> None:
        for http in self.http.values():
            http.close()

    def _targets(self, first: str | None = None) -> list[str]:
        now = time.monotonic()
        order = [first, *[r for r in self.order if r != first]] if first else list(self.order)
        healthy = [r for r in order if self.avoid[r] <= now]
        return healthy + [r for r in order if r not in healthy]

    def call(
        self, op: str, send: Callable[[httpx.Client, str], httpx.Response], first: str | None = None
    ) -> tuple[str, httpx.Response, str] | None:
        """``send`` (given a client and a fresh request id) with fail-over; None if it never
        got an answer. Returns the replica that answered, the answer and its request id."""
        targets = self._targets(first)
        for attempt in range(ATTEMPTS):
            replica = targets[attempt % 2]
            rid = uuid.uuid4().hex
            try:
                response = send(self.http[replica], rid)
            except httpx.TransportError as exc:
                self._failed(replica, op, f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 500:
                    if response.status_code == 200:
                        self.ledger.ok(replica, op, time.monotonic())
                    return replica, response, rid
                self._failed(replica, op, f"{response.status_code} {response.text[:200]}")
            if time.monotonic() > self.deadline:
                return None
            time.sleep(0.05)
        return None

    def _failed(self, replica: str, op: str, detail: str) -> None:
        now = time.monotonic()
        self.avoid[replica] = now + AVOID_SECONDS
        with self.ledger.lock:
            self.ledger.failures.append(Failure(now, replica, op, detail))

    def _wrong(self, text: str) -> None:
        with self.ledger.lock:
            self.ledger.wrong.append(text)

    def exchange(self) -> None:
        r = self.replicas
        assertion = sign(r.key, iss=ISSUER, kid=KID)

        def send(http: httpx.Client, rid: str) -> httpx.Response:
            form = token_form(r.client_id, assertion, r.scope)
            headers = {"x-ms-client-request-id": rid}
            return http.post(f"/{r.tenant_id}/oauth2/v2.0/token", data=form, headers=headers)

        got = self.call("exchange", send)
        if got is None:
            self._wrong(f"worker {self.k}: no replica answered a token request")
            return
        replica, response, rid = got
        if response.status_code != 200:
            self._wrong(f"exchange at {replica}: {response.status_code} {response.text[:300]}")
            return
        self.token = response.json()["access_token"]
        with self.ledger.lock:
            self.ledger.exchanges.append((rid, replica, time.monotonic()))

    def _headers(self, rid: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}", "x-ms-client-request-id": rid}

    def write(self, name: str, i: int) -> Ack | None:
        value = f"{name}-write{i}-" + secrets.token_hex(self.rng.randint(4, 64))
        with self.ledger.lock:
            self.ledger.attempted.setdefault(name, []).append(value)

        def send(http: httpx.Client, rid: str) -> httpx.Response:
            url = f"/vaults/{VAULT}/secrets/{name}?api-version=7.4"
            return http.put(url, json={"value": value}, headers=self._headers(rid))

        got = self.call("write", send)
        if got is None:
            self._wrong(f"worker {self.k}: no replica answered a write of {name}")
            return None
        replica, response, rid = got
        if response.status_code != 200 or response.json().get("value") != value:
            self._wrong(f"write {name} at {replica}: {response.status_code} {response.text[:300]}")
            return None
        version = response.json()["id"].rsplit("/", 1)[1]
        ack = Ack(version, value, rid, replica, time.monotonic())
        with self.ledger.lock:
            self.ledger.acked.setdefault(name, []).append(ack)
        return ack

    def read(self, name: str, ack: Ack) -> None:
        """The latest, preferably from the replica that acknowledged (read-your-writes);
        then that version from the other replica."""

        def latest(http: httpx.Client, rid: str) -> httpx.Response:
            url = f"/vaults/{VAULT}/secrets/{name}?api-version=7.4"
            return http.get(url, headers=self._headers(rid))

        got = self.call("read", latest, first=ack.replica)
        if got is not None:
            replica, response, _ = got
            value = response.json().get("value") if response.status_code == 200 else None
            with self.ledger.lock:
                written = value in self.ledger.attempted.get(name, [])
            if response.status_code != 200 or not written:
                self._wrong(f"read {name} at {replica}: {response.status_code} {response.text}")
            elif replica == ack.replica and value != ack.value:
                self._wrong(f"{replica} did not read back its own write of {name}")
        other = "b" if ack.replica == "a" else "a"

        def versioned(http: httpx.Client, rid: str) -> httpx.Response:
            url = f"/vaults/{VAULT}/secrets/{name}/{ack.version}?api-version=7.4"
            return http.get(url, headers=self._headers(rid))

        got = self.call("read-version", versioned, first=other)
        if got is not None:
            replica, response, _ = got
            if response.status_code != 200 or response.json().get("value") != ack.value:
                self._wrong(
                    f"read {name}/{ack.version} at {replica}: {response.status_code} "
                    f"{response.text[:300]}"
                )

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                if self.token is None or i % 8 == 0:
                    self.exchange()
                    if self.token is None:
                        return
                name = f"w{self.k}-s{i % NAMES_PER_WORKER}"
                ack = self.write(name, i)
                if ack is not None:
                    self.read(name, ack)
                i += 1
        except Exception as exc:  # a bug in the load generator must fail the test, not hang it
            self._wrong(f"worker {self.k} crashed: {type(exc).__name__}: {exc}")
        finally:
            self.close()


def _start_replicas(
    servers: ServerFactory, database: str, tmp: Path
) -> tuple[Replicas, list[str], dict[str, str]]:
    root_key = tmp / "root.key"
    root_key.write_text(secrets.token_hex(32) + "\n")
    root_key.chmod(0o600)
    env = {"KEYLESS_ROOT_KEY_FILE": str(root_key)}
    public_url = f"https://localhost:{free_port()}"  # the balancer's URL; nothing listens there
    args = ["--database", database, "--public-url", public_url, "--token-rate-limit", "0"]
    a = servers.start(*args, data_dir=tmp / "replica-a", env=env)
    tls = a.data_dir / "tls"
    shared_tls = ["--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server-key.pem")]
    b = servers.start(*args, *shared_tls, data_dir=tmp / "replica-b", env=env)
    admin = Admin(a)
    tenant_id = admin.call("GET", "/v1/tenants/default")["id"]
    key = new_key()
    admin.add_issuer("default", ISSUER, jwks_of((key, KID)))
    client_id = admin.create_identity("default", IDENTITY)["client_id"]
    admin.trust("default", IDENTITY, "load", ISSUER)
    admin.create_vault("default", VAULT)
    admin.assign("default", IDENTITY, "secrets-officer", f"/vaults/{VAULT}")
    replicas = Replicas(
        {"a": a, "b": b}, {"a": a.port, "b": b.port}, public_url, a.ca, tenant_id, client_id, key
    )
    return replicas, [*args, *shared_tls], env


def _wait_until_b_follows(replicas: Replicas) -> None:
    """B learns of the configuration written through A (trust policy, vault, role) from the
    store's revisions, polled every 2 s: wait for all of it, bounded."""
    deadline = time.monotonic() + 20
    assertion = sign(replicas.key, iss=ISSUER, kid=KID)
    form = token_form(replicas.client_id, assertion, replicas.scope)
    with replicas.client("b") as http:
        while True:
            response = http.post(f"/{replicas.tenant_id}/oauth2/v2.0/token", data=form)
            if response.status_code == 200:
                token = response.json()["access_token"]
                response = http.get(
                    f"/vaults/{VAULT}/secrets/absent?api-version=7.4",
                    headers={"authorization": f"Bearer {token}"},
                )
                if response.status_code == 404 and "SecretNotFound" in response.text:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"replica B did not follow A: {response.text}")
            time.sleep(0.25)


def _bearer(replicas: Replicas) -> dict[str, str]:
    with replicas.client("b") as http:
        response = http.post(
            f"/{replicas.tenant_id}/oauth2/v2.0/token",
            data=token_form(
                replicas.client_id, sign(replicas.key, iss=ISSUER, kid=KID), replicas.scope
            ),
        )
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['access_token']}"}


def _read_back(replicas: Replicas, ledger: Ledger) -> list[str]:
    """What is wrong with the stored secrets (empty: nothing): every acknowledged version at
    the restarted replica, and every secret's current value at both."""
    problems: list[str] = []
    headers = _bearer(replicas)
    with replicas.client("a") as http:
        for name, acks in ledger.acked.items():
            for ack in acks:
                url = f"/vaults/{VAULT}/secrets/{name}/{ack.version}?api-version=7.4"
                got = http.get(url, headers=headers)
                if got.status_code != 200 or got.json()["value"] != ack.value:
                    problems.append(f"a: {name}/{ack.version}: {got.status_code}")
    for replica in ("a", "b"):
        with replicas.client(replica) as http:
            for name, acks in ledger.acked.items():
                url = f"/vaults/{VAULT}/secrets/{name}?api-version=7.4"
                latest = http.get(url, headers=headers)
                tried = ledger.attempted[name]
                allowed = tried[tried.index(acks[-1].value) :]  # the last ack, or in flight after
                if latest.status_code != 200 or latest.json()["value"] not in allowed:
                    problems.append(f"{replica}: latest of {name} is not its last acknowledged")
    return problems


def _versions(replicas: Replicas, names: list[str]) -> dict[str, int]:
    """How many versions each secret has in the store (Key Vault list, every page)."""
    headers = _bearer(replicas)
    out: dict[str, int] = {}
    with replicas.client("b") as http:
        for name in names:
            url: str | None = f"/vaults/{VAULT}/secrets/{name}/versions?api-version=7.4"
            out[name] = 0
            while url:
                page = http.get(url, headers=headers)
                assert page.status_code == 200, page.text
                out[name] += len(page.json()["value"])
                link = page.json().get("nextLink")
                url = "/" + link.split("/", 3)[3] if link else None  # the balancer's URL
    return out


def _audit_events(server: RunningServer) -> list[dict[str, Any]]:
    out = server.cli("--output", "json", "audit", "list").stdout
    return [json.loads(line) for line in out.splitlines() if line]


def test_sigkill_one_of_two_replicas_under_load_loses_nothing_acknowledged(
    servers: ServerFactory, make_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    started = time.monotonic()
    replicas, args, env = _start_replicas(servers, make_pg_database(), tmp_path)
    _wait_until_b_follows(replicas)
    set_up = time.monotonic()
    a = replicas.servers["a"]
    ledger = Ledger()
    stop = threading.Event()
    deadline = started + BUDGET
    workers = [Worker(k, replicas, ledger, stop, deadline) for k in range(WORKERS)]
    threads = [threading.Thread(target=w.run, name=f"load-{w.k}") for w in workers]
    for t in threads:
        t.start()
    try:
        time.sleep(WARM_SECONDS)
        killed_at = time.monotonic()
        a.stop(signal.SIGKILL)
        time.sleep(DOWN_SECONDS)
        restarted = servers.start(*args, data_dir=a.data_dir, port=a.port, env=env)
        ready_at = time.monotonic()
        replicas.servers["a"] = restarted
        with ledger.lock:
            ledger.restarted_at = ready_at
        time.sleep(AFTER_SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a load worker did not stop"
    loaded = time.monotonic()

    assert not ledger.wrong, "\n".join(ledger.wrong[:20])
    survivors = [f for f in ledger.failures if f.replica != "a"]
    assert not survivors, f"the survivor failed requests: {survivors[:5]}"
    outside = [f for f in ledger.failures if not killed_at <= f.at <= ready_at + RESTART_GRACE]
    assert not outside, f"failures outside the kill window: {outside[:5]}"
    assert ledger.failures, "the kill was not noticed by any client: the test did not test"
    acked = [ack for acks in ledger.acked.values() for ack in acks]
    by_phase = Counter(
        ("before" if ack.at < killed_at else "down" if ack.at < ready_at else "after", ack.replica)
        for ack in acked
    )
    # Both served writes before the kill; the survivor alone while A was down; A again after.
    for phase_replica in (("before", "a"), ("before", "b"), ("down", "b"), ("after", "a")):
        assert by_phase[phase_replica] > 0, (phase_replica, by_phase)
    assert ledger.served_after["a"] > 0 and ledger.served_after["b"] > 0, ledger.served_after

    problems = _read_back(replicas, ledger)
    if problems:  # another replica's writes reach a secret cache within 2 s: look once more
        print(f"read back: a second look after {problems[:5]}")
        time.sleep(2.5)
        problems = _read_back(replicas, ledger)
    assert not problems, "\n".join(problems[:20])
    read_back = time.monotonic()

    # The chain both replicas appended to verifies: with the CLI at the restarted replica's
    # admin socket, and through the survivor's admin API.
    verified = restarted.cli("audit", "verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = Admin(replicas.servers["b"]).call("POST", "/v1/audit/verify")
    assert report["ok"] and report["count"] >= len(acked), report
    events = _audit_events(replicas.servers["b"])
    ok = {(e["action"], e["request_id"]) for e in events if e["result"] == "success"}
    unaudited = [
        f"{name}/{ack.version}"
        for name, acks in ledger.acked.items()
        for ack in acks
        if ("secrets/setSecret", ack.request_id) not in ok
    ]
    assert not unaudited, f"acknowledged writes without an audit event: {unaudited[:10]}"
    exchanges = {rid for action, rid in ok if action.startswith("token.exchange")}
    missing = [rid for rid, _, _ in ledger.exchanges if rid not in exchanges]
    assert not missing, f"acknowledged exchanges without an audit event: {missing[:10]}"
    # Every stored version is in the log, acknowledged or not: a write in flight at the kill
    # may have committed and died before its outcome, but its "pending" decision came first.
    versions = _versions(replicas, sorted(ledger.attempted))
    set_events = Counter(
        e["target"].rsplit("/", 1)[1]
        for e in events
        if e["action"] == "secrets/setSecret" and e["result"] == "pending"
    )
    unaudited_versions = {n: v - set_events[n] for n, v in versions.items() if v > set_events[n]}
    assert not unaudited_versions, f"stored versions without an audit event: {unaudited_versions}"
    assert "Traceback" not in replicas.servers["b"].log, replicas.servers["b"].log[-5000:]
    assert "Traceback" not in restarted.log, restarted.log[-5000:]

    elapsed = time.monotonic() - started
    count("crash")
    print(
        json.dumps(
            {
                "acked_writes": len(acked),
                "by_phase": {f"{p}:{r}": n for (p, r), n in sorted(by_phase.items())},
                "exchanges": len(ledger.exchanges),
                "failed_attempts_on_killed_replica": len(ledger.failures),
                "served": {f"{r}:{op}": n for (r, op), n in sorted(ledger.served.items())},
                "audit_events": len(events),
                "versions_without_audit_event": unaudited_versions,
                "seconds_setup": round(set_up - started, 1),
                "seconds_restart": round(ready_at - killed_at - DOWN_SECONDS, 1),
                "seconds_load": round(loaded - set_up, 1),
                "seconds_read_back": round(read_back - loaded, 1),
                "seconds": round(elapsed, 1),
            }
        )
    )
    assert elapsed < BUDGET, f"took {elapsed:.0f} s"
