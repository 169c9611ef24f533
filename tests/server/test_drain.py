"""Stopping so that a load balancer can follow (server/drain.py): after SIGTERM, ``/readyz``
answers 503 in every process while requests are served for ``--shutdown-delay``, with
``Connection: close``; then the listener stops, a request in flight still gets its answer and
its audit event, and the process exits 0. SIGINT, or a second signal, skips the delay."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

from tests.support.federation import federate
from tests.support.server import RunningServer, ServerFactory


def _delay(seconds: int) -> dict[str, str]:
    return {"KEYLESS_SHUTDOWN_DELAY": str(seconds)}  # ServerFactory's default is 0


def _refused(server: RunningServer) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except OSError:
        return True
    return False


def _wait(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


def test_not_ready_but_serving_for_the_delay_then_in_flight_requests_finish(
    servers: ServerFactory, tmp_path: Path
) -> None:
    server = servers.start(dev=True, env=_delay(2))
    fed = federate(server, tmp_path)
    kept = server.client()  # a kept-alive connection made before the signal
    assert kept.get("/readyz").status_code == 200

    # A token request whose headers are in but whose body is not: in flight across the stop.
    rid = uuid.uuid4().hex
    body = urlencode(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": fed.client_id,
            "client_assertion": fed.test_token(),
            "scope": fed.vault_scope,
        }
    ).encode()
    raw = server.ssl_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port)), server_hostname="localhost"
    )
    raw.sendall(
        (
            f"POST /{fed.tenant_id}/oauth2/v2.0/token HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: {rid}\r\n\r\n"
        ).encode()
    )
    time.sleep(0.2)

    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    with server.client() as fresh:
        _wait(lambda: fresh.get("/readyz").status_code == 503, 1)
        ready = fresh.get("/readyz")
    assert ready.json()["checks"] == {"shutdown": "draining"}
    # Still serving, on new connections and on the kept one, each answer closing its connection.
    with server.client() as fresh:
        jwks = fresh.get(f"/{fed.tenant_id}/discovery/v2.0/keys")
    assert jwks.status_code == 200 and jwks.headers["connection"] == "close"
    assert fed.exchange(fed.test_token()).status_code == 200
    on_kept = kept.get("/healthz")
    assert on_kept.status_code == 200 and on_kept.headers["connection"] == "close"
    kept.close()

    # After the delay the listener is closed; the request in flight is still answered.
    _wait(lambda: _refused(server), 10)
    stopped = time.monotonic() - signalled
    assert 2 <= stopped < 6, stopped
    assert server.proc.poll() is None  # waiting for the request in flight
    raw.sendall(body)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = raw.recv(65536)
        if not chunk:
            break
        answer += chunk
    raw.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200"), answer[:300]
    assert "connection: close" in head
    assert b"access_token" in answer
    assert server.proc.wait(30) == 0
    assert "draining" in server.log
    with sqlite3.connect(server.data_dir / "keyless.db") as db:
        audited = {row[0] for row in db.execute("SELECT request_id FROM audit_events")}
    assert rid in audited


def test_every_worker_turns_not_ready(servers: ServerFactory) -> None:
    server = servers.start("--workers", "2", dev=True, env=_delay(3))
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the parent passes the signal on to its worker
    answers = []
    for _ in range(12):  # new connections: the kernel spreads them over both processes
        with server.client() as fresh:
            answers.append(fresh.get("/readyz").status_code)
            assert fresh.get("/healthz").status_code == 200
    assert answers == [503] * 12
    assert server.proc.wait(30) == 0


def test_sigint_or_a_second_sigterm_skips_the_delay(servers: ServerFactory) -> None:
    first = servers.start(dev=True, env=_delay(60))
    second = servers.start(dev=True, env=_delay(60))
    started = time.monotonic()
    first.proc.send_signal(signal.SIGINT)
    second.proc.send_signal(signal.SIGTERM)
    with second.client() as http:
        _wait(lambda: http.get("/readyz").status_code == 503, 5)
    second.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0 and second.proc.wait(30) == 0
    assert time.monotonic() - started < 15
