"""Limits on the wire: header and body caps, slow clients, the token rate limit, and issuers
that stall (they must not stall anyone else's exchange)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk
from tests.support.federation import AUDIENCE, SUBJECT, Federated, federate
from tests.support.server import RunningServer, ServerFactory


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    tmp = tmp_path_factory.mktemp("limits")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(
            "--token-rate-limit", "2", "--token-rate-burst", "4", "--header-timeout", "2", dev=True
        )
        yield federate(server, tmp)
    finally:
        factory.stop_all()


def tls_socket(server: RunningServer) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    return server.ssl_context().wrap_socket(raw, server_hostname="localhost")


def read_all(sock: ssl.SSLSocket, limit: float = 15) -> bytes:
    """Everything the server sends until it closes (bounded in time and size)."""
    deadline = time.monotonic() + limit
    out = b""
    while time.monotonic() < deadline and len(out) < 1_000_000:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        out += chunk
    return out


def test_header_block_over_16k_is_431(limited: Federated) -> None:
    with limited.server.client() as http:
        big = http.get("/healthz", headers={"x-pad": "a" * 20_000})
        many = http.get("/healthz", headers={f"x-{i}": "b" * 100 for i in range(200)})
        fine = http.get("/healthz", headers={"x-pad": "a" * 8_000})
    assert big.status_code == 431 and many.status_code == 431
    assert fine.status_code == 200


def test_endless_header_is_cut_off_without_buffering(limited: Federated) -> None:
    with tls_socket(limited.server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-endless: ")
        try:  # one header line that never ends: answered once 16 KiB have arrived
            for _ in range(32):
                sock.sendall(b"a" * 65536)
        except OSError:
            pass
        answer = read_all(sock, limit=10)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_admin_listener_caps_headers_too(limited: Federated) -> None:
    with limited.server.admin() as admin:
        response = admin.get("/v1/status", headers={"x-pad": "a" * 40_000})
    assert response.status_code in (400, 431)


def test_body_over_cap_is_413_before_it_is_sent(limited: Federated) -> None:
    with tls_socket(limited.server) as sock:
        sock.sendall(
            f"POST /{limited.tenant_id}/oauth2/v2.0/token HTTP/1.1\r\nhost: localhost\r\n"
            "content-type: application/x-www-form-urlencoded\r\n"
            "content-length: 100000000\r\n\r\n".encode()
        )
        answer = read_all(sock)  # no body byte was sent, yet the answer comes
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_chunked_body_over_cap_is_413(limited: Federated) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 6.4 MiB, above the 2 MiB cap
            yield b"a" * 65536

    with limited.server.client() as http:
        response = http.post(
            "/vaults/nope/secrets/x", content=chunks(), headers={"authorization": "Bearer x"}
        )
    assert response.status_code == 413


def test_slow_headers_are_timed_out(limited: Federated) -> None:
    with tls_socket(limited.server) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: local")
        answer = read_all(sock, limit=10)
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 1.5 < elapsed < 6


def test_idle_connection_is_closed(limited: Federated) -> None:
    with tls_socket(limited.server) as sock:
        start = time.monotonic()
        answer = read_all(sock, limit=10)
    assert time.monotonic() - start < 6
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


def test_token_endpoint_rate_limit_per_client(limited: Federated) -> None:
    time.sleep(2.5)  # let the bucket refill from earlier requests in this module
    statuses = []
    last: httpx.Response | None = None
    for _ in range(8):
        last = limited.exchange(limited.test_token())
        statuses.append(last.status_code)
    assert statuses[:4] == [200] * 4, statuses
    assert 429 in statuses
    assert last is not None and last.status_code == 429
    body = last.json()
    assert body["error"] == "temporarily_unavailable" and body["error_codes"] == [50196]
    assert int(last.headers["retry-after"]) >= 1
    assert "access_token" not in body
    with limited.server.client() as http:  # other endpoints are not limited
        assert http.get(f"/{limited.tenant_id}/discovery/v2.0/keys").status_code == 200
    time.sleep(1.2)  # 2/s refills
    assert limited.exchange(limited.test_token()).status_code == 200


# -- a hostile or dead issuer stalls only itself -------------------------------------------


class SlowIssuer:
    """An OIDC issuer on loopback whose answers can be made to hang."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stall = threading.Event()
        self.released = threading.Event()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if issuer.stall.is_set():
                    issuer.released.wait(30)  # bounded: the test releases it at the end
                base = issuer.url
                if self.path.endswith("/.well-known/openid-configuration"):
                    doc: dict[str, Any] = {"issuer": base, "jwks_uri": f"{base}/jwks"}
                else:
                    doc = {"keys": [public_jwk(issuer.key.public_key(), "k1", "RS256")]}
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/slow"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.http.shutdown()
        self.http.server_close()


def test_stalled_issuer_does_not_stall_other_issuers(limited: Federated) -> None:
    slow = SlowIssuer()
    try:
        cli = limited.server.cli
        cli("issuer", "add", slow.url)
        cli("identity", "create", "slowapp")
        cli("federation", "add", "slowapp", "--name", "s", "--issuer", slow.url,
            "--subject", SUBJECT)  # fmt: skip
        slow_client = json.loads(cli("--output", "json", "identity", "show", "slowapp").stdout)[
            "client_id"
        ]
        slow.stall.set()
        # An unknown kid makes keyless refetch the stalled issuer's keys.
        stalled = jwt.encode(
            {"iss": slow.url, "sub": SUBJECT, "aud": AUDIENCE, "exp": int(time.time()) + 600},
            slow.key,
            algorithm="RS256",
            headers={"kid": "rotated-k2"},
        )
        outcome: dict[str, Any] = {}

        def stalled_exchange() -> None:
            start = time.monotonic()
            outcome["response"] = limited.exchange(stalled, client_id=slow_client)
            outcome["elapsed"] = time.monotonic() - start

        worker = threading.Thread(target=stalled_exchange)
        worker.start()
        time.sleep(0.3)
        time.sleep(1.5)  # keep the rate limit's bucket out of the way
        others = []
        for _ in range(2):
            start = time.monotonic()
            response = limited.exchange(limited.test_token())
            others.append((response.status_code, time.monotonic() - start))
            time.sleep(0.5)
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert all(code == 200 and took < 1.5 for code, took in others), others
        response = outcome["response"]
        assert response.status_code < 500
        assert response.json()["error_codes"][0] in (90061, 7000272), response.json()
        assert outcome["elapsed"] < 8, outcome["elapsed"]  # the 5 s fetch bound, plus slack
    finally:
        slow.close()
