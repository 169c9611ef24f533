"""The HTTP edge follows the RFCs, over the real HTTPS server (and the admin socket).

Raw sockets where a client library would normalise the request away (two Host headers, an
absolute-form target, a body shorter than its Content-Length): body read timeout, Host
checks, strict JSON bodies on every listener, and ``nextLink`` built only from validated,
encoded parts. The discovery rate limit runs in process, on the injected clock: its buckets
refill only when the test moves the clock.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from tests.support.adminapi import federate_by_admin_api
from tests.support.clients import client_at
from tests.support.federation import Federated
from tests.support.inprocess import InProcess, in_process
from tests.support.server import RunningServer, ServerFactory

BODY_TIMEOUT = 1  # seconds (--body-timeout of the module's server)
PATIENT_BODY_TIMEOUT = 60  # seconds (--body-timeout of the ``patient`` server)
VAULT = "kv1"


@dataclass
class Edge:
    fed: Federated
    bearer: str

    @property
    def server(self) -> RunningServer:
        return self.fed.server

    @property
    def vault_host(self) -> str:
        return f"{VAULT}.vault.localhost:{self.server.port}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    factory = ServerFactory(tmp)
    try:
        server = factory.start("--body-timeout", f"{BODY_TIMEOUT}s", dev=True)
        fed = federate_by_admin_api(server, tmp)
        with server.admin() as admin:  # the admin API itself: no CLI process per call
            assert admin.post("/v1/vaults", json={"name": VAULT}).status_code == 200
            role = {"identity": "app", "role": "secrets-officer", "scope": f"/vaults/{VAULT}"}
            assert admin.post("/v1/roles", json=role).status_code == 200
            for name in ("alpha", "beta", "gamma"):
                put = admin.put(f"/v1/vaults/{VAULT}/secrets/{name}", json={"value": "v-" + name})
                assert put.status_code == 200, put.text
        response = fed.exchange(fed.test_token())
        assert response.status_code == 200, response.text
        yield Edge(fed, response.json()["access_token"])
    finally:
        factory.stop_all()


# -- raw HTTP/1.1 over TLS and over the admin socket -----------------------------------------


def tls_socket(server: RunningServer) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    return server.ssl_context().wrap_socket(raw, server_hostname="localhost")


def admin_socket(server: RunningServer) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(str(server.data_dir / "admin.sock"))
    return sock


def read_until_closed(sock: socket.socket, limit: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (bounded in time)."""
    deadline = time.monotonic() + limit
    out = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            break
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the server did not close the connection within {limit} s: {out!r}")


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, object]:
    body: dict[str, object] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return body


def exchange_raw(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    return read_until_closed(sock)


# -- body read timeout ------------------------------------------------------------------------

TOKEN_HEAD = (
    "POST /default/oauth2/v2.0/token HTTP/1.1\r\nhost: localhost\r\n"
    "content-type: application/x-www-form-urlencoded\r\n"
)


@dataclass(frozen=True)
class Slow:
    head: str  # request line and headers, without the blank line
    parts: tuple[bytes, ...]  # body pieces, sent one per ``gap`` seconds
    gap: float = 0.0
    admin: bool = False
    vault: bool = False  # the Host is the vault's (formatted in)


SLOW = {
    "content-length-short": Slow(TOKEN_HEAD + "content-length: 100\r\n", (b"grant_type=x",)),
    "no-body-byte-at-all": Slow(TOKEN_HEAD + "content-length: 10\r\n", ()),
    "chunked-never-ends": Slow(TOKEN_HEAD + "transfer-encoding: chunked\r\n", (b"5\r\ngrant\r\n",)),
    # A total, not an idle time: a byte every 0.3 s never lets a chunk gap reach the timeout.
    # 40 bytes take the client 12 s: the server must cut it off long before it is done.
    "drip-fed": Slow(TOKEN_HEAD + "content-length: 100\r\n", (b"g",) * 40, gap=0.3),
    # The vault answers 401 at once without reading the body; dripping the rest must not
    # hold the connection (each byte used to cancel the keep-alive timer).
    "drip-after-early-answer": Slow(
        "PUT /secrets/x HTTP/1.1\r\nhost: {vault}\r\ncontent-type: application/json\r\n"
        "content-length: 100\r\n",
        (b"{",) * 40,
        gap=0.3,
        vault=True,
    ),
    "admin-content-length-short": Slow(
        "POST /v1/identities HTTP/1.1\r\nhost: keyless\r\ncontent-type: application/json\r\n"
        "content-length: 100\r\n",
        (b'{"name": "x"',),
        admin=True,
    ),
}


def drive(
    sock: socket.socket, parts: tuple[bytes, ...], gap: float, limit: float
) -> tuple[bytes, int]:
    """Send ``parts`` one per ``gap`` seconds (going on after an answer, as a dripping client
    would) while reading; once the server has closed the connection, return what arrived and
    how many parts the client had not sent yet. ``limit`` is a hang guard: the test fails if
    the server has not closed the connection by then."""
    deadline = time.monotonic() + limit
    pending, next_send, out = list(parts), time.monotonic(), b""
    refused = False  # a send failed: the server has closed, what is left stays unsent
    while time.monotonic() < deadline:
        now = time.monotonic()
        sending = bool(pending) and not refused
        if sending and now >= next_send:
            try:
                sock.sendall(pending[0])
            except OSError:
                refused, sending = True, False
            else:
                pending.pop(0)
            next_send = now + gap
        wait = max(0.0, min(next_send if sending else deadline, deadline) - time.monotonic())
        buffered = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not buffered and not select.select([sock], [], [], wait)[0]:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            return out, len(pending)
        if not chunk:
            return out, len(pending)
        out += chunk
    raise AssertionError(f"the server did not close the connection within {limit} s: {out!r}")


@pytest.mark.parametrize("case", SLOW.values(), ids=SLOW.keys())
def test_a_body_that_does_not_arrive_in_time_closes_the_connection(edge: Edge, case: Slow) -> None:
    # Taken before connecting: the server's body timer starts after this, once the headers
    # are in, so it cannot have fired before BODY_TIMEOUT has passed here.
    start = time.monotonic()
    sock = admin_socket(edge.server) if case.admin else tls_socket(edge.server)
    with sock:
        sock.sendall((case.head.format(vault=edge.vault_host) + "\r\n").encode())
        answer, unsent = drive(sock, case.parts, case.gap, limit=30)
        waited = time.monotonic() - start
    # The event: the server closed the connection while the body was still unfinished, and
    # a dripping client still had bytes to send (it would have gone on for 12 s).
    if case.gap:
        assert unsent > 0, "the server held the connection until the client had finished"
    if case.vault:
        assert status_of(answer) == 401  # answered first, then cut off
    else:
        assert status_of(answer) == 408, answer[:300]
        assert waited >= BODY_TIMEOUT * 0.9, waited  # not cut off before its time


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose body timeout is far beyond any pause a test makes."""
    factory = ServerFactory(tmp_path_factory.mktemp("patient"))
    try:
        yield factory.start("--body-timeout", f"{PATIENT_BODY_TIMEOUT}s", dev=True)
    finally:
        factory.stop_all()


@pytest.mark.parametrize("admin", [False, True], ids=["public", "admin"])
def test_a_body_that_arrives_in_time_is_served(patient: RunningServer, admin: bool) -> None:
    if admin:
        head, body = "POST /v1/identities HTTP/1.1\r\nhost: keyless\r\n", b'{"name": "edge-ok"}'
    else:
        head, body = TOKEN_HEAD, b"grant_type=nope"
    request = (
        f"{head}content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    sock = admin_socket(patient) if admin else tls_socket(patient)
    with sock:
        sock.sendall(request)
        # The pause is the thing tested: a body that follows its headers after a while, but
        # within the timeout (0.5 s of 60 s: no race), is read and answered.
        time.sleep(0.5)
        answer = exchange_raw(sock, body)
    assert status_of(answer) in ((200, 201) if admin else (400,)), answer[:300]


# -- Host --------------------------------------------------------------------------------------

PORT = "{port}"
HOSTS = {
    # (request line, header block) -> expected status
    "two-identical-hosts": ("GET /healthz", "host: localhost\r\nhost: localhost\r\n", 400),
    "two-different-hosts": ("GET /healthz", "host: localhost\r\nhost: evil.example\r\n", 400),
    "no-host-http11": ("GET /healthz", "", 400),
    "port-not-digits": ("GET /healthz", "host: localhost:8443x\r\n", 400),
    "port-over-65535": ("GET /healthz", "host: localhost:70000\r\n", 400),
    "port-zero": ("GET /healthz", "host: localhost:0\r\n", 400),
    "port-empty": ("GET /healthz", "host: localhost:\r\n", 400),
    "port-signed": ("GET /healthz", "host: localhost:+443\r\n", 400),
    "two-ports": ("GET /healthz", "host: localhost:1:2\r\n", 400),
    "quote-in-host": ("GET /healthz", 'host: local"host\r\n', 400),
    "space-in-host": ("GET /healthz", "host: local host\r\n", 400),
    "userinfo-in-host": ("GET /healthz", "host: user@localhost\r\n", 400),
    "absolute-target-other-host": (
        "GET https://evil.example/healthz",
        f"host: localhost:{PORT}\r\n",
        400,
    ),
    "absolute-target-other-port": (
        "GET https://localhost:1/healthz",
        f"host: localhost:{PORT}\r\n",
        400,
    ),
    "absolute-target-userinfo": (
        f"GET https://u@localhost:{PORT}/healthz",
        f"host: localhost:{PORT}\r\n",
        400,
    ),
    "absolute-target-not-http": ("GET ftp://localhost/healthz", "host: localhost\r\n", 400),
    "vault-host-port-not-digits": ("GET /secrets", "host: kv1.vault.localhost:4a\r\n", 400),
    # the control group: each of these is served
    "one-host": ("GET /healthz", f"host: localhost:{PORT}\r\n", 200),
    "host-without-port": ("GET /healthz", "host: localhost\r\n", 200),
    "ipv6-literal": ("GET /healthz", f"host: [::1]:{PORT}\r\n", 200),
    "absolute-target-same-host": (
        f"GET https://LOCALHOST:{PORT}/healthz",
        f"host: localhost:{PORT}\r\n",
        200,
    ),
    "absolute-target-default-port": (
        "GET https://localhost/healthz",
        "host: localhost:443\r\n",
        200,
    ),
}


@pytest.mark.parametrize(("line", "headers", "status"), HOSTS.values(), ids=HOSTS.keys())
def test_host_header(edge: Edge, line: str, headers: str, status: int) -> None:
    port = str(edge.server.port)
    request = f"{line.format(port=port)} HTTP/1.1\r\n{headers.format(port=port)}"
    with tls_socket(edge.server) as sock:
        answer = exchange_raw(sock, (request + "connection: close\r\n\r\n").encode())
    assert status_of(answer) == status, answer[:300]
    if status == 400:
        error = body_of(answer)["error"]
        assert isinstance(error, dict) and error["code"] == "BadParameter", error


def test_http10_needs_no_host(edge: Edge) -> None:
    with tls_socket(edge.server) as sock:
        answer = exchange_raw(sock, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status_of(answer) == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param("host: keyless\r\nhost: keyless\r\n", id="two-hosts"),
        pytest.param("host: keyless:99999\r\n", id="bad-port"),
        pytest.param("", id="no-host"),
    ],
)
def test_host_header_on_the_admin_socket(edge: Edge, headers: str) -> None:
    with admin_socket(edge.server) as sock:
        answer = exchange_raw(sock, f"GET /v1/status HTTP/1.1\r\n{headers}\r\n".encode())
    assert status_of(answer) == 400, answer[:300]


# -- JSON bodies: strict everywhere ------------------------------------------------------------

DEEP_NAME = b'{"name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
HOSTILE_JSON = {
    "duplicate-member": b'{"value": "a", "value": "b"}',
    "duplicate-nested-member": b'{"value": "a", "tags": {"k": "1", "k": "2"}}',
    "duplicate-escaped-member": b'{"value": "a", "\\u0076alue": "b"}',
    "lone-surrogate": b'{"value": "\\ud800"}',
    "nan": b'{"value": "a", "attributes": {"exp": NaN}}',
    "deep-nesting": b'{"value": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "not-an-object": b'["value"]',
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("PUT", "/secrets/json-set", id="kv-set"),
        pytest.param("PATCH", "/secrets/alpha", id="kv-update"),
        pytest.param("POST", "/secrets/restore", id="kv-restore"),
    ],
)
@pytest.mark.parametrize("body", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_key_vault_bodies_are_strict_json(edge: Edge, method: str, path: str, body: bytes) -> None:
    with edge.server.client() as http:
        response = http.request(
            method,
            f"/vaults/{VAULT}{path}",
            content=body,
            headers={"authorization": f"Bearer {edge.bearer}", "content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BadParameter"
    with edge.server.client() as http:  # and nothing was written
        got = http.get(
            f"/vaults/{VAULT}/secrets/json-set", headers={"authorization": f"Bearer {edge.bearer}"}
        )
    assert got.status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/identities", b'{"name": "dupe-a", "name": "dupe-b"}', id="identity"),
        pytest.param("/v1/vaults", b'{"name": "dupe-a", "name": "dupe-b"}', id="vault"),
        pytest.param("/v1/tenants", b'{"alias": "dupe-a", "alias": "dupe-b"}', id="tenant"),
        pytest.param(
            "/v1/roles",
            b'{"identity": "app", "role": "reader", "role": "administrator", "scope": "/"}',
            id="role",
        ),
        pytest.param("/v1/identities", b'{"name": "\\udc00"}', id="lone-surrogate"),
        pytest.param("/v1/identities", DEEP_NAME, id="deep-nesting"),
    ],
)
def test_admin_bodies_are_strict_json(edge: Edge, path: str, body: bytes) -> None:
    with edge.server.admin() as admin:
        response = admin.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        roles = admin.get("/v1/roles").json() if path == "/v1/roles" else None
    if roles is not None:
        assert "Key Vault Administrator" not in json.dumps(roles)


# -- nextLink ---------------------------------------------------------------------------------


def _list(edge: Edge, query: str, *, host: str | None = None) -> httpx.Response:
    """GET /secrets?QUERY on the vault by host (Host header set as given) or by path."""
    headers = {"authorization": f"Bearer {edge.bearer}"}
    if host is None:
        url = f"{edge.server.url}/vaults/{VAULT}/secrets?{query}"
    else:
        url = f"https://127.0.0.1:{edge.server.port}/secrets?{query}"
        headers["host"] = host
    with httpx.Client(verify=edge.server.ssl_context(), timeout=30) as http:
        return http.get(url, headers=headers)


HOSTILE_VERSIONS = {
    "crlf": "7.5%0D%0ALocation:%20https://evil.example",
    "extra-parameter": "7.5%26maxresults%3D1000",
    "quote": "7.5%22",
    "fragment": "7.5%23x",
    "slash": "7.5/../../x",
    "unicode": "7.%D9%A5",  # an Arabic-Indic digit, which \\d would accept
    "empty": "",
    "trailing-newline": "7.5%0A",
    "long": "7." + "5" * 100,
    "given-twice": "7.5&api-version=7.6",
}


@pytest.mark.parametrize("version", HOSTILE_VERSIONS.values(), ids=HOSTILE_VERSIONS.keys())
@pytest.mark.parametrize("by_host", [True, False], ids=["by-host", "by-path"])
def test_hostile_api_version_is_refused(edge: Edge, version: str, by_host: bool) -> None:
    response = _list(
        edge, f"api-version={version}&maxresults=1", host=edge.vault_host if by_host else None
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BadParameter"
    assert "evil" not in response.text and "nextLink" not in response.text


@pytest.mark.parametrize(
    ("version", "echoed"),
    [
        pytest.param("7.5", "7.5", id="7.5"),
        pytest.param("2026-04-01", "2026-04-01", id="date"),
        pytest.param("7.6-preview.2", "7.6-preview.2", id="preview"),
        pytest.param("2025-06-01-preview", "2025-06-01-preview", id="date-preview"),
        pytest.param(None, "7.5", id="none-given"),
    ],
)
def test_next_link_echoes_a_valid_api_version(edge: Edge, version: str | None, echoed: str) -> None:
    query = "maxresults=1" + (f"&api-version={version}" if version else "")
    response = _list(edge, query, host=edge.vault_host)
    assert response.status_code == 200, response.text
    link = urlsplit(response.json()["nextLink"])
    assert (link.scheme, link.netloc, link.path) == ("https", edge.vault_host, "/secrets")
    params = parse_qs(link.query, keep_blank_values=True)
    assert set(params) == {"api-version", "$skiptoken", "maxresults"}
    assert params["api-version"] == [echoed] and params["maxresults"] == ["1"]


@pytest.mark.parametrize(
    ("host", "netloc"),
    [
        pytest.param("KV1.Vault.LocalHost:{port}", "kv1.vault.localhost:{port}", id="case"),
        pytest.param("kv1.vault.localhost", "kv1.vault.localhost", id="no-port"),
    ],
)
def test_next_link_host_is_rebuilt_from_validated_parts(edge: Edge, host: str, netloc: str) -> None:
    port = str(edge.server.port)
    response = _list(edge, "maxresults=1", host=host.format(port=port))
    assert response.status_code == 200, response.text
    assert urlsplit(response.json()["nextLink"]).netloc == netloc.format(port=port)


def test_next_link_pages_through_every_secret(edge: Edge) -> None:
    """The link as built is followable (by path here; the SDK tests follow it by host)."""
    names, link = [], f"{edge.server.url}/vaults/{VAULT}/secrets?maxresults=1&api-version=7.5"
    with httpx.Client(verify=edge.server.ssl_context(), timeout=30) as http:
        while link:
            page = http.get(link, headers={"authorization": f"Bearer {edge.bearer}"}).json()
            names += [item["id"].rsplit("/", 1)[1] for item in page["value"]]
            link = page["nextLink"]
            assert link is None or link.startswith(f"{edge.server.url}/vaults/{VAULT}/secrets?")
    assert names == ["alpha", "beta", "gamma"]


# -- unauthenticated work: discovery rate limit ------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def throttled(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """keyless in process with a discovery rate limit of 1/s (burst 2); its clock stands still
    unless a test moves it."""
    async with in_process(
        tmp_path_factory.mktemp("throttled"), dev=True, discovery_rate_limit=1
    ) as kl:
        yield kl


DISCOVERY = {
    "openid-configuration": "/default/v2.0/.well-known/openid-configuration",
    "jwks": "/default/discovery/v2.0/keys",
    "unknown-tenant": "/no-such-tenant/discovery/v2.0/keys",
    "dev-cluster": "/dev/clusters/dev/.well-known/openid-configuration",
    "dev-cluster-jwks": "/dev/clusters/dev/openid/v1/jwks",
    "adfs-openid-configuration": "/adfs/.well-known/openid-configuration",
    "adfs-jwks": "/adfs/discovery/keys",
}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("source", "path"),
    [(10 + i, path) for i, path in enumerate(DISCOVERY.values())],
    ids=DISCOVERY.keys(),
)
async def test_discovery_is_rate_limited_per_client(
    throttled: InProcess, source: int, path: str
) -> None:
    """1/s, burst 2: the third request in a row is a 429 with Retry-After. Each case comes
    from its own addresses, so each has its own buckets; the clock does not move between
    requests, so no token comes back until the test advances it."""
    async with client_at(throttled, f"127.0.0.{source}") as http:
        answers = [await http.get(path) for _ in range(4)]
        statuses = [a.status_code for a in answers]
        assert statuses[0] == statuses[1] != 429 and statuses[2:] == [429, 429], statuses
        assert answers[-1].headers["retry-after"] == "1"
        if not path.startswith("/dev/"):
            assert answers[-1].json()["error"] == "temporarily_unavailable"
        async with client_at(throttled, f"127.0.0.{source + 100}") as other:
            # another client is not limited by these
            assert (await other.get(path)).status_code == statuses[0]
        throttled.clock.advance(0.9)  # 1/s: not yet a token back
        assert (await http.get(path)).status_code == 429
        throttled.clock.advance(0.1)  # one
        assert (await http.get(path)).status_code == statuses[0]
        assert (await http.get(path)).status_code == 429
