"""HttpJwksFetcher end to end, against a real HTTPS server on 127.0.0.1 with a throwaway CA."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keyless.core.errors import ConfigError, Unavailable
from keyless.net.fetch import HttpJwksFetcher
from tests.support.pki import Pki, make_pki

JWKS = {"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "AA", "y": "AA"}]}
SECRET = "SECRET-BODY-MARKER"

# -- a throwaway PKI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory.mktemp("pki"),
        ca_name="keyless test CA",
        dns=["localhost"],
        ips=["127.0.0.1"],
    )


# -- a tiny real HTTP(S) server ----------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # if set: nothing is sent until the server closes (an issuer that hangs)
    drip: float = 0.0  # if set: no Content-Length, body sent one byte per ``drip`` seconds
    repeat: int = 1  # if > 1: no Content-Length, body sent ``repeat`` times

    @staticmethod
    def json(value: Any, status: int = 200) -> Reply:
        return Reply(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def redirect(location: str, status: int = 302) -> Reply:
        return Reply(status, b"", {"Location": location})


class LocalServer:
    """HTTP/1.1 on 127.0.0.1 (TLS when given a context); one request per connection."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self._tls = tls
        self.routes: dict[str, Reply | Callable[[], Reply]] = {}
        self.hits: list[str] = []
        self.finished: list[str] = []  # paths whose reply was sent to its last byte
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.hits.append(path)
            route = self.routes.get(path, Reply(404, b"not found " + SECRET.encode()))
            reply = route() if callable(route) else route
            await self._send(writer, reply)
            self.finished.append(path)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.hold:
            await asyncio.get_running_loop().create_future()  # cancelled by close()
        streamed = reply.drip or reply.repeat > 1
        headers = {"Connection": "close", **reply.headers}
        if not streamed:
            headers["Content-Length"] = str(len(reply.body))
        lines = [f"HTTP/1.1 {reply.status} X"] + [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if reply.drip:
            for byte in reply.body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(reply.drip)
        else:
            for _ in range(reply.repeat):
                writer.write(reply.body)
                await writer.drain()


@pytest.fixture
async def https(pki: Pki) -> AsyncIterator[LocalServer]:
    server = LocalServer(pki.server_context())
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[LocalServer]:
    server = LocalServer(None)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def make_fetcher(pki: Pki) -> AsyncIterator[Callable[..., HttpJwksFetcher]]:
    made: list[HttpJwksFetcher] = []

    def make(**kw: Any) -> HttpJwksFetcher:
        kw.setdefault("dev", False)
        # These servers listen on loopback, which the address policy refuses without --dev
        # (tests/net/test_ssrf.py tests the policy itself).
        kw.setdefault("allow_networks", (ipaddress.ip_network("127.0.0.0/8"),))
        kw.setdefault("extra_ca", pki.ca)
        kw.setdefault("timeout", 2.0)
        fetcher = HttpJwksFetcher(**kw)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


Make = Callable[..., HttpJwksFetcher]


def publish(server: LocalServer, issuer_path: str = "/cluster", **doc: Any) -> str:
    """Serve a discovery document and a JWKS; return the issuer URL."""
    issuer = server.url + issuer_path
    config = f"{issuer_path.rstrip('/')}/.well-known/openid-configuration"
    server.routes[config] = Reply.json({"issuer": issuer, "jwks_uri": server.url + "/keys", **doc})
    server.routes["/keys"] = Reply.json(JWKS)
    return issuer


async def fails(fetcher: HttpJwksFetcher, issuer: str, *fragments: str) -> str:
    with pytest.raises(Unavailable) as err:
        await fetcher.fetch(issuer)
    message = err.value.message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message and SECRET not in message
    return message


# -- the tests ---------------------------------------------------------------------------------


async def test_discovery_then_jwks(https: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(https)
    fetcher = make_fetcher()
    assert await fetcher.fetch(issuer) == JWKS
    assert https.hits == ["/cluster/.well-known/openid-configuration", "/keys"]
    assert await fetcher.fetch(issuer) == JWKS  # the shared client is reused
    await fetcher.aclose()
    assert await fetcher.fetch(issuer) == JWKS  # and re-created after aclose


async def test_trailing_slash_issuer_is_kept_exact(https: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(https, "/cluster/")
    assert issuer.endswith("/cluster/")
    assert await make_fetcher().fetch(issuer) == JWKS
    assert https.hits[0] == "/cluster/.well-known/openid-configuration"
    # The same server, registered without the slash, does not match its document.
    await fails(make_fetcher(), issuer.rstrip("/"), "issuer mismatch")


@pytest.mark.parametrize(
    "named",
    [
        pytest.param(lambda iss: iss + "/", id="trailing-slash"),
        pytest.param(lambda iss: "https://evil.example", id="other"),
        pytest.param(lambda iss: None, id="missing"),
    ],
)
async def test_issuer_mismatch(
    https: LocalServer, make_fetcher: Make, named: Callable[[str], str | None]
) -> None:
    issuer = publish(https)
    https.routes["/cluster/.well-known/openid-configuration"] = Reply.json(
        {"issuer": named(issuer), "jwks_uri": https.url + "/keys"}
    )
    await fails(make_fetcher(), issuer, "issuer mismatch", issuer)
    assert "/keys" not in https.hits


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        pytest.param({"jwks_uri": None}, "no jwks_uri", id="missing"),
        pytest.param({"jwks_uri": 3}, "no jwks_uri", id="not-a-string"),
        pytest.param({"jwks_uri": "http://127.0.0.1:9/keys"}, "https only", id="http"),
        pytest.param({"jwks_uri": "file:///etc/passwd"}, "https only", id="file"),
        pytest.param({"jwks_uri": "https://[::1"}, "not a valid URL", id="invalid"),
    ],
)
async def test_bad_jwks_uri_refused(
    https: LocalServer, make_fetcher: Make, doc: dict[str, Any], fragment: str
) -> None:
    issuer = publish(https, **doc)
    await fails(make_fetcher(), issuer, fragment)
    assert https.hits == ["/cluster/.well-known/openid-configuration"]


async def test_http_issuer_refused_outside_dev(http: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(http)
    await fails(make_fetcher(dev=False), issuer, "https only")
    assert http.hits == []


async def test_dev_allows_loopback_http(http: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(http)
    assert await make_fetcher(dev=True).fetch(issuer) == JWKS
    assert http.hits == ["/cluster/.well-known/openid-configuration", "/keys"]


async def test_dev_refuses_non_loopback_http(make_fetcher: Make) -> None:
    # Refused before any connection is attempted: nothing leaves the machine.
    await fails(make_fetcher(dev=True), "http://oidc.example.test", "https only")


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(lambda s: "https://evil.example/.well-known/openid-configuration", id="host"),
        pytest.param(lambda s: s.url.replace("127.0.0.1", "localhost") + "/x", id="name"),
        pytest.param(lambda s: f"https://127.0.0.1:{s.port + 1}/x", id="port"),
        pytest.param(lambda s: s.url.replace("https", "http") + "/x", id="scheme"),
        pytest.param(lambda s: "//evil.example/x", id="scheme-relative"),
    ],
)
async def test_redirect_to_another_origin_refused(
    https: LocalServer, make_fetcher: Make, location: Callable[[LocalServer], str]
) -> None:
    issuer = publish(https)
    https.routes["/cluster/.well-known/openid-configuration"] = Reply.redirect(location(https))
    await fails(make_fetcher(), issuer, "redirect", "another host refused")
    assert https.hits == ["/cluster/.well-known/openid-configuration"]


async def test_same_origin_redirects_followed(https: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(https)
    https.routes["/moved"] = https.routes.pop("/cluster/.well-known/openid-configuration")
    https.routes["/cluster/.well-known/openid-configuration"] = Reply.redirect("/r1", 301)
    https.routes["/r1"] = Reply.redirect(https.url + "/r2", 307)
    https.routes["/r2"] = Reply.redirect("moved", 308)
    https.routes["/keys"] = Reply.redirect("/keys2", 302)
    https.routes["/keys2"] = Reply.json(JWKS)
    assert await make_fetcher().fetch(issuer) == JWKS
    assert https.hits == [
        "/cluster/.well-known/openid-configuration",
        "/r1",
        "/r2",
        "/moved",
        "/keys",
        "/keys2",
    ]


async def test_more_than_three_redirects_refused(https: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(https)
    https.routes["/cluster/.well-known/openid-configuration"] = Reply.redirect("/r1")
    for n in range(1, 5):
        https.routes[f"/r{n}"] = Reply.redirect(f"/r{n + 1}")
    await fails(make_fetcher(), issuer, "more than 3 redirects")
    assert len(https.hits) == 4


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(200, b"x" * 2000), id="content-length"),
        pytest.param(Reply(200, b"x" * 300, repeat=10), id="streamed"),
    ],
)
async def test_oversized_body_refused(https: LocalServer, make_fetcher: Make, reply: Reply) -> None:
    issuer = publish(https)
    https.routes["/keys"] = reply
    await fails(make_fetcher(max_bytes=1024), issuer, "larger than 1024 bytes", issuer)


async def test_body_at_the_limit_accepted(https: LocalServer, make_fetcher: Make) -> None:
    issuer = publish(https)
    body = json.dumps(JWKS).encode().ljust(4096)
    https.routes["/keys"] = Reply(200, body)
    assert await make_fetcher(max_bytes=4096).fetch(issuer) == JWKS
    https.routes["/keys"] = Reply(200, body + b" ")
    await fails(make_fetcher(max_bytes=4096), issuer, "larger than 4096 bytes")


@pytest.mark.parametrize(
    ("path", "reply"),
    [
        pytest.param("/keys", Reply(200, b"{}", hold=True), id="slow-jwks"),
        pytest.param(
            "/cluster/.well-known/openid-configuration", Reply(200, b"{}", hold=True), id="slow-doc"
        ),
        # Each byte arrives well within the read timeout: only the total bound stops it (the
        # whole body would take 10 s).
        pytest.param("/keys", Reply(200, b" " * 100 + b"{}", drip=0.1), id="drip"),
    ],
)
async def test_fetch_time_is_bounded(
    https: LocalServer, make_fetcher: Make, path: str, reply: Reply
) -> None:
    issuer = publish(https)
    https.routes[path] = reply
    # wait_for is only a hang guard: without its bound the fetch would wait forever (held)
    # or 10 s (drip), and the server's record below tells which ended it.
    fetch = fails(make_fetcher(timeout=0.5), issuer, "unreachable", issuer)
    message = await asyncio.wait_for(fetch, timeout=30)
    # The event: the fetcher gave up while the server was still answering (or holding).
    assert path in https.hits and path not in https.finished, (https.hits, https.finished)
    assert "Timeout" in message or "no answer within 0.5s" in message


async def test_untrusted_certificate_refused_without_extra_ca(
    https: LocalServer, make_fetcher: Make
) -> None:
    issuer = publish(https)
    await fails(make_fetcher(extra_ca=None), issuer, "TLS certificate verification failed")
    assert https.hits == []
    assert await make_fetcher().fetch(issuer) == JWKS


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        pytest.param(Reply(500, SECRET.encode()), "returned HTTP 500", id="500"),
        pytest.param(Reply(200, SECRET.encode()), "JWKS of issuer", id="not-json"),
        pytest.param(Reply(200, b"\xff\xfe"), "is not JSON", id="not-utf8"),
        pytest.param(Reply.json([SECRET]), "not a JSON object", id="not-object"),
        pytest.param(Reply(302, SECRET.encode()), "returned HTTP 302", id="redirect-no-location"),
    ],
)
async def test_bad_answers_do_not_echo_bodies(
    https: LocalServer, make_fetcher: Make, reply: Reply, fragment: str
) -> None:
    issuer = publish(https)
    https.routes["/keys"] = reply
    await fails(make_fetcher(), issuer, fragment, issuer)


async def test_missing_discovery_document(https: LocalServer, make_fetcher: Make) -> None:
    await fails(make_fetcher(), https.url + "/nowhere", "discovery document", "HTTP 404")


async def test_connection_refused(make_fetcher: Make) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await fails(make_fetcher(), f"https://127.0.0.1:{port}", "unreachable: ConnectError")


@pytest.mark.parametrize("content", [None, b"not a certificate"], ids=["missing", "garbage"])
def test_bad_extra_ca_fails_at_construction(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"extra CA .* cannot be loaded"):
        HttpJwksFetcher(dev=False, extra_ca=path)
