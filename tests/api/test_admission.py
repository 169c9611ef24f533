"""``--max-in-flight``: over the limit, a request is answered at once with 503 and
``Retry-After: 1`` in its dialect's error body; probes are never shed; the limit frees up.

Requests are held in progress the way a real slow client holds them: a token request whose
headers are in but whose body is not (the handler waits for the body; ``--body-timeout`` is
long enough for the test). Everything goes over real HTTPS to a real ``keyless serve``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import hvac
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets import SecretClient
from hvac.exceptions import VaultDown

from keyless.localresolve import resolving
from tests.support.server import RunningServer, ServerFactory

TOKEN_PATH = "/default/oauth2/v2.0/token"
FORM = b"grant_type=client_credentials&client_id=nobody&scope=x"


class _Held:
    """A token request on its own TLS connection, headers sent, body held back."""

    def __init__(self, server: RunningServer) -> None:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock = server.ssl_context().wrap_socket(raw, server_hostname="localhost")
        head = (
            f"POST {TOKEN_PATH} HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(FORM)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + FORM[:5])

    def finish(self) -> int:
        """Send the rest of the body; the response's status."""
        self.sock.sendall(FORM[5:])
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed before a response"
            data += chunk
        self.sock.close()
        return int(data[9:12])


def _metric(server: RunningServer, name: str, labels: str = "") -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _wait_in_flight(server: RunningServer, reading: int) -> None:
    """Until /metrics reads ``reading`` requests in progress: the scrape itself counts
    below the limit, not at it (it is let through uncounted, as a probe)."""
    deadline = time.monotonic() + 10
    while _metric(server, "keyless_http_requests_in_flight") != reading:
        assert time.monotonic() < deadline, "the held requests never reached the handler"


@contextmanager
def _at_limit(server: RunningServer, limit: int) -> Iterator[list[_Held]]:
    held = [_Held(server) for _ in range(limit)]
    try:
        _wait_in_flight(server, limit)
        yield held
    finally:
        for h in held:
            h.sock.close()


@pytest.fixture
def busy(servers: ServerFactory) -> RunningServer:
    return servers.start(
        "--max-in-flight", "2", "--token-rate-limit", "0", "--body-timeout", "60", dev=True
    )


def _fresh(server: RunningServer) -> httpx.Client:
    """A client that opens a connection per request: a shed connection is not read again
    until Retry-After has passed (test_a_client_that_ignores_retry_after_is_held_to_it)."""
    return server.client(limits=httpx.Limits(max_keepalive_connections=0))


def _shed(response: httpx.Response) -> Any:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    return response.json()


def test_over_the_limit_each_dialect_gets_503_with_retry_after(busy: RunningServer) -> None:
    port = busy.port
    with _at_limit(busy, 2), _fresh(busy) as client:
        # The token endpoint (Entra v2, RFC 8693, AD FS): OAuth's temporarily_unavailable
        # (RFC 6749 5.2) with the fields of Entra's other error bodies.
        for path in (TOKEN_PATH, "/adfs/oauth2/token"):
            body = _shed(client.post(path, content=FORM))
            assert body["error"] == "temporarily_unavailable"
            assert body["error_codes"] == [50196]
            assert {"error_description", "timestamp", "trace_id", "correlation_id"} <= set(body)
        # A vault by host and by path: Key Vault's error body.
        host = {"Host": f"kv.vault.localhost:{port}", "Authorization": "Bearer x"}
        for response in (
            client.get("/secrets/db?api-version=7.5", headers=host),
            client.get("/vaults/kv/secrets/db?api-version=7.5"),
        ):
            assert _shed(response)["error"]["code"] == "ServiceUnavailable"
        # The Vault API: {"errors": [...]}.
        body = _shed(client.get("/v1/secret/data/app", headers={"X-Vault-Token": "x"}))
        assert body == {"errors": ["the server is busy; retry after 1 second"]}
        # AWS STS: its XML ServiceUnavailable, which botocore retries.
        sts = client.post("/aws/sts", data={"Action": "GetCallerIdentity", "Version": "2011-06-15"})
        assert sts.status_code == 503 and sts.headers["retry-after"] == "1"
        assert sts.headers["content-type"].startswith("text/xml")
        assert "<Code>ServiceUnavailable</Code>" in sts.text
        # Anything else: keyless's own body.
        for path in ("/default/v2.0/.well-known/openid-configuration", "/no/such/path"):
            assert _shed(client.get(path))["error"]["code"] == "unavailable"
        # Probes and metrics are never shed.
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
        # The admin socket has no limit.
        assert busy.cli("status", "--output", "json").returncode == 0


def test_shed_requests_are_counted_and_logged_by_route_template(busy: RunningServer) -> None:
    counter = "keyless_shed_requests_total"
    token_labels = 'listener="public",route="/{tenant}/oauth2/v2.0/token"'
    kv_labels = 'listener="keyvault",route="/secrets/{name}"'
    with _at_limit(busy, 2), _fresh(busy) as client:
        for _ in range(3):
            _shed(client.post("/some-tenant/oauth2/v2.0/token", content=FORM))
        _shed(client.get("/vaults/kv/secrets/db?api-version=7.5"))
        assert _metric(busy, counter, token_labels) == 3
        assert _metric(busy, counter, kv_labels) == 1
        requests = 'method="POST",route="/{tenant}/oauth2/v2.0/token",status="503"'
        assert _metric(busy, "keyless_http_requests_total", requests) == 3
    assert busy.wait_for_log('"route": "/secrets/{name}", "status": 503')  # lines are batched
    lines = [json.loads(ln) for ln in busy.output if '"status": 503' in ln]
    assert {ln["route"] for ln in lines} == {"/{tenant}/oauth2/v2.0/token", "/secrets/{name}"}
    assert all("some-tenant" not in json.dumps(ln) for ln in lines)  # templates, no raw path


def test_the_limit_frees_up_when_requests_finish(busy: RunningServer) -> None:
    with _fresh(busy) as client:
        with _at_limit(busy, 2) as held:
            _shed(client.post(TOKEN_PATH, content=FORM))
            # The held requests were admitted: they finish with the handler's own answer.
            assert [h.finish() for h in held] == [400, 400]
        _wait_in_flight(busy, 1)
        response = client.post(TOKEN_PATH, content=FORM)
        assert response.status_code == 400  # the handler ran: no client assertion
        assert response.json()["error"] == "invalid_request"


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """One response on a keep-alive connection: (status, headers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)  # byte by byte: the next response must stay unread
        assert chunk, "connection closed before a response"
        data += chunk
    lines = data.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    length = int(headers["content-length"])
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return int(lines[0][9:12]), headers


def test_a_client_that_ignores_retry_after_is_held_to_it(busy: RunningServer) -> None:
    """The 503 goes out at once; the same connection's next request is read only once
    Retry-After has passed. Another connection is answered meanwhile."""
    request = f"GET /no/such/path HTTP/1.1\r\nHost: localhost:{busy.port}\r\n\r\n".encode()
    with _at_limit(busy, 2), busy.client() as other:
        raw = socket.create_connection(("127.0.0.1", busy.port), timeout=30)
        with busy.ssl_context().wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(request)
            status, headers = _read_response(sock)
            assert status == 503 and headers["retry-after"] == "1"
            shed_at = time.monotonic()
            sock.sendall(request)  # at once, as a client that ignores Retry-After
            _shed(other.get("/no/such/path"))  # a fresh connection: answered at once
            assert time.monotonic() - shed_at < 0.9
            status, headers = _read_response(sock)
            assert status == 503 and headers["retry-after"] == "1"
            assert time.monotonic() - shed_at >= 0.95


class _Credential:
    """Never asked: the request is shed before Key Vault's challenge."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise AssertionError("no token should be needed")


def test_real_clients_see_the_503(busy: RunningServer) -> None:
    """azure-keyvault-secrets reads Key Vault's code from the body; hvac raises VaultDown."""
    with _at_limit(busy, 2), resolving("vault.localhost"):
        client = SecretClient(
            f"https://kv.vault.localhost:{busy.port}",
            _Credential(),  # type: ignore[arg-type]
            connection_verify=str(busy.ca),
            retry_total=0,
        )
        with pytest.raises(HttpResponseError) as caught:
            client.get_secret("db")
        assert caught.value.status_code == 503
        assert caught.value.error is not None and caught.value.error.code == "ServiceUnavailable"
        vault = hvac.Client(url=busy.url, token="x", verify=str(busy.ca))
        with pytest.raises(VaultDown, match="the server is busy"):
            vault.secrets.kv.v2.read_secret_version(
                "app", mount_point="secret", raise_on_deleted_version=True
            )


def test_zero_means_no_limit(servers: ServerFactory) -> None:
    server = servers.start(
        "--max-in-flight", "0", "--token-rate-limit", "0", "--body-timeout", "60", dev=True
    )
    held = [_Held(server) for _ in range(4)]
    try:
        _wait_in_flight(server, 5)
        with server.client() as client:
            assert client.post(TOKEN_PATH, content=FORM).status_code == 400
        assert [h.finish() for h in held] == [400] * 4
        with server.client() as client:
            assert "keyless_shed_requests_total{" not in client.get("/metrics").text
    finally:
        for h in held:
            h.sock.close()
