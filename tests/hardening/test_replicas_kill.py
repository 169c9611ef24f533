"""Two replicas on one PostgreSQL under load; one is SIGKILLed and restarted.

The replicas run as the PostgreSQL deployment runs them (deploy/kubernetes/overlays/postgresql):
the same database, the same root key (``KEYLESS_ROOT_KEY_FILE``), the same TLS certificate
(``--tls-cert``/``--tls-key``) and the same ``--public-url`` (the load balancer's), each with
its own data directory (its admin socket) and port. So an access token minted by one replica
is good at the other.

Load: worker threads exchange workload tokens for access tokens, write secrets (Key Vault PUT)
and read them back, against both replicas. Phases are counted, not timed: once both replicas
have acknowledged ``WARM_WRITES`` writes, replica A is SIGKILLed; once a client has noticed and
the survivor has acknowledged ``DOWN_WRITES`` writes alone, A is restarted on the same port and
data directory; once A has acknowledged ``AFTER_WRITES`` writes again (and B served too), the
load stops. Each request is stamped with the phase it started and ended in, so "when" below
means a phase, never a clock reading; wall-clock bounds are only hang guards.

Client-side retry, which is what "clients retry to the survivor" means here: each worker
prefers one replica; a request that fails on a replica with a transport error or a 5xx is sent
again to the other one (a write with the same value; up to ``ATTEMPTS`` tries, alternating),
and a replica that failed is avoided for ``AVOID_SECONDS`` before it is tried again. A 4xx is
an answer, never retried. Every failed attempt is recorded with its replica and the phases
it was sent and failed in.

At the end:

- every failure was against the killed replica, of a request that was under way while A was
  down (none from the survivor, none started after the restart), and every answer was a 200;
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

import gc
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
WARM_WRITES = 8  # acknowledged by each replica before the kill
DOWN_WRITES = 8  # acknowledged by the survivor alone, after a client noticed the kill
AFTER_WRITES = 8  # acknowledged by the restarted replica
HANG_GUARD = 60.0  # seconds: a phase that never reaches its count fails instead of hanging
BEFORE, DOWN, AFTER = 0, 1, 2  # the phases; DOWN starts just before the SIGKILL
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
    started: int  # the phase the acknowledged attempt was sent in
    ended: int  # and the one its answer was read in

    @property
    def phase(self) -> str:
        """When it was served, exactly: "before" the kill (answered before it), "down"
        (sent after the kill, answered before the restart), "after" the restart (sent after
        it: old A was reaped by then), or "across" a change of phase."""
        if self.ended == BEFORE:
            return "before"
        if self.started == self.ended == DOWN:
            return "down"
        return "after" if self.started == AFTER else "across"


@dataclass
class Failure:
    started: int  # the phase the attempt started in
    ended: int  # and the one it failed in
    replica: str
    what: str
    detail: str


@dataclass
class Ledger:
    # Guards everything below; notified on every answer and failure (the test's thread waits
    # on it for a phase's counts).
    lock: threading.Condition = field(default_factory=threading.Condition)
    phase: int = BEFORE
    attempted: dict[str, list[str]] = field(default_factory=dict)  # name -> values, in order
    acked: dict[str, list[Ack]] = field(default_factory=dict)
    exchanges: list[tuple[str, str, int]] = field(default_factory=list)  # (rid, replica, phase)
    failures: list[Failure] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # answers that must never happen
    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (replica, op) -> 200s
    served_after: Counter[str] = field(default_factory=Counter)  # replica -> 200s after restart

    def now(self) -> int:
        with self.lock:
            return self.phase

    def ok(self, replica: str, op: str, started: int) -> None:
        with self.lock:
            self.served[(replica, op)] += 1
            if started == AFTER:
                self.served_after[replica] += 1
            self.lock.notify_all()

    def acked_in(self, phase: str, replica: str) -> int:
        """Writes ``replica`` acknowledged in ``phase`` (see ``Ack.phase``); under ``lock``."""
        return sum(
            1
            for acks in self.acked.values()
            for a in acks
            if (a.phase, a.replica) == (phase, replica)
        )

    def enter(self, phase: int) -> None:
        with self.lock:
            self.phase = phase

    def wait_for(self, what: str, reached: Callable[[], bool]) -> None:
        """Until ``reached()`` (called under ``lock``) holds, or fail past the hang guard."""
        with self.lock:
            if not self.lock.wait_for(reached, timeout=HANG_GUARD):
                raise AssertionError(
                    f"load stalled waiting for {what}: served {dict(self.served)}, "
                    f"{len(self.failures)} failures, wrong {self.wrong[:5]}"
                )


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
    ) -> tuple[str, httpx.Response, str, int] | None:
        """``send`` (given a client and a fresh request id) with fail-over; None if it never
        got an answer. Returns the replica that answered, the answer, its request id and the
        phase the answered attempt was sent in."""
        targets = self._targets(first)
        for attempt in range(ATTEMPTS):
            replica = targets[attempt % 2]
            rid = uuid.uuid4().hex
            started = self.ledger.now()
            try:
                response = send(self.http[replica], rid)
            except httpx.TransportError as exc:
                self._failed(started, replica, op, f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code < 500:
                    if response.status_code == 200:
                        self.ledger.ok(replica, op, started)
                    return replica, response, rid, started
                self._failed(started, replica, op, f"{response.status_code} {response.text[:200]}")
            if time.monotonic() > self.deadline:
                return None
            time.sleep(0.05)  # client back-off before the next attempt (not an ordering)
        return None

    def _failed(self, started: int, replica: str, op: str, detail: str) -> None:
        self.avoid[replica] = time.monotonic() + AVOID_SECONDS
        with self.ledger.lock:
            failure = Failure(started, self.ledger.phase, replica, op, detail)
            self.ledger.failures.append(failure)
            self.ledger.lock.notify_all()

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
        replica, response, rid, _ = got
        if response.status_code != 200:
            self._wrong(f"exchange at {replica}: {response.status_code} {response.text[:300]}")
            return
        self.token = response.json()["access_token"]
        with self.ledger.lock:
            self.ledger.exchanges.append((rid, replica, self.ledger.phase))

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
        replica, response, rid, started = got
        ended = self.ledger.now()
        if response.status_code != 200 or response.json().get("value") != value:
            self._wrong(f"write {name} at {replica}: {response.status_code} {response.text[:300]}")
            return None
        version = response.json()["id"].rsplit("/", 1)[1]
        ack = Ack(version, value, rid, replica, started, ended)
        with self.ledger.lock:
            self.ledger.acked.setdefault(name, []).append(ack)
            self.ledger.lock.notify_all()
        return ack

    def read(self, name: str, ack: Ack) -> None:
        """The latest, preferably from the replica that acknowledged (read-your-writes);
        then that version from the other replica."""

        def latest(http: httpx.Client, rid: str) -> httpx.Response:
            url = f"/vaults/{VAULT}/secrets/{name}?api-version=7.4"
            return http.get(url, headers=self._headers(rid))

        got = self.call("read", latest, first=ack.replica)
        if got is not None:
            replica, response, _, _ = got
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
            replica, response, _, _ = got
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
            time.sleep(0.1)  # B looks at the store's revisions every 2 s


def _wait_until_refreshed(replicas: Replicas) -> None:
    """Until each replica has refreshed its secret cache since the load stopped: a secret it
    has just read (so cached) is rewritten through the other replica, and read until the new
    value shows - which takes that replica's forgetting everything it cached. Bounded."""
    headers = _bearer(replicas)
    url = f"/vaults/{VAULT}/secrets/refreshed?api-version=7.4"
    for writer, reader in (("a", "b"), ("b", "a")):
        with replicas.client(writer) as w, replicas.client(reader) as r:
            first, second = f"{reader}-cached", f"{reader}-refreshed"
            assert w.put(url, json={"value": first}, headers=headers).status_code == 200
            assert r.get(url, headers=headers).json()["value"] == first  # now in its cache
            assert w.put(url, json={"value": second}, headers=headers).status_code == 200
            deadline = time.monotonic() + HANG_GUARD
            while r.get(url, headers=headers).json()["value"] != second:
                assert time.monotonic() < deadline, f"replica {reader} never refreshed"
                time.sleep(0.1)


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
    """Every event, in order: the admin API pages ``keyless audit list`` reads (one request a
    page instead of one more Python process)."""
    admin = Admin(server)
    events: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = admin.call("GET", f"/v1/audit?after={cursor}&limit=1000")
        if not page["events"]:
            return events
        events += page["events"]
        cursor = int(page["next"])


def test_sigkill_one_of_two_replicas_under_load_loses_nothing_acknowledged(
    servers: ServerFactory, make_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    replicas, args, env = _start_replicas(servers, make_pg_database(), tmp_path)
    _wait_until_b_follows(replicas)
    a = replicas.servers["a"]
    ledger = Ledger()
    stop = threading.Event()
    deadline = time.monotonic() + 4 * HANG_GUARD  # only if this thread never sets ``stop``
    workers = [Worker(k, replicas, ledger, stop, deadline) for k in range(WORKERS)]
    threads = [threading.Thread(target=w.run, name=f"load-{w.k}") for w in workers]
    for t in threads:
        t.start()
    try:
        ledger.wait_for(
            f"{WARM_WRITES} writes acknowledged by each replica",
            lambda: min(ledger.acked_in("before", r) for r in "ab") >= WARM_WRITES,
        )
        ledger.enter(DOWN)  # before the signal: every failure of the kill ends in DOWN or later
        a.stop(signal.SIGKILL)  # returns once A is reaped: nothing of it is listening
        ledger.wait_for(
            f"a client to notice the kill and {DOWN_WRITES} writes at the survivor alone",
            lambda: bool(ledger.failures) and ledger.acked_in("down", "b") >= DOWN_WRITES,
        )
        restarted = servers.start(*args, data_dir=a.data_dir, port=a.port, env=env)
        replicas.servers["a"] = restarted
        ledger.enter(AFTER)  # after the ready line: A listens again
        ledger.wait_for(
            f"{AFTER_WRITES} writes at the restarted replica, and the survivor serving",
            lambda: (
                ledger.acked_in("after", "a") >= AFTER_WRITES
                and ledger.served_after["a"] > 0
                and ledger.served_after["b"] > 0
            ),
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HANG_GUARD)
    assert not any(t.is_alive() for t in threads), "a load worker did not stop"
    gc.collect()  # each worker closed its clients: a connection left open fails here, not later

    assert not ledger.wrong, "\n".join(ledger.wrong[:20])
    survivors = [f for f in ledger.failures if f.replica != "a"]
    assert not survivors, f"the survivor failed requests: {survivors[:5]}"
    outside = [f for f in ledger.failures if not f.started <= DOWN <= f.ended]
    assert not outside, f"failures of requests not under way while A was down: {outside[:5]}"
    assert ledger.failures, "the kill was not noticed by any client: the test did not test"
    acked = [ack for acks in ledger.acked.values() for ack in acks]
    by_phase = Counter((ack.phase, ack.replica) for ack in acked)
    # Both served writes before the kill; the survivor alone while A was down; A again after.
    for phase_replica in (("before", "a"), ("before", "b"), ("down", "b"), ("after", "a")):
        assert by_phase[phase_replica] > 0, (phase_replica, by_phase)
    assert ledger.served_after["a"] > 0 and ledger.served_after["b"] > 0, ledger.served_after

    problems = _read_back(replicas, ledger)
    if problems:  # another replica's writes reach a secret cache on its next 2 s refresh
        print(f"read back: a second look, once both replicas refreshed, after {problems[:5]}")
        _wait_until_refreshed(replicas)
        problems = _read_back(replicas, ledger)
    assert not problems, "\n".join(problems[:20])

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
            }
        )
    )
