"""Limits on the wire: header and body caps, slow clients, the token rate limit, and issuers
that stall (they must not stall anyone else's exchange).

The caps and read timeouts belong to the real HTTP stack (uvicorn's protocols with keyless's
limits), so they run against the real server. The rate limit and the stalled issuer run in
process (tests/support/inprocess.py): the limiter's buckets refill on the injected clock, which
moves only when a test advances it, and the stalled issuer is judged by the order of events,
never by elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk
from tests.support.clients import client_at
from tests.support.federation import SUBJECT
from tests.support.inprocess import InProcessFederated, federate, in_process
from tests.support.oidc import sign
from tests.support.server import RunningServer, ServerFactory

HEADER_TIMEOUT = 2  # seconds (--header-timeout of the module's server)
RATE, BURST = 2, 4  # --token-rate-limit, --token-rate-burst of the in-process keyless


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real server: the caps and timeouts tested here need no tenant or identity."""
    factory = ServerFactory(tmp_path_factory.mktemp("limits"))
    try:
        yield factory.start("--header-timeout", f"{HEADER_TIMEOUT}s", dev=True)
    finally:
        factory.stop_all()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ilimited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessFederated]:
    """keyless in process with a small token rate limit; its clock moves only when told."""
    tmp = tmp_path_factory.mktemp("limits-inproc")
    async with in_process(tmp, dev=True, token_rate_limit=RATE, token_rate_burst=BURST) as kl:
        yield await federate(kl)


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


def read_until_closed(sock: ssl.SSLSocket, limit: float = 15) -> bytes:
    """Everything the server sends until it closes the connection; the test fails if it has
    not closed it after ``limit`` seconds (a hang guard, not a budget)."""
    deadline = time.monotonic() + limit
    out = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return out
        except TimeoutError:
            continue
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the server did not close the connection within {limit} s: {out!r}")


def test_header_block_over_16k_is_431(limited: RunningServer) -> None:
    with limited.client() as http:
        big = http.get("/healthz", headers={"x-pad": "a" * 20_000})
        many = http.get("/healthz", headers={f"x-{i}": "b" * 100 for i in range(200)})
        fine = http.get("/healthz", headers={"x-pad": "a" * 8_000})
    assert big.status_code == 431 and many.status_code == 431
    assert fine.status_code == 200


def test_vault_list_method_even_when_its_request_line_arrives_in_pieces(
    limited: RunningServer,
) -> None:
    """hvac lists with the LIST method, which uvicorn's parser knows nothing of: it reaches the
    Vault dialect (here: no token, so Vault's 403), also when "LIST " is sent in pieces (the
    server holds a request line's first bytes until it can tell), and the connection keeps
    serving the next request."""
    request = b"LIST /v1/secret/metadata/ HTTP/1.1\r\nhost: localhost\r\n\r\n"
    follow = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    with tls_socket(limited) as sock:
        for piece in (request[:2], request[2:3], request[3:]):
            sock.sendall(piece)  # one TLS record each
        sock.sendall(follow)
        answer = read_until_closed(sock)
    first, _, rest = answer.partition(b"\r\n")
    assert first == b"HTTP/1.1 403 Forbidden", answer[:300]
    assert b'"permission denied"' in answer
    assert b"HTTP/1.1 200 OK" in rest


def test_endless_header_is_cut_off_without_buffering(limited: RunningServer) -> None:
    with tls_socket(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-endless: ")
        try:  # one header line that never ends: answered once 16 KiB have arrived
            for _ in range(32):
                sock.sendall(b"a" * 65536)
        except OSError:
            pass
        answer = read_all(sock, limit=10)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_admin_listener_caps_headers_too(limited: RunningServer) -> None:
    with limited.admin() as admin:
        response = admin.get("/v1/status", headers={"x-pad": "a" * 40_000})
    assert response.status_code in (400, 431)


def test_body_over_cap_is_413_before_it_is_sent(limited: RunningServer) -> None:
    with tls_socket(limited) as sock:
        sock.sendall(
            b"POST /default/oauth2/v2.0/token HTTP/1.1\r\nhost: localhost\r\n"
            b"content-type: application/x-www-form-urlencoded\r\n"
            b"content-length: 100000000\r\n\r\n"
        )
        answer = read_all(sock)  # no body byte was sent, yet the answer comes
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_chunked_body_over_cap_is_413(limited: RunningServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 6.4 MiB, above the 2 MiB cap
            yield b"a" * 65536

    with limited.client() as http:
        response = http.post(
            "/vaults/nope/secrets/x", content=chunks(), headers={"authorization": "Bearer x"}
        )
    assert response.status_code == 413


def test_slow_headers_are_timed_out(limited: RunningServer) -> None:
    # Taken before connecting: the server's header timer starts after this, at its accept,
    # so it cannot have fired before HEADER_TIMEOUT has passed here (load only adds to it).
    start = time.monotonic()
    with tls_socket(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: local")  # and never the rest
        answer = read_until_closed(sock)
        waited = time.monotonic() - start
    # The event: the server answered 408 and closed while the headers were still unfinished.
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited >= HEADER_TIMEOUT - 0.01, waited  # not cut off before its time


def test_idle_connection_is_closed(limited: RunningServer) -> None:
    start = time.monotonic()
    with tls_socket(limited) as sock:
        answer = read_until_closed(sock)  # the client sends nothing: the server must close
        waited = time.monotonic() - start
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited >= HEADER_TIMEOUT - 0.01, waited


# -- the token rate limit, on the injected clock --------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_token_endpoint_rate_limit_per_client(ilimited: InProcessFederated) -> None:
    ilimited.clock.advance(60)  # whatever came before, this client's bucket is full
    statuses = []
    last: httpx.Response | None = None
    for _ in range(8):  # the clock stands still: no token comes back meanwhile
        last = await ilimited.exchange(ilimited.test_token())
        statuses.append(last.status_code)
    assert statuses == [200] * BURST + [429] * 4, statuses
    assert last is not None
    body = last.json()
    assert body["error"] == "temporarily_unavailable" and body["error_codes"] == [50196]
    assert last.headers["retry-after"] == "1"  # one token at 2/s: 0.5 s, in whole seconds
    assert "access_token" not in body
    # Other endpoints are not limited, and another client has a bucket of its own.
    keys = await ilimited.kl.public.get(f"/{ilimited.tenant_id}/discovery/v2.0/keys")
    assert keys.status_code == 200
    async with client_at(ilimited.kl, "127.0.0.2") as other:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": ilimited.client_id,
            "client_assertion": ilimited.test_token(),
            "scope": ilimited.vault_scope,
        }
        assert (await other.post(ilimited.token_path, data=form)).status_code == 200
    # 2/s refills one token in 0.5 s: not before, and then exactly one.
    ilimited.clock.advance(0.4)
    assert (await ilimited.exchange(ilimited.test_token())).status_code == 429
    ilimited.clock.advance(0.1)
    assert (await ilimited.exchange(ilimited.test_token())).status_code == 200
    assert (await ilimited.exchange(ilimited.test_token())).status_code == 429


# -- a hostile or dead issuer stalls only itself -------------------------------------------


class SlowIssuer:
    """An OIDC issuer on loopback whose answers can be made to hang; ``arrived`` is set when
    a request reaches it while it is stalled."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stall = threading.Event()
        self.arrived = threading.Event()
        self.released = threading.Event()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if issuer.stall.is_set():
                    issuer.arrived.set()
                    issuer.released.wait(30)  # bounded: close() releases it at the end
                base = issuer.url
                if self.path.endswith("/.well-known/openid-configuration"):
                    doc: dict[str, Any] = {"issuer": base, "jwks_uri": f"{base}/jwks"}
                else:
                    doc = {"keys": [public_jwk(issuer.key.public_key(), "k1", "RS256")]}
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # a stalled answer's client gave up long ago
                    return

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


@pytest.mark.asyncio(loop_scope="module")
async def test_vault_login_shares_the_token_rate_limit(ilimited: InProcessFederated) -> None:
    """The Vault dialect's login is a token exchange: the same per-client bucket, refused in
    Vault's body with Retry-After, and the bucket spent by one dialect is spent for the other."""
    ilimited.clock.advance(60)  # a full bucket
    body = {"role": "app", "jwt": ilimited.test_token()}
    statuses = []
    last: httpx.Response | None = None
    for _ in range(BURST):
        statuses.append((await ilimited.exchange(ilimited.test_token())).status_code)
    for _ in range(2):
        last = await ilimited.kl.public.put("/v1/auth/jwt/login", json=body)
        statuses.append(last.status_code)
    assert statuses == [200] * BURST + [429, 429], statuses
    assert last is not None and last.headers["retry-after"] == "1"
    assert last.json()["errors"] and "auth" not in last.json()


async def test_stalled_issuer_does_not_stall_other_issuers(ilimited: InProcessFederated) -> None:
    """In process, on one event loop: an exchange waiting on a stalled issuer's keys must not
    hold up another issuer's exchanges, and is itself answered once the fetcher's own time
    bound gives up on the issuer (nobody releases it)."""
    slow = SlowIssuer()
    try:
        kl = ilimited.kl
        await kl.call("POST", "/v1/issuers", {"url": slow.url})
        slow_client = (await kl.call("POST", "/v1/identities", {"name": "slowapp"}))["client_id"]
        await kl.call(
            "POST",
            "/v1/identities/slowapp/federated-credentials",
            {"name": "s", "issuer": slow.url, "subject": SUBJECT},
        )
        ilimited.clock.advance(60)  # the rate limit's bucket is full again: out of the way
        slow.stall.set()
        # An unknown kid makes keyless refetch the stalled issuer's keys.
        stalled_token = sign(slow.key, iss=slow.url, kid="rotated-k2", now=ilimited.clock.now())
        stalled = asyncio.create_task(ilimited.exchange(stalled_token, client_id=slow_client))
        # The stalled exchange's fetch has reached the issuer, which holds it.
        assert await asyncio.to_thread(slow.arrived.wait, 30), "keyless never fetched"
        assert not stalled.done()
        for _ in range(2):
            response = await ilimited.exchange(ilimited.test_token())
            assert response.status_code == 200, response.text
        # The event: both other exchanges were answered while the stalled one still waits.
        assert not stalled.done()
        assert not slow.released.is_set()
        # Not released: the fetch's own bound ends the wait (wait_for is only a hang guard).
        response = await asyncio.wait_for(stalled, timeout=30)
        assert not slow.released.is_set()
        # The keys fetched when the issuer was added still serve; the rotated kid is not there.
        assert response.status_code == 401, response.text
        assert response.json()["error_codes"] == [7000272], response.json()
        (status,) = [i for i in await kl.call("GET", "/v1/issuers") if i["url"] == slow.url]
        assert "unreachable: no answer within" in status["last_error"], status
    finally:
        slow.close()


def test_forwarded_headers_do_not_choose_the_rate_limited_address(servers: ServerFactory) -> None:
    """The token rate limit keys on the TCP peer: a loopback client naming other addresses in
    X-Forwarded-For / Forwarded (which uvicorn would trust from 127.0.0.1 by default) still
    spends its own bucket."""
    server = servers.start("--token-rate-limit", "1", "--token-rate-burst", "2", dev=True)
    statuses = []
    with server.client() as http:
        for i in range(4):
            forged = f"203.0.113.{i + 1}"
            response = http.post(
                "/default/oauth2/v2.0/token",
                data={"grant_type": "client_credentials"},
                headers={"X-Forwarded-For": forged, "Forwarded": f"for={forged}"},
            )
            statuses.append(response.status_code)
    assert statuses[:2] == [400, 400], statuses  # the burst: refused for the form, not the rate
    assert 429 in statuses[2:], statuses
